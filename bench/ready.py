"""How fast `mintca serve` becomes ready: wall time from exec to the first 200 on /ready, to
every worker serving, the CPU time all MintCA processes spent until then, and each worker's
memory once ready. Loopback only; each run is a fresh server, stopped after it answered.

    .venv/bin/python bench/ready.py [--workers 2] [--runs 7] [--postgresql URL] [--profile FILE]

Rows: an initialised SQLite data dir (what a restart sees), the same with PostgreSQL when a
URL is given (a throwaway database beside the one named), and an empty data dir (`serve`
initialises it first, as `make run` does the first time). The target (issue 11) is <= 2 s
to /ready. `--profile` records one more start with py-spy from exec to the first 200 (raw
stacks to FILE) and prints where it went; with one worker, serving in the parent's process, as
py-spy finds forked children too late to see their first 50 ms. app/ and migrations/ are
byte-compiled first, as the Docker image does: with PYTHONDONTWRITEBYTECODE set, each start
would otherwise compile them from source.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 0.01
TIMEOUT_SECONDS = 60
SAMPLES_PER_SECOND = 250
# Where a start-up's py-spy samples go: the first of these in a stack names its phase.
PHASES = (
    ("serve_worker (app/server/workers.py", "worker: Services, apps, TLS, serving"),
    ("upgrade (app/db/migrate.py", "schema check (or migration)"),
    ("check_keys (app/services/keyring.py", "KEK check (unwrap every CA key)"),
    ("_find_and_load", "imports"),
)
# uvicorn logs this once per listener when a worker starts serving its sockets.
STARTED = re.compile(r"^(\S+ \S+) INFO uvicorn.error Started server process \[(\d+)\]", re.M)


@dataclass
class Run:
    ready_s: float  # exec -> first 200 on /ready
    all_workers_s: float  # exec -> the last worker serving (its uvicorn start line)
    cpu_s: float  # user + system CPU of every MintCA process until the first 200
    rss_mb: list[float]  # each worker, just after every worker serves
    pss_mb: list[float]  # the same, shared pages divided among the processes sharing them


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in a process group (Linux /proc)."""
    total = 0
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields is not None and int(fields[2]) == pgid:  # state, ppid, pgrp, ...
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB from /proc/PID/smaps_rollup."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    rss, pss = (re.search(rf"^{key}:\s+(\d+) kB", text, re.M) for key in ("Rss", "Pss"))
    assert rss is not None
    assert pss is not None
    return int(rss[1]) / 1024, int(pss[1]) / 1024


def worker_pids(parent: int) -> list[int]:
    """The serving processes: the parent's children (spawn's resource tracker aside), or the
    parent itself with one worker."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    pids = [
        pid
        for pid in map(int, children)
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]
    return pids or [parent]


def answers_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def one_run(env: dict[str, str], workers: int, log_path: Path) -> Run:
    port = free_port()
    env = {**env, "MINTCA_PUBLIC_BIND": f"127.0.0.1:{port}"}
    env["MINTCA_MTLS_BIND"] = f"127.0.0.1:{free_port()}"
    url = f"http://127.0.0.1:{port}/ready"
    with open(log_path, "wb") as log:
        started_wall, started = time.time(), time.monotonic()
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    try:
        while not answers_ready(url):
            if server.poll() is not None or time.monotonic() - started > TIMEOUT_SECONDS:
                raise RuntimeError(f"mintca serve did not become ready:\n{log_path.read_text()}")
            time.sleep(POLL_SECONDS)
        ready_s = time.monotonic() - started
        cpu_s = group_cpu_seconds(server.pid)
        while True:  # every worker serving: one start line per listener and worker
            serving = {pid for _, pid in STARTED.findall(log_path.read_text())}
            if len(serving) >= workers or time.monotonic() - started > TIMEOUT_SECONDS:
                break
            time.sleep(POLL_SECONDS)
        stamps = [
            datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
            for stamp, _ in STARTED.findall(log_path.read_text())
        ]
        memory = [memory_mb(pid) for pid in worker_pids(server.pid)]
        return Run(
            ready_s,
            max(max(stamps) - started_wall, ready_s),
            cpu_s,
            [rss for rss, _ in memory],
            [pss for _, pss in memory],
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def profile(env: dict[str, str], output: Path, log_path: Path) -> list[str]:
    """One start under py-spy, stopped at the first 200; the phases as table lines."""
    port = free_port()
    env = {**env, "MINTCA_PUBLIC_BIND": f"127.0.0.1:{port}"}
    env["MINTCA_MTLS_BIND"] = f"127.0.0.1:{free_port()}"
    command = [str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--subprocesses", "-f", "raw"]
    command += ["-r", str(SAMPLES_PER_SECOND), "-o", str(output), "--"]
    with open(log_path, "wb") as log:
        spy = subprocess.Popen(  # py-spy from the venv, fixed arguments
            [*command, sys.executable, "-m", "app.cli", "serve"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    started = time.monotonic()
    try:
        while not answers_ready(f"http://127.0.0.1:{port}/ready"):
            if spy.poll() is not None or time.monotonic() - started > TIMEOUT_SECONDS:
                raise RuntimeError(f"mintca serve did not become ready:\n{log_path.read_text()}")
            time.sleep(POLL_SECONDS)
    finally:
        for pid in Path(f"/proc/{spy.pid}/task/{spy.pid}/children").read_text().split():
            os.kill(int(pid), signal.SIGTERM)  # mintca serve; py-spy writes and exits after it
        spy.wait(timeout=30)
    return phases(output)


def phases(output: Path) -> list[str]:
    seconds: dict[tuple[str, str], float] = {}
    for line in output.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        processes = [f for f in frames if f.startswith("process ")]
        if len(processes) == len(frames):
            continue  # no Python frame: waiting
        role = "parent" if len(processes) == 1 else "worker"
        if "resource_tracker" in processes[-1]:
            role = "spawn's resource tracker"
        phase = next((name for key, name in PHASES if key in stack), "other")
        key = (role, phase)
        seconds[key] = seconds.get(key, 0.0) + int(count) / SAMPLES_PER_SECOND
    lines = [
        f"\npy-spy, 1 worker, exec to the first 200 ({output}): seconds sampled with Python "
        "running (on a busy machine this counts time waiting for a core too)\n",
        "| process | phase | s |",
        "|---|---|---:|",
    ]
    for (role, phase), value in sorted(seconds.items(), key=lambda item: -item[1]):
        lines.append(f"| {role} | {phase} | {value:.2f} |")
    return lines


def base_env(data_dir: Path, workers: int, database_url: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "MINTCA_DATA_DIR": str(data_dir),
        "MINTCA_WORKERS": str(workers),
        "MINTCA_LOG_LEVEL": "info",  # uvicorn's start line marks each worker serving
        "MINTCA_LOG_FORMAT": "text",
    }
    if database_url:
        env["MINTCA_DATABASE_URL"] = database_url
    return env


def initialise(env: dict[str, str]) -> None:
    subprocess.run(
        [sys.executable, "-m", "app.cli", "init"],
        env=env,
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def scratch_postgresql(url: str) -> tuple[str, str]:
    """A throwaway database beside the one named: (its URL, its name)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base, name = make_url(url), f"mintca_ready_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return base.set(database=name).render_as_string(hide_password=False), name


