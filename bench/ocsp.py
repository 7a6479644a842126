"""OCSP benchmark: MintCA against OpenSSL's responder in the same run, on loopback.

    .venv/bin/python bench/ocsp.py [--workers 2] [--seconds 4] [--connections 20]

Makes a CA with 100 certificates (10 revoked), starts `mintca serve` (timing serve → /ready)
and `openssl ocsp -index` over the same serials (one process, then `-multi 2`), loads each
with wrk (bench/ocsp_requests.lua) and prints a markdown table with MintCA's ratio to each.
Each server is run `--rounds` times per workload, interleaved, and the median run is shown.
Bounded: a few seconds per wrk run, about three minutes in all.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from app.ca.keys import encode_kek, generate_kek
from app.config import Settings
from app.services.container import Services

HERE = Path(__file__).resolve().parent
SERIALS = 100
REVOKED_EVERY = 10  # 10 % revoked
NONCE_REQUESTS = 1000
ROOT = HERE.parent


@dataclass
class Load:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: str


def median(results: list[Load]) -> Load:
    """The run with the median requests/s (its latencies with it)."""
    return sorted(results, key=lambda result: result.rate)[len(results) // 2]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_ca(data_dir: Path, kek: str, public_url: str) -> list[tuple[x509.Certificate, bool]]:
    """`mintca init`, then SERIALS enrollments and every tenth one revoked, in-process."""
    env = {**os.environ, "MINTCA_DATA_DIR": str(data_dir), "MINTCA_KEK": kek}
    env["MINTCA_PUBLIC_URL"] = public_url
    subprocess.run(
        [sys.executable, "-m", "app.cli", "init"], env=env, check=True, capture_output=True
    )
    settings = Settings(data_dir=data_dir, kek=kek, public_url=public_url)
    services = Services(settings)
    issued: list[tuple[x509.Certificate, bool]] = []
    try:
        token = services.tokens.create(
            actor="bench",
            profiles=["server"],
            names=["*.bench.internal"],
            ttl=timedelta(hours=1),
            max_uses=SERIALS,
            max_validity_days=None,
        )
        for n in range(SERIALS):
            name = f"s{n}.bench.internal"
            key = ec.generate_private_key(ec.SECP256R1())
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
                .sign(key, hashes.SHA256())
            )
            pem = csr.public_bytes(serialization.Encoding.PEM)
            leaf = services.enrollment.enroll(token=token.token, csr_data=pem).certificate
            revoked = n % REVOKED_EVERY == 0
            if revoked:
                services.revocation.revoke(
                    f"{leaf.serial_number:x}",
                    reason="keyCompromise",
                    invalidity_date=None,
                    actor="bench",
                )
            issued.append((leaf, revoked))
    finally:
        services.close()
    return issued


def ocsp_requests(
    issued: list[tuple[x509.Certificate, bool]], issuer: x509.Certificate
) -> tuple[list[bytes], list[bytes]]:
    """(nonce-less requests, NONCE_REQUESTS requests with a nonce) as OpenSSL sends them."""
    plain, with_nonce = [], []
    for leaf, _ in issued:
        builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1())
        plain.append(builder.build().public_bytes(serialization.Encoding.DER))
    for n in range(NONCE_REQUESTS):
        leaf = issued[n % len(issued)][0]
        builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1())
        builder = builder.add_extension(x509.OCSPNonce(os.urandom(16)), critical=False)
        with_nonce.append(builder.build().public_bytes(serialization.Encoding.DER))
    return plain, with_nonce


def openssl_index(path: Path, issued: list[tuple[x509.Certificate, bool]]) -> None:
    """An `openssl ca` index.txt with the same serials and statuses."""
    lines = []
    for leaf, revoked in issued:
        expiry = leaf.not_valid_after_utc.strftime("%y%m%d%H%M%SZ")
        when = datetime.now(UTC).strftime("%y%m%d%H%M%SZ") + ",keyCompromise" if revoked else ""
        serial = f"{leaf.serial_number:X}"
        serial = "0" + serial if len(serial) % 2 else serial
        flag = "R" if revoked else "V"
        lines.append(f"{flag}\t{expiry}\t{when}\t{serial}\tunknown\t/CN={leaf.serial_number:x}")
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".txt.attr").write_text("unique_subject = no\n")


def responder_key(directory: Path) -> tuple[Path, Path]:
    """A P-256 key and certificate for OpenSSL's responder to sign with (as MintCA's)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench responder")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "rsigner.pem", directory / "rkey.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def write_requests(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def get_lines(prefix: str, requests: list[bytes]) -> list[str]:
    return [f"GET {prefix}{quote(base64.b64encode(der).decode(), safe='')}" for der in requests]


def post_lines(requests: list[bytes]) -> list[str]:
    return [f"POST {der.hex()}" for der in requests]


def wrk(url: str, requests: Path, *, seconds: int, connections: int) -> Load:
    env = {**os.environ, "OCSP_REQUESTS": str(requests)}
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    command += ["-s", str(HERE / "ocsp_requests.lua"), url]
    out = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 30
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    errors = ", ".join(re.findall(r"(Socket errors: .*|Non-2xx or 3xx responses: \d+)", out))
    return Load(rate, _percentile(out, "50"), _percentile(out, "99"), errors)


def _percentile(out: str, which: str) -> float:
    match = re.search(rf"^\s+{which}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if match is None:
        return float("nan")
    return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]


def check_answer(url: str, der: bytes, *, get: bool) -> None:
    """One request before the load: the answer must be a successful OCSP response."""
    if get:
        request = urllib.request.Request(url + quote(base64.b64encode(der).decode(), safe=""))
    else:
        request = urllib.request.Request(
            url, data=der, headers={"Content-Type": "application/ocsp-request"}
        )
    with urllib.request.urlopen(request, timeout=10) as answer:
        response = ocsp.load_der_ocsp_response(answer.read())
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        raise RuntimeError(f"{url}: {response.response_status}")


def rss_mb(pids: list[int]) -> list[float]:
    sizes = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        sizes.append(int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024)  # type: ignore[index]
    return sizes


def worker_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    pids = []
    for child in map(int, children):
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"resource_tracker" not in cmdline:
            pids.append(child)
    return pids or [parent]


class RSSSampler(threading.Thread):
    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids, self.peak = pids, [0.0] * len(pids)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for n, size in enumerate(rss_mb(self.pids)):
                self.peak[n] = max(self.peak[n], size)


def start_openssl(
    index: Path, issuer_pem: Path, signer: tuple[Path, Path], port: int, multi: int
) -> subprocess.Popen[bytes]:
    command = ["openssl", "ocsp", "-index", str(index), "-port", str(port)]
    command += ["-rsigner", str(signer[0]), "-rkey", str(signer[1]), "-CA", str(issuer_pem)]
    command += ["-nmin", "720", "-ignore_err"]
    if multi > 1:
        command += ["-multi", str(multi)]
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0
    )


