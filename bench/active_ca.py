"""What reading the active issuing CA from the database costs: the price of "a rotation is
used by the next enrollment in every process" (enrollment signs with the CA it knows and
confirms it with one query inside its own write transaction). In-process, bounded.

    .venv/bin/python bench/active_ca.py [--calls 5000] [--database-url postgresql+psycopg://...]

Without --database-url it makes a throwaway SQLite data dir (WAL, synchronous=FULL).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from app.ca.keys import encode_kek, generate_kek
from app.clock import SystemClock
from app.config import Settings
from app.db.migrate import upgrade
from app.services.container import Services
from app.services.setup import InitOptions, initialise


def per_call(operation: Callable[[], object], calls: int) -> float:
    operation()  # warm the pool and the statement cache
    start = time.perf_counter()
    for _ in range(calls):
        operation()
    return (time.perf_counter() - start) / calls * 1e6


def measure(services: Services, calls: int) -> dict[str, float]:
    """Microseconds per call: the query inside a transaction the caller already has (what an
    enrollment adds), with a session of its own (/ca/chain.pem), and the watcher's check."""
    keyring = services.keyring
    with services.db.read() as session:
        in_transaction = per_call(lambda: keyring.active_issuer(session), calls)
    return {
        "in a transaction": in_transaction,
        "own session": per_call(keyring.active_issuer, calls),
        "refresh()": per_call(keyring.refresh, calls),
        "db.ping()": per_call(services.db.ping, calls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(
            data_dir=Path(directory) / "data",
            database_url=args.database_url,
            kek=encode_kek(generate_kek()),
            _env_file=None,
        )
        upgrade(settings.effective_database_url)
        initialise(settings, InitOptions(), SystemClock())
        services = Services(settings)
        try:
            results = measure(services, args.calls)
        finally:
            services.close()
    backend = settings.effective_database_url.split(":", 1)[0]
    print(f"{backend}, {args.calls} calls each")
    print(f"{'what':<20} {'µs per call':>12}")
    for what, micros in results.items():
        print(f"{what:<20} {micros:>12.0f}")


if __name__ == "__main__":
    main()
