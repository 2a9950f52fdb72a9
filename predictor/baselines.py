"""Task-agnostic baselines the task-aware predictor must beat (issue 16), on the same rows and split.

Each baseline sees only the training tasks of a leave-one-task-out split, and the same
rows the predictor is judged on: each distinct architecture of a task with its validation
accuracy averaged over seeds (``unique_architectures``).

- ``gbm``: scikit-learn's ``HistGradientBoostingRegressor`` (300 iterations, no early
  stopping, fixed random_state) on the one-hot encoding u, fitted to each training task's
  within-task quantile ranks (predictor.data.quantile_rank) of those means; no task
  information, so one model scores every task alike.
- ``ridge``: the same with ridge regression.
- ``portfolio`` (zero-shot only): one architecture to try first on a new task, the
  suggestion Algorithm 2 has to beat. Where the training tasks share architectures (an
  imported benchmark tabulates the same configurations for every dataset), the one with the
  best mean within-task rank over them; otherwise (the suite: each task has its own random
  architectures) the best stored architecture of the nearest training task by meta-features
  (the fitted predictor's task embedding z), or, without meta-features, the best of all
  training tasks by within-task quantile (ties: by task-normalized accuracy).

Rankers (gbm, ridge) give Spearman/Pearson on a held-out task and, by their argmax over the
task's configurations, a pick; the portfolio gives a pick only. Everything is deterministic.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from nasdb.errors import ArgumentError, ConfigError
from nasdb.ranks import quantile_rank
from nasdb.space import unique_rows
from predictor.data import TaskData, TrainingData

GBM_ITERATIONS = 300
RANDOM_STATE = 0
PORTFOLIO_CANDIDATES = 10  # runner-ups kept after the pick (a table slice may lack the pick itself)


def distinct_architectures(task: TaskData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each distinct architecture (A, num_dimensions), its encoding (A, D) and mean accuracy over seeds (A,).

    Linear in the rows (np.unique + bincount): an imported benchmark task has ~250k rows.
    """
    keys, first, inverse = unique_rows(task.architectures, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    mean_acc = np.bincount(inverse, weights=task.accuracy) / np.bincount(inverse)  # (A,)
    return keys, task.u[first], mean_acc


def unique_architectures(task: TaskData) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct architecture's encoding (A, D) and its accuracy averaged over seeds (A,)."""
    _, u, mean_acc = distinct_architectures(task)
    return u, mean_acc


def rank_rows(data: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """The baselines' training set: every training task's distinct encodings (N, D) and within-task ranks (N,)."""
    us, ranks = [], []
    for task in data.tasks.values():
        _, u, mean = distinct_architectures(task)
        us.append(u)
        ranks.append(quantile_rank(mean))
    return np.concatenate(us).astype(np.float32), np.concatenate(ranks)


class FittedRanker:
    """A fitted task-agnostic regressor: ``scores(u (A, D)) -> (A,)``, higher = predicted better."""

    def __init__(self, name: str, estimator: Any):
        self.name, self.estimator = name, estimator

    def scores(self, u: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator.predict(np.asarray(u, dtype=np.float32)), dtype=np.float64)

    def pick(self, task: TaskData) -> list[int]:
        """Its argmax over the task's stored (distinct) architectures, first on ties."""
        archs, u, _ = distinct_architectures(task)
        return [int(v) for v in archs[int(np.argmax(self.scores(u)))]]


@dataclass(frozen=True)
class RankerBaseline:
    """A regressor on the one-hot encoding fitted to within-task quantile ranks (no task information)."""

    name: str
    description: str
    make: Callable[[], Any]
    zero_shot_only: bool = False

    def describe(self) -> dict[str, Any]:
        est = self.make()
        return {"name": self.name, "description": self.description, "estimator": type(est).__name__,
                "args": {k: v for k, v in est.get_params().items() if _plain(v)}}

    def fit(self, train: TrainingData) -> FittedRanker:
        """Fit on every task of ``train`` (the held-out task already left out), on one thread."""
        from threadpoolctl import threadpool_limits

        u, ranks = rank_rows(train)
        est = self.make()
        with threadpool_limits(1):  # LOTO runs several of these in parallel processes
            est.fit(u, ranks)
        return FittedRanker(self.name, est)


@dataclass(frozen=True)
class PortfolioBaseline:
    """The architecture to try first on a new task without a predictor (see the module docstring)."""

    name: str = "portfolio"
    description: str = ("best mean within-task rank over the training tasks where they share architectures; "
                        "else the best stored architecture of the nearest training task by meta-features z, "
                        "or of all training tasks by within-task quantile without meta-features")
    zero_shot_only: bool = True

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "candidates": PORTFOLIO_CANDIDATES}

    def pick(self, train: TrainingData, z: np.ndarray | None = None,
             task_z: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
        """``{"architecture", "candidates" (best first, the pick first), "rule", "source_task"}``.

        ``z``: the held-out task's meta-features (Z,), ``task_z``: each training task's; both
        from the fitted predictor (``task_embeddings``); None without meta-features.
        """
        shared = _shared_best(train)
        if shared is not None:
            return {"architecture": shared[0], "candidates": shared, "rule": "shared", "source_task": None}
        if z is not None and task_z:
            z = np.asarray(z, dtype=np.float64).reshape(-1)
            names = [n for n in train.task_names if n in task_z]
            if not names:
                raise ConfigError(f"no training task has meta-features (training tasks: {train.task_names})")
            dist = [float(np.linalg.norm(np.asarray(task_z[n], dtype=np.float64).reshape(-1) - z)) for n in names]
            nearest = names[min(range(len(names)), key=lambda i: (dist[i], names[i]))]
            archs, _, mean = distinct_architectures(train.tasks[nearest])
            order = np.lexsort((np.arange(len(mean)), -mean))[:PORTFOLIO_CANDIDATES]
            cands = [[int(v) for v in archs[i]] for i in order]
            return {"architecture": cands[0], "candidates": cands, "rule": "nearest-task", "source_task": nearest}
        names = sorted(train.task_names)
        archs, q, norm, owner = [], [], [], []
        for k, name in enumerate(names):
            a, _, mean = distinct_architectures(train.tasks[name])
            archs.append(a)
            q.append(quantile_rank(mean))
            norm.append((mean - mean.mean()) / (mean.std() or 1.0))
            owner.append(np.full(len(mean), k))
        owner_all = np.concatenate(owner)
        # best quantile first; ties: higher task-normalized accuracy, then task name, then architecture order
        order = np.lexsort((np.arange(len(owner_all)), owner_all, -np.concatenate(norm),
                            -np.concatenate(q)))[:PORTFOLIO_CANDIDATES]
        archs_all = np.concatenate(archs)
        cands = [[int(v) for v in archs_all[i]] for i in order]
        return {"architecture": cands[0], "candidates": cands, "rule": "best-quantile",
                "source_task": names[int(owner_all[order[0]])]}


def _shared_best(train: TrainingData) -> list[list[int]] | None:
    """Architectures stored in every training task (one task: all of its own), best mean within-task rank
    first; None when no architecture is stored in all of them."""
    found = shared_best([distinct_architectures(task)[::2] for task in train.tasks.values()])
    return None if found is None else [[int(v) for v in a] for a in found]


def shared_best(tasks: Iterable[tuple[np.ndarray, np.ndarray]]) -> np.ndarray | None:
    """From each task's distinct architectures and their mean performance ``((M, num_dimensions), (M,))``:
    the architectures stored in every task, best mean within-task rank first -> (<= PORTFOLIO_CANDIDATES,
    num_dimensions); None when no architecture is stored in all of them."""
    keys, ranks = [], []
    for archs, mean in tasks:
        keys.append(np.asarray(archs, dtype=np.int64))
        ranks.append(quantile_rank(mean))
    if not keys:
        return None
    allk = np.concatenate(keys)  # (N, num_dimensions)
    uniq, inverse, counts = unique_rows(allk, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    mean_rank = np.bincount(inverse, weights=np.concatenate(ranks)) / counts  # (U,)
    everywhere = np.flatnonzero(counts == len(keys))  # distinct per task, so count == tasks: in all of them
    if not len(everywhere):
        return None
    order = everywhere[np.lexsort((everywhere, -mean_rank[everywhere]))][:PORTFOLIO_CANDIDATES]
    return uniq[order].reshape(len(order), allk.shape[1])


def held_out_picks(data: TrainingData, held_out: str, names: Iterable[str], z: np.ndarray | None = None,
                   task_z: Mapping[str, np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
    """Each named baseline's pick for ``held_out``, fitted on the other tasks of ``data``.

    A ranker's pick is its argmax over the held-out task's stored configurations (their values
    unread), with its next-best as ``candidates``; the portfolio's as ``PortfolioBaseline.pick``.
    -> ``{name: {"architecture", "candidates", "rule", "source_task", "seconds"}}``.
    """
    if held_out not in data.tasks:
        raise ArgumentError(f"held-out task {held_out!r} is not in the data ({', '.join(data.task_names)})")
    train, out = data.without(held_out), {}
    for name in names:
        start, baseline = time.perf_counter(), BASELINES[name]
        if isinstance(baseline, PortfolioBaseline):
            pick = baseline.pick(train, z=z, task_z=task_z)
        else:
            archs, u, _ = distinct_architectures(data.tasks[held_out])
            scores = baseline.fit(train).scores(u)
            order = np.lexsort((np.arange(len(scores)), -scores))[:PORTFOLIO_CANDIDATES]
            cands = [[int(v) for v in archs[i]] for i in order]
            pick = {"architecture": cands[0], "candidates": cands, "rule": "argmax", "source_task": None}
        out[name] = {**pick, "seconds": time.perf_counter() - start}
    return out


def task_embeddings(model: Any, data: TrainingData) -> dict[str, np.ndarray]:
    """Meta-features z (flattened) of every task of ``data`` with samples, by the fitted predictor."""
    import torch

    out = {}
    with torch.no_grad():
        for name, task in data.tasks.items():
            if task.has_samples:
                z = model.task_embedding(torch.as_tensor(task.x, dtype=torch.float32),
                                         torch.as_tensor(task.y, dtype=torch.int64),
                                         landmarks=task.landmarks_for(model))
                out[name] = np.asarray(z.detach().cpu().numpy(), dtype=np.float64).reshape(-1)
    return out


def _gbm() -> Any:
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=GBM_ITERATIONS, early_stopping=False, random_state=RANDOM_STATE)


def _ridge() -> Any:
    from sklearn.linear_model import Ridge

    return Ridge(alpha=1.0)


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v))


#: The registry: name -> baseline, each describing itself.
BASELINES: dict[str, RankerBaseline | PortfolioBaseline] = {
    "gbm": RankerBaseline("gbm", f"HistGradientBoostingRegressor ({GBM_ITERATIONS} iterations) on the one-hot "
                                 f"encoding, fitted to the training tasks' within-task quantile ranks", _gbm),
    "ridge": RankerBaseline("ridge", "ridge regression on the one-hot encoding, fitted to the training tasks' "
                                     "within-task quantile ranks", _ridge),
    "portfolio": PortfolioBaseline(),
}
RANKERS = tuple(n for n, b in BASELINES.items() if not b.zero_shot_only)


def parse_baselines(value: str | Iterable[str] | None, *, zero_shot: bool) -> tuple[str, ...]:
    """Baseline names from ``"gbm,ridge"`` (or a list); ``"none"`` or empty: none.

    Raises ValueError naming an unknown baseline, or a zero-shot-only one asked for in a
    ranking report (``zero_shot=False``).
    """
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value or ()) if v.strip()]
    if names == ["none"]:
        return ()
    out: list[str] = []
    for n in names:
        if n not in BASELINES:
            raise ArgumentError(f"unknown baseline {n!r}; known: {', '.join(BASELINES)} (or none)")
        if BASELINES[n].zero_shot_only and not zero_shot:
            raise ArgumentError(f"baseline {n!r} is zero-shot only (it picks one architecture, it ranks none); "
                                f"a ranking report takes {', '.join(RANKERS)}")
        if n not in out:
            out.append(n)
    return tuple(out)


__all__ = ["BASELINES", "RANKERS", "FittedRanker", "PortfolioBaseline", "RankerBaseline", "distinct_architectures",
           "held_out_picks", "parse_baselines", "rank_rows", "task_embeddings", "unique_architectures"]
