"""CFSSL's signer on the same machine, loaded like bench/enroll.py loads MintCA: the peer figure
that MintCA's enrollment row is compared with (issue 11 asks for at least 3x).

`cfssl serve` (Debian's golang-cfssl) signs a JSON-wrapped PEM CSR with an EC P-256 CA and
stores each certificate in its SQLite certdb (`-db-config`) before answering, SQLite's defaults
(rollback journal, synchronous=FULL): durable, as MintCA's row is. wrk sends the same CSRs with
the same connection count; loopback only, bounded in time.

    .venv/bin/python bench/cfssl.py [--duration 10] [--connections 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from enroll import (
    Result,
    csr_pems,
    free_port,
    group_cpu_seconds,
    idle_percent,
    machine_jiffies,
    parse_wrk,
    wrk_script,
)

# CFSSL's certdb tables, as its `-db-config` SQLite store expects them (CFSSL ships the schema
# as goose migrations, which Debian's package does not install).
CERTDB_SCHEMA = """
CREATE TABLE certificates (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, ca_label blob,
  status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp, pem blob NOT NULL,
  PRIMARY KEY (serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (
  serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, body blob NOT NULL,
  expiry timestamp, PRIMARY KEY (serial_number, authority_key_identifier));
"""
SIGNING_CONFIG = {
    "signing": {
        "default": {
            "expiry": "720h",
            "usages": ["digital signature", "key encipherment", "server auth"],
        }
    }
}


CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False, content_commitment=False, key_encipherment=False,
    data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
    encipher_only=False, decipher_only=False,
)  # fmt: skip


def available() -> bool:
    return shutil.which("cfssl") is not None and shutil.which("wrk") is not None


def write_ca(workdir: Path) -> tuple[Path, Path]:
    """A self-signed EC P-256 CA for CFSSL to sign with (cert.pem, key.pem)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "cfssl bench CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(CA_KEY_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "ca.pem", workdir / "ca-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,  # CFSSL 1.2 reads "EC PRIVATE KEY"
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def stored(database: Path) -> int:
    with sqlite3.connect(database) as connection:
        return int(connection.execute("SELECT count(*) FROM certificates").fetchone()[0])


def measure(*, duration: int, connections: int) -> Result:
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        cert, key = write_ca(workdir)
        database = workdir / "certs.db"
        with sqlite3.connect(database) as connection:
            connection.executescript(CERTDB_SCHEMA)
        (workdir / "db.json").write_text(
            json.dumps({"driver": "sqlite3", "data_source": str(database)})
        )
        (workdir / "config.json").write_text(json.dumps(SIGNING_CONFIG))
        port = free_port()
        with open(workdir / "serve.log", "wb") as log:
            process = subprocess.Popen(  # cfssl from PATH, fixed arguments
                [
                    "cfssl", "serve", "-loglevel", "5", "-address", "127.0.0.1",
                    "-port", str(port), "-ca", str(cert), "-ca-key", str(key),
                    "-db-config", str(workdir / "db.json"),
                    "-config", str(workdir / "config.json"),
                ],
                start_new_session=True,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/api/v1/cfssl/sign"
            bodies = [json.dumps({"certificate_request": csr}) for csr in csr_pems()]
            wait_until_signing(url, bodies[0], workdir / "serve.log")
            script = workdir / "sign.lua"
            script.write_text(wrk_script(bodies, {"Content-Type": "application/json"}))
            subprocess.run(  # warm-up, as for MintCA
                ["wrk", "-t2", f"-c{connections}", "-d2s", "-s", str(script), url],
                check=True,
                capture_output=True,
            )
            cpu_before, stored_before = group_cpu_seconds(process.pid), stored(database)
            jiffies = machine_jiffies()
            output = subprocess.run(
                [
                    "wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency",
                    "-s", str(script), url,
                ],
                check=True,
                capture_output=True,
                text=True,
                timeout=duration + 30,
            ).stdout  # fmt: skip
            idle = idle_percent(jiffies, machine_jiffies())
            cpu = group_cpu_seconds(process.pid) - cpu_before
            stored_during = stored(database) - stored_before
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
    rate, p50, p99, errors = parse_wrk(output)
    return Result(rate, p50, p99, errors, stored_during, cpu * 1000 / max(stored_during, 1), idle)


def wait_until_signing(url: str, body: str, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            answer = httpx.post(url, content=body, timeout=2)
            if answer.status_code == 200 and answer.json().get("success"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"cfssl serve did not sign within 15 s:\n{log.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=20)
    args = parser.parse_args()
    if not available():
        raise SystemExit("needs cfssl and wrk (Debian: apt-get install golang-cfssl wrk)")
    result = measure(duration=args.duration, connections=args.connections)
    print("| server | requests/s | p50 ms | p99 ms | stored | errors | server CPU ms/enrollment |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| CFSSL, SQLite certdb | {result.requests_per_second:,.0f} | {result.p50_ms:.1f} | "
        f"{result.p99_ms:.1f} | {result.stored:,} | {result.errors} | {result.cpu_ms:.2f} |"
    )


if __name__ == "__main__":
    main()
