"""Single revocations over the admin API against a live `mintca serve`: client processes, each
with keep-alive mTLS connections (Python's ssl + http.client, the admin certificate init made),
POST /admin/certificates/{serial}/revoke one serial at a time. Loopback only, bounded in time.

    .venv/bin/python bench/revoke.py [--duration 8] [--workers 2] [--clients 4]
        [--connections 8] [--profile stacks.txt] [--skip-sqlite]
        [postgresql+psycopg://mintca@127.0.0.1:5433/mintca]

It counts revocations committed (rows in the database) over the measured window (after a
1 s warm-up), the CPU seconds of every MintCA process and of the clients over that window,
and the CRL numbers used; then checks every 200 against the database. Prints a markdown
table. On a machine shared with other work, CPU milliseconds per revocation are the steadier
figure. `--profile` records py-spy stacks (`--gil`) of every worker during the window.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import os
import secrets
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from enroll import drop_postgresql, free_port, group_cpu_seconds, scratch_postgresql, stop
from sqlalchemy import create_engine, insert, text

from app.ca.keys import encode_kek, generate_kek
from app.clock import SystemClock
from app.config import Settings
from app.db.migrate import upgrade
from app.db.models import CertificateRecord
from app.services.setup import InitOptions, initialise

ROOT = Path(__file__).resolve().parent.parent
MINTCA = ROOT / ".venv" / "bin" / "mintca"
WARM_UP_SECONDS = 1.0
BODY = b'{"reason":"keyCompromise"}'


@dataclass(frozen=True)
class Result:
    rate: float
    revoked: int
    crl_numbers: int
    server_cpu_ms: float  # every MintCA process, per revocation
    client_cpu_ms: float  # the load generator, per revocation
    errors: int


def fill(url: str, ca_id: str, count: int, revoked: int) -> list[str]:
    """`count` good and `revoked` already revoked certificate rows (placeholder DER: a
    revocation reads serials and dates only). Returns the good serials."""
    now = datetime.now(UTC)
    serials = [format(secrets.randbits(159) | 1 << 150, "x") for _ in range(count + revoked)]

    def row(serial: str, is_revoked: bool) -> dict[str, Any]:
        return {
            "serial": serial,
            "ca_id": ca_id,
            "profile": "peer",
            "common_name": "h.internal",
            "names": [],
            "names_text": "",
            "not_before": now - timedelta(days=1),
            "not_after": now + timedelta(days=30),
            "der": b"\x00",
            "created_at": now,
            "revoked_at": now if is_revoked else None,
            "revocation_reason": "superseded" if is_revoked else None,
            "status_crl_number": 0 if is_revoked else None,
        }

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            rows = [row(s, n >= count) for n, s in enumerate(serials)]
            for start in range(0, len(rows), 5000):
                connection.execute(insert(CertificateRecord), rows[start : start + 5000])
    finally:
        engine.dispose()
    return serials[:count]


def revoked_count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = "SELECT count(*) FROM certificates WHERE revocation_reason = 'keyCompromise'"
            return int(connection.execute(text(query)).scalar_one())
    finally:
        engine.dispose()


def _client_thread(
    port: int, data: str, serials: list[str], deadline: float, done: list[str], errors: list[str]
) -> None:
    """Revoke serials one after another on one keep-alive mTLS connection until `deadline`."""
    context = ssl.create_default_context(cafile=f"{data}/root.pem")
    context.load_cert_chain(f"{data}/admin.pem", f"{data}/admin-key.pem")
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=60)
    headers = {"Content-Type": "application/json"}
    for serial in serials:
        if time.monotonic() > deadline:
            break
        connection.request("POST", f"/admin/certificates/{serial}/revoke", BODY, headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status == 200:
            done.append(serial)
        else:
            errors.append(f"{response.status} {answer[:200]!r}")
    connection.close()


def _client(job: tuple[int, str, list[str], int, float]) -> tuple[list[str], list[str], float]:
    """One client process with `connections` threads; returns what got its 200, the
    errors, and the process's CPU seconds."""
    port, data, serials, connections, seconds = job
    deadline = time.monotonic() + seconds
    done: list[str] = []
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=_client_thread,
            args=(port, data, serials[n::connections], deadline, done, errors),
        )
        for n in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done, errors, time.process_time()


def serve(settings: Settings, workers: int, workdir: Path) -> tuple[Any, int, int]:
    public_port, mtls_port = free_port(), free_port()
    env = {
        **os.environ,
        "MINTCA_DATA_DIR": str(settings.data_dir),
        "MINTCA_KEK": settings.kek or "",
        "MINTCA_PUBLIC_BIND": f"127.0.0.1:{public_port}",
        "MINTCA_MTLS_BIND": f"127.0.0.1:{mtls_port}",
        "MINTCA_PUBLIC_URL": f"http://127.0.0.1:{public_port}",
        "MINTCA_WORKERS": str(workers),
        "MINTCA_LOG_LEVEL": "warning",
    }
    if settings.database_url:
        env["MINTCA_DATABASE_URL"] = settings.database_url
    log = workdir / f"serve-{mtls_port}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(  # our own console script, fixed arguments
            [str(MINTCA), "serve"],
            env=env,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{public_port}/ready", timeout=1).status_code == 200:
                return process, public_port, mtls_port
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(process)
    raise SystemExit(f"mintca serve did not become ready within 60 s:\n{log.read_text()}")


