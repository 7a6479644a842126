"""Dependencies: the process's Services, the verified peer certificate, the role each mtls route
declares (auditor, operator, admin; admin when it declares none) and the CSRF guard."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, cast

from cryptography import x509
from fastapi import Depends, Request

from app.api.media import media_type_of
from app.errors import (
    InvalidRequestError,
    PeerRejectedError,
    PermissionDeniedError,
    UnsupportedMediaTypeError,
)
from app.services.container import Services
from app.services.peers import Peer, Role


def get_services(request: Request) -> Services:
    return cast(Services, request.app.state.services)


ServicesDep = Annotated[Services, Depends(get_services)]


def reject_nul_in_query(request: Request) -> None:
    """PostgreSQL text cannot hold NUL (SQLite can): refuse it here, the same on both
    databases, before a search term reaches a LIKE.

    Raises:
    InvalidRequestError: a query parameter contains U+0000."""
    if any("\x00" in value for _name, value in request.query_params.multi_items()):
        raise InvalidRequestError("query parameters must not contain NUL (U+0000) characters")


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
    tls = request.scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or []
    return services.peers.authenticate_pem(chain[0] if chain else None)


PeerDep = Annotated[Peer, Depends(get_peer)]


def _check_role(peer: Peer, role: Role) -> Peer:
    """Raises:
    PermissionDeniedError: the certificate is valid but its role is below `role`."""
    if peer.role < role:
        raise PermissionDeniedError(
            f"this route needs the {role.name.lower()} role; the certificate's profile "
            f"{peer.profile!r} does not give it"
        )
    return peer


def require_certificate(peer: PeerDep) -> Peer:
    """Any valid certificate of MintCA (renewal)."""
    return peer


def require_auditor(peer: PeerDep) -> Peer:
    """Raises:
    PermissionDeniedError: not an auditor, operator or admin certificate."""
    return _check_role(peer, Role.AUDITOR)


def require_operator(peer: PeerDep) -> Peer:
    """Raises:
    PermissionDeniedError: not an operator or admin certificate."""
    return _check_role(peer, Role.OPERATOR)


def require_admin(peer: PeerDep) -> Peer:
    """Raises:
    PermissionDeniedError: the certificate is valid but not of the admin profile."""
    return _check_role(peer, Role.ADMIN)


# Each route of the mtls app declares its role by depending on one of these (a parameter of
# type AuditorDep/OperatorDep/AdminDep/CertificateDep, or `dependencies=[Depends(...)]`).
ROLE_CHECKS: dict[Callable[..., Peer], Role] = {
    require_certificate: Role.CERTIFICATE,
    require_auditor: Role.AUDITOR,
    require_operator: Role.OPERATOR,
    require_admin: Role.ADMIN,
}


def declared_role(route: Any) -> Role | None:
    """The strictest role a route's dependencies ask for, or None when it declares none."""
    found: list[Role] = []
    pending = list(getattr(getattr(route, "dependant", None), "dependencies", []))
    while pending:
        dependant = pending.pop()
        if dependant.call in ROLE_CHECKS:
            found.append(ROLE_CHECKS[dependant.call])
        pending.extend(dependant.dependencies)
    return max(found, default=None)


def require_declared_role(request: Request, peer: PeerDep) -> Peer:
    """The default of every mtls route: the role the route declares, and admin, the strictest,
    when it declares none (so a route that forgets to ask is still protected).

    Raises:
        PermissionDeniedError: the certificate's role is below the route's."""
    role = declared_role(request.scope.get("route"))
    return _check_role(peer, Role.ADMIN if role is None else role)


CertificateDep = Annotated[Peer, Depends(require_certificate)]
AuditorDep = Annotated[Peer, Depends(require_auditor)]
OperatorDep = Annotated[Peer, Depends(require_operator)]
AdminDep = Annotated[Peer, Depends(require_admin)]


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def require_json_writes(
    request: Request, _peer: Annotated[Peer, Depends(require_declared_role)]
) -> None:
    """CSRF guard for the mtls listener: a browser holding an admin certificate can be made to
    send a cross-origin form POST (urlencoded, multipart, text/plain) without a CORS
    preflight, but never `application/json`, which MintCA grants no preflight for. It runs
    after the role check, so a peer without the role learns only 403.

    Raises:
        UnsupportedMediaTypeError: a state-changing request that is not application/json."""
    if request.method in SAFE_METHODS:
        return
    media_type = media_type_of(request.headers.get("content-type"))
    if media_type != "application/json":
        raise UnsupportedMediaTypeError(
            f"{request.method} on this listener needs Content-Type: application/json, "
            f"not {media_type or 'none'!r}"
        )
