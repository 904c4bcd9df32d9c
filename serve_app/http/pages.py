"""The pages people see, served by the app itself (no CDN, no build step), and the headers that guard them."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent.parent / "static"
DOCS = "/docs"
# Swagger UI's files, from the fastapi-offline package, so /docs needs no network.
DOCS_ASSETS = "/docs-assets"

# The pages load only their own scripts, styles and images (the result image is a blob: URL
# made from a fetch), talk only to this origin, and are never framed (no clickjacking).
PAGES_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Swagger UI sets inline style attributes and draws icons from data: URLs; its scripts
# still come only from here.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)


class SecurityHeaders:
    """ASGI middleware: `X-Content-Type-Options: nosniff` and a Content-Security-Policy on
    every response (streams included: it touches only the response's start)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Add the headers to the response's start message, leaving any a route set."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_POLICY if scope["path"] == DOCS else PAGES_POLICY

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Content-Security-Policy", policy)
            await send(message)

        await self.app(scope, receive, send_guarded)


def install(app: FastAPI) -> None:
    """Add the security headers, mount the static files and serve the pages and `/docs`."""
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount(DOCS_ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")

    @app.get("/", include_in_schema=False)
    async def user_page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/ops", include_in_schema=False)
    async def ops_page() -> FileResponse:
        return FileResponse(STATIC / "ops.html", media_type="text/html")

    @app.get(DOCS, include_in_schema=False)
    async def docs_page() -> FileResponse:
        return FileResponse(STATIC / "docs.html", media_type="text/html")
