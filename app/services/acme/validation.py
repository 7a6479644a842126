"""Challenge validation (RFC 8555 §8.3 http-01, §8.4 dns-01), run in the background: the
state lives in the database, so a restart or another replica resumes any `processing`
challenge once its claim lapses. Every lookup goes to MINTCA_ACME_DNS_RESOLVER when set."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from app.ca.acme.jws import dns01_txt_value, key_authorization
from app.ca.acme.tlsalpn import ACME_TLS_ALPN, check_tls_alpn01_certificate, server_name_for
from app.clock import Clock
from app.db import acme as queries
from app.db.engine import Database
from app.db.models import (
    AcmeAccountRecord,
    AcmeAuthorizationRecord,
    AcmeChallengeRecord,
    AcmeOrderRecord,
)
from app.services.acme.telemetry import count_validation_attempt

# dnspython and httpx are imported where a challenge is checked: they weigh 10 MB and 0.1 s
# on every worker's start-up, and most CAs never validate an ACME challenge.
if TYPE_CHECKING:
    import dns.resolver

log = logging.getLogger(__name__)

CLAIM = timedelta(seconds=60)  # a validator that dies lets another retry after this
TIMEOUT_SECONDS = 10.0
MAX_BODY_BYTES = 8 * 1024  # a key authorization is ~90 bytes
MAX_REDIRECTS = 3
# RFC 8555 §8.2 lets a server retry: a client's web server or DNS record may lag its answer
# to the challenge (cert-manager's solvers, load balancers). Two retries, then invalid.
RETRY_DELAYS = (timedelta(seconds=5), timedelta(seconds=20))
BATCH = 8


class ValidationFailedError(Exception):
    """The challenge failed; `acme_type` (e.g. `connection`) and detail go to the client."""

    def __init__(self, acme_type: str, detail: str) -> None:
        super().__init__(detail)
        self.acme_type = acme_type
        self.detail = detail


@dataclass(frozen=True)
class Lookup:
    """Where validation looks: the resolver and the challenge ports."""

    resolver: tuple[str, int] | None
    http01_port: int
    tlsalpn01_port: int = 443

    def _resolver(self) -> dns.resolver.Resolver:
        import dns.resolver

        if self.resolver is None:
            return dns.resolver.Resolver()
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [self.resolver[0]]
        resolver.port = self.resolver[1]
        return resolver

    def addresses(self, name: str) -> list[str]:
        """A, then AAAA records of a name (or the IP itself)."""
        try:
            return [ipaddress.ip_address(name).compressed]
        except ValueError:
            pass
        if self.resolver is None:
            try:
                infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
            except OSError as exc:
                raise ValidationFailedError("dns", f"cannot resolve {name}: {exc}") from exc
            return list(dict.fromkeys(str(info[4][0]) for info in infos))
        import dns.exception

        found: list[str] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = self._resolver().resolve(name, rdtype, lifetime=TIMEOUT_SECONDS)
            except dns.exception.DNSException:
                continue
            found += [record.to_text() for record in answer]
        if not found:
            raise ValidationFailedError("dns", f"no A or AAAA record for {name}")
        return found

    def txt(self, name: str) -> list[str]:
        import dns.exception

        try:
            answer = self._resolver().resolve(name, "TXT", lifetime=TIMEOUT_SECONDS)
        except dns.exception.DNSException as exc:
            raise ValidationFailedError("dns", f"no TXT record at {name}: {exc}") from exc
        return [b"".join(record.strings).decode(errors="replace") for record in answer]


def check_http01(lookup: Lookup, name: str, token: str, key_auth: str) -> None:
    """GET http://name:port/.well-known/acme-challenge/token; redirects only to the same host
    and port (never elsewhere), a bounded time and size.

    Raises:
        ValidationFailedError: connection, unauthorized (wrong content), dns.
    """
    import httpx

    address = lookup.addresses(name)[0]
    host = f"[{address}]" if ":" in address else address
    path = f"/.well-known/acme-challenge/{token}"
    with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            url = f"http://{host}:{lookup.http01_port}{path}"
            try:
                with client.stream("GET", url, headers={"Host": name}) as response:
                    if response.is_redirect:
                        path = _same_host_path(response.headers.get("location", ""), name, lookup)
                        continue
                    body = b""
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > MAX_BODY_BYTES:
                            raise ValidationFailedError("unauthorized", "the answer is too big")
            except httpx.HTTPError as exc:
                raise ValidationFailedError("connection", f"{url}: {exc}") from exc
            if response.status_code != 200:
                raise ValidationFailedError(
                    "unauthorized", f"{url} answered {response.status_code}"
                )
            if body.decode(errors="replace").strip() != key_auth:
                raise ValidationFailedError("incorrectResponse", "the key authorization differs")
            return
    raise ValidationFailedError("connection", "too many redirects")


def _same_host_path(location: str, name: str, lookup: Lookup) -> str:
    target = urlsplit(location)
    port = target.port or lookup.http01_port
    if target.scheme not in ("", "http") or (target.hostname or name) != name:
        raise ValidationFailedError("connection", f"redirect off the host: {location!r}")
    if port != lookup.http01_port:
        raise ValidationFailedError("connection", f"redirect to another port: {location!r}")
    return target.path + (f"?{target.query}" if target.query else "")


def check_dns01(lookup: Lookup, name: str, key_auth: str) -> None:
    """Raises: ValidationFailedError: no TXT at _acme-challenge.<name> with the digest."""
    expected = dns01_txt_value(key_auth)
    if expected not in lookup.txt(f"_acme-challenge.{name}"):
        raise ValidationFailedError("unauthorized", f"no TXT record {expected} for {name}")


def check_tlsalpn01(lookup: Lookup, identifier_type: str, name: str, key_auth: str) -> None:
    """RFC 8737: a TLS handshake with ALPN acme-tls/1 and SNI the name; the self-signed
    certificate it shows must carry the key authorization's digest.

    Raises:
        ValidationFailedError: connection, tls, unauthorized.
    """
    address = lookup.addresses(name)[0]
    # The certificate is self-signed by design (RFC 8737 §3): trust is the digest it carries.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols([ACME_TLS_ALPN])
    server_name = server_name_for(identifier_type, name)
    try:
        with (
            socket.create_connection((address, lookup.tlsalpn01_port), TIMEOUT_SECONDS) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            protocol, der = tls.selected_alpn_protocol(), tls.getpeercert(binary_form=True)
    except OSError as exc:
        raise ValidationFailedError("connection", f"{address}: {exc}") from exc
    if protocol != ACME_TLS_ALPN or der is None:
        raise ValidationFailedError("tls", f"the server did not negotiate {ACME_TLS_ALPN}")
    try:
        check_tls_alpn01_certificate(der, identifier_type, name, key_auth)
    except ValueError as exc:
        raise ValidationFailedError("unauthorized", str(exc)) from exc


class ChallengeValidator:
    def __init__(self, db: Database, clock: Clock, lookup: Lookup) -> None:
        self._db = db
        self._clock = clock
        self._lookup = lookup

    def run_due(self) -> int:
        """Validate the challenges that wait; returns how many this call worked on."""
        now = self._clock.now()
        with self._db.read() as session:
            due = list(queries.due_challenges(session, now, limit=BATCH))
        done = 0
        for challenge_id in due:
            with self._db.write() as session:
                claimed = queries.claim_challenge(session, challenge_id, now, now + CLAIM)
            if claimed:
                self.validate(challenge_id)
                done += 1
        return done

    def validate(self, challenge_id: str) -> None:
        with self._db.read() as session:
            challenge = session.get(AcmeChallengeRecord, challenge_id)
            assert challenge is not None
            authz = session.get(AcmeAuthorizationRecord, challenge.authorization_id)
            assert authz is not None
            order = session.get(AcmeOrderRecord, authz.order_id)
            assert order is not None
            account = session.get(AcmeAccountRecord, order.account_id)
            assert account is not None
            kind, token, name = challenge.type, challenge.token, authz.identifier_value
            identifier_type = authz.identifier_type
            key_auth = key_authorization(token, dict(account.jwk))
        error: dict[str, object] | None = None
        try:
            if kind == "http-01":
                check_http01(self._lookup, name, token, key_auth)
            elif kind == "tls-alpn-01":
                check_tlsalpn01(self._lookup, identifier_type, name, key_auth)
            else:
                check_dns01(self._lookup, name, key_auth)
        except ValidationFailedError as exc:
            error = {"type": f"urn:ietf:params:acme:error:{exc.acme_type}", "detail": exc.detail}
            log.info("ACME %s for %s failed: %s", kind, name, exc.detail)
        outcome = self._record(challenge_id, error)
        count_validation_attempt(kind, outcome)

    def _record(self, challenge_id: str, error: dict[str, object] | None) -> str:
        """Store an attempt's outcome; returns it: valid, retry or invalid."""
        now = self._clock.now()
        with self._db.write() as session:
            challenge = session.get(AcmeChallengeRecord, challenge_id)
            assert challenge is not None
            authz = session.get(AcmeAuthorizationRecord, challenge.authorization_id)
            assert authz is not None
            order = session.get(AcmeOrderRecord, authz.order_id)
            assert order is not None
            challenge.claimed_until = None
            if error is not None and challenge.attempts < len(RETRY_DELAYS):
                # Still `processing`: any validator takes it again once the delay is over.
                challenge.claimed_until = now + RETRY_DELAYS[challenge.attempts]
                challenge.attempts += 1
                challenge.error = error
                return "retry"
            if error is None:
                challenge.status, challenge.validated_at, authz.status = "valid", now, "valid"
                challenge.error = None
                session.flush()
                if order.status == "pending" and all(
                    a.status == "valid" for a in queries.authorizations_of(session, order.id)
                ):
                    order.status = "ready"
                return "valid"
            challenge.status, challenge.error, authz.status = "invalid", error, "invalid"
            order.status, order.error = "invalid", error
        return "invalid"
