"""The mtls listener's own OpenAPI document and Swagger UI page. Unlike FastAPI's built-in
pages they are ordinary routes, so the per-request peer check and a role apply to them, and
the page loads Swagger UI from the installed `swagger-ui-bundle` package, never from a CDN:
no third-party script ever runs in the admin origin."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response
from swagger_ui_bundle import swagger_ui_path

from app.api.deps import require_auditor
from app.errors import NotFoundError

# No inline script or style, nothing from another origin, no framing, no form posts.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MintCA mTLS API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"""
# In a file of its own: the CSP forbids inline scripts. validatorUrl null: Swagger UI would
# otherwise send the document to a public validator.
_INIT_JS = b"""window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: false
});
"""
_ASSET_TYPES = {
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
}

router = APIRouter(include_in_schema=False, dependencies=[Depends(require_auditor)])


def _headers() -> dict[str, str]:
    return {"Content-Security-Policy": DOCS_CSP, "X-Content-Type-Options": "nosniff"}


@functools.cache
def _asset(name: str) -> bytes:
    return (Path(swagger_ui_path) / name).read_bytes()


@router.get("/openapi.json")
async def openapi_document(request: Request) -> JSONResponse:
    document: dict[str, Any] = request.app.openapi()
    return JSONResponse(document, headers=_headers())


@router.get("/docs")
async def docs_page() -> Response:
    return Response(_PAGE, media_type="text/html; charset=utf-8", headers=_headers())


@router.get("/docs/init.js")
async def docs_init() -> Response:
    return Response(_INIT_JS, media_type="text/javascript; charset=utf-8", headers=_headers())


@router.get("/docs/{asset}")
def docs_asset(asset: str) -> Response:
    """Raises:
    NotFoundError: not one of the Swagger UI files the page uses."""
    if asset not in _ASSET_TYPES:
        raise NotFoundError(f"no documentation asset {asset!r}")
    return Response(_asset(asset), media_type=_ASSET_TYPES[asset], headers=_headers())
