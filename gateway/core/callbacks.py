"""Callbacks that do not keep their owner alive."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any


def weak_callback(method: Callable[[Any], object]) -> Callable[[Any], None]:
    """``method`` (a bound method) called through a weak reference to its object.

    For observers of a pycrdt Doc that the observer's owner holds (``Room``, ``Enforcer``):
    pycrdt keeps callbacks in Rust, out of the cycle collector's sight, so a Doc observed by a
    bound method of its owner keeps both alive forever, with all the Doc's memory
    (tests/test_memory.py). Through a weak reference, the owner goes when its last reference
    does, and the Doc with it; a callback that outlives it does nothing.
    """
    ref = weakref.WeakMethod(method)

    def call(event: Any) -> None:
        target = ref()
        if target is not None:
            target(event)

    return call
