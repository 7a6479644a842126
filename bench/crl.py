"""CRL benchmarks: build a full CRL with 10k, 100k and 1M revoked entries (read from the
database, encoded, signed, stored), republish after one more revocation at the largest size,
and single revocations/s over the admin API against a live `mintca serve`. Loopback only,
bounded in count and time. Prints a markdown table.

    .venv/bin/python bench/crl.py [--sizes 10000,100000,1000000] [--revocations 3000]
        [--clients 4] [--connections 8] [--workers 1] [--no-api]

Each CRL size runs in a fresh child process (so its peak RSS is its own), on a fresh SQLite
data dir made by `mintca init` and filled with revoked certificate rows.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import resource
import secrets
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from app.ca.keys import encode_kek, generate_kek
from app.clock import SystemClock
from app.config import Settings
from app.db import certificates as certificate_queries
from app.services.container import Services
from app.services.crl_entries import encode_entry
from app.services.crls import PublishedCRL
from app.services.setup import InitOptions, initialise

TIME_LIMIT_SECONDS = 600
SQLITE_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime in SQLite
COLUMNS = (
    "serial",
    "ca_id",
    "profile",
    "common_name",
    "names",
    "names_text",
    "not_before",
    "not_after",
    "der",
    "token_id",
    "created_at",
    "revoked_at",
    "revocation_reason",
    "invalidity_date",
    "status_crl_number",
    "crl_entry",
)
REASONS = ["keyCompromise", "superseded", "unspecified", "cessationOfOperation"]


def settings_for(data_dir: Path, kek: str) -> Settings:
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'mintca.db'}",
        kek=kek,
        kek_file=None,
        _env_file=None,  # type: ignore[call-arg]  # pydantic-settings' init keyword
    )


def fill(database: Path, ca_id: str, revoked: int, *, good: int = 1) -> list[str]:
    """Insert `revoked` revoked and `good` unrevoked certificate rows (placeholder DER: the
    CRL needs serials, dates and reasons only). Returns the good serials."""
    now = datetime.now(UTC)
    stamp = lambda moment: moment.strftime(SQLITE_FORMAT)  # noqa: E731  # local shorthand
    not_before, not_after = stamp(now - timedelta(days=1)), stamp(now + timedelta(days=30))
    good_serials = [format(secrets.randbits(159) | 1 << 150, "x") for _ in range(good)]

    def rows(count: int, *, is_revoked: bool) -> Iterator[tuple[object, ...]]:
        for n in range(count):
            serial = format(secrets.randbits(159) | 1 << 150, "x")
            if not is_revoked:
                serial = good_serials[n]
            moment = now - timedelta(seconds=n)
            reason = REASONS[n % len(REASONS)]
            entry = encode_entry(serial, moment, reason, None) if is_revoked else None
            yield (
                serial,
                ca_id,
                "peer",
                f"h{n}.internal",
                "[]",
                "",
                not_before,
                not_after,
                b"\x00",
                None,
                not_before,
                stamp(moment) if is_revoked else None,
                reason if is_revoked else None,
                None,
                0 if is_revoked else None,
                entry,
            )

    connection = sqlite3.connect(database)
    try:
        marks = ", ".join("?" * len(COLUMNS))
        insert = f"INSERT INTO certificates ({', '.join(COLUMNS)}) VALUES ({marks})"
        with connection:
            connection.executemany(insert, rows(revoked, is_revoked=True))
            connection.executemany(insert, rows(good, is_revoked=False))
            # Rows written behind MintCA's back: drop the CRLs published before them, so the
            # next publication reads every entry from the certificates table (as the first
            # one after migration 0015 does).
            connection.execute("DELETE FROM crls WHERE ca_id = ?", (ca_id,))
            connection.execute("DELETE FROM crl_parts WHERE ca_id = ?", (ca_id,))
    finally:
        connection.close()
    return good_serials


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(work: Callable[[], object]) -> tuple[float, float, object]:
    """Wall and CPU seconds of `work()` (CPU time says more on a machine shared with others)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def child(data_dir: Path, kek: str, ca_id: str, good_serial: str) -> None:
    """In a fresh process: read the rows alone, a publication without kept entries (every
    row read from the database), then one revocation and its publication with the entries
    kept. Prints JSON."""
    services = Services(settings_for(data_dir, kek), clock=SystemClock())

    def read() -> int:
        with services.db.read() as session:
            cutoff = datetime.now(UTC) - timedelta(days=1)
            return sum(1 for _ in certificate_queries.stream_crl_entries(session, ca_id, cutoff))

    def revoke() -> object:
        return services.revocation.revoke(
            good_serial, reason="keyCompromise", invalidity_date=None, actor="bench"
        )

    read_wall, read_cpu, rows = timed(read)
    cold_wall, cold_cpu, published = timed(lambda: services.crls.publish_now(ca_id))
    rss_cold = peak_rss_mb()
    assert isinstance(published, PublishedCRL)
    crl_bytes = published.size
    del published  # a server does not hold on to it either
    revoke_wall, revoke_cpu, _ = timed(revoke)
    again_wall, again_cpu, _ = timed(lambda: services.crls.publish_now(ca_id))
    figures = {
        "rows": rows,
        "read": read_wall,
        "read_cpu": read_cpu,
        "cold": cold_wall,
        "cold_cpu": cold_cpu,
        "crl_bytes": crl_bytes,
        "revoke": revoke_wall,
        "revoke_cpu": revoke_cpu,
        "republish": again_wall,
        "republish_cpu": again_cpu,
        "rss_cold": rss_cold,
        "rss_peak": peak_rss_mb(),
    }
    print(json.dumps(figures))
    services.close()


