"""Signatures per second: a CA key in a SoftHSM2 token (one session per process, calls under
one lock) against the same kind of key in memory (LocalSigner), for the bytes an OCSP answer
signs and for a whole CRL, from 1 and 4 threads. Makes a throwaway token in a temporary
directory; needs softhsm2. Prints a table.

    .venv/bin/python bench/hsm.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from app.ca.keys import generate_private_key
from app.ca.signer import LocalSigner, Signer

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN = "1234"
NOW = datetime.now(UTC)
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])


def make_token(directory: Path) -> Path:
    """A fresh token; SOFTHSM2_CONF is set before the module is first loaded."""
    (directory / "tokens").mkdir()
    config = directory / "softhsm2.conf"
    config.write_text(f"directories.tokendir = {directory / 'tokens'}\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(config)
    subprocess.run(
        [
            *("softhsm2-util", "--init-token", "--free", "--label", "bench"),
            *("--pin", PIN, "--so-pin", "5678"),
        ],
        check=True,
        capture_output=True,
    )
    pin_file = directory / "pin"
    pin_file.write_text(PIN)
    return pin_file


def crl_builder() -> x509.CertificateRevocationListBuilder:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(NAME)
        .last_update(NOW)
        .next_update(NOW + timedelta(hours=1))
    )
    for serial in range(1, 101):
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW)
        builder = builder.add_revoked_certificate(entry.build())
    return builder


def rate(work: object, threads: int, seconds: float) -> float:
    """Operations per second of `work()` called from `threads` threads for `seconds`."""
    deadline = time.perf_counter() + seconds

    def loop() -> int:
        count = 0
        while time.perf_counter() < deadline:
            work()  # type: ignore[operator]  # a callable
            count += 1
        return count

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        total = sum(pool.map(lambda _: loop(), range(threads)))
    return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    seconds = parser.parse_args().seconds
    from app.config import Settings
    from app.services.hsm import open_token

    with tempfile.TemporaryDirectory() as tmp:
        pin_file = make_token(Path(tmp))
        settings = Settings(
            pkcs11_module=MODULE,
            pkcs11_token_label="bench",
            pkcs11_pin_file=pin_file,
            _env_file=None,
        )
        token = open_token(settings)
        assert token is not None
        message = os.urandom(200)  # about the size of an OCSP tbsResponseData
        crl = crl_builder()
        print(f"{'key':<8} {'signer':<8} {'threads':>7} {'sign_bytes/s':>13} {'CRL (100)/s':>12}")
        for key_type in ("ec-p256", "ec-p384", "rsa-2048"):
            signers: list[tuple[str, Signer]] = [
                ("memory", LocalSigner(generate_private_key(key_type))),
                ("token", token.generate(key_type)),
            ]
            for label, signer in signers:
                for threads in (1, 4):
                    per_second = rate(lambda s=signer: s.sign_bytes(message), threads, seconds)
                    crls = rate(lambda s=signer: s.sign_crl(crl), threads, seconds)
                    print(
                        f"{key_type:<8} {label:<8} {threads:>7} {per_second:>13,.0f} {crls:>12,.0f}"
                    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
