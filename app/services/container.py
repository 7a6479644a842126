"""Services: every use case of one process, built once around one Database and one Keyring."""

from __future__ import annotations

import logging

from app.ca.issuance import Endpoints
from app.clock import Clock, SystemClock
from app.config import Settings
from app.db.engine import Database
from app.errors import ServiceUnavailableError
from app.services.acme.service import AcmeService
from app.services.audit import AuditService
from app.services.authorities import AuthorityService
from app.services.certificates import CertificateService
from app.services.crls import CRLService
from app.services.enrollment import EnrollmentService
from app.services.group_commit import GroupCommitter
from app.services.hsm import open_token
from app.services.keyring import Keyring, load_keks
from app.services.metrics import MetricsService
from app.services.ocsp import OCSPService
from app.services.peers import PeerService
from app.services.renewal import RenewalService
from app.services.responders import ResponderService
from app.services.revocation import RevocationService
from app.services.roles import RoleService
from app.services.server_cert import ServerCertificateService
from app.services.status_signal import GENERATION_FILE, StatusSignal
from app.services.tokens import TokenService

log = logging.getLogger(__name__)


class Services:
    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.db = Database(settings.effective_database_url, pool_size=16)
        self.keyring = Keyring(
            self.db,
            load_keks(settings),
            open_token(settings),
            reload_keks=lambda: load_keks(settings),
        )
        self.keyring.load()
        endpoints = Endpoints(settings.base_url, settings.trust_domain)
        self.endpoints = endpoints
        self.audit = AuditService(self.db)
        self.tokens = TokenService(self.db, self.clock)
        self.certificates = CertificateService(self.db, self.clock)
        # One writer per process: enrollments share its commits (group commit).
        self.committer = GroupCommitter(self.db)
        self.enrollment = EnrollmentService(
            self.db, self.clock, self.keyring, self.tokens, endpoints, self.committer
        )
        self.crls = CRLService(self.db, self.clock, self.keyring, endpoints, settings.crl_validity)
        self.revocation = RevocationService(self.db, self.clock, self.crls)
        # Changes with every committed revocation, hold or unhold, on any worker or host.
        self.status_signal = StatusSignal(settings.data_dir / GENERATION_FILE)
        self.status_signal.watch(self.db)
        self.responders = ResponderService(
            self.db, self.clock, self.keyring, endpoints, signal=self.status_signal
        )
        self.ocsp = OCSPService(
            self.db,
            self.clock,
            self.keyring,
            self.responders,
            validity=settings.ocsp_validity,
            delegated=settings.ocsp_signer == "delegated",
            signal=self.status_signal,
        )
        self.peers = PeerService(self.db, self.clock, signal=self.status_signal)
        self.roles = RoleService(self.db, self.clock, self.keyring, endpoints)
        self.renewal = RenewalService(self.db, self.clock, self.keyring, endpoints)
        self.authorities = AuthorityService(self.db, self.clock, self.keyring, self.crls, endpoints)
        self.server_cert = ServerCertificateService(
            self.db, self.clock, self.keyring, endpoints, settings.data_dir
        )
        self.metrics = MetricsService(self.db, self.clock)
        self.acme = AcmeService(
            self.db,
            self.clock,
            settings,
            keyring=self.keyring,
            endpoints=endpoints,
            certificates=self.certificates,
            revocation=self.revocation,
        )

    def ready(self) -> bool:
        """The database answers and an issuing CA is loaded."""
        try:
            self.db.ping()
            self.keyring.active_issuer()
        except ServiceUnavailableError as exc:  # expected while the database is down
            log.warning("readiness check failed: %s", exc.detail)
            return False
        except Exception:  # any failure means "not ready"; /ready says 503
            log.warning("readiness check failed", exc_info=True)
            return False
        return True

    def close(self) -> None:
        self.revocation.close()  # first: its last commits still bump the status generation
        self.status_signal.close()
        self.committer.close()
        self.db.dispose()
