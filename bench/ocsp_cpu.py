"""OCSP CPU per answer: MintCA's worker against `openssl ocsp` (one process), on loopback.

    .venv/bin/python bench/ocsp_cpu.py [--seconds 5] [--runs 3] [--profile DIR] [--root DIR]

Wall-clock rates on a shared machine move with whatever else runs; the CPU time a server
spends per answer does not (much). This makes the CA of bench/ocsp.py, starts `mintca serve`
with one worker and `openssl ocsp -index` (one process), loads each with wrk
(bench/ocsp_requests.lua) and divides the server's CPU time (user + system, from /proc) by
the requests wrk completed; each workload runs `--runs` times and the lowest CPU per request
(the run least disturbed by other processes) is shown. `--profile DIR` also records py-spy
stacks (raw, for flame graphs) of the MintCA worker per workload. `--root DIR` serves another
checkout's code (e.g. main, for a before/after in one run).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ocsp import (
    ROOT,
    free_port,
    get_lines,
    make_ca,
    ocsp_requests,
    openssl_index,
    post_lines,
    responder_key,
    start_openssl,
    stop_group,
    wait_answering,
    worker_pids,
    write_requests,
    wrk,
)

from app.ca.keys import encode_kek, generate_kek

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / _TICKS


def measure(
    url: str, requests: Path, pids: list[int], args: argparse.Namespace, profile: Path | None
) -> tuple[float, float]:
    """(requests/s, server CPU µs per request) of one wrk run."""
    spy = None
    if profile is not None:
        command = [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "-r",
            "250",
            "-f",
            "raw",
            "-o",
            str(profile),
        ]
        command += ["-d", str(args.seconds), "-p", str(pids[0])]
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    before = cpu_seconds(pids)
    load = wrk(url, requests, seconds=args.seconds, connections=args.connections)
    used = cpu_seconds(pids) - before
    if spy is not None:
        spy.wait(timeout=60)
    count = load.rate * args.seconds  # wrk's rate is over its own -d seconds
    return load.rate, used / max(count, 1) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--only", default="", help="workloads whose name contains this")
    parser.add_argument("--no-openssl", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
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
        workloads = {
            "get": (get_lines("/ocsp/", plain), get_lines("/", plain)),
            "post": (post_lines(plain), post_lines(plain)),
            "nonce": (post_lines(with_nonce), post_lines(with_nonce)),
        }
        workloads = {k: v for k, v in workloads.items() if args.only in k}
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
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"], env=env, cwd=args.root, process_group=0
        )
        rows = []
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{public_url}/ready", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            pids = worker_pids(server.pid)
            for name, (mintca_lines, openssl_lines) in workloads.items():
                mintca_requests = write_requests(tmp / "mintca.txt", mintca_lines)
                wrk(f"{public_url}/ocsp", mintca_requests, seconds=1, connections=20)
                profile = args.profile / f"{name}.txt" if args.profile else None
                runs = [
                    measure(f"{public_url}/ocsp", mintca_requests, pids, args, profile)
                    for _ in range(args.runs)
                ]
                rows.append((name, "MintCA", *min(runs, key=lambda run: run[1])))
                if args.no_openssl:
                    continue
                openssl_requests = write_requests(tmp / "openssl.txt", openssl_lines)
                port = free_port()
                responder = start_openssl(index, issuer_pem, signer, port, 1)
                try:
                    url = f"http://127.0.0.1:{port}/"
                    wait_answering(url, plain[0], get=False)
                    runs = [
                        measure(url, openssl_requests, [responder.pid], args, None)
                        for _ in range(args.runs)
                    ]
                    rows.append((name, "openssl", *min(runs, key=lambda run: run[1])))
                finally:
                    stop_group(responder)
        finally:
            stop_group(server)
    print(
        f"\nwrk -t2 -c{args.connections} -d{args.seconds}s, lowest CPU of {args.runs} runs; "
        f"MintCA ({args.root}) with {args.workers} worker(s)"
    )
    print("| workload | server | requests/s | server CPU µs per request |")
    print("|---|---|---:|---:|")
    for name, server_name, rate, cpu in rows:
        print(f"| {name} | {server_name} | {rate:,.0f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
