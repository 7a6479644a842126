"""The mtls listener's server certificate renews itself: with a third of its life left, a
successor with the same names and a fresh key from the active issuing CA replaces the data
dir's files atomically (key 0600), once, and never reaches the database with its key."""

from __future__ import annotations

import stat
from datetime import timedelta

import pytest
from cryptography import x509
from sqlalchemy import text

from app.ca.keys import load_private_key_pem
from app.clock import FixedClock
from app.config import Settings
from app.services.container import Services
from app.services.server_cert import is_due, names_of

pytestmark = pytest.mark.db


def served(settings: Settings) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates((settings.data_dir / "server.pem").read_bytes())


def test_a_fresh_certificate_is_left_alone(
    services: Services, initialised_settings: Settings, clock: FixedClock
) -> None:
    before = (initialised_settings.data_dir / "server.pem").read_bytes()
    clock.advance(days=200)  # 165 of 365 days left: more than a third

    assert services.server_cert.renew_if_due() is None
    assert (initialised_settings.data_dir / "server.pem").read_bytes() == before


@pytest.mark.parametrize(
    ("days_left", "due"),
    [
        pytest.param(200, False, id="200 of 365 days left"),
        pytest.param(121, True, id="121 of 365 days left"),
        pytest.param(-1, True, id="expired"),
    ],
)
def test_due_with_a_third_of_the_lifetime_left(
    services: Services, initialised_settings: Settings, days_left: int, due: bool
) -> None:
    certificate = served(initialised_settings)[0]
    at = certificate.not_valid_after_utc - timedelta(days=days_left)

    assert is_due(certificate, at) is due


def test_renewal_keeps_the_names_and_replaces_key_and_chain(
    services: Services, initialised_settings: Settings, clock: FixedClock
) -> None:
    data_dir = initialised_settings.data_dir
    old = served(initialised_settings)[0]
    old_key = (data_dir / "server-key.pem").read_bytes()
    clock.advance(days=250)

    renewed = services.server_cert.renew_if_due()

    assert renewed is not None
    leaf, issuer = served(initialised_settings)
    assert leaf == renewed
    assert leaf.serial_number != old.serial_number
    assert names_of(leaf) == names_of(old), "the successor serves other names"
    assert issuer == services.keyring.active_issuer().certificate
    key_pem = (data_dir / "server-key.pem").read_bytes()
    assert key_pem != old_key
    assert stat.S_IMODE((data_dir / "server-key.pem").stat().st_mode) == 0o600
    assert load_private_key_pem(key_pem).public_key() == leaf.public_key()
    assert services.server_cert.read().certificate == leaf
    assert services.server_cert.renew_if_due() is None, "renewed twice"
    with services.db.read() as session:
        profile = session.execute(
            text("SELECT profile FROM certificates WHERE serial = :s"),
            {"s": f"{leaf.serial_number:x}"},
        ).scalar_one()
    assert profile == "server"


def test_renewal_after_rotation_comes_from_the_new_ca(
    services: Services, initialised_settings: Settings, clock: FixedClock
) -> None:
    new = services.authorities.rotate(actor="test")
    clock.advance(days=250)

    renewed = services.server_cert.renew_if_due()

    assert renewed is not None
    renewed.verify_directly_issued_by(new.certificate)


def test_a_key_that_does_not_match_is_never_loaded(
    services: Services, initialised_settings: Settings
) -> None:
    data_dir = initialised_settings.data_dir
    (data_dir / "server-key.pem").write_bytes((data_dir / "admin-key.pem").read_bytes())

    with pytest.raises(ValueError, match="does not belong"):
        services.server_cert.read()
