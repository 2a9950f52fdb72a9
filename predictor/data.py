"""Training triplets (z, u, v) of Eq. 3 read from the experiment store, one block per task.

For every task: the architectures of its ok experiments as encodings u (space.encode_many),
their validation accuracies v, the population statistics (mu_k, sigma_k) used to normalize v
(task-aware-performance-prediction.md Sec. 5.1), and the task's training samples (x, y) from
which the meta-features z are learned (Sec. 3.1). Bad input is refused here, before any
training starts, with an error that names the task.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from nasdb.errors import UnknownTaskError
from nasdb.space import SearchSpace

logger = logging.getLogger(__name__)


@dataclass
class TaskData:
    """One task's experiments and samples. Arrays are aligned row by row over its M experiments."""

    name: str
    architectures: np.ndarray  # (M, num_dimensions) int64 choice indices
    u: np.ndarray  # (M, encoding_size) float32 one-hot encodings
    accuracy: np.ndarray  # (M,) float32 validation accuracy
    seeds: np.ndarray  # (M,) int64 training seed of each experiment
    x: np.ndarray  # (N, feature_dim) float32 training-split samples
    y: np.ndarray  # (N,) int64 training-split labels
    num_classes: int
    skipped_nonfinite: int = 0  # rows dropped for a NaN/inf validation accuracy
    skipped_other_space: int = 0  # rows of another search space
    failed: int = 0  # rows with status "failed" (never read as training data)

    @property
    def mean(self) -> float:
        """mu_k: mean validation accuracy of the task's population (Sec. 5.1)."""
        return float(self.accuracy.mean())

    @property
    def std(self) -> float:
        """sigma_k: standard deviation of the task's population (0 when all are equal)."""
        return float(self.accuracy.std())

    @property
    def num_experiments(self) -> int:
        return int(self.accuracy.shape[0])

    def snapshot(self) -> dict[str, int]:
        return {"ok": self.num_experiments, "failed": self.failed, "nonfinite": self.skipped_nonfinite,
                "other_space": self.skipped_other_space, "samples": int(self.x.shape[0])}


@dataclass
class TrainingData:
    """The training set T of Algorithm 1: a search space and the data of each training task."""

    space: SearchSpace
    tasks: dict[str, TaskData] = field(default_factory=dict)

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def snapshot(self) -> dict[str, dict[str, int]]:
        """Row counts per task: what the predictor was trained on (stored with the checkpoint)."""
        return {name: t.snapshot() for name, t in self.tasks.items()}


def _store_task_names(store: Any) -> list[str]:
    """Tasks with experiments in the store, and registered tasks (which may have none yet)."""
    return sorted(set(store.task_stats().column("task").to_pylist()) | set(store.registered_tasks()))


def _resolve_space(store: Any, space: SearchSpace | str | None, rows: dict[str, Any]) -> SearchSpace:
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, str):
        return store.space(space)
    ids: dict[str, list[str]] = {}
    for name, table in rows.items():
        for sid in sorted(set(table.column("space_id").to_pylist())):
            ids.setdefault(sid, []).append(name)
    if len(ids) > 1:
        detail = "; ".join(f"{sid}: {', '.join(names)}" for sid, names in sorted(ids.items()))
        raise ValueError(f"the store holds experiments of {len(ids)} search spaces ({detail}); pass space_id")
    if not ids:
        raise ValueError("the store holds no ok experiments to train on")
    return store.space(next(iter(ids)))


