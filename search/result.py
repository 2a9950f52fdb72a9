"""What a search run returns: its evaluations in proposal order and the statistics the papers report."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from search.evaluators import Evaluation


def jsonable(obj: Any) -> Any:
    """``obj`` with NaN/inf floats as None, so that ``json.dumps`` writes strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    return obj


@dataclass
class SearchResult:
    """A finished (or resumed-and-finished) search: ``evaluations`` sorted by trial index.

    "The number of child models it took" (task-aware paper Table 3) is the 1-based position
    of the best-by-validation child in proposal order (``best_position``).

    With early stopping (accelerating-nas-performance-prediction-baker.md Sec. 3) children
    stopped early never count as "best" and their accuracies never enter the test statistics
    (``best``, ``best_so_far``, ``first``): they are those of a partly trained model, and the
    child was stopped because it was predicted, with probability >= Delta, to end below the
    best complete child so far. Only their reward (the predicted final accuracy) reached the agent.
    """

    run_id: str
    task: str
    agent: dict[str, Any]  # the agent's describe()
    evaluator: dict[str, Any]  # the evaluator's describe()
    budget: int
    evaluations: list[Evaluation]
    wall_seconds: float = 0.0
    pretrain_children: int = 0  # children of other tasks the agent learned from before this search
    sessions: int = 1  # how many times the run was started (> 1: it was resumed)
    checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.evaluations = sorted(self.evaluations, key=lambda e: e.index)

    # -- statistics --------------------------------------------------------------------
    @property
    def num_evaluations(self) -> int:
        return len(self.evaluations)

    @property
    def num_failed(self) -> int:
        return sum(not e.ok for e in self.evaluations)

    @property
    def num_stopped(self) -> int:
        """Children stopped early (ok, not trained to the end)."""
        return sum(e.ok and e.stopped_early for e in self.evaluations)

    @property
    def epochs_trained(self) -> int | None:
        """Training epochs over all children (None when some evaluation does not know its epochs)."""
        epochs = [e.epochs for e in self.evaluations]
        return None if any(x is None for x in epochs) else int(sum(epochs))

    @property
    def best(self) -> Evaluation | None:
        """The complete child with the best validation accuracy (earliest on ties)."""
        done = [e for e in self.evaluations if e.complete]
        return max(done, key=lambda e: (e.val_accuracy, -e.index)) if done else None

    @property
    def best_position(self) -> int | None:
        b = self.best
        return None if b is None else self.evaluations.index(b) + 1

    def first(self, n: int = 10) -> dict[str, float]:
        """Mean and standard deviation of the test accuracy of the first ``n`` children (Table 3/4);
        ``n`` in the answer counts those that trained to the end (the others are left out)."""
        acc = np.array([e.test_accuracy for e in self.evaluations[:n] if e.complete], dtype=np.float64)
        if not acc.size:
            return {"n": 0, "mean": math.nan, "std": math.nan}
        return {"n": int(acc.size), "mean": float(acc.mean()), "std": float(acc.std())}

    def best_so_far(self, top_n: int = 1) -> np.ndarray:
        """Test accuracy (mean over the ``top_n`` best-by-validation so far) after each child, shape (N,).

        ``top_n=10`` is T-NAML's accuracy-top10 learning curve (its Fig. 2); NaN until a child succeeds.
        """
        out, seen = [], []
        for e in self.evaluations:
            if e.complete:
                seen.append((e.val_accuracy, e.test_accuracy))
            top = sorted(seen, key=lambda vt: -vt[0])[:top_n]
            out.append(float(np.mean([t for _, t in top])) if top else math.nan)
        return np.array(out, dtype=np.float64)

    # -- serialization -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "run_id": self.run_id, "task": self.task, "agent": self.agent, "evaluator": self.evaluator,
            "budget": self.budget, "num_evaluations": self.num_evaluations, "num_failed": self.num_failed,
            "wall_seconds": self.wall_seconds, "pretrain_children": self.pretrain_children,
            "sessions": self.sessions, "checkpoint": self.checkpoint,
            "best": None if best is None else best.to_dict(), "best_position": self.best_position,
            "first10": self.first(10), "num_stopped": self.num_stopped, "epochs_trained": self.epochs_trained,
            "evaluations": [e.to_dict() for e in self.evaluations], **self.extra,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SearchResult":
        keys = ("run_id", "task", "agent", "evaluator", "budget", "wall_seconds", "pretrain_children", "sessions",
                "checkpoint")
        return cls(**{k: d[k] for k in keys}, evaluations=[Evaluation.from_dict(e) for e in d["evaluations"]])

    def to_json(self) -> str:
        return json.dumps(jsonable(self.to_dict()), default=str)

    def summary(self) -> str:
        """One line for the CLI."""
        b, f = self.best, self.first(10)

        def num(v: float) -> str:  # an imported benchmark has no test split: n/a, not nan
            return "n/a" if v is None or math.isnan(v) else f"{v:.4f}"
        best = "no successful child" if b is None else (
            f"best val {num(b.val_accuracy)} test {num(b.test_accuracy)} at child {self.best_position}")
        stopped = f", {self.num_stopped} stopped early" if self.num_stopped else ""
        epochs = f"; {self.epochs_trained} epochs trained" if self.num_stopped and self.epochs_trained else ""
        return (f"{self.agent['name']} on {self.task} [{self.run_id}]: {self.num_evaluations}/{self.budget} children "
                f"({self.num_failed} failed{stopped}), {best}; first-10 test {num(f['mean'])} +- {num(f['std'])}"
                f"{epochs}; {self.wall_seconds:.1f}s")
