"""Lookup evaluator: answer trials from a fully tabulated benchmark already in the store.

For cheap head-to-head comparisons of search strategies (the idea of NAS-Bench-style tabular
benchmarks, and the imported ones of ``nasdb import-benchmark``): no child is trained; the
reward is the stored validation accuracy (a benchmark's performance, higher is better) of the
architecture on the task. Trials return in submission order once ``parallel`` are in flight,
which mimics the staleness of asynchronous training. An imported benchmark has no test split:
its evaluations carry a NaN test accuracy and still count as ok.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nasdb.errors import ArgumentError, NotTabulatedError
from nasdb.space import SearchSpace, unique_rows
from search.evaluators._base import Evaluation, Evaluator, Trial, architecture_key

_COLUMNS = ["experiment_id", "space_id", "architecture", "relaxed_weights", "seed", "recipe", "val_accuracy",
            "test_accuracy", "train_seconds", "stopped_early"]


def _recipe_key(recipe: Any) -> str:
    if isinstance(recipe, str):
        recipe = json.loads(recipe)
    return json.dumps(recipe, sort_keys=True)


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    """A float column as float64 with nulls as NaN (an imported benchmark's test accuracy is null)."""
    return column.cast(pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class TaskTable:
    """One task's stored rows of one space and recipe, as arrays aligned over its R rows.

    ``rows[key]`` lists the row numbers of one architecture in (seed, experiment_id) order.
    """

    task: str
    architectures: np.ndarray  # (R, num_dimensions) int64
    seeds: np.ndarray  # (R,) int64
    val_accuracy: np.ndarray  # (R,) float64
    test_accuracy: np.ndarray  # (R,) float64, NaN where the row has none
    train_seconds: np.ndarray  # (R,) float64, 0 where null
    experiment_ids: list[str]  # (R,)
    rows: dict[tuple[int, ...], np.ndarray]

    def __len__(self) -> int:
        return len(self.rows)

    def mean_values(self) -> tuple[np.ndarray, np.ndarray]:
        """Each distinct architecture (A, D) and its validation accuracy averaged over its rows (seeds) (A,)."""
        keys, inverse = unique_rows(self.architectures, return_inverse=True)
        inverse = inverse.reshape(-1)
        return keys, np.bincount(inverse, weights=self.val_accuracy) / np.bincount(inverse)


def load_table(store, task: str, space: SearchSpace, recipe: dict | None = None) -> TaskTable:
    """The rows a lookup of ``task`` may answer with: ok, ``space``, discrete, not stopped early, one recipe.

    Rows of relaxed (continuous) architectures are not measurements of a discrete one and rows
    of children stopped early hold a partial accuracy: both are skipped. Without ``recipe`` the
    task's rows must share one (ValueError listing them); NotTabulatedError when none is left.
    """
    table = store.experiments_arrow(task, status="ok", columns=_COLUMNS)
    keep = pc.and_(pc.equal(table.column("space_id"), space.space_id), pc.is_null(table.column("relaxed_weights")))
    keep = pc.and_(keep, pc.invert(table.column("stopped_early").fill_null(False)))
    table = table.filter(keep)
    recipes = pc.unique(table.column("recipe")).to_pylist()
    keys = {r: _recipe_key(r) for r in recipes}
    if recipe is not None:
        want = _recipe_key(recipe)
        table = table.filter(pa.array([keys[r] == want for r in table.column("recipe").to_pylist()], pa.bool_()))
    elif len(set(keys.values())) > 1:
        found = sorted(set(keys.values()))
        raise ArgumentError(f"task {task!r} has rows trained with {len(found)} recipes ({'; '.join(found)}); pick one "
                            f"(e.g. --epochs) for the lookup evaluator")
    if table.num_rows == 0:
        which = f" with recipe {_recipe_key(recipe)}" if recipe is not None else ""
        raise NotTabulatedError(
            f"task {task!r} has no stored rows of space {space.space_id}{which} in store {store.uri}: nothing "
            f"to look up (populate it first or use the train evaluator)")
    table = table.sort_by([("seed", "ascending"), ("experiment_id", "ascending")])
    archs = _architectures(table.column("architecture"), space.num_dimensions, task)
    _, inverse = unique_rows(archs, return_inverse=True)
    inverse = inverse.reshape(-1)
    by_arch = np.argsort(inverse, kind="stable")  # rows grouped by architecture, (seed, id) order kept
    bounds = np.r_[0, np.cumsum(np.bincount(inverse))]
    rows = {tuple(int(v) for v in archs[by_arch[lo]]): by_arch[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:])}
    return TaskTable(task, archs, table.column("seed").to_numpy(zero_copy_only=False).astype(np.int64),
                     _floats(table.column("val_accuracy")), _floats(table.column("test_accuracy")),
                     np.nan_to_num(_floats(table.column("train_seconds"))), table.column("experiment_id").to_pylist(),
                     rows)


def _architectures(column: pa.ChunkedArray, num_dimensions: int, task: str) -> np.ndarray:
    """An arrow list<int> column as an (R, num_dimensions) int64 array (no Python lists: R may be ~250k)."""
    column = column.combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != num_dimensions)
    if bad.size:
        raise ArgumentError(f"task {task!r}: a stored architecture has {int(lengths[bad[0]])} entries, the space has "
                            f"{num_dimensions} dimensions")
    return pc.list_flatten(column).to_numpy(zero_copy_only=False).astype(np.int64).reshape(-1, num_dimensions)


