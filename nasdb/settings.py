"""Building validated configuration dataclasses from plain dicts (JSON, CLI flags, checkpoints)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Mapping, TypeVar

from nasdb.errors import ArgumentError

T = TypeVar("T")


def from_settings(cls: type[T], settings: Mapping[str, Any], what: str) -> T:
    """``cls(**settings)``, refusing keys ``cls`` does not have with a message that names them."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ArgumentError(f"unknown {what} {unknown}; known: {sorted(known)}")
    return cls(**dict(settings))
