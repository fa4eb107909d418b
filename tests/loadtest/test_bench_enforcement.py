"""``python -m loadtest.bench_enforcement`` runs and prints its table (never a speed bound)."""

from __future__ import annotations

import pytest

from loadtest import bench_enforcement


def test_the_bench_prints_one_row_per_kind_of_update(capsys: pytest.CaptureFixture[str]) -> None:
    rows = bench_enforcement.main(["-n", "3", "--warmup", "1", "--entries", "2"])

    assert [row.name for row in rows] == [case.name for case in bench_enforcement.CASES]
    assert all(row.n == 3 and row.bytes > 0 for row in rows)
    output = capsys.readouterr().out
    assert "off p50" in output
    assert all(case.name in output for case in bench_enforcement.CASES)
