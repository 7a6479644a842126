"""MintCA benchmarks: enrollment and OCSP over real HTTP against `mintca serve`, and CRL
building in-process. Loopback only, bounded in count and time. Prints a table.

    .venv/bin/python bench/run.py [--requests 2000] [--concurrency 16] [--crl-entries 100000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from app.ca.bootstrap import create_issuing_ca, create_root
from app.ca.crl import RevokedEntry, build_crl
from app.ca.keys import encode_kek, generate_kek
from app.ca.signer import LocalSigner


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def csr_pem(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


Request = tuple[bytes, dict[str, str]]


def _post_all(job: tuple[str, int, str, list[Request]]) -> int:
    """One client process: POST each request on one keep-alive connection."""
    host, port, path, requests = job
    connection = http.client.HTTPConnection(host, port, timeout=60)
    for body, headers in requests:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{response.status} {answer[:200]!r}")
    connection.close()
    return len(requests)


def hammer(url: str, requests: list[Request], concurrency: int) -> float:
    """POST every request once from `concurrency` client processes (an asyncio httpx client
    tops out near 400 requests/s on one core, below what the server does); returns req/s."""
    parsed = urlsplit(url)
    jobs = [
        (parsed.hostname or "127.0.0.1", parsed.port or 80, parsed.path, requests[n::concurrency])
        for n in range(concurrency)
    ]
    with multiprocessing.get_context("fork").Pool(concurrency) as pool:
        start = time.perf_counter()
        done = sum(pool.map(_post_all, jobs))
        return done / (time.perf_counter() - start)


def bench_crl(entries: int) -> float:
    now = datetime.now(UTC)
    root = create_root(name="Bench", key_type="ec-p256", now=now)
    issuing = create_issuing_ca(name="Bench", key_type="ec-p256", root=root, now=now)
    revoked = [RevokedEntry(n + 1, now - timedelta(seconds=n), None) for n in range(entries)]
    start = time.perf_counter()
    builder = build_crl(
        issuer=issuing.certificate,
        number=1,
        this_update=now,
        next_update=now + timedelta(days=1),
        entries=revoked,
    )
    LocalSigner(issuing.private_key).sign_crl(builder)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--crl-entries", type=int, default=100_000)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        public_port, mtls_port = free_port(), free_port()
        public_url = f"http://127.0.0.1:{public_port}"
        env = {
            **os.environ,
            "MINTCA_DATA_DIR": str(Path(tmp) / "data"),
            "MINTCA_KEK": encode_kek(generate_kek()),
            "MINTCA_PUBLIC_BIND": f"127.0.0.1:{public_port}",
            "MINTCA_MTLS_BIND": f"127.0.0.1:{mtls_port}",
            "MINTCA_PUBLIC_URL": public_url,
            "MINTCA_WORKERS": str(args.workers),
            "MINTCA_LOG_LEVEL": "warning",
            "MINTCA_ALLOW_INSECURE_TOKENS": "true",  # plain HTTP on loopback
        }
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{public_url}/ready", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.2)
            data = Path(tmp) / "data"
            context = ssl.create_default_context(cafile=str(data / "root.pem"))
            context.load_cert_chain(str(data / "admin.pem"), str(data / "admin-key.pem"))
            admin = httpx.Client(base_url=f"https://localhost:{mtls_port}", verify=context)
            token = admin.post(
                "/admin/tokens",
                json={
                    "names": ["*.bench.internal"],
                    "max_uses": args.requests,
                    "ttl_seconds": 3600,
                },
            ).json()["token"]
            enrollments: list[Request] = [
                (
                    json.dumps({"csr": csr_pem(f"s{n}.bench.internal")}).encode(),
                    {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                )
                for n in range(args.requests)
            ]
            rate = hammer(f"{public_url}/v1/certificates", enrollments, args.concurrency)
            rows.append((f"enroll (JSON, durable, {args.workers} workers)", f"{rate:,.0f} /s"))

            issued = admin.get("/admin/certificates", params={"limit": 1}).json()["items"][0]
            leaf = x509.load_pem_x509_certificate(
                admin.get(f"/admin/certificates/{issued['serial']}").json()["pem"].encode()
            )
            chain = httpx.get(f"{public_url}/ca/chain.pem").content
            issuer = x509.load_pem_x509_certificates(chain)[0]
            request = (
                ocsp.OCSPRequestBuilder()
                .add_certificate(leaf, issuer, hashes.SHA1())
                .build()
                .public_bytes(serialization.Encoding.DER)
            )
            lookups: list[Request] = [
                (request, {"Content-Type": "application/ocsp-request"})
            ] * args.requests
            rate = hammer(f"{public_url}/ocsp", lookups, args.concurrency)
            rows.append(("OCSP POST, no nonce (cached answer)", f"{rate:,.0f} /s"))
            admin.close()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    seconds = bench_crl(args.crl_entries)
    rows.append((f"CRL build+sign, {args.crl_entries:,} entries", f"{seconds:.2f} s"))
    width = max(len(name) for name, _ in rows)
    print(f"\n{'benchmark':<{width}}  result")
    print(f"{'-' * width}  ------")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
