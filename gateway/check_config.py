"""``gateway check-config``: validate the GATEWAY_* environment, print the effective settings.

Meant for a deploy pipeline or an init container: it exits 0 when a node would start with this
environment, 2 otherwise, with one problem per line. The settings are printed with every secret
masked — keys as ``****``, and of a URL only its password and query (a DSN's password, a token in
a webhook URL) — so the output can go into a CI log or a support ticket.

It checks what ``gateway serve`` checks before it opens anything (gateway/settings.py), plus what
serve would find only while building the app: the public key file parses, the Postgres schema
name is usable. It connects to nothing: a store or bus that is down is /readyz's business.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from starlette.datastructures import Secret

from gateway.errors import ConfigError
from gateway.settings import PREFIX, Settings

MASK = "****"
EXIT_OK = 0
EXIT_INVALID = 2


def mask_url(url: str) -> str:
    """``url`` with its password and query replaced by ``****`` (user, host and path kept)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return MASK  # not a URL we can take apart: show nothing of it
    if not parts.scheme or not parts.netloc:
        return MASK
    netloc = parts.hostname or ""
    if ":" in netloc:  # an IPv6 literal
        netloc = f"[{netloc}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username is not None:
        userinfo = parts.username + (f":{MASK}" if parts.password is not None else "")
        netloc = f"{userinfo}@{netloc}"
    query = MASK if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def masked_value(name: str, value: Any) -> Any:
    """What check-config prints for one setting: secrets masked, paths as text."""
    if isinstance(value, Secret):
        if name.endswith("_url"):  # a DSN: where it points is useful, its password is not
            return mask_url(str(value))
        return f"{MASK} ({len(str(value).encode())} bytes)"
    if name == "webhook_urls":
        return ",".join(mask_url(u) for u in value.split(",") if u.strip())
    if isinstance(value, Path):
        return str(value)
    return value


def effective(settings: Settings, environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every setting: its variable, its masked value, and whether the environment set it."""
    rows = []
    for f in dataclasses.fields(settings):
        variable = PREFIX + f.name.upper()
        rows.append(
            {
                "variable": variable,
                "value": masked_value(f.name, getattr(settings, f.name)),
                "source": "environment" if variable in environ else "default",
            }
        )
    return rows


def deeper_problems(settings: Settings) -> list[str]:
    """What serve finds only while building the app, found here without connecting anywhere."""
    from gateway.adapters.postgres_store import quote_schema
    from gateway.auth import TokenVerifier

    problems = []
    try:
        TokenVerifier.from_settings(settings)
    except ConfigError as exc:
        problems.append(str(exc))
    if settings.database_url is not None:
        try:
            quote_schema(settings.database_schema)
        except ConfigError as exc:
            problems.append(f"GATEWAY_DATABASE_SCHEMA: {exc}")
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        problems.append(
            f"GATEWAY_DATA_DIR {str(settings.data_dir)!r} exists and is not a directory."
        )
    return problems


def run(environ: Mapping[str, str], *, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Validate ``environ``; print the problems (exit 2) or the effective settings (exit 0)."""
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        problems = list(exc.problems)
    else:
        problems = deeper_problems(settings)
    if problems:
        count = f"{len(problems)} problem" + ("s" if len(problems) > 1 else "")
        print(f"gateway: configuration is invalid ({count}):", file=err)
        for problem in problems:
            print(f"  - {problem}", file=err)
        return EXIT_INVALID
    rows = effective(settings, environ)
    if as_json:
        print(json.dumps({row["variable"]: row["value"] for row in rows}, indent=2), file=out)
    else:
        width = max(len(row["variable"]) for row in rows)
        for row in rows:
            marker = "" if row["source"] == "default" else "   (set)"
            print(f"{row['variable']:<{width}}  {row['value']}{marker}", file=out)
        print("configuration is valid", file=err)
    return EXIT_OK
