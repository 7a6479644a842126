"""Starting and stopping a real `mintca serve` on 127.0.0.1 (both listeners, real TLS)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.config import Settings

STARTUP_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A running `mintca serve` and the files of its data dir."""

    public_url: str
    mtls_url: str
    mtls_port: int
    data_dir: Path
    settings: Settings
    log_path: Path

    @property
    def root_pem(self) -> Path:
        return self.data_dir / "root.pem"

    def ssl_context(self, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.root_pem))
        if cert is not None:
            context.load_cert_chain(str(cert), str(key) if key else None)
        return context

    def admin_client(self) -> httpx.Client:
        """httpx over real TLS with the data dir's admin bundle."""
        context = self.ssl_context(self.data_dir / "admin.pem", self.data_dir / "admin-key.pem")
        return httpx.Client(base_url=self.mtls_url, verify=context, timeout=30)

    def mtls_client(self, cert: Path, key: Path) -> httpx.Client:
        return httpx.Client(base_url=self.mtls_url, verify=self.ssl_context(cert, key), timeout=30)

    def public_client(self) -> httpx.Client:
        return httpx.Client(base_url=self.public_url, timeout=30, verify=self.ssl_context())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    settings: Settings,
    log_path: Path,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], LiveServer]:
    public_port, mtls_port = free_port(), free_port()
    scheme = "https" if (extra_env or {}).get("MINTCA_PUBLIC_TLS") == "true" else "http"
    public_url = f"{scheme}://127.0.0.1:{public_port}"
    env = {
        **os.environ,
        "MINTCA_DATA_DIR": str(settings.data_dir),
        "MINTCA_DATABASE_URL": settings.effective_database_url,
        "MINTCA_KEK": settings.kek or "",
        "MINTCA_PUBLIC_BIND": f"127.0.0.1:{public_port}",
        "MINTCA_MTLS_BIND": f"127.0.0.1:{mtls_port}",
        "MINTCA_PUBLIC_URL": public_url,
        "MINTCA_WORKERS": str(workers),
        "MINTCA_LOG_LEVEL": "warning",
        # Tests enroll over plain HTTP from 127.0.0.1, which needs this (README, Security).
        "MINTCA_ALLOW_INSECURE_TOKENS": "true",
        **(extra_env or {}),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=settings.data_dir.parent,
        )
    server = LiveServer(
        public_url=public_url,
        mtls_url=f"https://localhost:{mtls_port}",
        mtls_port=mtls_port,
        data_dir=settings.data_dir,
        settings=settings.model_copy(update={"public_url": public_url}),
        log_path=log_path,
    )
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mintca serve exited early:\n{server.log()}")
        try:
            ready = httpx.get(f"{public_url}/ready", timeout=1, verify=server.ssl_context())
            if ready.status_code == 200:
                with socket.create_connection(("127.0.0.1", mtls_port), timeout=1):
                    return process, server
        except (httpx.TransportError, OSError):
            pass
        time.sleep(0.1)
    stop_server(process)
    raise RuntimeError(f"mintca serve did not become ready:\n{server.log()}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