def stop_group(process: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            continue


def run_openssl(
    index: Path,
    issuer_pem: Path,
    signer: tuple[Path, Path],
    multi: int,
    requests: Path,
    probe: bytes,
    load: dict[str, int],
) -> Load:
    """One wrk run against a fresh `openssl ocsp` (a single process can stay blocked on a
    connection that the previous wrk run left half-open)."""
    port = free_port()
    responder = start_openssl(index, issuer_pem, signer, port, multi)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_answering(url, probe, get=False)
        return wrk(url, requests, seconds=load["seconds"], connections=load["connections"])
    finally:
        stop_group(responder)


def wait_answering(url: str, der: bytes, *, get: bool) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            check_answer(url, der, get=get)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="runs per server; medians shown")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench/ocsp.py needs wrk (Debian package wrk)")
    load = {"seconds": args.seconds, "connections": args.connections}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data_dir, kek = tmp / "data", encode_kek(generate_kek())
        public_port, mtls_port = free_port(), free_port()
        public_url = f"http://127.0.0.1:{public_port}"
        issued = make_ca(data_dir, kek, public_url)
        issuer = x509.load_pem_x509_certificates((data_dir / "ca-chain.pem").read_bytes())[0]
        issuer_pem = tmp / "issuer.pem"
        issuer_pem.write_bytes(issuer.public_bytes(serialization.Encoding.PEM))
        plain, with_nonce = ocsp_requests(issued, issuer)
        index = tmp / "index.txt"
        openssl_index(index, issued)
        signer = responder_key(tmp)

        rows: dict[str, dict[str, Load]] = {}
        workloads = {
            "OCSP GET, no nonce (pre-signed)": (get_lines("/ocsp/", plain), get_lines("/", plain)),
            "OCSP POST, no nonce (pre-signed)": (post_lines(plain), post_lines(plain)),
            "OCSP POST with a nonce (signed per request)": (
                post_lines(with_nonce),
                post_lines(with_nonce),
            ),
        }
        env = {
            **os.environ,
            "MINTCA_DATA_DIR": str(data_dir),
            "MINTCA_KEK": kek,
            "MINTCA_PUBLIC_BIND": f"127.0.0.1:{public_port}",
            "MINTCA_MTLS_BIND": f"127.0.0.1:{mtls_port}",
            "MINTCA_PUBLIC_URL": public_url,
            "MINTCA_WORKERS": str(args.workers),
            "MINTCA_LOG_LEVEL": "warning",
        }
        started = time.monotonic()
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], env=env, cwd=ROOT, process_group=0
        )
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"{public_url}/ready", timeout=1) as ready:
                        if ready.status == 200:
                            break
                except OSError:
                    if time.monotonic() - started > 60:
                        raise
                    time.sleep(0.02)
            ready_seconds = time.monotonic() - started
            check_answer(f"{public_url}/ocsp", with_nonce[0], get=False)
            sampler = RSSSampler(worker_pids(server.pid))
            sampler.start()
            # Each workload on the three servers back to back, `rounds` times: load from other
            # processes on the machine moves all three alike, and only ratios from one run count.
            for name, (mintca_lines, openssl_lines) in workloads.items():
                mintca_requests = write_requests(tmp / "mintca.txt", mintca_lines)
                openssl_requests = write_requests(tmp / "openssl.txt", openssl_lines)
                wrk(f"{public_url}/ocsp", mintca_requests, seconds=1, connections=20)
                runs: dict[str, list[Load]] = {}
                for _ in range(args.rounds):
                    url = f"{public_url}/ocsp"
                    runs.setdefault("MintCA", []).append(wrk(url, mintca_requests, **load))
                    for label, multi in (("openssl", 1), ("openssl -multi 2", 2)):
                        runs.setdefault(label, []).append(
                            run_openssl(
                                index, issuer_pem, signer, multi, openssl_requests, plain[0], load
                            )
                        )
                rows[name] = {label: median(results) for label, results in runs.items()}
            sampler.stop.set()
        finally:
            stop_group(server)
    print_table(rows, args, ready_seconds, sampler.peak)