class LookupEvaluator(Evaluator):
    """Answers each trial with a stored row of the same task, space and architecture.

    With several rows for one architecture (different seeds), the trial's seed picks one
    (``rows[seed % len(rows)]`` in seed order), so repeated proposals see the stored noise.
    ``recipe`` restricts rows to one training recipe; without it the task's rows must share one.
    Tasks named in ``tasks`` are loaded, and checked to have rows, at construction
    (``load_table``: which rows count).
    """

    name = "lookup"

    def __init__(self, store, space: SearchSpace, *, recipe: dict | None = None, parallel: int = 1,
                 tasks: Sequence[str] = ()):
        super().__init__(parallel)
        self.store, self.space, self.recipe = store, space, recipe
        self._tables: dict[str, TaskTable] = {}
        self._done: deque[Evaluation] = deque()
        for t in tasks:
            self.table(t)

    @property
    def num_pending(self) -> int:
        return len(self._done)

    def table(self, task: str) -> TaskTable:
        """The lookup table of ``task`` (loaded once)."""
        if task not in self._tables:
            self._tables[task] = load_table(self.store, task, self.space, self.recipe)
        return self._tables[task]

    def _submit(self, trial: Trial) -> None:
        table = self.table(trial.task)
        key = architecture_key(trial.architecture)
        if key not in table.rows:
            raise NotTabulatedError(
                f"architecture {list(key)} of task {trial.task!r} is not tabulated in store {self.store.uri} "
                f"({len(table)} architectures of space {self.space.space_id} are); the lookup evaluator needs a "
                f"fully tabulated benchmark")
        rows = table.rows[key]
        i = int(rows[trial.seed % len(rows)])
        val, test = float(table.val_accuracy[i]), float(table.test_accuracy[i])
        ok = math.isfinite(val) and not math.isinf(test)  # a null test accuracy (NaN) is fine: no test split
        self._done.append(Evaluation(trial.task, trial.index, tuple(trial.architecture), int(table.seeds[i]),
                                     table.experiment_ids[i], val, test, "ok" if ok else "failed",
                                     None if ok else "non-finite stored accuracy", float(table.train_seconds[i])))

    def results(self) -> list[Evaluation]:
        return [self._done.popleft()] if self._done else []

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "args": {"parallel": self.parallel, "recipe": self.recipe}}
