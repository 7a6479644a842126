"""The ACME use cases of one process, built once by the container."""

from __future__ import annotations

from app.ca.issuance import Endpoints
from app.clock import Clock
from app.config import Settings, parse_bind
from app.db.engine import Database
from app.services.acme.accounts import AcmeAccounts
from app.services.acme.certificates import AcmeCertificates
from app.services.acme.orders import AcmeOrders
from app.services.acme.requests import AcmeRequests, AcmeUrls
from app.services.acme.validation import ChallengeValidator, Lookup
from app.services.certificates import CertificateService
from app.services.keyring import Keyring
from app.services.revocation import RevocationService


class AcmeService:
    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: Settings,
        *,
        keyring: Keyring,
        endpoints: Endpoints,
        certificates: CertificateService,
        revocation: RevocationService,
    ) -> None:
        self.urls = AcmeUrls(settings.base_url)
        self.requests = AcmeRequests(db, clock, self.urls)
        self.accounts = AcmeAccounts(
            db, clock, self.urls, keyring=keyring, eab_required=settings.acme_eab_required
        )
        self.orders = AcmeOrders(
            db,
            clock,
            self.urls,
            accounts=self.accounts,
            keyring=keyring,
            endpoints=endpoints,
        )
        self.certificates = AcmeCertificates(
            db, clock, keyring=keyring, certificates=certificates, revocation=revocation
        )
        resolver = parse_bind(settings.acme_dns_resolver) if settings.acme_dns_resolver else None
        self.validator = ChallengeValidator(
            db,
            clock,
            Lookup(
                resolver=resolver,
                http01_port=settings.acme_http01_port,
                tlsalpn01_port=settings.acme_tlsalpn01_port,
            ),
        )
