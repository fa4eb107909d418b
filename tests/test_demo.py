"""gateway/demo.py: the demo page at ``/`` on a development node, nothing on a production one."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from gateway.demo import DEMO_DIR, demo_routes
from gateway.settings import Settings
from tests.conftest import RunningGateway, start_in_process, stop_in_process

DEMO_PATHS = ("/", "/sw.js", "/demo/demo.js", "/demo/demo.css")


async def test_development_node_serves_the_built_demo_page(gateway: RunningGateway) -> None:
    if not (DEMO_DIR / "index.html").is_file():
        pytest.fail(f"{DEMO_DIR} is not built: run `make install` (it builds clients/ts)")
    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        page = await client.get("/", params={"wedding": "demo"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert '<script type="module" src="/demo/demo.js">' in page.text
        script = await client.get("/demo/demo.js")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/javascript")
        assert (await client.get("/sw.js")).status_code == 200
        assert (await client.get("/demo/demo.css")).status_code == 200


async def test_production_node_serves_no_demo(tmp_path: Path) -> None:
    running = await start_in_process(
        tmp_path / "data", environment="production", jwt_secret="p" * 40
    )
    try:
        async with httpx.AsyncClient(base_url=running.http_url) as client:
            for path in DEMO_PATHS:
                assert (await client.get(path)).status_code == 404, path
            assert (await client.get("/livez")).status_code == 200
    finally:
        await stop_in_process(running)


def test_production_settings_give_no_demo_route() -> None:
    assert demo_routes(Settings(environment="production", jwt_secret=None)) == []
    assert len(demo_routes(Settings())) == 3


async def test_unbuilt_demo_answers_404_saying_how_to_build_it(tmp_path: Path) -> None:
    app = Starlette(routes=demo_routes(Settings(), tmp_path))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        page = await client.get("/")
        assert page.status_code == 404
        assert "make install" in page.text


async def test_only_the_demo_assets_are_served(tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("no")
    (tmp_path / "demo.js").write_text("export {}")
    app = Starlette(routes=demo_routes(Settings(), tmp_path))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        assert (await client.get("/demo/demo.js")).status_code == 200
        assert (await client.get("/demo/secret.txt")).status_code == 404
        assert (await client.get("/demo/..%2Fsecret.txt")).status_code == 404