def drop_postgresql(url: str, name: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(make_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def row(label: str, runs: list[Run]) -> str:
    def median(values: list[float]) -> float:
        return statistics.median(values)

    def spread(values: list[float]) -> str:
        return f"{median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    rss = [max(run.rss_mb) for run in runs]
    pss = [max(run.pss_mb) for run in runs]
    return (
        f"| {label} | {spread([r.ready_s for r in runs])} | "
        f"{spread([r.all_workers_s for r in runs])} | {spread([r.cpu_s for r in runs])} | "
        f"{median(rss):.0f} / {median(pss):.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--postgresql",
        default=os.environ.get("MINTCA_TEST_DATABASE_URL"),
        help="a PostgreSQL URL (default: $MINTCA_TEST_DATABASE_URL); none: skip that row",
    )
    parser.add_argument("--profile", type=Path, help="py-spy raw stacks of one more start here")
    args = parser.parse_args()
    if args.profile and not (ROOT / ".venv" / "bin" / "py-spy").exists():
        raise SystemExit("--profile needs py-spy (make venv installs it with the dev tools)")
    for tree in ("app", "migrations"):
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / tree)], check=True)
    lines = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = base_env(tmp / "sqlite", args.workers, None)
        initialise(env)
        runs = [one_run(env, args.workers, tmp / "serve.log") for _ in range(args.runs)]
        lines.append(row("SQLite, initialised data dir", runs))
        if args.postgresql:
            url, name = scratch_postgresql(args.postgresql)
            try:
                env = base_env(tmp / "postgresql", args.workers, url)
                initialise(env)
                runs = [one_run(env, args.workers, tmp / "serve.log") for _ in range(args.runs)]
                lines.append(row("PostgreSQL, initialised data dir", runs))
            finally:
                drop_postgresql(args.postgresql, name)
        empty = []
        for n in range(max(1, args.runs // 2)):
            env = base_env(tmp / f"empty-{n}", args.workers, None)
            empty.append(one_run(env, args.workers, tmp / "serve.log"))
        lines.append(row("SQLite, empty data dir (serve initialises it)", empty))
        profiled = (
            profile(base_env(tmp / "sqlite", 1, None), args.profile, tmp / "spy.log")
            if args.profile
            else []
        )
    load = os.getloadavg()[0]
    print(
        f"\n`mintca serve` -> /ready, {args.workers} workers, median (min-max) of {args.runs} "
        f"runs; {os.cpu_count()} CPUs, load average {load:.1f}\n"
    )
    print(
        "| data dir | first 200 on /ready, s | every worker serving, s | CPU until ready, s "
        "| RSS / PSS per worker, MB |"
    )
    print("|---|---:|---:|---:|---:|")
    print("\n".join(lines + profiled))


if __name__ == "__main__":
    main()
