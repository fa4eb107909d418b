"""Token authentication: JSON Web Tokens naming the weddings a user may open, and as what.

A token is a JWT signed with HS256 (``GATEWAY_JWT_SECRET``) or with RS256 / ES256 (a public key
or a JWKS in ``GATEWAY_JWT_PUBLIC_KEYS``). Its claims:

- ``iss``, ``aud``: must equal ``GATEWAY_JWT_ISSUER`` and ``GATEWAY_JWT_AUDIENCE``;
- ``sub``: the user; ``jti``: the token's id (what a revocation names); ``exp``: its expiry;
- ``weddings``: an object, wedding id → role name (``couple``, ``planner``, ``vendor``,
  ``viewer``, ``service``: ``gateway.core.policy.Role``);
- ``vendor_id``: the vendor the user acts for; required when any role is ``vendor``;
- ``admin``: true lets the token revoke others (``POST /v1/revocations``, ``gateway/admin.py``);
- ``nbf`` and ``iat``, when present, are checked too (with ``GATEWAY_JWT_LEEWAY_SECONDS``).

The algorithm is pinned by the key, never chosen by the token: HS256 is only ever checked against
the secret, RS256 / ES256 only against public keys, ``none`` never. Wedding ids match exactly:
a token for ``wed-1`` opens nothing else (no case folding, no normalisation).

Without any key (development mode) ``TokenVerifier.from_settings`` returns None and the caller
decides what a connection gets (``DEVELOPMENT_GRANT``); ``log_development_mode`` says so loudly.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt import PyJWK
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidJTIError, InvalidSubjectError
from starlette.datastructures import Secret

from gateway.core import schema
from gateway.core.policy import Grant, Role
from gateway.errors import ConfigError, Forbidden, Unauthorized
from gateway.settings import Settings
from gateway.types import RoomId, parse_room_id

log = structlog.get_logger(__name__)

MAX_TOKEN_BYTES = 8 << 10
"""Longer tokens are refused before any parsing."""

HMAC_ALGORITHM = "HS256"
PUBLIC_KEY_ALGORITHMS = frozenset({"RS256", "ES256"})
REQUIRED_CLAIMS = ["iss", "aud", "exp", "jti", "sub", "weddings"]
MAX_ID_CHARS = 256  # sub, jti, vendor_id
ROLE_NAMES = frozenset(role.value for role in Role)


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says. Build it with ``TokenVerifier.verify``."""

    subject: str
    """``sub``: the user."""
    weddings: Mapping[str, Role]
    """``weddings``: wedding id → role, matched exactly by ``grant_for``."""
    token_id: str
    """``jti``: what a revocation names."""
    expires_at: float
    """``exp`` (Unix seconds)."""
    vendor_id: str | None = None
    """``vendor_id``: present whenever a role is ``vendor``."""
    admin: bool = False
    """``admin``: may revoke tokens."""

    def grant_for(self, room: RoomId) -> Grant:
        """What this token may do in ``room``; raises Forbidden when it names no such wedding.

        The wedding id must be spelled exactly as in the token: ``WED-1``, ``wed-1 `` or a
        look-alike letter is another wedding.
        """
        role = self.weddings.get(room)
        if role is None:
            raise Forbidden(f"the token of {self.subject!r} gives no access to wedding {room!r}")
        return Grant(
            subject=self.subject,
            role=role,
            vendor_id=self.vendor_id,
            token_id=self.token_id,
            expires_at=self.expires_at,
        )