def crl_number(public_port: int, ca_id: str) -> int:
    answer = httpx.get(f"http://127.0.0.1:{public_port}/crl/{ca_id}.crl")
    return int(answer.headers["etag"].strip('"').rsplit("-", 1)[1])


def measure(settings: Settings, args: argparse.Namespace, workdir: Path) -> Result:
    url = settings.effective_database_url
    upgrade(url)
    report = initialise(settings, InitOptions(), SystemClock())
    # Enough serials for 3,000/s over the whole run; 1,000 revoked ones already on the CRL.
    seconds = WARM_UP_SECONDS + args.duration + 1
    serials = fill(url, report.issuing_ca_id, int(3000 * seconds), 1000)
    process, public_port, mtls_port = serve(settings, args.workers, workdir)
    profiler = None
    try:
        first_number = crl_number(public_port, report.issuing_ca_id)
        jobs = [
            (
                mtls_port,
                str(settings.data_dir),
                serials[n :: args.clients],
                args.connections,
                seconds,
            )
            for n in range(args.clients)
        ]
        with multiprocessing.get_context("fork").Pool(args.clients) as pool:
            pending = pool.map_async(_client, jobs)
            time.sleep(WARM_UP_SECONDS)
            if args.profile:
                profiler = subprocess.Popen(  # py-spy from the venv, fixed arguments
                    [
                        str(ROOT / ".venv" / "bin" / "py-spy"),
                        "record",
                        "--subprocesses",
                        "--idle" if args.wall else "--gil",
                        "--format",
                        "raw",
                        "-o",
                        args.profile,
                        "-d",
                        str(args.duration),
                        "--pid",
                        str(process.pid),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            cpu0, count0, clock0 = group_cpu_seconds(process.pid), revoked_count(url), time.time()
            time.sleep(args.duration)
            cpu1, count1, clock1 = group_cpu_seconds(process.pid), revoked_count(url), time.time()
            outcomes = pending.get(timeout=seconds + 120)
        last_number = crl_number(public_port, report.issuing_ca_id)
        if profiler is not None:
            profiler.wait(timeout=60)
    finally:
        stop(process)
    done = [serial for answered, _, _ in outcomes for serial in answered]
    errors = [error for _, failed, _ in outcomes for error in failed]
    client_cpu = sum(cpu for _, _, cpu in outcomes)
    stored = revoked_count(url)
    if stored < len(done):
        raise SystemExit(f"{len(done)} revocations answered 200 but only {stored} stored")
    if errors:
        print(f"errors: {len(errors)}, first: {errors[0]}", file=sys.stderr)
    window = count1 - count0
    return Result(
        rate=window / (clock1 - clock0),
        revoked=len(done),
        crl_numbers=last_number - first_number,
        server_cpu_ms=(cpu1 - cpu0) * 1000 / max(window, 1),
        client_cpu_ms=client_cpu * 1000 / max(len(done), 1),
        errors=len(errors),
    )


def row(label: str, result: Result) -> str:
    per_crl = result.revoked / max(result.crl_numbers, 1)
    return (
        f"| {label} | {result.rate:,.0f} | {result.revoked:,} | {result.crl_numbers:,} "
        f"({per_crl:.1f} per CRL) | {result.errors} | {result.server_cpu_ms:.2f} | "
        f"{result.client_cpu_ms:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=8, help="seconds measured")
    parser.add_argument("--workers", type=int, default=2, help="MINTCA_WORKERS")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--connections", type=int, default=8, help="per client process")
    parser.add_argument("postgresql_url", nargs="?", help="the same as --postgresql")
    parser.add_argument(
        "--postgresql",
        default=os.environ.get("MINTCA_TEST_DATABASE_URL"),
        help="a PostgreSQL URL (default: $MINTCA_TEST_DATABASE_URL); none: skip that row",
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument(
        "--wall", action="store_true", help="profile every thread's wall time (py-spy --idle)"
    )
    parser.add_argument(
        "--profile", help="py-spy raw (collapsed) stacks of the window to this file"
    )
    args = parser.parse_args()
    args.postgresql = args.postgresql_url or args.postgresql
    lines = [
        f"single revocations over the admin API: {args.clients} x {args.connections} keep-alive "
        f"mTLS connections, {args.workers} worker(s), {args.duration} s measured",
        "",
        "| database | revocations/s | answered 200 | CRL numbers | errors "
        "| server CPU ms/revocation | client CPU ms/revocation |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    kek = encode_kek(generate_kek())
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        if not args.skip_sqlite:
            settings = Settings(data_dir=workdir / "sqlite", kek=kek, _env_file=None)
            lines.append(row("SQLite, synchronous=FULL", measure(settings, args, workdir)))
        if args.postgresql:
            url, name = scratch_postgresql(args.postgresql)
            try:
                settings = Settings(
                    data_dir=workdir / "postgresql", database_url=url, kek=kek, _env_file=None
                )
                lines.append(row("PostgreSQL", measure(settings, args, workdir)))
            finally:
                drop_postgresql(args.postgresql, name)
        else:
            lines.append("| PostgreSQL | skipped: no --postgresql URL given | | | | | |")
    load = os.getloadavg()[0]
    lines.append(f"\nload average at the end: {load:.1f} on {os.cpu_count()} cores")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
