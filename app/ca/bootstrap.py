"""The CA hierarchy MintCA creates on `init`: a root and an issuing CA under it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from app.ca.issuance import (
    BACKDATE,
    Endpoints,
    Issuer,
    ValidityWindow,
    build_ca_certificate,
    ca_id_for,
)
from app.ca.keys import PrivateKey, PublicKey, generate_private_key
from app.ca.names import MAX_COMMON_NAME_CHARS, cn_length, has_control_characters
from app.ca.serials import new_serial_number
from app.ca.signer import LocalSigner, Signer
from app.errors import ConfigurationError

ROOT_VALIDITY = timedelta(days=3650)
ISSUING_VALIDITY = timedelta(days=1825)
RESPONDER_SUFFIX = " OCSP Responder"
# The longest CN derived from the name is "<name> Issuing CA <generation> OCSP Responder":
# 27 characters plus the generation's digits. 32 leaves room for 99,999 rotations within
# X.520 ub-common-name (64); a 37-character name broke every delegated OCSP answer.
MAX_CA_NAME_CHARS = MAX_COMMON_NAME_CHARS - len(" Issuing CA 99999" + RESPONDER_SUFFIX)


def check_ca_name(name: str) -> None:
    """Raises:
    ConfigurationError: a name that would make a derived CN too long, or is empty or holds
        control characters."""
    if not name.strip() or has_control_characters(name):
        raise ConfigurationError(f"the CA name must be printable text, not {name!r}")
    if cn_length(name) > MAX_CA_NAME_CHARS:
        raise ConfigurationError(
            f"the CA name has {cn_length(name)} characters (UTF-8 bytes); at most "
            f"{MAX_CA_NAME_CHARS}, so that "
            f"'{name[:12]}... Issuing CA 1{RESPONDER_SUFFIX}' fits the 64 characters of a CN"
        )


def responder_common_name(ca_common_name: str) -> str:
    """`<CA CN> OCSP Responder`, the CA's CN cut so that the whole always fits in 64
    characters (CAs made before check_ca_name existed may have long names)."""
    room = MAX_COMMON_NAME_CHARS - len(RESPONDER_SUFFIX)
    cut = ca_common_name.encode()[:room].decode(errors="ignore")  # never half a character
    return cut.rstrip() + RESPONDER_SUFFIX


@dataclass(frozen=True)
class NewCA:
    ca_id: str
    certificate: x509.Certificate
    private_key: PrivateKey | None  # None: the key is outside this process (a token)
    key_signer: Signer | None = None  # given when private_key is None

    @property
    def signer(self) -> Signer:
        if self.key_signer is not None:
            return self.key_signer
        assert self.private_key is not None
        return LocalSigner(self.private_key)


def _name(organization: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def create_root(
    *, name: str, key_type: str, now: datetime, key_signer: Signer | None = None
) -> NewCA:
    """A self-signed root; `key_signer` signs with a key made elsewhere (a token)."""
    key = None if key_signer else generate_private_key(key_type)
    signer = key_signer or LocalSigner(key)  # type: ignore[arg-type]  # key is set without key_signer
    builder = build_ca_certificate(
        subject=_name(name, f"{name} Root CA"),
        public_key=signer.public_key,
        issuer=None,
        window=ValidityWindow(now - BACKDATE, now + ROOT_VALIDITY),
        serial_number=new_serial_number(),
        path_length=1,
    )
    certificate = signer.sign_certificate(builder)
    return NewCA(ca_id_for(signer.public_key), certificate, key, key_signer)


def create_issuing_ca(
    *,
    name: str,
    key_type: str,
    root: NewCA,
    now: datetime,
    endpoints: Endpoints | None = None,
    generation: int = 1,
    ocsp: bool = True,
    key_signer: Signer | None = None,
) -> NewCA:
    """An issuing CA with pathLen 0 that never outlives its root."""
    return sign_issuing_ca(
        name=name,
        key_type=key_type,
        issuer=Issuer(root.ca_id, root.certificate),
        signer=root.signer,
        key_signer=key_signer,
        now=now,
        endpoints=endpoints,
        generation=generation,
        ocsp=ocsp,
    )


def sign_issuing_ca(
    *,
    name: str,
    key_type: str,
    issuer: Issuer,
    signer: Signer,
    now: datetime,
    validity: timedelta = ISSUING_VALIDITY,
    endpoints: Endpoints | None = None,
    generation: int = 1,
    ocsp: bool = True,
    key: PrivateKey | None = None,
    key_signer: Signer | None = None,
) -> NewCA:
    """A new issuing CA (pathLen 0, never outliving the root) signed by the root's signer:
    init's first one, and each rotation's next generation ("<name> Issuing CA <n>"). Without
    `ocsp` its certificate names no OCSP responder (an offline root answers none). `key`, when
    given, was made beforehand (an RSA key takes seconds: not under a lock); `key_signer`,
    when given, is the new CA's key made elsewhere (a token) and `key` is unused."""
    if key_signer is None:
        key = key or generate_private_key(key_type)
    public_key = key_signer.public_key if key_signer else key.public_key()  # type: ignore[union-attr]  # key is set without key_signer
    builder = build_ca_certificate(
        subject=_name(name, f"{name} Issuing CA {generation}"),
        public_key=public_key,
        issuer=issuer,
        window=ValidityWindow(now - BACKDATE, now + validity),
        serial_number=new_serial_number(),
        path_length=0,
        endpoints=endpoints,
        ocsp=ocsp,
    )
    certificate = signer.sign_certificate(builder)
    return NewCA(ca_id_for(public_key), certificate, None if key_signer else key, key_signer)


def key_type_of(public_key: PublicKey) -> str:
    """The KEY_TYPES name of a CA's key, so a rotation keeps the previous CA's kind of key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ec-p{public_key.curve.key_size}"
    if isinstance(public_key, rsa.RSAPublicKey):
        return f"rsa-{public_key.key_size}"
    return "ed25519"
