"""The soak tool (loadtest/soak.py): its slope, and one short run against a child gateway.

The run checks that the tool churns weddings, loses no edit and reports; never a memory bound.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from loadtest.soak import SoakConfig, slope_per_hour
from tests.conftest import ROOT

RUN_TIMEOUT = 180.0


def test_the_slope_is_least_squares_per_hour() -> None:
    assert slope_per_hour([(0.0, 10.0), (1800.0, 11.0), (3600.0, 12.0)]) == pytest.approx(2.0)
    noisy = [(0.0, 10.0), (60.0, 10.5), (120.0, 10.0), (180.0, 10.5)]
    assert slope_per_hour(noisy) == pytest.approx(6.0)  # 30 / 18000 per second
    assert slope_per_hour([(5.0, 1.0)]) is None
    assert slope_per_hour([(5.0, 1.0), (5.0, 2.0)]) is None


def test_churn_sets_how_long_each_wedding_lives() -> None:
    config = SoakConfig(
        minutes=30, clients=100, per_wedding=4, churn=10, warmup_minutes=5, rate=1,
        revisit=0.2, room_idle_seconds=2, sample_seconds=5, seed=1,
    )  # fmt: skip
    assert (config.slots, config.lifetime) == (25, 150.0)  # 25 slots, 10 replaced a minute


@pytest.mark.slow
async def test_a_short_soak_churns_weddings_and_loses_no_edit(tmp_path: Path) -> None:
    report = tmp_path / "soak.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "loadtest.soak", "--minutes", "0.3", "--clients", "8",
        "--churn", "40", "--warmup-minutes", "0.1", "--sample-seconds", "1", "--rate", "5",
        "--revisit", "0.5", "--room-idle-seconds", "0.2", "--report", str(report), cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(RUN_TIMEOUT):
        output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert "slope after warm-up" in output.decode()
    result = json.loads(report.read_text())
    counts = result["counts"]
    assert counts["weddings_opened"] > 2  # 2 slots: every slot opened a next wedding
    assert counts["revisits"] > 0
    assert counts["sent"] > 0
    assert (counts["lost"], counts["connect_failures"], counts["errors"]) == (0, 0, {})
    assert result["slope_mb_per_h"] is not None
    assert all(sample["rss"][0] > 0 for sample in result["samples"])
    assert max(s["rooms"][0] for s in result["samples"]) >= 1
