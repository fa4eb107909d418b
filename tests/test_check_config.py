"""``gateway check-config``: each problem on its own line (exit 2), or the settings, masked."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import check_config
from gateway.check_config import mask_url

ROOT = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-" + "k" * 40


def run(environ: dict[str, str], *, as_json: bool = False) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_config.run(environ, as_json=as_json, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_a_valid_environment_prints_every_setting_with_secrets_masked() -> None:
    code, out, _ = run(
        {
            "GATEWAY_DATABASE_URL": "postgresql://gateway:pg-pass-123@db:5432/wedsync",
            "GATEWAY_REDIS_URL": "redis://:redis-pass-456@redis:6379/0",
            "GATEWAY_JWT_SECRET": SECRET,
            "GATEWAY_WEBHOOK_URLS": "https://hooks.example/in?token=tok-789",
            "GATEWAY_WEBHOOK_SECRET": "whsec-abcdef",
            "GATEWAY_ENVIRONMENT": "production",
        },
        as_json=True,
    )
    assert code == 0
    for secret in (SECRET, "pg-pass-123", "redis-pass-456", "tok-789", "whsec-abcdef"):
        assert secret not in out
    shown = json.loads(out)
    assert shown["GATEWAY_DATABASE_URL"] == "postgresql://gateway:****@db:5432/wedsync"
    assert shown["GATEWAY_REDIS_URL"] == "redis://:****@redis:6379/0"
    assert shown["GATEWAY_JWT_SECRET"] == f"**** ({len(SECRET)} bytes)"
    assert shown["GATEWAY_WEBHOOK_URLS"] == "https://hooks.example/in?****"
    assert shown["GATEWAY_PORT"] == 8000  # defaults are shown too
    from gateway.settings import Settings

    assert len(shown) == len(Settings.__dataclass_fields__)


def test_the_table_marks_what_the_environment_set() -> None:
    code, out, err = run({"GATEWAY_PORT": "9001"})
    assert code == 0
    (port,) = [line for line in out.splitlines() if line.startswith("GATEWAY_PORT ")]
    assert port.split() == ["GATEWAY_PORT", "9001", "(set)"]
    (host,) = [line for line in out.splitlines() if line.startswith("GATEWAY_HOST ")]
    assert "(set)" not in host
    assert "configuration is valid" in err


def test_every_problem_is_listed_on_its_own_line_and_the_exit_is_2() -> None:
    code, out, err = run(
        {"GATEWAY_PORT": "0", "GATEWAY_DRAIN_SPREAD_SECONDS": "-1", "GATEWAY_JWT_SECRET": "short"}
    )
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "gateway: configuration is invalid (3 problems):"
    assert "  - GATEWAY_PORT must be between 1 and 65535." in lines
    assert any("GATEWAY_DRAIN_SPREAD_SECONDS" in line for line in lines)
    assert any("GATEWAY_JWT_SECRET must be at least 32 bytes" in line for line in lines)
    assert "short" not in err  # a bad secret is not repeated either


def test_unknown_names_and_unparsable_values_are_problems() -> None:
    code, _, err = run({"GATEWAY_PROT": "1", "GATEWAY_LEASE_SECONDS": "soon"})
    assert code == 2
    assert "  - GATEWAY_PROT is not a known setting." in err
    assert "  - GATEWAY_LEASE_SECONDS has value 'soon'. Not a valid float." in err


def test_what_serve_finds_building_the_app_is_found_too(tmp_path: Path) -> None:
    keys = tmp_path / "keys.pem"
    keys.write_text("not a key")
    code, _, err = run({"GATEWAY_JWT_PUBLIC_KEYS": str(keys)})
    assert code == 2
    assert "GATEWAY_JWT_PUBLIC_KEYS: a PEM file must hold exactly one public key." in err
    code, _, err = run(
        {"GATEWAY_DATABASE_URL": "postgresql://db/x", "GATEWAY_DATABASE_SCHEMA": "a;drop"}
    )
    assert code == 2
    assert "GATEWAY_DATABASE_SCHEMA" in err


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:p@h/db", "postgresql://u:****@h/db"),
        ("postgresql://u@h:5433/db", "postgresql://u@h:5433/db"),
        ("redis://[::1]:6379/0", "redis://[::1]:6379/0"),
        ("postgresql:///db?password=p&host=/run", "****"),  # no host: shown as nothing
        ("not a url", "****"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_the_command_line_runs_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", "--json"],
        env={"GATEWAY_PORT": "7001", "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["GATEWAY_PORT"] == 7001
    bad = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config"],
        env={"GATEWAY_PORT": "x", "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "GATEWAY_PORT has value 'x'" in bad.stderr