class TokenVerifier:
    """Checks tokens against keys loaded once at start-up. No I/O after construction."""

    def __init__(
        self,
        *,
        secret: bytes | None = None,
        public_keys: Mapping[str | None, PyJWK] | None = None,
        issuer: str,
        audience: str,
        leeway_seconds: float = 30.0,
    ) -> None:
        """``public_keys`` maps each key's ``kid`` to it. A token's kid picks its key; a token
        without kid needs a single key, and a key without kid (a PEM file) verifies every token
        whatever its kid. Prefer ``from_settings``."""
        keys = dict(public_keys or {})
        if secret is None and not keys:
            raise ConfigError("A TokenVerifier needs a secret or at least one public key.")
        if None in keys and len(keys) > 1:
            raise ConfigError("A key without kid must be the only public key.")
        self._secret = secret
        self._public_keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway_seconds = leeway_seconds
        self.algorithms = frozenset(
            ({HMAC_ALGORITHM} if secret is not None else set())
            | {key.algorithm_name for key in keys.values()}
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        """The verifier for the configured keys; None in development mode (no keys at all).

        Raises ConfigError for an unreadable or unusable key file, or for production without keys.
        """
        if settings.jwt_secret is None and settings.jwt_public_keys is None:
            if settings.environment != "development":
                raise ConfigError("Tokens are required outside development: configure a key.")
            return None
        secret = str(settings.jwt_secret).encode() if settings.jwt_secret is not None else None
        keys = load_public_keys(settings.jwt_public_keys) if settings.jwt_public_keys else None
        return cls(
            secret=secret,
            public_keys=keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_seconds=settings.jwt_leeway_seconds,
        )

    def verify(self, token: str) -> Claims:
        """The claims of ``token``; raises Unauthorized saying why it is refused."""
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized(f"token longer than {MAX_TOKEN_BYTES} bytes")
        if not token.isascii():
            raise Unauthorized("malformed token: not ASCII")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthorized(f"algorithm {alg!s:.40} not allowed")
        key = self._key_for(alg, header.get("kid"))
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway_seconds,
                options={"require": REQUIRED_CLAIMS, "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(_reason(exc, alg)) from None
        return parse_claims(payload)

    def _key_for(self, alg: str, kid: Any) -> PyJWK | bytes:
        if alg == HMAC_ALGORITHM:
            assert self._secret is not None  # HS256 is allowed only with a secret
            return self._secret
        if None in self._public_keys or (kid is None and len(self._public_keys) == 1):
            key = next(iter(self._public_keys.values()))
        elif kid is None:
            raise Unauthorized("token has no kid; the key set holds several keys")
        elif (found := self._public_keys.get(kid)) is not None:
            key = found
        else:
            raise Unauthorized(f"unknown key id {kid!r:.80}")
        if key.algorithm_name != alg:  # an RSA key never verifies ES256, and so on
            raise Unauthorized(f"algorithm {alg} not allowed for key {kid!r}")
        return key


def _reason(exc: jwt.PyJWTError, alg: str) -> str:
    """A short sentence for the close frame and the log."""
    match exc:
        case jwt.ExpiredSignatureError():
            return "token expired"
        case jwt.ImmatureSignatureError():
            return "token not yet valid"
        case jwt.InvalidAudienceError():
            return "wrong audience"
        case jwt.InvalidIssuerError():
            return "wrong issuer"
        case jwt.MissingRequiredClaimError():
            return f"claim {exc.claim} missing"
        case jwt.InvalidSignatureError():
            return "signature does not verify"
        case jwt.InvalidAlgorithmError():
            return f"algorithm {alg} not allowed"
        case InvalidJTIError():
            return "claim jti must be a non-empty string"
        case InvalidSubjectError():
            return "claim sub must be a non-empty string"
        case jwt.InvalidKeyError():
            return f"key unusable for {alg}: {exc}"
        case jwt.DecodeError():
            return f"malformed token: {exc}"
        case _:
            return f"invalid token: {exc}"


def parse_claims(payload: Mapping[str, Any]) -> Claims:
    """Our claims from a payload whose signature and registered claims PyJWT checked."""
    weddings = _weddings(payload["weddings"])
    vendor_id = payload.get("vendor_id")
    if vendor_id is not None and (not isinstance(vendor_id, str) or schema.IDENTIFIER(vendor_id)):
        raise Unauthorized("claim vendor_id must match ^[A-Za-z0-9_-]{1,64}$ (proto/schema.md)")
    if vendor_id is None and Role.VENDOR in weddings.values():
        raise Unauthorized("claim vendor_id missing (required with role vendor)")
    admin = payload.get("admin", False)
    if not isinstance(admin, bool):
        raise Unauthorized("claim admin must be true or false")
    for claim in ("sub", "jti"):
        if not _is_id(payload[claim]):
            raise Unauthorized(f"claim {claim} must be a non-empty string")
    return Claims(
        subject=payload["sub"],
        weddings=weddings,
        token_id=payload["jti"],
        expires_at=float(payload["exp"]),
        vendor_id=vendor_id,
        admin=admin,
    )


def _weddings(value: Any) -> Mapping[str, Role]:
    if not isinstance(value, dict):
        raise Unauthorized("claim weddings must be an object: wedding id → role")
    weddings: dict[str, Role] = {}
    for wedding, role in value.items():
        if parse_room_id(wedding) is None:
            raise Unauthorized(f"claim weddings names an invalid wedding id {wedding!r}")
        if not isinstance(role, str) or role not in ROLE_NAMES:
            raise Unauthorized(f"claim weddings gives an unknown role {role!r} in {wedding!r}")
        weddings[wedding] = Role(role)
    return MappingProxyType(weddings)


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_ID_CHARS


# -- key files -------------------------------------------------------------------------------


def load_public_keys(path: Path) -> dict[str | None, PyJWK]:
    """The keys in ``path``, by kid: a JWKS (JSON) or one PEM public key (kid None).

    Raises ConfigError for anything but RS256 (RSA, at least 2048 bits) and ES256 (P-256) keys.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"GATEWAY_JWT_PUBLIC_KEYS: cannot read {path}: {exc}") from None
    keys = _load_jwks(text) if text.lstrip().startswith("{") else _load_pem(text)
    for key in keys.values():
        problem = key.Algorithm.check_key_length(key.key)
        if problem:
            raise ConfigError(f"GATEWAY_JWT_PUBLIC_KEYS: {path}: {problem}")
    return keys


def _load_pem(text: str) -> dict[str | None, PyJWK]:
    if text.count("-----BEGIN") != 1:
        raise ConfigError("GATEWAY_JWT_PUBLIC_KEYS: a PEM file must hold exactly one public key.")
    try:
        public_key = load_pem_public_key(text.encode())
    except ValueError as exc:
        raise ConfigError(f"GATEWAY_JWT_PUBLIC_KEYS: not a PEM public key: {exc}") from None
    if isinstance(public_key, rsa.RSAPublicKey):
        return {None: PyJWK(RSAAlgorithm.to_jwk(public_key, as_dict=True), "RS256")}
    if isinstance(public_key, ec.EllipticCurvePublicKey) and public_key.curve.name == "secp256r1":
        return {None: PyJWK(ECAlgorithm.to_jwk(public_key, as_dict=True), "ES256")}
    raise ConfigError("GATEWAY_JWT_PUBLIC_KEYS: the PEM key must be RSA (RS256) or P-256 (ES256).")


def _load_jwks(text: str) -> dict[str | None, PyJWK]:
    try:
        entries = json.loads(text)["keys"]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise TypeError("keys must be a list of objects")
        keys = [PyJWK(entry) for entry in entries]
    except (ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
        raise ConfigError(f"GATEWAY_JWT_PUBLIC_KEYS: not a usable JWKS: {exc!r}") from None
    if not keys:
        raise ConfigError("GATEWAY_JWT_PUBLIC_KEYS: the JWKS holds no keys.")
    by_kid: dict[str | None, PyJWK] = {}
    for entry, key in zip(entries, keys, strict=True):
        if key.algorithm_name not in PUBLIC_KEY_ALGORITHMS:
            raise ConfigError(
                f"GATEWAY_JWT_PUBLIC_KEYS: key {key.key_id!r} is for {key.algorithm_name};"
                " only RS256 and ES256 keys are allowed."
            )
        if "d" in entry or entry.get("use", "sig") != "sig":
            raise ConfigError(
                f"GATEWAY_JWT_PUBLIC_KEYS: key {key.key_id!r} must be a public signing key."
            )
        if key.key_id is None and len(keys) > 1:
            raise ConfigError(
                "GATEWAY_JWT_PUBLIC_KEYS: in a JWKS of several keys each needs a kid."
            )
        if key.key_id in by_kid:
            raise ConfigError(f"GATEWAY_JWT_PUBLIC_KEYS: two keys have kid {key.key_id!r}.")
        by_kid[key.key_id] = key
    return by_kid


# -- issuing and development mode -----------------------------------------------------------


def issue_token(
    secret: str | bytes | Secret,
    *,
    subject: str,
    weddings: Mapping[str, Role],
    vendor_id: str | None = None,
    ttl_seconds: float,
    issuer: str,
    audience: str,
    admin: bool = False,
    now: float | None = None,
) -> str:
    """An HS256 token with a random ``jti``, as ``TokenVerifier.verify`` accepts it.

    Raises ValueError for a token the verifier would refuse (a vendor role without
    ``vendor_id``, an invalid wedding id, a TTL that is not positive).
    """
    if ttl_seconds <= 0:
        raise ValueError(f"ttl_seconds must be positive, not {ttl_seconds}")
    if Role.VENDOR in weddings.values() and not vendor_id:
        raise ValueError("a token with role vendor needs a vendor_id")
    invalid = [wedding for wedding in weddings if parse_room_id(wedding) is None]
    if invalid:
        raise ValueError(f"invalid wedding ids: {invalid!r}")
    issued_at = time.time() if now is None else now
    payload: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": int(issued_at),
        "exp": int(issued_at + ttl_seconds),
        "jti": secrets.token_urlsafe(16),
        "weddings": {wedding: Role(role).value for wedding, role in weddings.items()},
    }
    if vendor_id is not None:
        payload["vendor_id"] = vendor_id
    if admin:
        payload["admin"] = True
    key = str(secret) if isinstance(secret, Secret) else secret
    return jwt.encode(payload, key, algorithm=HMAC_ALGORITHM)


def log_development_mode() -> None:
    """Warn that tokens are not checked: call when ``from_settings`` returned None."""
    log.warning(
        "auth_development_mode",
        message="no GATEWAY_JWT_SECRET or GATEWAY_JWT_PUBLIC_KEYS: tokens are NOT checked;"
        " every connection is a planner in every wedding. Never run like this in production.",
    )
