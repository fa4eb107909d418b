"""Checks of awareness states beyond their framing (proto/spec.md §2.3, §5)."""

from __future__ import annotations

import orjson

from gateway.errors import ProtocolError


def check_json(text: str, *, max_depth: int) -> None:
    """Refuse ``text`` unless it is JSON nested at most ``max_depth`` deep (awareness states are
    parsed by every stock client: malformed JSON there breaks them)."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"awareness state is not valid JSON: {exc}") from None
    level: list[object] = [value]
    for depth in range(max_depth + 1):
        children: list[object] = []
        for item in level:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, list):
                children.extend(item)
        if not children:
            return
        level = children
        if depth == max_depth - 1 and any(isinstance(c, dict | list) for c in level):
            raise ProtocolError(f"awareness state is nested deeper than {max_depth}")
