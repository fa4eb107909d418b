"""``gateway gen-token`` / ``revoke`` / ``audit``: the token commands of gateway/cli.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from starlette.datastructures import Secret

import gateway.cli
from gateway.adapters.redis_revocations import RedisRevocations
from gateway.auth import TokenVerifier
from gateway.cli import main
from gateway.core.policy import Role
from gateway.errors import Unauthorized
from gateway.settings import Settings

SECRET = "a-cli-test-secret-of-at-least-32-bytes"


@pytest.fixture
def with_secret(monkeypatch: pytest.MonkeyPatch) -> TokenVerifier:
    monkeypatch.setenv("GATEWAY_JWT_SECRET", SECRET)
    monkeypatch.setenv("GATEWAY_JWT_ISSUER", "wedsync-test")
    return verifier_for(issuer="wedsync-test")


def verifier_for(issuer: str) -> TokenVerifier:
    verifier = TokenVerifier.from_settings(Settings(jwt_secret=Secret(SECRET), jwt_issuer=issuer))
    assert verifier is not None
    return verifier


def gen_token(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["gen-token", *args]) == 0
    return capsys.readouterr().out.strip()


def test_gen_token_prints_a_token_the_gateway_accepts(
    with_secret: TokenVerifier, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--subject", "ada", "--wedding", "wed-1", "--role", "planner"]
    token = gen_token(capsys, *args, "--wedding", "wed-2", "--role", "vendor", "--vendor-id", "v7")
    claims = with_secret.verify(token)
    assert claims.subject == "ada"
    assert dict(claims.weddings) == {"wed-1": Role.PLANNER, "wed-2": Role.VENDOR}
    assert claims.vendor_id == "v7"
    assert claims.admin is False
    assert 3590 <= claims.expires_at - time.time() <= 3600


def test_gen_token_ttl_and_admin(
    with_secret: TokenVerifier, capsys: pytest.CaptureFixture[str]
) -> None:
    token = gen_token(capsys, "--subject", "ops", "--admin", "--ttl", "120")
    claims = with_secret.verify(token)
    assert claims.admin is True
    assert dict(claims.weddings) == {}
    assert 110 <= claims.expires_at - time.time() <= 120


def test_tokens_are_signed_with_the_configured_issuer(
    with_secret: TokenVerifier, capsys: pytest.CaptureFixture[str]
) -> None:
    token = gen_token(capsys, "--subject", "ada", "--wedding", "wed-1", "--role", "viewer")
    assert with_secret.verify(token).subject == "ada"
    with pytest.raises(Unauthorized, match="wrong issuer"):
        verifier_for(issuer="wedsync").verify(token)


def test_gen_token_without_a_secret_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GATEWAY_JWT_SECRET", raising=False)
    assert main(["gen-token", "--subject", "ada", "--wedding", "wed-1", "--role", "couple"]) == 2
    captured = capsys.readouterr()
    assert "GATEWAY_JWT_SECRET is not set" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--wedding", "wed-1"], "one --role for each --wedding"),
        (["--wedding", "wed-1", "--role", "planner", "--role", "viewer"], "one --role for each"),
        ([], "at least one --wedding"),
        (["--wedding", "WED 1", "--role", "planner"], "invalid wedding id 'WED 1'"),
        (["--wedding", "wed-1", "--role", "vendor"], "--role vendor needs --vendor-id"),
        (["--wedding", "wed-1", "--role", "planner", "--ttl", "0"], "--ttl must be positive"),
        (["--wedding", "wed-1", "--role", "planner", "--ttl", "nan"], "--ttl must be positive"),
    ],
)
def test_gen_token_refuses_a_token_the_gateway_would_refuse(
    with_secret: TokenVerifier,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    assert main(["gen-token", "--subject", "ada", *args]) == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_gen_token_refuses_an_unknown_role(
    with_secret: TokenVerifier, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["gen-token", "--subject", "ada", "--wedding", "wed-1", "--role", "owner"])
    assert caught.value.code == 2
    assert "invalid choice: 'owner'" in capsys.readouterr().err


def test_revoke_without_redis_points_to_the_endpoint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GATEWAY_REDIS_URL", raising=False)
    assert main(["revoke", "token-1", "--expires-at", str(time.time() + 60)]) == 2
    assert "POST /v1/revocations" in capsys.readouterr().err


@pytest.mark.redis
def test_revoke_writes_through_redis(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    prefix = f"test-{uuid4().hex[:12]}"
    monkeypatch.setenv("GATEWAY_REDIS_URL", redis_url)
    monkeypatch.setenv("GATEWAY_REDIS_PREFIX", prefix)
    assert main(["revoke", "token-1", "--expires-at", str(time.time() + 60)]) == 0
    assert "revoked token-1" in capsys.readouterr().out

    async def loaded() -> bool:
        async with RedisRevocations.connect(redis_url, prefix=prefix) as revocations:
            return revocations.is_revoked("token-1")

    assert asyncio.run(loaded())


@pytest.mark.parametrize("expires_at", ["nan", "inf"])
def test_revoke_needs_a_finite_expiry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], expires_at: str
) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    assert main(["revoke", "token-1", "--expires-at", expires_at]) == 2
    assert "--expires-at must be the token's exp" in capsys.readouterr().err


@pytest.mark.redis
def test_revoke_of_a_long_expired_token_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    monkeypatch.setenv("GATEWAY_REDIS_URL", redis_url)
    monkeypatch.setenv("GATEWAY_REDIS_PREFIX", f"test-{uuid4().hex[:12]}")
    assert main(["revoke", "token-1", "--expires-at", "1000"]) == 2
    assert "nothing to revoke" in capsys.readouterr().err


def test_serve_with_an_unusable_key_file_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "keys.pem").write_text("not a key")
    monkeypatch.setenv("GATEWAY_JWT_PUBLIC_KEYS", str(tmp_path / "keys.pem"))
    monkeypatch.setattr(gateway.cli, "configure_logging", lambda **options: None)
    assert main(["serve"]) == 2
    assert "GATEWAY_JWT_PUBLIC_KEYS" in capsys.readouterr().err


def test_audit_calls_gateway_audit_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import gateway.audit

    calls: list[tuple[Any, ...]] = []

    def run(settings: Settings, wedding_id: str, *, limit: int, as_json: bool) -> int:
        calls.append((wedding_id, limit, as_json))
        return 3

    monkeypatch.setattr(gateway.audit, "run", run)
    assert main(["audit", "wed-1", "--limit", "5", "--json"]) == 3
    assert main(["audit", "wed-2"]) == 3
    assert calls == [("wed-1", 5, True), ("wed-2", 1000, False)]