def print_table(
    rows: dict[str, dict[str, Load]],
    args: argparse.Namespace,
    ready_seconds: float,
    rss: list[float],
) -> None:
    print(
        f"\nMintCA with {args.workers} workers; wrk -t2 -c{args.connections} -d{args.seconds}s, "
        f"median of {args.rounds} runs per server; "
        f"{SERIALS} serials, {100 // REVOKED_EVERY} % revoked; {os.cpu_count()} CPUs\n"
    )
    print("| workload | server | requests/s | p50 ms | p99 ms | MintCA ÷ this |")
    print("|---|---|---:|---:|---:|---:|")
    for name, loads in rows.items():
        mintca = loads["MintCA"].rate
        for server, result in loads.items():
            ratio = "" if server == "MintCA" else f"{mintca / max(result.rate, 0.01):.2f}x"
            note = f" ({result.errors})" if result.errors else ""
            print(
                f"| {name} | {server}{note} | {result.rate:,.0f} | {result.p50_ms:.2f} "
                f"| {result.p99_ms:.2f} | {ratio} |"
            )
    sizes = ", ".join(f"{size:.0f}" for size in rss)
    print(f"\nRSS per MintCA worker under load (peak): {sizes} MB")
    print(f"`mintca serve` → `/ready`: {ready_seconds:.2f} s")


if __name__ == "__main__":
    main()
