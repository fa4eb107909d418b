"""A vendor's view of 40 weddings: ``GET /v1/vendor/weddings`` vs opening the full documents.

    .venv/bin/python -m loadtest.bench_vendor_view --weddings 40 --entries 30 --edits 50

Starts ``gateway serve`` (embedded defaults, development mode), builds ``--weddings`` weddings
of ``--entries`` timeline entries each (six vendors, notes on every entry) edited ``--edits``
times (a history with tombstones, as a real season makes), and measures the bytes and the time
of what a vendor's dashboard gets:

- ``view``: one ``GET /v1/vendor/weddings`` for all of them (JSON; and gzip-compressed), with
  the rooms unloaded (read from the store) and loaded (a ``/mux`` socket holds them);
- ``mux``: the 40 full documents synced over one ``/mux`` socket (every sync step 2);
- ``json``: ``GET /v1/weddings/{id}`` for each (the full JSON view).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import secrets
import tempfile
import time
from pathlib import Path

import httpx
from pycrdt import Array, Doc, Map
from websockets.asyncio.client import connect

from loadtest.bench_mux import Editor, start_server, wait_listening
from loadtest.bench_mux import free_port as _free_port
from wedsync_protocol import codec, mux
from wedsync_protocol.messages import SyncStep1, SyncStep2, SyncUpdate

VENDORS = [f"vendor-{i}" for i in range(6)]


async def build(base: str, wedding: str, entries: int, edits: int) -> None:
    editor = Editor(base, wedding)
    await editor.open()
    doc = editor.doc
    assert editor.ws is not None
    before = doc.get_state()
    with doc.transaction():
        core = doc.get("core", type=Map)
        core["venue"] = "Quinta do Lago"
        core["wedding_date"] = "2027-06-12"
        core["notes"] = "Couple's private notes. " * 40
        timeline = doc.get("timeline", type=Array)
        for n in range(entries):
            timeline.append(
                Map(
                    {
                        "id": f"e{n}",
                        "title": f"Entry {n}",
                        "start": "10:00",
                        "end": "11:00",
                        "location": "Garden",
                        "vendor_id": VENDORS[n % len(VENDORS)],
                        "notes": f"Entry {n}: bring the ribbons, call {secrets.token_hex(12)}",
                    }
                )
            )
    await editor.ws.send(codec.encode(SyncUpdate(doc.get_update(before))))
    for n in range(edits):
        await editor.edit(notes=f"Couple's notes, version {n}: {secrets.token_hex(200)}")
    await editor.ws.close()


async def main(args: argparse.Namespace) -> None:
    port = _free_port()
    base = f"ws://127.0.0.1:{port}"
    http_base = f"http://127.0.0.1:{port}"
    weddings = [f"season-{i}" for i in range(args.weddings)]
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(port, Path(data_dir))
        try:
            await wait_listening(port)
            for wedding in weddings:
                await build(base, wedding, args.entries, args.edits)
            async with httpx.AsyncClient(base_url=http_base, timeout=30) as http:
                query = "&".join(f"wedding={w}" for w in weddings) + "&vendor_id=vendor-0"
                await http.get(f"/v1/vendor/weddings?{query}")  # warm: rooms unloaded or not
                started = time.perf_counter()
                view = await http.get(
                    f"/v1/vendor/weddings?{query}", headers={"Accept-Encoding": "identity"}
                )
                view_ms = (time.perf_counter() - started) * 1000
                raw = await http.stream("GET", f"/v1/vendor/weddings?{query}").__aenter__()
                view_br_bytes = len(b"".join([chunk async for chunk in raw.aiter_raw()]))
                await raw.aclose()
                assert view.status_code == 200, view.text
                started = time.perf_counter()
                full = [await http.get(f"/v1/weddings/{w}") for w in weddings]
                json_ms = (time.perf_counter() - started) * 1000

            received = 0
            started = time.perf_counter()
            async with connect(f"{base}/mux", compression=None, proxy=None, max_size=None) as ws:
                for wedding in weddings:
                    await ws.send(mux.encode_token(wedding, ""))
                    await ws.send(mux.encode_message(wedding, SyncStep1(Doc().get_state())))
                synced: set[str] = set()
                async for data in ws:
                    assert isinstance(data, bytes)
                    received += len(data)
                    name, kind, body = mux.decode_server(data)
                    if kind == mux.MuxType.SYNC and isinstance(body, SyncStep2):
                        synced.add(name)
                        if len(synced) == len(weddings):
                            break
                mux_ms = (time.perf_counter() - started) * 1000
                async with httpx.AsyncClient(base_url=http_base, timeout=30) as http:
                    started = time.perf_counter()  # the rooms are loaded now (the socket)
                    warm = await http.get(f"/v1/vendor/weddings?{query}")
                    warm_ms = (time.perf_counter() - started) * 1000
                    assert warm.status_code == 200, warm.text
        finally:
            server.terminate()
            server.wait(timeout=30)
    result = {
        "weddings": args.weddings,
        "entries_per_wedding": args.entries,
        "edits_per_wedding": args.edits,
        "view_bytes": len(view.content),
        "view_gzip_bytes": len(gzip.compress(view.content, 6)),
        "view_as_sent_bytes": view_br_bytes,
        "view_ms_rooms_unloaded": round(view_ms, 1),
        "view_ms_rooms_loaded": round(warm_ms, 1),
        "mux_full_sync_bytes": received,
        "mux_full_sync_ms": round(mux_ms, 1),
        "json_full_bytes": sum(len(r.content) for r in full),
        "json_full_ms": round(json_ms, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--weddings", type=int, default=40)
    parser.add_argument("--entries", type=int, default=30)
    parser.add_argument("--edits", type=int, default=50)
    asyncio.run(main(parser.parse_args()))
