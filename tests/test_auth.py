"""Tokens: what TokenVerifier accepts and refuses, grant_for, key files, POST /v1/revocations.

Keys are generated here with ``cryptography`` and written to ``tmp_path``; hostile tokens (alg
none, alg confusion) are crafted by hand, byte by byte, as an attacker would.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.datastructures import Secret
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from structlog.testing import capture_logs

from gateway.adapters.memory_revocations import MemoryRevocations
from gateway.admin import revoke_token
from gateway.auth import (
    MAX_TOKEN_BYTES,
    Claims,
    TokenVerifier,
    issue_token,
    load_public_keys,
    log_development_mode,
)
from gateway.core.policy import Grant, Role
from gateway.errors import BackendUnavailable, ConfigError, Forbidden, Unauthorized
from gateway.gatekeeper import Gatekeeper
from gateway.http_errors import EXCEPTION_HANDLERS
from gateway.settings import Settings
from gateway.types import RoomId

SECRET = "a-test-secret-of-at-least-32-bytes!"
ISSUER, AUDIENCE = "wedsync", "wedsync-gateway"


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid payload; an override of None removes that claim."""
    now = time.time()
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "ada",
        "jti": "token-1",
        "iat": int(now),
        "exp": int(now + 600),
        "weddings": {"wed-1": "planner"},
    }
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def craft(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, whatever it claims."""
    head = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return head + "." + b64(signature)


@pytest.fixture
def verifier() -> TokenVerifier:
    found = TokenVerifier.from_settings(Settings(jwt_secret=Secret(SECRET)))
    assert found is not None
    return found


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_keys() -> list[ec.EllipticCurvePrivateKey]:
    return [ec.generate_private_key(ec.SECP256R1()) for _ in range(2)]


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_pem(tmp_path: Path, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "key.pem"
    path.write_bytes(pem(key))
    return path


def jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str | None) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        entry = RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        entry = ECAlgorithm.to_jwk(public, as_dict=True)
    return {**entry, "kid": kid} if kid is not None else dict(entry)


def write_jwks(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": list(entries)}))
    return path


def public_key_verifier(path: Path, **settings: Any) -> TokenVerifier:
    found = TokenVerifier.from_settings(Settings(jwt_public_keys=path, **settings))
    assert found is not None
    return found


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(Unauthorized) as caught:
        verifier.verify(token)
    return str(caught.value)


# -- accepted tokens ---------------------------------------------------------------------------


def test_hs256_token_gives_its_claims(verifier: TokenVerifier) -> None:
    payload = claims(
        weddings={"wed-1": "planner", "wed-2": "vendor"}, vendor_id="florist-7", admin=True
    )
    got = verifier.verify(hs256(payload))
    assert got == Claims(
        subject="ada",
        weddings={"wed-1": Role.PLANNER, "wed-2": Role.VENDOR},
        token_id="token-1",
        expires_at=float(payload["exp"]),
        vendor_id="florist-7",
        admin=True,
    )


def test_issued_token_verifies(verifier: TokenVerifier) -> None:
    token = issue_token(
        Secret(SECRET),
        subject="grace",
        weddings={"wed-1": Role.COUPLE},
        ttl_seconds=60,
        issuer=ISSUER,
        audience=AUDIENCE,
        now=1_700_000_000.0,
    )
    got = jwt.decode(token, options={"verify_signature": False})
    assert (got["iat"], got["exp"], got["weddings"]) == (
        1_700_000_000,
        1_700_000_060,
        {"wed-1": "couple"},
    )
    fresh = issue_token(
        SECRET, subject="grace", weddings={}, ttl_seconds=60, issuer=ISSUER, audience=AUDIENCE
    )
    assert verifier.verify(fresh).subject == "grace"
    assert (
        verifier.verify(fresh).token_id
        != verifier.verify(
            issue_token(
                SECRET, subject="g", weddings={}, ttl_seconds=60, issuer=ISSUER, audience=AUDIENCE
            )
        ).token_id
    )
    assert "expired" in refused(verifier, token)


@pytest.mark.parametrize(
    ("weddings", "vendor_id", "ttl"),
    [
        ({"wed-1": Role.VENDOR}, None, 60),
        ({"wed 1": Role.PLANNER}, None, 60),
        ({"wed-1": Role.PLANNER}, None, 0),
    ],
)
def test_issue_token_refuses_what_the_verifier_would_refuse(
    weddings: dict[str, Role], vendor_id: str | None, ttl: float
) -> None:
    with pytest.raises(ValueError, match=r"vendor|wedding|ttl"):
        issue_token(
            SECRET,
            subject="ada",
            weddings=weddings,
            vendor_id=vendor_id,
            ttl_seconds=ttl,
            issuer=ISSUER,
            audience=AUDIENCE,
        )


def test_rs256_token_verifies_with_a_pem_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = public_key_verifier(write_pem(tmp_path, rsa_key))
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "any"})
    assert verifier.verify(token).subject == "ada"  # one PEM key: the kid does not matter
    assert verifier.algorithms == {"RS256"}


def test_es256_tokens_verify_with_the_jwks_key_their_kid_names(
    tmp_path: Path, ec_keys: list[ec.EllipticCurvePrivateKey], rsa_key: rsa.RSAPrivateKey
) -> None:
    path = write_jwks(
        tmp_path, jwk(ec_keys[0], "ec-a"), jwk(ec_keys[1], "ec-b"), jwk(rsa_key, "rsa")
    )
    verifier = public_key_verifier(path)
    for kid, key in (("ec-a", ec_keys[0]), ("ec-b", ec_keys[1])):
        token = jwt.encode(claims(jti=kid), key, algorithm="ES256", headers={"kid": kid})
        assert verifier.verify(token).token_id == kid
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa"})
    assert verifier.verify(token).subject == "ada"


def test_a_token_within_the_leeway_is_accepted(verifier: TokenVerifier) -> None:
    now = int(time.time())
    assert verifier.verify(hs256(claims(exp=now - 10, nbf=now + 10, iat=now + 10)))


# -- refused tokens ----------------------------------------------------------------------------


def test_expired_token_is_refused(verifier: TokenVerifier) -> None:
    assert refused(verifier, hs256(claims(exp=int(time.time()) - 60))) == "token expired"


def test_token_not_yet_valid_is_refused(verifier: TokenVerifier) -> None:
    assert refused(verifier, hs256(claims(nbf=int(time.time()) + 120))) == "token not yet valid"


def test_unsigned_token_alg_none_is_refused(verifier: TokenVerifier) -> None:
    for alg in ("none", "None", "NONE", ""):
        token = craft({"alg": alg, "typ": "JWT"}, claims())
        assert refused(verifier, token) == f"algorithm {alg} not allowed"
    assert refused(verifier, craft({"typ": "JWT"}, claims())) == "algorithm None not allowed"


def test_token_signed_with_another_secret_is_refused(verifier: TokenVerifier) -> None:
    token = hs256(claims(), secret="another-secret-of-at-least-32-bytes")
    assert refused(verifier, token) == "signature does not verify"


def test_tampered_payload_is_refused(verifier: TokenVerifier) -> None:
    header, _, signature = hs256(claims()).split(".")
    forged = b64(json.dumps(claims(weddings={"wed-2": "planner"})).encode())
    assert refused(verifier, f"{header}.{forged}.{signature}") == "signature does not verify"


def test_wrong_audience_is_refused(verifier: TokenVerifier) -> None:
    assert refused(verifier, hs256(claims(aud="another-service"))) == "wrong audience"


def test_wrong_issuer_is_refused(verifier: TokenVerifier) -> None:
    assert refused(verifier, hs256(claims(iss="someone-else"))) == "wrong issuer"


@pytest.mark.parametrize("claim", ["jti", "exp", "sub", "weddings", "iss", "aud"])
def test_token_missing_a_required_claim_is_refused(verifier: TokenVerifier, claim: str) -> None:
    assert refused(verifier, hs256(claims(**{claim: None}))) == f"claim {claim} missing"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"weddings": {"wed-1": "owner"}}, "unknown role 'owner'"),
        ({"weddings": {"wed-1": "Planner"}}, "unknown role 'Planner'"),
        ({"weddings": {"wed-1": ["planner"]}}, "unknown role"),
        ({"weddings": {"wed-1": 1}}, "unknown role 1"),
        ({"weddings": ["wed-1"]}, "claim weddings must be an object"),
        ({"weddings": {"wed 1": "planner"}}, "invalid wedding id 'wed 1'"),
        ({"weddings": {"wed-1": "vendor"}}, "claim vendor_id missing"),
        ({"vendor_id": ""}, "claim vendor_id must match"),
        ({"vendor_id": "has spaces"}, "claim vendor_id must match"),
        ({"vendor_id": "v" * 65}, "claim vendor_id must match"),
        ({"admin": "yes"}, "claim admin must be true or false"),
        ({"sub": ""}, "claim sub must be a non-empty string"),
        ({"jti": 7}, "claim jti must be a non-empty string"),
        ({"exp": "tomorrow"}, "malformed token"),
    ],
)
def test_token_with_bad_claims_is_refused(
    verifier: TokenVerifier, overrides: dict[str, Any], reason: str
) -> None:
    assert reason in refused(verifier, hs256(claims(**overrides)))


def test_hs256_token_signed_with_the_public_key_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    """Algorithm confusion: the public PEM used as the HMAC secret must not verify."""
    public_pem = pem(rsa_key)
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = craft(header, claims()).rsplit(".", 1)[0]
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64(signature)}"
    path = write_pem(tmp_path, rsa_key)
    assert refused(public_key_verifier(path), token) == "algorithm HS256 not allowed"
    both = public_key_verifier(path, jwt_secret=Secret(SECRET))  # HS256 → the secret, only
    assert refused(both, token) == "signature does not verify"


def test_token_of_an_algorithm_its_key_is_not_for_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_keys: list[ec.EllipticCurvePrivateKey]
) -> None:
    only_rsa = public_key_verifier(write_pem(tmp_path, rsa_key))
    token = jwt.encode(claims(), ec_keys[0], algorithm="ES256")
    assert refused(only_rsa, token) == "algorithm ES256 not allowed"
    mixed = public_key_verifier(write_jwks(tmp_path, jwk(rsa_key, "rsa"), jwk(ec_keys[0], "ec")))
    token = jwt.encode(claims(), ec_keys[0], algorithm="ES256", headers={"kid": "rsa"})
    assert refused(mixed, token) == "algorithm ES256 not allowed for key 'rsa'"
    assert refused(mixed, jwt.encode(claims(), rsa_key, algorithm="RS512")) == (
        "algorithm RS512 not allowed"
    )


def test_token_without_kid_uses_the_only_key_of_a_jwks(
    tmp_path: Path, ec_keys: list[ec.EllipticCurvePrivateKey]
) -> None:
    verifier = public_key_verifier(write_jwks(tmp_path, jwk(ec_keys[0], "ec-a")))
    assert verifier.verify(jwt.encode(claims(), ec_keys[0], algorithm="ES256")).subject == "ada"


def test_token_signed_by_a_key_outside_the_jwks_is_refused(
    tmp_path: Path, ec_keys: list[ec.EllipticCurvePrivateKey]
) -> None:
    verifier = public_key_verifier(write_jwks(tmp_path, jwk(ec_keys[0], "ec-a")))
    impostor = jwt.encode(claims(), ec_keys[1], algorithm="ES256", headers={"kid": "ec-a"})
    assert refused(verifier, impostor) == "signature does not verify"


def test_token_whose_kid_is_unknown_is_refused(
    tmp_path: Path, ec_keys: list[ec.EllipticCurvePrivateKey]
) -> None:
    verifier = public_key_verifier(
        write_jwks(tmp_path, jwk(ec_keys[0], "ec-a"), jwk(ec_keys[1], "ec-b"))
    )
    token = jwt.encode(claims(), ec_keys[0], algorithm="ES256", headers={"kid": "ec-c"})
    assert refused(verifier, token) == "unknown key id 'ec-c'"
    token = jwt.encode(claims(), ec_keys[0], algorithm="ES256")
    assert "no kid" in refused(verifier, token)


def test_oversize_token_is_refused_unread(verifier: TokenVerifier) -> None:
    token = hs256(claims(padding="x" * MAX_TOKEN_BYTES))
    assert "longer than" in refused(verifier, token)


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "é.é.é", "...."])
def test_malformed_token_is_refused(verifier: TokenVerifier, token: str) -> None:
    assert refused(verifier, token).startswith(("malformed token", "algorithm"))


# -- grants ------------------------------------------------------------------------------------


def test_grant_for_a_wedding_of_the_token() -> None:
    got = Claims(
        subject="ada",
        weddings={"wed-1": Role.VENDOR},
        token_id="token-1",
        expires_at=1e9,
        vendor_id="florist-7",
    )
    assert got.grant_for(RoomId("wed-1")) == Grant(
        subject="ada", role=Role.VENDOR, vendor_id="florist-7", token_id="token-1", expires_at=1e9
    )


@pytest.mark.parametrize(
    "room",
    [
        "WED-1",
        "Wed-1",
        "wed-1 ",
        " wed-1",
        "wed%2D1",
        "wed-1/",
        "wed-1\x00",
        "w\u0435d-1",  # Cyrillic small ie, a look-alike of e
        "wed\u20101",  # Unicode hyphen
        "\uff57\uff45\uff44-\uff11",  # fullwidth letters and digit
        "wed\u20111",  # non-breaking hyphen
        "wed-10",
        "wed-",
        "",
    ],
)
def test_grant_for_any_other_spelling_is_forbidden(verifier: TokenVerifier, room: str) -> None:
    got = verifier.verify(hs256(claims()))
    with pytest.raises(Forbidden) as caught:
        got.grant_for(RoomId(room))
    assert repr(room) in str(caught.value)


# -- settings and key files --------------------------------------------------------------------


def test_development_mode_has_no_verifier() -> None:
    assert TokenVerifier.from_settings(Settings()) is None
    with capture_logs() as logs:
        log_development_mode()
    assert logs[0]["event"] == "auth_development_mode"
    assert logs[0]["log_level"] == "warning"


def test_production_without_keys_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="GATEWAY_JWT_SECRET nor GATEWAY_JWT_PUBLIC_KEYS"):
        Settings.from_env({"GATEWAY_ENVIRONMENT": "production"})
    with pytest.raises(ConfigError, match="Tokens are required"):
        TokenVerifier.from_settings(Settings(environment="production"))


def test_production_with_a_secret_verifies() -> None:
    settings = Settings.from_env(
        {"GATEWAY_ENVIRONMENT": "production", "GATEWAY_JWT_SECRET": SECRET}
    )
    verifier = TokenVerifier.from_settings(settings)
    assert verifier is not None
    assert verifier.verify(hs256(claims())).subject == "ada"


def rsa_small() -> bytes:
    return pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read"),
        (b"", "exactly one public key"),
        (b"not a key", "exactly one public key"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a PEM public key"),
        ("private", "not a PEM public key"),
        ("two", "exactly one public key"),
        ("p384", re.escape("RSA (RS256) or P-256")),
        ("rsa1024", "below the minimum"),
        (b"{", "not a usable JWKS"),
        (b'{"keys": []}', "holds no keys"),
        (b'{"keys": [1]}', "not a usable JWKS"),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "h"}]}', "only RS256 and ES256"),
        ("rs384", "only RS256 and ES256"),
        ("duplicate-kid", "two keys have kid"),
        ("no-kids", "each needs a kid"),
        ("enc", "public signing key"),
    ],
)
def test_unusable_key_file_is_a_config_error(
    tmp_path: Path,
    content: bytes | str | None,
    reason: str,
    ec_keys: list[ec.EllipticCurvePrivateKey],
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    a, b = ec_keys
    made: dict[str, bytes] = {
        "private": private_pem(a),
        "two": pem(a) + pem(b),
        "p384": pem(ec.generate_private_key(ec.SECP384R1())),
        "rsa1024": rsa_small(),
        "rs384": json.dumps({"keys": [{**jwk(rsa_key, "x"), "alg": "RS384"}]}).encode(),
        "duplicate-kid": json.dumps({"keys": [jwk(a, "x"), jwk(b, "x")]}).encode(),
        "no-kids": json.dumps({"keys": [jwk(a, None), jwk(b, None)]}).encode(),
        "enc": json.dumps({"keys": [{**jwk(a, "x"), "use": "enc"}]}).encode(),
    }
    path = tmp_path / "keys"
    if content is not None:
        path.write_bytes(made[content] if isinstance(content, str) else content)
    with pytest.raises(ConfigError, match=reason):
        load_public_keys(path)
    with pytest.raises(ConfigError):
        TokenVerifier.from_settings(Settings(jwt_public_keys=path))


# -- POST /v1/revocations ----------------------------------------------------------------------


def admin_token(**overrides: Any) -> str:
    return hs256(claims(sub="ops", jti="admin-token", admin=True, weddings={}, **overrides))


@pytest.fixture
def revocations() -> MemoryRevocations:
    return MemoryRevocations()


def admin_app(verifier: TokenVerifier | None, revocations: MemoryRevocations) -> ASGIApp:
    """The revocation endpoint as the gateway serves it: its JSON error answers, and the
    lifespan state a server hands every request (``scope["state"]``)."""
    routes = [Route("/v1/revocations", revoke_token, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS)
    gatekeeper = Gatekeeper(verifier, revocations)

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        await app({**scope, "state": {"gatekeeper": gatekeeper}}, receive, send)

    return with_state


def http_client(app: ASGIApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


@pytest.fixture
async def client(
    verifier: TokenVerifier, revocations: MemoryRevocations
) -> AsyncIterator[httpx.AsyncClient]:
    async with http_client(admin_app(verifier, revocations)) as test_client:
        yield test_client


async def post(client: httpx.AsyncClient, body: Any, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/v1/revocations", content=content, headers=headers)


async def test_admin_revokes_a_token(
    client: httpx.AsyncClient, revocations: MemoryRevocations
) -> None:
    response = await post(client, {"jti": "token-1", "expires_at": time.time() + 60}, admin_token())
    assert response.status_code == 200
    assert response.json()["jti"] == "token-1"
    assert revocations.is_revoked("token-1")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "Bearer <token> header is required"),
        ({"Authorization": "Basic b3BzOnB3"}, "Bearer <token> header is required"),
        ({"Authorization": "Bearer "}, "Bearer <token> header is required"),
        ({"Authorization": "Bearer abc"}, "malformed token"),
        ({"Authorization": "Bearer " + admin_token(exp=1)}, "token expired"),
    ],
)
async def test_revocation_without_a_valid_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str], reason: str
) -> None:
    body = {"jti": "t", "expires_at": 2e9}
    response = await client.post("/v1/revocations", json=body, headers=headers)
    assert response.status_code == 401
    assert reason in response.json()["error"]
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_revoked_admin_token_is_401(client: httpx.AsyncClient) -> None:
    response = await post(client, {"jti": "admin-token", "expires_at": 2e9}, admin_token())
    assert response.status_code == 200
    response = await post(client, {"jti": "token-1", "expires_at": 2e9}, admin_token())
    assert (response.status_code, response.json()) == (401, {"error": "token revoked"})


async def test_revocation_by_a_token_that_is_not_admin_is_403(
    client: httpx.AsyncClient, revocations: MemoryRevocations
) -> None:
    response = await post(client, {"jti": "token-1", "expires_at": 2e9}, hs256(claims()))
    assert response.status_code == 403
    assert "not an admin token" in response.json()["error"]
    assert not revocations.is_revoked("token-1")


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        [],
        {},
        {"jti": "", "expires_at": 2e9},
        {"jti": 5, "expires_at": 2e9},
        {"jti": "x" * 257, "expires_at": 2e9},
        {"jti": "token-1"},
        {"jti": "token-1", "expires_at": "2030-01-01"},
        {"jti": "token-1", "expires_at": True},
        {"jti": "token-1", "expires_at": -1},
        b'{"jti": "token-1", "expires_at": 1' + b"0" * 400 + b"}",
        b'{"jti": "token-1", "expires_at": NaN}',
        b'{"jti": "token-1", "expires_at": Infinity}',
    ],
)
async def test_revocation_with_a_bad_body_is_400(
    client: httpx.AsyncClient, revocations: MemoryRevocations, body: Any
) -> None:
    response = await post(client, body, admin_token())
    assert response.status_code == 400, response.text
    assert response.json()["error"]
    assert not revocations.is_revoked("token-1")


async def test_revocation_with_a_huge_body_is_413(client: httpx.AsyncClient) -> None:
    body = {"jti": "token-1", "expires_at": 2e9, "padding": "x" * 5000}
    assert (await post(client, body, admin_token())).status_code == 413


async def test_revocation_in_development_mode_is_403(revocations: MemoryRevocations) -> None:
    async with http_client(admin_app(None, revocations)) as client:
        response = await post(client, {"jti": "token-1", "expires_at": 2e9}, admin_token())
    assert response.status_code == 403
    assert "no keys configured" in response.json()["error"]


class DownRevocations(MemoryRevocations):
    async def revoke(self, token_id: str, expires_at: float) -> None:
        raise BackendUnavailable("Redis at 127.0.0.1:6379 is unreachable")


async def test_revocation_the_backend_cannot_record_is_503(verifier: TokenVerifier) -> None:
    async with http_client(admin_app(verifier, DownRevocations())) as client:
        response = await post(client, {"jti": "token-1", "expires_at": 2e9}, admin_token())
    assert response.status_code == 503
    assert "unreachable" in response.json()["error"]
