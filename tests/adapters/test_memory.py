"""The embedded adapters run the contracts: MemoryBus and SqliteStore (always, no services)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from gateway.adapters.memory_bus import MemoryBroker, MemoryBus
from gateway.adapters.sqlite_store import SqliteStore
from gateway.ports import Bus, Store
from gateway.types import NodeId
from tests.adapters.contracts import BusContract, BusFactory, StoreContract, StoreFactory


class TestMemoryBus(BusContract):
    @pytest.fixture
    def make_bus(self) -> BusFactory:
        broker = MemoryBroker()

        async def make(node_id: str) -> Bus:
            return MemoryBus(NodeId(node_id), broker)

        return make


SHARED_FILE_BUG = (
    "SqliteStore caches each room's last offset per instance, so a second instance on the same"
    " file (two processes sharing a data dir) reuses offsets: UNIQUE constraint failed."
    " Remove these overrides once the offset is read inside BEGIN IMMEDIATE."
)


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def make_store(self, tmp_path: Path) -> AsyncIterator[StoreFactory]:
        async with AsyncExitStack() as stack:

            async def make() -> Store:
                return await stack.enter_async_context(SqliteStore.open(tmp_path))

            yield make