def load_task_data(store: Any, name: str, space: SearchSpace, table: Any, *, failed: int,
                   feature_dim: int, max_classes: int) -> TaskData:
    """Build one task's block from its ok rows (a pyarrow table) and its stored samples."""
    space_ids = np.asarray(table.column("space_id").to_pylist(), dtype=object)
    mine = space_ids == space.space_id
    other = int((~mine).sum())
    if not mine.any() and len(space_ids):
        raise ValueError(f"task {name!r}: its experiments are in search space(s) {sorted(set(space_ids))}, "
                         f"not the requested {space.space_id}")
    archs = [a for a, keep in zip(table.column("architecture").to_pylist(), mine) if keep]
    acc = np.asarray(table.column("val_accuracy").to_pylist(), dtype=np.float64)[mine]
    seeds = np.asarray(table.column("seed").to_pylist(), dtype=np.int64)[mine]
    finite = np.isfinite(acc)
    nonfinite = int((~finite).sum())
    if nonfinite:
        logger.warning("task %r: skipped %d experiment(s) with a non-finite validation accuracy", name, nonfinite)
    if other:
        logger.warning("task %r: skipped %d experiment(s) of another search space", name, other)
    archs_arr = np.asarray([a for a, f in zip(archs, finite) if f], dtype=np.int64).reshape(-1, space.num_dimensions)
    try:
        u = space.encode_many(archs_arr)  # (M, D)
    except ValueError as e:
        raise ValueError(f"task {name!r}: a stored architecture does not fit space {space.name!r}: {e}") from None
    try:
        task = store.task(name)
    except UnknownTaskError:
        raise UnknownTaskError(f"task {name!r} has experiments in the store but its samples are gone (neither "
                               f"registered nor built in); leave it out with --exclude-task {name}") from None
    x, y = task.samples("train")
    if x.shape[1] != feature_dim:
        raise ValueError(f"task {name!r} has {x.shape[1]} features; the predictor expects feature_dim={feature_dim}")
    if task.num_classes > max_classes:
        raise ValueError(f"task {name!r} has {task.num_classes} classes; the predictor allows "
                         f"max_classes={max_classes}")
    return TaskData(name=name, architectures=archs_arr, u=u, accuracy=acc[finite].astype(np.float32),
                    seeds=seeds[finite], x=np.asarray(x, dtype=np.float32), y=np.asarray(y, dtype=np.int64),
                    num_classes=int(task.num_classes), skipped_nonfinite=nonfinite, skipped_other_space=other,
                    failed=failed)


def load_training_data(store: Any, *, space: SearchSpace | str | None = None, tasks: Iterable[str] | None = None,
                       exclude_tasks: Iterable[str] = (), min_experiments: int = 2, min_tasks: int = 2,
                       feature_dim: int = 64, max_classes: int = 10) -> TrainingData:
    """Read the training set from ``store``: every task with experiments (or ``tasks``), minus ``exclude_tasks``.

    Raises ValueError naming the task for: fewer than ``min_tasks`` tasks, a task with only failed
    rows, a task with fewer usable experiments than ``min_experiments`` (the mini-batch size), a
    space mismatch; UnknownTaskError for an excluded or requested task the store does not know.
    """
    known = _store_task_names(store)
    exclude = list(exclude_tasks)
    for name in exclude + list(tasks or []):
        if name not in known:
            raise UnknownTaskError(f"task {name!r} is not in the store (known: {', '.join(known) or 'none'})")
    names = [n for n in (list(tasks) if tasks is not None else known) if n not in set(exclude)]
    ok_rows = {n: store.experiments_arrow(n, status="ok") for n in names}
    failed = {n: store.count(n, status="failed") for n in names}
    for n in names:
        if ok_rows[n].num_rows == 0 and failed[n] > 0:
            raise ValueError(f"task {n!r} has only failed experiments ({failed[n]} failed, 0 ok)")
    names = [n for n in names if ok_rows[n].num_rows > 0]
    if len(names) < min_tasks:
        raise ValueError(f"fitting a predictor needs at least {min_tasks} tasks with experiments, got "
                         f"{len(names)} ({', '.join(names) or 'none'}"
                         f"{'; excluded: ' + ', '.join(exclude) if exclude else ''})")
    resolved = _resolve_space(store, space, {n: ok_rows[n] for n in names})
    data = TrainingData(space=resolved)
    for n in names:
        td = load_task_data(store, n, resolved, ok_rows[n], failed=failed[n],
                            feature_dim=feature_dim, max_classes=max_classes)
        if td.num_experiments < min_experiments:
            raise ValueError(f"task {n!r} has {td.num_experiments} usable experiments, fewer than the mini-batch "
                             f"of {min_experiments} (skipped: {td.skipped_nonfinite} non-finite, "
                             f"{td.skipped_other_space} other space, {td.failed} failed)")
        data.tasks[n] = td
    return data
