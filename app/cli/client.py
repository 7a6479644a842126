"""The HTTP client the operator and service commands share: mTLS with the admin bundle by
default, problem documents turned into one clear line and a non-zero exit.

Light at import: httpx and ssl are imported when a request is made, so `mintca --help` and
the command modules that import this one start fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    import httpx

    from app.config import Settings

DEFAULT_MTLS_URL = "https://localhost:8443"


@dataclass(frozen=True)
class Target:
    url: str
    cacert: Path | None
    cert: Path | None
    key: Path | None

    def client(self) -> httpx.Client:
        import ssl

        import httpx

        verify: ssl.SSLContext | bool = True
        if self.url.startswith("https://"):
            context = ssl.create_default_context(cafile=str(self.cacert) if self.cacert else None)
            if self.cert is not None:
                context.load_cert_chain(str(self.cert), str(self.key) if self.key else None)
            verify = context
        return httpx.Client(base_url=self.url, verify=verify, timeout=30.0)


def mtls_target(
    settings: Settings,
    url: str | None,
    cert: Path | None,
    key: Path | None,
    cacert: Path | None,
) -> Target:
    data_dir = settings.data_dir
    return Target(
        url or DEFAULT_MTLS_URL,
        cacert or data_dir / "root.pem",
        cert or data_dir / "admin.pem",
        key or data_dir / "admin-key.pem",
    )


def default_public_url(settings: Settings) -> str:
    """MINTCA_PUBLIC_URL, as https when the public listener serves TLS: tokens must not
    travel in clear (the listener refuses them over plain HTTP from other hosts)."""
    url = settings.base_url
    if settings.public_tls and url.startswith("http://"):
        url = "https://" + url.removeprefix("http://")
    return url


def public_target(settings: Settings, url: str | None, cacert: Path | None) -> Target:
    default_ca = settings.data_dir / "root.pem"
    return Target(
        url or default_public_url(settings),
        cacert or (default_ca if default_ca.exists() else None),
        None,
        None,
    )


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


def check(response: httpx.Response) -> httpx.Response:
    """Raise typer.Exit(1) with the problem's detail on any error answer."""
    if response.is_success:
        return response
    try:
        problem: Any = response.json()
        detail = f"{problem.get('title', '')}: {problem.get('detail', '')}"
    except ValueError:
        detail = response.text[:500]
    raise fail(f"HTTP {response.status_code} {detail}")


def request(target: Target, method: str, path: str, **kwargs: Any) -> httpx.Response:
    import ssl

    import httpx

    try:
        with target.client() as client:
            return check(client.request(method, path, **kwargs))
    except (httpx.TransportError, ssl.SSLError, OSError) as exc:
        raise fail(f"cannot reach {target.url}: {exc}") from exc
