"""The wedding document's fields and what a valid value is (proto/schema.md, checked here).

Each check returns None for a valid value, else a sentence saying why it is not; the room's
enforcer (``gateway/core/enforcer.py``) sends that sentence back in REJECT.
"""

from __future__ import annotations

import datetime
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

Check = Callable[[object], str | None]

STATUSES = ("planning", "confirmed", "completed", "cancelled")
_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, slots=True)
class Field:
    check: Check
    required: bool = False


def text(low: int, high: int) -> Check:
    def check(value: object) -> str | None:
        if not isinstance(value, str):
            return f"must be a string, not {_kind(value)}"
        if not low <= len(value) <= high:
            return f"must be {low}-{high} characters, not {len(value)}"
        return None

    return check


def one_of(choices: tuple[str, ...]) -> Check:
    def check(value: object) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(choices)}, not {_show(value)}"
        return None

    return check


def pattern(regex: re.Pattern[str], what: str) -> Check:
    def check(value: object) -> str | None:
        if not isinstance(value, str) or not regex.fullmatch(value):
            return f"must be {what}, not {_show(value)}"
        return None

    return check


def date(value: object) -> str | None:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return f"must be a date YYYY-MM-DD, not {_show(value)}"
    try:
        datetime.date.fromisoformat(value)
    except ValueError:
        return f"{value} is not a real date"
    return None


def time_zone(value: object) -> str | None:
    if not isinstance(value, str) or value not in _time_zones():
        return f"must be an IANA time zone name, not {_show(value)}"
    return None


def integer(low: int, high: int) -> Check:
    def check(value: object) -> str | None:
        # pycrdt writes every number as a float: 120.0 is the integer 120 (proto/schema.md)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be an integer, not {_kind(value)}"
        if isinstance(value, float) and not value.is_integer():
            return f"must be an integer, not {value}"
        if not low <= value <= high:
            return f"must be {low}-{high}, not {value:g}"
        return None

    return check


TIME = pattern(_TIME, "a time HH:MM")
IDENTIFIER = pattern(_ID, "1-64 of A-Z a-z 0-9 _ -")

CORE: Mapping[str, Field] = {
    "partner_a": Field(text(1, 200), required=True),
    "partner_b": Field(text(1, 200), required=True),
    "status": Field(one_of(STATUSES), required=True),
    "wedding_date": Field(date),
    "ceremony_time": Field(TIME),
    "timezone": Field(time_zone),
    "venue": Field(text(1, 200)),
    "venue_address": Field(text(1, 500)),
    "guest_count": Field(integer(0, 5000)),
    "notes": Field(text(0, 5000)),
}
"""The keys of the ``core`` map (proto/schema.md)."""

ENTRY: Mapping[str, Field] = {
    "id": Field(IDENTIFIER, required=True),
    "title": Field(text(1, 200), required=True),
    "start": Field(TIME, required=True),
    "end": Field(TIME),
    "vendor_id": Field(IDENTIFIER),
    "location": Field(text(0, 200)),
    "notes": Field(text(0, 2000)),
}
"""The keys of one timeline entry (proto/schema.md)."""

REQUIRED_CORE = tuple(k for k, f in CORE.items() if f.required)
REQUIRED_ENTRY = tuple(k for k, f in ENTRY.items() if f.required)


def check_field(fields: Mapping[str, Field], key: str, value: object) -> str | None:
    """Why ``value`` cannot be stored under ``key``, or None when it can."""
    rule = fields.get(key)
    if rule is None:
        return "is not a field of the schema (proto/schema.md)"
    return rule.check(value)


def check_span(entry: Mapping[str, object]) -> str | None:
    """An entry ends no earlier than it starts (it does not cross midnight)."""
    start, end = entry.get("start"), entry.get("end")
    if isinstance(start, str) and isinstance(end, str) and end < start:
        return f"end {end} is earlier than start {start}"
    return None


def check_entry(entry: Mapping[str, object]) -> tuple[str, str] | None:
    """(key, reason) of the first problem of a whole new entry, or None."""
    for key, value in entry.items():
        reason = check_field(ENTRY, key, value)
        if reason is not None:
            return key, reason
    for key in REQUIRED_ENTRY:
        if key not in entry:
            return key, "is required in every timeline entry"
    reason = check_span(entry)
    return ("end", reason) if reason is not None else None


NOT_ZONE_NAMES = frozenset({"localtime", "posixrules", "Factory"})
"""Files of a zoneinfo directory that are no IANA zone (``localtime`` is the host's zone)."""


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones()) - NOT_ZONE_NAMES


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return type(value).__name__


def _show(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
