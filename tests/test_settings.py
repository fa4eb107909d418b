"""Settings: one object, GATEWAY_* variables, every one documented in the README."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.port == 8000
    assert settings.data_dir == Path("data")
    assert settings.node_id.startswith("node-")


def test_values_are_parsed_by_type() -> None:
    settings = Settings.from_env(
        {
            "GATEWAY_PORT": "9001",
            "GATEWAY_ROOM_IDLE_SECONDS": "2.5",
            "GATEWAY_WS_PER_MESSAGE_DEFLATE": "true",
            "GATEWAY_DATA_DIR": "/tmp/x",
        }
    )
    assert (settings.port, settings.room_idle_seconds) == (9001, 2.5)
    assert settings.ws_per_message_deflate is True
    assert settings.data_dir == Path("/tmp/x")


def test_every_bad_value_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {"GATEWAY_PORT": "abc", "GATEWAY_WS_PER_MESSAGE_DEFLATE": "maybe", "GATEWAY_PROT": "1"}
        )
    message = str(caught.value)
    assert "GATEWAY_PORT has value 'abc'. Not a valid int." in message
    assert "GATEWAY_WS_PER_MESSAGE_DEFLATE has value 'maybe'." in message
    assert "GATEWAY_PROT is not a known setting." in message


@pytest.mark.parametrize(
    ("key", "value"), [("GATEWAY_PORT", "0"), ("GATEWAY_CLIENT_QUEUE_LIMIT", "-1")]
)
def test_out_of_range_values_stop_start_up(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Settings.from_env({key: value})


def test_readme_configuration_table_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `GATEWAY_([A-Z_]+)` \|", readme, flags=re.MULTILINE))
    fields = {f.name.upper() for f in dataclasses.fields(Settings)}
    assert documented == fields


def test_only_settings_reads_the_environment() -> None:
    offenders = []
    for path in (ROOT / "gateway").rglob("*.py"):
        if path.name == "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_cli_reports_a_bad_setting_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    monkeypatch.setenv("GATEWAY_PORT", "abc")
    assert main(["serve"]) == 2
    assert "GATEWAY_PORT has value 'abc'" in capsys.readouterr().err


SECRET = "a-settings-test-secret-of-32-bytes!"


def test_token_settings_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "GATEWAY_ENVIRONMENT": "production",
            "GATEWAY_JWT_SECRET": SECRET,
            "GATEWAY_JWT_PUBLIC_KEYS": "/etc/wedsync/jwks.json",
            "GATEWAY_JWT_ISSUER": "wedsync-auth",
            "GATEWAY_JWT_AUDIENCE": "gateway",
            "GATEWAY_JWT_LEEWAY_SECONDS": "5",
        }
    )
    assert settings.jwt_public_keys == Path("/etc/wedsync/jwks.json")
    assert str(settings.jwt_secret) == SECRET
    assert SECRET not in repr(settings)
    assert (settings.jwt_issuer, settings.jwt_audience) == ("wedsync-auth", "gateway")
    assert settings.jwt_leeway_seconds == 5.0


def test_token_settings_default_to_development_without_keys() -> None:
    settings = Settings.from_env({"GATEWAY_JWT_PUBLIC_KEYS": "", "GATEWAY_JWT_SECRET": ""})
    assert settings.environment == "development"
    assert (settings.jwt_secret, settings.jwt_public_keys) == (None, None)


@pytest.mark.parametrize(
    "keys",
    [{"GATEWAY_JWT_SECRET": SECRET}, {"GATEWAY_JWT_PUBLIC_KEYS": "keys.pem"}],
)
def test_production_starts_with_either_key(keys: dict[str, str]) -> None:
    assert Settings.from_env({"GATEWAY_ENVIRONMENT": "production", **keys})


def test_production_without_keys_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_ENVIRONMENT is 'production'"):
        Settings.from_env({"GATEWAY_ENVIRONMENT": "production"})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("GATEWAY_ENVIRONMENT", "staging"),
        ("GATEWAY_ENVIRONMENT", "Production"),
        ("GATEWAY_JWT_SECRET", "short"),
        ("GATEWAY_JWT_ISSUER", ""),
        ("GATEWAY_JWT_AUDIENCE", ""),
        ("GATEWAY_JWT_LEEWAY_SECONDS", "-1"),
        ("GATEWAY_JWT_LEEWAY_SECONDS", "301"),
        ("GATEWAY_JWT_LEEWAY_SECONDS", "nan"),
    ],
)
def test_unusable_token_settings_stop_start_up(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Settings.from_env({key: value})