def parts_child(data_dir: Path, kek: str, ca_id: str, good_serial: str) -> None:
    """In a fresh process, after `child` (the CRL's entries stored in parts): a publication
    reading those parts (what a restarted or second worker does), one more revocation, and
    reading the latest full CRL whole (what GET /crl/{ca_id}.crl serves). Prints JSON."""
    services = Services(settings_for(data_dir, kek), clock=SystemClock())
    wall, cpu, published = timed(lambda: services.crls.publish_now(ca_id))
    rss = peak_rss_mb()
    assert isinstance(published, PublishedCRL)
    del published
    revoke_wall, revoke_cpu, _ = timed(
        lambda: services.revocation.revoke(
            good_serial, reason="keyCompromise", invalidity_date=None, actor="bench"
        )
    )
    served_wall, served_cpu, served = timed(lambda: len(services.crls.latest(ca_id).der))
    figures = {
        "parts": wall,
        "parts_cpu": cpu,
        "rss_parts": rss,
        "revoke2": revoke_wall,
        "revoke2_cpu": revoke_cpu,
        "served": served_wall,
        "served_cpu": served_cpu,
        "served_bytes": served,
        "rss_parts_peak": peak_rss_mb(),
    }
    print(json.dumps(figures))
    services.close()


def run_child(mode: str, data_dir: Path, kek: str, ca_id: str, serial: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, mode, str(data_dir), kek, ca_id, serial],
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_SECONDS,
        check=True,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def crl_rows(size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, kek = Path(tmp) / "data", encode_kek(generate_kek())
        report = initialise(settings_for(data_dir, kek), InitOptions(), SystemClock())
        start = time.perf_counter()
        good = fill(data_dir / "mintca.db", report.issuing_ca_id, size, good=2)
        print(f"  filled {size:,} rows in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        result = run_child("--child", data_dir, kek, report.issuing_ca_id, good[0])
        result |= run_child("--parts-child", data_dir, kek, report.issuing_ca_id, good[1])
        return result


# --- revocations over the admin API --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _revoke_some(port: int, data: str, serials: list[str]) -> None:
    """Revoke each serial on one keep-alive mTLS connection."""
    context = ssl.create_default_context(cafile=f"{data}/root.pem")
    context.load_cert_chain(f"{data}/admin.pem", f"{data}/admin-key.pem")
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=60)
    body = b'{"reason":"keyCompromise"}'
    headers = {"Content-Type": "application/json"}
    for serial in serials:
        connection.request("POST", f"/admin/certificates/{serial}/revoke", body, headers)
        response = connection.getresponse()
        answer = response.read()
        if response.status != 200:
            raise RuntimeError(f"{response.status} {answer[:300]!r}")
    connection.close()


def _revoke_all(job: tuple[int, str, list[str], int]) -> int:
    """One client process with `connections` threads, one connection each."""
    port, data, serials, connections = job
    threads = [
        threading.Thread(target=_revoke_some, args=(port, data, serials[n::connections]))
        for n in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(serials)


def api_rows(
    revocations: int, clients: int, connections: int, workers: int
) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, kek = Path(tmp) / "data", encode_kek(generate_kek())
        report = initialise(settings_for(data_dir, kek), InitOptions(), SystemClock())
        serials = fill(data_dir / "mintca.db", report.issuing_ca_id, 1000, good=revocations)
        services = Services(settings_for(data_dir, kek), clock=SystemClock())
        services.crls.publish_now(report.issuing_ca_id)  # the CRL the server starts with
        services.close()
        public_port, mtls_port = free_port(), free_port()
        env = {
            **os.environ,
            "MINTCA_DATA_DIR": str(data_dir),
            "MINTCA_KEK": kek,
            "MINTCA_PUBLIC_BIND": f"127.0.0.1:{public_port}",
            "MINTCA_MTLS_BIND": f"127.0.0.1:{mtls_port}",
            "MINTCA_PUBLIC_URL": f"http://127.0.0.1:{public_port}",
            "MINTCA_WORKERS": str(workers),
            "MINTCA_LOG_LEVEL": "warning",
        }
        server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve"], env=env)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{public_port}/ready").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            before = httpx.get(f"http://127.0.0.1:{public_port}/crl/{report.issuing_ca_id}.crl")
            jobs = [
                (mtls_port, str(data_dir), serials[n::clients], connections) for n in range(clients)
            ]
            with multiprocessing.get_context("fork").Pool(clients) as pool:
                start = time.perf_counter()
                done = sum(pool.map(_revoke_all, jobs))
                elapsed = time.perf_counter() - start
            after = httpx.get(f"http://127.0.0.1:{public_port}/crl/{report.issuing_ca_id}.crl")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    numbers = int(after.headers["etag"].strip('"').rsplit("-", 1)[1]) - int(
        before.headers["etag"].strip('"').rsplit("-", 1)[1]
    )
    rate = done / elapsed
    return [
        (
            f"single revocations over the admin API ({clients} x {connections} connections,"
            f" {workers} worker(s), SQLite)",
            f"{rate:,.0f} /s ({done:,} in {elapsed:.1f} s, {numbers:,} CRL numbers)",
            "≥ 1,000 /s",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--revocations", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--connections", type=int, default=8, help="per client process")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--no-api", action="store_true")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--parts-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child or args.parts_child:
        data_dir, kek, ca_id, serial = args.child or args.parts_child
        (child if args.child else parts_child)(Path(data_dir), kek, ca_id, serial)
        return
    rows: list[tuple[str, str, str]] = []
    sizes = [int(s) for s in args.sizes.split(",")]
    for size in sizes:
        result = crl_rows(size)
        target = "≤ 2 s, ≤ 500 MB" if size == 1_000_000 else ""
        rows.append(
            (
                f"full CRL, {size:,} entries, read from the database, encoded, signed, stored",
                f"{result['cold']:.2f} s wall, {result['cold_cpu']:.2f} s CPU;"
                f" peak RSS {result['rss_cold']:.0f} MB; {result['crl_bytes'] / 1e6:.1f} MB DER",
                target,
            )
        )
        rows.append(
            (
                f"… of which reading the {size:,} rows (measured alone)",
                f"{result['read']:.2f} s wall, {result['read_cpu']:.2f} s CPU",
                "",
            )
        )
        if size == max(sizes):
            rows.append(
                (
                    f"one more revocation at {size:,} (revoke, publish full+delta, commit)",
                    f"{result['revoke']:.2f} s wall, {result['revoke_cpu']:.2f} s CPU;"
                    f" peak RSS {result['rss_peak']:.0f} MB",
                    "≤ 0.5 s",
                )
            )
            rows.append(
                (
                    f"republish with nothing changed at {size:,}",
                    f"{result['republish']:.2f} s wall, {result['republish_cpu']:.2f} s CPU",
                    "",
                )
            )
            rows.append(
                (
                    f"full CRL at {size:,} by a fresh process, from the stored parts",
                    f"{result['parts']:.2f} s wall, {result['parts_cpu']:.2f} s CPU;"
                    f" peak RSS {result['rss_parts']:.0f} MB",
                    target,
                )
            )
            rows.append(
                (
                    f"… then one more revocation at {size:,}",
                    f"{result['revoke2']:.2f} s wall, {result['revoke2_cpu']:.2f} s CPU;"
                    f" peak RSS {result['rss_parts_peak']:.0f} MB",
                    "≤ 0.5 s" if target else "",
                )
            )
            rows.append(
                (
                    f"reading the full CRL at {size:,} whole (what GET /crl/<ca>.crl serves)",
                    f"{result['served']:.2f} s wall, {result['served_cpu']:.2f} s CPU;"
                    f" {result['served_bytes'] / 1e6:.1f} MB",
                    "",
                )
            )
    if not args.no_api:
        rows.extend(api_rows(args.revocations, args.clients, args.connections, args.workers))
    load = os.getloadavg()[0]
    print(f"\nload average at the end: {load:.1f} on {os.cpu_count()} cores")
    print("\n| benchmark | result | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value} | {target} |")


if __name__ == "__main__":
    main()
