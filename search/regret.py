"""Regret and percentile of a configuration on a fully tabulated task (an imported benchmark).

The true value of a configuration is its stored performance averaged over the benchmark's
seeds (higher is better; HPOLib: -val_loss). For a configuration c of a task with A
configurations:

- ``value(c)``: mean over seeds of its performance;
- ``regret(c) = max_c' value(c') - value(c)`` (>= 0; 0 for the best configuration);
- ``percentile(c) = 100 * #{c' : value(c') <= value(c)} / A``: the share of configurations it
  is at least as good as (100 for the best, 100 / A for the worst);
- ``rank(c) = 1 + #{c' : value(c') > value(c)}`` (1 for the best).

A search is judged by its incumbent after N evaluations: the configuration with the best
*observed* value (one seed's, as the lookup evaluator answers) among its first N evaluations,
earliest on ties; the table then gives that incumbent's true value (the "final performance"
of HPO benchmarks; task-aware-performance-prediction.md Sec. 5.3 compares methods the same way
on real training: the best-by-validation child's held-out accuracy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from nasdb.errors import ConfigError
from nasdb.space import unique_rows
from search.evaluators import Evaluation, NotTabulatedError, architecture_key


@dataclass(frozen=True)
class TableTruth:
    """Every configuration of one tabulated task and its true value (mean over seeds)."""

    task: str
    architectures: np.ndarray  # (A, num_dimensions) int64, distinct
    values: np.ndarray  # (A,) float64 mean performance over seeds

    def __post_init__(self) -> None:
        if len(self.architectures) != len(self.values) or not len(self.values):
            raise ConfigError(f"task {self.task!r}: need one value per configuration and at least one, got "
                              f"{len(self.architectures)} configurations and {len(self.values)} values")
        if not np.all(np.isfinite(self.values)):
            raise ConfigError(f"task {self.task!r}: a configuration has a non-finite mean value")
        object.__setattr__(self, "_sorted", np.sort(self.values))
        object.__setattr__(self, "_index", {tuple(int(v) for v in a): i for i, a in enumerate(self.architectures)})

    @classmethod
    def from_rows(cls, task: str, architectures: np.ndarray, values: np.ndarray) -> "TableTruth":
        """From per-seed rows ``(R, D)`` and ``(R,)``: each distinct configuration's mean; NaN rows ignored."""
        archs, values = np.asarray(architectures, dtype=np.int64), np.asarray(values, dtype=np.float64)
        keep = np.isfinite(values)
        keys, inverse = unique_rows(archs[keep], return_inverse=True)
        inverse = inverse.reshape(-1)
        return cls(task, keys, np.bincount(inverse, weights=values[keep]) / np.bincount(inverse))

    @classmethod
    def from_table(cls, table: Any) -> "TableTruth":
        """From a lookup table (search.evaluators._lookup.TaskTable): what the lookup evaluator answers from."""
        return cls.from_rows(table.task, table.architectures, table.val_accuracy)

    @property
    def num_configurations(self) -> int:
        return int(len(self.values))

    @property
    def best(self) -> float:
        return float(self._sorted[-1])

    def has(self, architecture: Sequence[int]) -> bool:
        return architecture_key(architecture) in self._index

    def value(self, architecture: Sequence[int]) -> float:
        key = architecture_key(architecture)
        if key not in self._index:
            raise NotTabulatedError(f"architecture {list(key)} is not one of the {self.num_configurations} "
                                    f"configurations of task {self.task!r}")
        return float(self.values[self._index[key]])

    def percentile_of(self, value: float) -> float:
        return 100.0 * int(np.searchsorted(self._sorted, value, side="right")) / self.num_configurations

    def rank_of(self, value: float) -> int:
        return 1 + self.num_configurations - int(np.searchsorted(self._sorted, value, side="right"))

    def judge(self, architecture: Sequence[int]) -> dict[str, Any]:
        """``{"architecture", "value", "regret", "percentile", "rank"}`` of one configuration."""
        v = self.value(architecture)
        return {"architecture": list(architecture_key(architecture)), "value": v, "regret": self.best - v,
                "percentile": self.percentile_of(v), "rank": self.rank_of(v)}

    def summary(self) -> dict[str, Any]:
        s = self._sorted
        return {"configurations": self.num_configurations, "best": self.best, "median": float(np.median(s)),
                "worst": float(s[0])}


def incumbent(evaluations: Sequence[Evaluation], n: int) -> Evaluation | None:
    """The best-observed ok evaluation among the first ``n`` (by index), earliest on ties; None if none is ok."""
    first = sorted(evaluations, key=lambda e: e.index)[:n]
    ok = [e for e in first if e.ok and math.isfinite(e.val_accuracy)]
    return max(ok, key=lambda e: (e.val_accuracy, -e.index)) if ok else None


def judge_search(truth: TableTruth, evaluations: Sequence[Evaluation], budgets: Sequence[int]) -> dict[int, dict]:
    """Per budget N: the true value, regret, percentile and rank of the incumbent after N evaluations.

    A budget beyond the evaluations made is judged on all of them (``evaluations`` says how many).
    """
    out = {}
    for n in budgets:
        inc = incumbent(evaluations, n)
        judged = truth.judge(inc.architecture) if inc is not None else \
            {"architecture": None, "value": math.nan, "regret": math.nan, "percentile": math.nan, "rank": None}
        out[int(n)] = {**judged, "evaluations": min(int(n), len(evaluations)),
                       "observed": inc.val_accuracy if inc is not None else math.nan,
                       "found_at": inc.index + 1 if inc is not None else None}
    return out


__all__ = ["TableTruth", "incumbent", "judge_search"]
