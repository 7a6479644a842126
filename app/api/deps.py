"""Dependencies: the process's Services, the verified peer certificate and the admin role."""

from __future__ import annotations

from typing import Annotated, cast

from cryptography import x509
from fastapi import Depends, Request

from app.errors import PeerRejectedError, PermissionDeniedError
from app.services.container import Services
from app.services.peers import Peer


def get_services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


ServicesDep = Annotated[Services, Depends(get_services)]


def peer_certificate(request: Request) -> x509.Certificate | None:
    """The client certificate the TLS layer verified, from the ASGI TLS extension
    (app.server.tls_scope puts it there; uvicorn does not)."""
    tls = request.scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    if not chain:
        return None
    try:
        return x509.load_pem_x509_certificate(chain[0].encode())
    except ValueError as exc:
        raise PeerRejectedError("the client certificate cannot be read") from exc


def get_peer(request: Request, services: ServicesDep) -> Peer:
    """Raises:
    PeerRejectedError: no certificate, or unknown, revoked, on hold or expired."""
    return services.peers.authenticate(peer_certificate(request))


PeerDep = Annotated[Peer, Depends(get_peer)]


def require_admin(peer: PeerDep) -> Peer:
    """Raises:
    PermissionDeniedError: the certificate is valid but not of the admin profile."""
    if not peer.is_admin:
        raise PermissionDeniedError("this route needs an admin certificate")
    return peer


AdminDep = Annotated[Peer, Depends(require_admin)]
