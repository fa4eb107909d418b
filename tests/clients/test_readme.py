"""clients/python/README.md names what exists: its install paths, modules, classes and methods."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "clients" / "python" / "README.md").read_text(encoding="utf-8")
DOTTED = sorted(set(re.findall(r"`(gateway_client(?:\.\w+)+)`", README)))
CLIENT_CALLS = sorted(set(re.findall(r"\bclient\.(\w+)\(", README)))


def test_the_readme_names_something_to_check() -> None:
    assert "gateway_client.sync.ClientSync" in DOTTED
    assert {"wait_synced", "wait_durable"} <= set(CLIENT_CALLS)


def test_the_install_line_names_the_two_distributions() -> None:
    paths = re.findall(r"pip install ((?:\./\S+ ?)+)", README)
    assert paths, "no pip install line"
    for path in paths[0].split():
        pyproject = ROOT / path / "pyproject.toml"
        assert pyproject.is_file(), path


@pytest.mark.parametrize("dotted", DOTTED)
def test_every_dotted_name_in_the_readme_resolves(dotted: str) -> None:
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
        try:
            target: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            target = getattr(target, attribute)
        return
    raise AssertionError(f"{dotted} does not resolve")


@pytest.mark.parametrize("method", CLIENT_CALLS)
def test_every_client_method_in_the_example_exists(method: str) -> None:
    from gateway_client import GatewayClient

    assert callable(getattr(GatewayClient, method))
