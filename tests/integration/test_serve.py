"""`mintca serve` as a process: on an empty data dir it initialises first; with
MINTCA_WORKERS=2 two worker processes serve both listeners; SIGTERM stops it gracefully, exit
code 0, nothing left behind."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from app.config import Settings
from tests.integration.live import start_server, stop_server

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not Path("/proc/self/stat").exists(), reason="inspects processes through Linux /proc"
    ),
]

STOP_SECONDS = 15  # SPEC-free budget for a graceful stop; the single worker must be far quicker
QUICK_STOP_SECONDS = 5
PRIVATE = 0o600


# --- Processes through /proc -------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ...), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"  # a zombie has exited


def children(pid: int) -> dict[int, str]:
    """Live child processes of `pid` and their command lines (what `ps --ppid PID` shows)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None or fields[0] == "Z" or int(fields[1]) != pid:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError):
            continue
        found[int(entry.name)] = cmdline
    return found


def listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP `port` (from /proc/net/tcp and tcp6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def socket_inodes(pid: int) -> set[str]:
    """Inodes of the sockets process `pid` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if str(target).startswith("socket:["):
            inodes.add(str(target)[len("socket:[") : -1])
    return inodes


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """Wait until none of `pids` is alive; return those still alive after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        left = [pid for pid in pids if alive(pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def refuses_connections(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return True
    return False


def terminate(process: subprocess.Popen[bytes], seconds: float) -> tuple[int, float]:
    """SIGTERM the server; its exit code and how long it took (kills it if it hangs)."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        pytest.fail(f"mintca serve did not stop within {seconds} s of SIGTERM")
    return code, time.monotonic() - started


# --- Serve on an empty data dir ----------------------------------------------------------------


@pytest.mark.parametrize("kek_source", ["MINTCA_KEK", "kek file"])
def test_serve_on_an_empty_data_dir_initialises_first(
    kek_source: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """With MINTCA_KEK: the test's fresh database (SQLite or PostgreSQL). Without: the defaults
    of a developer's first run, SQLite in the data dir and a KEK file init makes, mode 0600."""
    data_dir = tmp_path / "data"
    assert not data_dir.exists()
    if kek_source == "MINTCA_KEK":
        settings = Settings(
            data_dir=data_dir,
            database_url=request.getfixturevalue("database_url"),
            kek=request.getfixturevalue("kek"),
            _env_file=None,
        )
    else:
        settings = Settings(data_dir=data_dir, _env_file=None)

    process, server = start_server(settings, tmp_path / "serve.log")
    try:
        for name in ("root.pem", "ca-chain.pem", "server.pem", "admin.pem"):
            assert (data_dir / name).is_file(), name
        for name in ("server-key.pem", "admin-key.pem"):
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == PRIVATE, name
        if kek_source == "kek file":
            assert stat.S_IMODE((data_dir / "kek").stat().st_mode) == PRIVATE
            assert (data_dir / "mintca.db").is_file()
        else:
            assert not (data_dir / "kek").exists(), "MINTCA_KEK given: no KEK file"

        (root,) = x509.load_pem_x509_certificates((data_dir / "root.pem").read_bytes())
        issuing, chain_root = x509.load_pem_x509_certificates(
            (data_dir / "ca-chain.pem").read_bytes()
        )
        assert chain_root == root
        assert issuing.issuer == root.subject

        # The admin bundle init wrote is accepted by the mtls listener (real TLS, verified
        # against the root.pem it wrote, server certificate for `localhost`).
        with server.admin_client() as admin:
            response = admin.get("/admin/cas")
        assert response.status_code == 200, response.text
        assert {ca["kind"] for ca in response.json()} == {"root", "issuing"}
        with server.public_client() as public:
            assert public.get("/ca/root.pem").content == (data_dir / "root.pem").read_bytes()
    finally:
        stop_server(process)
    assert process.returncode == 0, server.log()


# --- Workers -----------------------------------------------------------------------------------


def test_two_workers_serve_both_listeners_and_sigterm_stops_all(
    initialised_settings: Settings, tmp_path: Path
) -> None:
    process, server = start_server(initialised_settings, tmp_path / "serve.log", workers=2)
    try:
        family = children(process.pid)
        # Forked from the parent, which imported everything already: a worker runs the
        # parent's command line, not a new interpreter (multiprocessing's spawn_main).
        parent = Path(f"/proc/{process.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        workers = [pid for pid, cmdline in family.items() if cmdline == parent]
        assert len(workers) == 2, f"children of {process.pid} ({parent}): {family}"

        # Each worker holds both listening sockets (the parent bound them, the workers serve).
        public_port = int(server.public_url.rsplit(":", 1)[1])
        listening = listening_inodes(public_port) | listening_inodes(server.mtls_port)
        assert len(listening) == 2, listening
        for pid in workers:
            assert listening <= socket_inodes(pid), f"worker {pid} lacks a listener"

        # 20 requests, each on a fresh connection (a new client), both listeners in turn.
        for n in range(20):
            if n % 2:
                with server.public_client() as public:
                    response = public.get("/health")
                assert response.status_code == 200
                assert response.json() == {"status": "ok"}
            else:
                with server.admin_client() as admin:
                    response = admin.get("/admin/cas")
                assert response.status_code == 200, response.text

        check_worker_cpus(workers)
    except BaseException:
        stop_server(process)
        raise

    code, _ = terminate(process, STOP_SECONDS)
    assert code == 0, server.log()
    left = wait_gone(list(family), 5)
    assert not left, f"left behind after SIGTERM: {[family[pid] for pid in left]}"
    assert refuses_connections(f"{server.public_url}/health")
    assert "Traceback" not in server.log(), server.log()


def check_worker_cpus(workers: list[int]) -> None:
    """MINTCA_CPU_AFFINITY=auto: with a worker per CPU, every thread each worker has by now
    (its event loop, the threads its requests started) keeps to that worker's own CPU, and no
    two workers share one; otherwise none is pinned. Threads inherit the CPU set of the
    thread that starts them, so the group-commit writer, started on a first enrollment,
    follows its loop's."""
    allowed = os.sched_getaffinity(0)
    threads = {pid: cpus_of_threads(pid) for pid in workers}
    if len(allowed) != len(workers):
        assert all(cpus == allowed for each in threads.values() for cpus in each), threads
        return
    own = {pid: each[0] for pid, each in threads.items()}
    assert all(len(cpus) == 1 for cpus in own.values()), threads
    assert all(cpus == own[pid] for pid, each in threads.items() for cpus in each), threads
    assert set().union(*own.values()) == allowed, threads


def cpus_of_threads(pid: int) -> list[set[int]]:
    """The CPU set of each thread of `pid` (a thread that ends meanwhile is left out)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.append(os.sched_getaffinity(int(task.name)))
        except ProcessLookupError:
            continue
    return found


def test_sigterm_stops_a_single_worker_server_quickly_and_cleanly(
    initialised_settings: Settings, tmp_path: Path
) -> None:
    process, server = start_server(initialised_settings, tmp_path / "serve.log")
    clients: list[httpx.Client] = []
    try:
        # Idle keep-alive connections on both listeners must not hold the shutdown up.
        clients = [server.public_client(), server.admin_client()]
        assert clients[0].get("/health").status_code == 200
        assert clients[1].get("/admin/cas").status_code == 200
        family = children(process.pid)
        code, elapsed = terminate(process, STOP_SECONDS)
    except BaseException:
        stop_server(process)
        raise
    finally:
        for client in clients:
            client.close()
    assert code == 0, server.log()
    assert elapsed < QUICK_STOP_SECONDS, f"took {elapsed:.1f} s"
    assert not wait_gone(list(family), 5)
    assert refuses_connections(f"{server.public_url}/health")
    assert not list(initialised_settings.data_dir.glob(".mtls-trust-*")), "trust bundle left"
    assert "Traceback" not in server.log(), server.log()
