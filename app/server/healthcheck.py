"""`python -m app.server.healthcheck`: exit 0 when this host's MintCA answers 200 on /ready.

The container health check (Dockerfile, docker-compose.yml); the slim image has no curl. It
reads the same settings as `mintca serve` (MINTCA_PUBLIC_BIND, MINTCA_PUBLIC_TLS, the data
dir's root.pem to verify the listener when it speaks TLS)."""

from __future__ import annotations

import ssl
import sys
import urllib.error
import urllib.request

from app.config import Settings, parse_bind

TIMEOUT_SECONDS = 4.0
# A listener bound to every address is asked on loopback (the server certificate names
# 127.0.0.1 unless `init --server-name` said otherwise).
_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104  # only read


def ready_url(settings: Settings) -> str:
    host, port = parse_bind(settings.public_bind)
    host = _LOOPBACK.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if settings.public_tls else 'http'}://{host}:{port}/ready"


def check(settings: Settings) -> str | None:
    """None when /ready answers 200, else why not."""
    context = None
    if settings.public_tls:
        context = ssl.create_default_context(cafile=str(settings.data_dir / "root.pem"))
    url = ready_url(settings)
    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS) as answer:  # an http(s) URL built above
            status = answer.status
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {exc}"
    return None if status == 200 else f"{url}: HTTP {status}"


def main() -> None:
    problem = check(Settings())
    if problem is not None:
        print(f"not ready: {problem}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
