"""Enrollment stored durably, over real HTTP against `mintca serve`: wrk (20 connections) POSTs a
JSON CSR with a many-use token to an EC P-256 issuing CA, on SQLite (WAL, synchronous=FULL) and
on PostgreSQL. Loopback only, bounded in time. Prints a markdown table.

    .venv/bin/python bench/enroll.py [--duration 10] [--workers 2] [--connections 20] [--profile F]
                                     [postgresql+psycopg://mintca@127.0.0.1:5433/mintca]

The PostgreSQL row runs in a throwaway database made beside the one named (the role must be
allowed to create databases); without --postgresql the row is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.ca.keys import encode_kek, generate_kek
from app.clock import SystemClock
from app.config import Settings
from app.db.migrate import upgrade
from app.services.container import Services
from app.services.setup import InitOptions, initialise

ROOT = Path(__file__).resolve().parent.parent
MINTCA = ROOT / ".venv" / "bin" / "mintca"
# Each request sends one of CSRS distinct CSRs (own key, own name under ZONE), in turn: a
# fleet of services, not one client asking again, so no cache keyed on a CSR's names or bytes
# can flatter the figure (there are more of them than any such cache keeps).
ZONE = "bench.internal"
CSRS = 4096
MAX_USES = 100_000  # the schema's ceiling; a 10 s run at the target spends about 25,000


def wrk_script(bodies: list[str], headers: dict[str, str]) -> str:
    """A wrk Lua script that POSTs the bodies in turn with these headers."""
    lines = ['wrk.method = "POST"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    lines.append("bodies = {")  # JSON string escapes are Lua string escapes
    lines += [f"  {json.dumps(body)}," for body in bodies]
    lines += [
        "}",
        "sent = 0",
        "request = function()",
        "  sent = sent + 1",
        "  return wrk.format(nil, nil, nil, bodies[sent % #bodies + 1])",
        "end",
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Result:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int
    stored: int
    cpu_ms: float  # CPU time of every MintCA process per stored enrollment
    idle_percent: float  # of the whole machine during the run: what the server left unused


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited meanwhile
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def machine_jiffies() -> tuple[int, int]:
    """(idle + iowait, all) jiffies of every CPU since boot (Linux /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return fields[3] + fields[4], sum(fields)


def idle_percent(before: tuple[int, int], after: tuple[int, int]) -> float:
    return 100 * (after[0] - before[0]) / max(after[1] - before[1], 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def csr_pem(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def csr_pems(count: int = CSRS) -> list[str]:
    """`count` CSRs of their own keys, for s0.ZONE, s1.ZONE, ..."""
    return [csr_pem(f"s{n}.{ZONE}") for n in range(count)]


def prepare(settings: Settings) -> str:
    """Schema, CAs (EC P-256 issuing CA) and a many-use token; returns the token."""
    upgrade(settings.effective_database_url)
    initialise(settings, InitOptions(issuing_key="ec-p256"), SystemClock())
    services = Services(settings)
    try:
        created = services.tokens.create(
            actor="bench",
            profiles=["server"],
            names=[f"*.{ZONE}"],
            ttl=timedelta(hours=1),
            max_uses=MAX_USES,
            max_validity_days=None,
        )
    finally:
        services.close()
    return created.token


def stored_count(url: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM certificates")).scalar_one())
    finally:
        engine.dispose()


def serve(
    settings: Settings, *, workers: int, port: int, environ: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """`mintca serve` in a process group of its own, its output in `log` (wrk's closing
    connections leave disconnect tracebacks there), once /ready answers."""
    env = {
        **environ,
        "MINTCA_DATA_DIR": str(settings.data_dir),
        "MINTCA_KEK": settings.kek or "",
        "MINTCA_PUBLIC_BIND": f"127.0.0.1:{port}",
        "MINTCA_MTLS_BIND": f"127.0.0.1:{free_port()}",
        "MINTCA_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "MINTCA_WORKERS": str(workers),
        "MINTCA_ALLOW_INSECURE_TOKENS": "true",
        "MINTCA_LOG_LEVEL": "warning",
        # The per-process rate limits would cap the run below what is measured here.
        "MINTCA_ENROLL_RATE_PER_ADDRESS": "100000",
        "MINTCA_ENROLL_BURST_PER_ADDRESS": "1000000",
        "MINTCA_ENROLL_RATE_PER_TOKEN": "100000",
        "MINTCA_ENROLL_BURST_PER_TOKEN": "1000000",
    }
    if settings.database_url:
        env["MINTCA_DATABASE_URL"] = settings.database_url
    with open(log, "wb") as output:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(  # our own console script, fixed arguments
            [str(MINTCA), "serve"],
            env=env,
            start_new_session=True,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(process)
    raise SystemExit(f"mintca serve did not become ready within 30 s:\n{log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """Requests/s, p50 and p99 in ms, and the count of non-2xx answers and socket errors."""

    def millis(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        if match is None:
            raise SystemExit(f"wrk printed no {label}th percentile:\n{output}")
        value, unit = float(match[1]), match[2]
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None:
        raise SystemExit(f"wrk printed no rate:\n{output}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses:\s+(\d+)", output))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    return float(rate[1]), millis("50"), millis("99"), errors


def run_wrk(
    port: int,
    token: str,
    *,
    connections: int,
    duration: int,
    workdir: Path,
    pgid: int,
    count: Callable[[], int],
) -> tuple[str, float, int, float]:
    """wrk's output, the server's CPU seconds, the certificates stored and the machine's idle
    percentage, all over the measured run only."""
    script = workdir / "enroll.lua"
    bodies = [
        json.dumps({"csr": csr, "profile": "server", "validity_days": 30}) for csr in csr_pems()
    ]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    script.write_text(wrk_script(bodies, headers))
    url = f"http://127.0.0.1:{port}/v1/certificates"
    # Warm-up: every worker's pools, caches and threads, outside the measured run.
    subprocess.run(  # wrk from PATH, fixed arguments
        ["wrk", "-t2", f"-c{connections}", "-d2s", "-s", str(script), url],
        check=True,
        capture_output=True,
    )
    cpu_before, stored_before = group_cpu_seconds(pgid), count()
    jiffies = machine_jiffies()
    completed = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
        timeout=duration + 30,
    )
    idle = idle_percent(jiffies, machine_jiffies())
    return completed.stdout, group_cpu_seconds(pgid) - cpu_before, count() - stored_before, idle


def measure(settings: Settings, args: argparse.Namespace, workdir: Path) -> Result:
    token = prepare(settings)
    port = free_port()
    process = serve(
        settings,
        workers=args.workers,
        port=port,
        environ=dict(os.environ),
        log=workdir / f"serve-{port}.log",
    )
    profiler = None
    if args.profile:
        # py-spy samples every worker process during the measured run (not the warm-up).
        profiler = subprocess.Popen(  # py-spy from the venv, fixed arguments
            [
                str(ROOT / ".venv" / "bin" / "py-spy"),
                "record",
                "--subprocesses",
                "--gil",
                "--format",
                "raw",
                "-o",
                args.profile,
                "-d",
                str(args.duration + 4),
                "--pid",
                str(process.pid),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    try:
        output, cpu_seconds, stored_during, idle = run_wrk(
            port,
            token,
            connections=args.connections,
            duration=args.duration,
            workdir=workdir,
            pgid=process.pid,
            count=lambda: stored_count(settings.effective_database_url),
        )
        if profiler is not None:
            profiler.wait(timeout=60)
    finally:
        stop(process)
    if args.verbose:
        print(output, file=sys.stderr)
    rate, p50, p99, errors = parse_wrk(output)
    cpu_ms = cpu_seconds * 1000 / max(stored_during, 1)
    return Result(rate, p50, p99, errors, stored_during, cpu_ms, idle)


def scratch_postgresql(url: str) -> tuple[str, str]:
    """A throwaway database beside the one named: (its URL, its name)."""
    base = make_url(url)
    name = f"mintca_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False), name


def drop_postgresql(url: str, name: str, *, attempts: int = 5) -> None:
    """Drop the throwaway database; a run's figures are never lost to it. FORCE may not end
    a session of another role (an autovacuum worker, when the role is no superuser): then
    wait for it, and in the end leave the database with a note."""
    admin = create_engine(make_url(url), isolation_level="AUTOCOMMIT")
    try:
        for attempt in range(attempts):
            try:
                with admin.connect() as connection:
                    connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                return
            except DBAPIError as exc:
                if attempt == attempts - 1:
                    print(f"note: database {name} left behind: {exc.orig}", file=sys.stderr)
                else:
                    time.sleep(1)
    finally:
        admin.dispose()


def row(label: str, result: Result) -> str:
    return (
        f"| {label} | {result.requests_per_second:,.0f} | {result.p50_ms:.1f} | "
        f"{result.p99_ms:.1f} | {result.stored:,} | {result.errors} | {result.cpu_ms:.2f} | "
        f"{result.idle_percent:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=10, help="seconds of measured load")
    parser.add_argument("--workers", type=int, default=2, help="MINTCA_WORKERS")
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("postgresql_url", nargs="?", help="the same as --postgresql")
    parser.add_argument(
        "--postgresql",
        default=os.environ.get("MINTCA_TEST_DATABASE_URL"),
        help="a PostgreSQL URL (default: $MINTCA_TEST_DATABASE_URL); none: skip that row",
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-cfssl", action="store_true", help="no CFSSL row (the peer)")
    parser.add_argument("--profile", help="py-spy raw (collapsed) stacks of the run to this file")
    parser.add_argument("--verbose", action="store_true", help="wrk's own output on stderr")
    args = parser.parse_args()
    args.postgresql = args.postgresql_url or args.postgresql
    if args.profile and not (ROOT / ".venv" / "bin" / "py-spy").exists():
        raise SystemExit("--profile needs py-spy (make venv installs it with the dev tools)")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    lines = [
        f"enrollment stored durably: JSON CSR, EC P-256 issuing CA, {args.connections} "
        f"connections (wrk -t2), {args.workers} worker(s), {args.duration} s",
        "",
        "| database | requests/s | p50 ms | p99 ms | stored | errors | server CPU ms/enrollment "
        "| machine idle % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    kek = encode_kek(generate_kek())
    with tempfile.TemporaryDirectory() as directory:
        workdir = Path(directory)
        sqlite = None
        if not args.skip_sqlite:
            settings = Settings(data_dir=workdir / "sqlite", kek=kek, _env_file=None)
            sqlite = measure(settings, args, workdir)
            lines.append(row("SQLite, synchronous=FULL", sqlite))
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
            lines.append("| PostgreSQL | skipped: no --postgresql URL given | | | | | | |")
    if not args.skip_cfssl:
        lines.extend(peer_rows(args, sqlite))
    print("\n".join(lines))


def peer_rows(args: argparse.Namespace, sqlite: Result | None) -> list[str]:
    """CFSSL under the same load, and MintCA's ratio to it (issue 11: at least 3x)."""
    import cfssl  # bench/cfssl.py, beside this script

    if not cfssl.available():
        return ["| CFSSL | skipped: cfssl is not installed (Debian: golang-cfssl) | | | | | | |"]
    peer = cfssl.measure(duration=args.duration, connections=args.connections)
    lines = [row("CFSSL 1.2, SQLite certdb (peer)", peer)]
    if sqlite is not None:
        ratio = sqlite.requests_per_second / max(peer.requests_per_second, 1e-9)
        lines += ["", f"MintCA on SQLite / CFSSL: **{ratio:.2f}x** requests/s (target: >= 3x)"]
    return lines


if __name__ == "__main__":
    main()
