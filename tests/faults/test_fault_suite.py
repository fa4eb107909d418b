"""The fault suite's CI tier, one test per fault (``python -m loadtest.faults --tier ci``).

Each test starts the fault's own cluster (gateway processes, proxies, and its own redis-server
or Postgres cluster where the nemesis stops one), loads it, injects the fault, heals it and
asserts the checker's verdict: no acknowledged edit lost, no ACK defect, every replica identical
to the store, every node ready and accepting new joins after the heal, no 1011 close, and
non-reading clients closed within ping interval + ping timeout (+ slack): bounds derived from
settings, never a speed bound. Every process, mount, schema and cluster is gone afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from loadtest.faults.nemeses import NEMESES, Nemesis
from loadtest.faults.runner import run_fault
from loadtest.faults.tier import CI


def marks_of(nemesis: Nemesis) -> list[pytest.MarkDecorator]:
    marks = [pytest.mark.slow]
    if nemesis.needs.redis == "shared":
        marks.append(pytest.mark.redis)
    if nemesis.needs.postgres == "shared":
        marks.append(pytest.mark.postgres)
    return marks


FAULTS = [pytest.param(n, marks=marks_of(n), id=n.name) for n in NEMESES]


def explain(result: dict[str, Any]) -> str:
    logs = ", ".join(result["logs"])
    return f"{result['fault']}: {result['failures']} (node logs: {logs})"


@pytest.mark.parametrize("nemesis", FAULTS)
async def test_fault_loses_nothing_and_the_cluster_recovers(
    nemesis: Nemesis, tmp_path: Path
) -> None:
    if nemesis.needs.tmpfs and os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the project machine runs tests as root)")
    result = await run_fault(nemesis, CI, tmp_path)
    why = explain(result)

    assert result["acked"] > 0, why
    assert result["lost"] == 0, why
    assert result["double_acks"] == 0, why
    assert not result["ack_defects"], why
    assert not [f for f in result["failures"] if "differs" in f or "not converged" in f], why
    assert set(result["readyz_after"].values()) == {200}, why
    assert not [f for f in result["failures"] if "new join" in f or "exited" in f], why
    assert 1011 not in {int(code) for code in result["close_codes"]}, why
    if "non_readers" in result:
        assert result["non_readers"]["still_open"] == 0, why
        assert result["non_readers"]["closed_after_s"] <= result["non_readers"]["bound_s"], why
    assert result["failures"] == [], why
