"""Small helpers shared by every package: checks of user input (each raises naming the broken rule
and the value), the mean and std of a sample, and markdown tables."""

from __future__ import annotations

import math
import numbers
import re
from typing import Any, Iterable, Sequence

from nasdb.errors import ArgumentError

#: Device names Windows reserves in every folder, with any extension: never a task's folder name.
RESERVED_NAME = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?$", re.IGNORECASE)


def reserved_message(name: str) -> str:
    """Why ``name`` (a match of RESERVED_NAME) cannot name a task."""
    return (f"task name {name!r} is reserved: CON, PRN, AUX, NUL, COM0-9 and LPT0-9 (with any extension) are "
            "device names on Windows, not folders; choose another name")


def _got(name: str, value: Any) -> str:
    """``name=value`` for a parameter name, the value alone for a phrase such as "batch size"."""
    return f"{name}={value!r}" if name.isidentifier() else repr(value)


def int_at_least(name: str, value: Any, low: int, *, error: type[ArgumentError] = ArgumentError) -> int:
    """``value`` as an int if it is an integer (not a bool) >= ``low``; else ``error`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise error(f"`{name}` must be an integer >= {low}, but got {_got(name, value)}.")
    return int(value)


def positive_int(name: str, value: Any, *, error: type[ArgumentError] = ArgumentError) -> int:
    """``value`` as an int if it is an integer (not a bool) > 0; else ``error`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise error(f"`{name}` must be a positive integer, but got {_got(name, value)}.")
    return int(value)


def positive_float(name: str, value: Any, *, allow_zero: bool = False,
                   error: type[ArgumentError] = ArgumentError) -> float:
    """``value`` as a float if it is a finite real number > 0 (>= 0 with ``allow_zero``); else ``error``."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise error(f"`{name}` must be a finite number {bound}, but got {_got(name, value)}.")
    return float(value)


def mean_std(values: Sequence[float | None]) -> dict[str, float]:
    """``{"n", "mean", "std"}`` over the finite values (population std; NaN when there are none)."""
    import numpy as np  # here: the checks are imported by CLI modules, which do not need numpy to start

    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not v.size:
        return {"n": 0, "mean": math.nan, "std": math.nan}
    return {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std())}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]], *, right: Iterable[int] = ()) -> list[str]:
    """The lines of a markdown table; columns whose index is in ``right`` are right-aligned (``---:``)."""
    right = set(right)
    rule = "|" + "".join(("---:" if i in right else "---") + "|" for i in range(len(header)))
    return ["| " + " | ".join(header) + " |", rule] + ["| " + " | ".join(r) + " |" for r in rows]
