"""The demo page at ``/``, in development mode only: clients/ts's demo, built by ``make install``.

It opens the wedding named by ``?wedding=ID`` (default ``demo``) through the TypeScript SDK, with
``?token=`` when the gateway checks tokens. A production node (``GATEWAY_ENVIRONMENT=production``)
serves none of it: ``demo_routes`` gives no route there.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.settings import Settings

DEMO_DIR = Path(__file__).resolve().parent.parent / "clients" / "ts" / "dist" / "demo"
"""Where ``make install`` (``npm run build`` in clients/ts) puts the built demo."""
ASSETS = {"demo.js": "text/javascript", "demo.css": "text/css"}
NO_CACHE = {"Cache-Control": "no-cache"}  # the service worker keeps the offline copy


def demo_routes(settings: Settings, demo_dir: Path = DEMO_DIR) -> list[BaseRoute]:
    """``/``, ``/sw.js`` and ``/demo/{asset}`` in development mode; nothing in production."""
    if settings.environment == "production":
        return []

    async def page(request: Request) -> Response:
        return _file(demo_dir / "index.html", "text/html; charset=utf-8")

    async def service_worker(request: Request) -> Response:
        return _file(demo_dir / "sw.js", "text/javascript")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            return PlainTextResponse("no such demo file", status_code=404)
        return _file(demo_dir / name, ASSETS[name])

    return [
        Route("/", page, methods=["GET"]),
        Route("/sw.js", service_worker, methods=["GET"]),
        Route("/demo/{name}", asset, methods=["GET"]),
    ]


def _file(path: Path, media_type: str) -> Response:
    if not path.is_file():
        text = f"The demo page is not built ({path} is missing): run `make install`.\n"
        return PlainTextResponse(text, status_code=404)
    return FileResponse(path, media_type=media_type, headers=NO_CACHE)
