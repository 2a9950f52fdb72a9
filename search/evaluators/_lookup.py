"""Lookup evaluator: answer trials from a fully tabulated benchmark already in the store.

For cheap head-to-head comparisons of search strategies (the idea of NAS-Bench-style tabular
benchmarks): no child is trained; the reward is the stored validation accuracy of the
architecture on the task. Trials return in submission order once ``parallel`` are in flight,
which mimics the staleness of asynchronous training.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import replace
from typing import Any, Sequence

from nasdb.errors import NasdbError
from nasdb.space import SearchSpace
from search.evaluators._base import Evaluation, Evaluator, Trial, architecture_key


class NotTabulatedError(NasdbError, KeyError):
    """The lookup table has no row for a requested (task, architecture)."""


def _recipe_key(recipe: Any) -> str:
    if isinstance(recipe, str):
        recipe = json.loads(recipe)
    return json.dumps(recipe, sort_keys=True)


class LookupEvaluator(Evaluator):
    """Answers each trial with a stored row of the same task, space and architecture.

    Rows of relaxed (continuous) architectures are not measurements of a discrete one and are skipped.
    With several rows for one architecture (different seeds), the trial's seed picks one
    (``rows[seed % len(rows)]`` in seed order), so repeated proposals see the stored noise.
    ``recipe`` restricts rows to one training recipe; without it the task's rows must share one.
    Tasks named in ``tasks`` are loaded, and checked to have rows, at construction.
    """

    name = "lookup"

    def __init__(self, store, space: SearchSpace, *, recipe: dict | None = None, parallel: int = 1,
                 tasks: Sequence[str] = ()):
        super().__init__(parallel)
        self.store, self.space, self.recipe = store, space, recipe
        self._tables: dict[str, dict[tuple[int, ...], list[dict]]] = {}
        self._done: deque[Evaluation] = deque()
        for t in tasks:
            self.table(t)

    @property
    def num_pending(self) -> int:
        return len(self._done)

    def table(self, task: str) -> dict[tuple[int, ...], list[dict]]:
        """``{architecture: [rows sorted by seed]}`` of ``task`` (loaded once)."""
        if task in self._tables:
            return self._tables[task]
        cols = ["experiment_id", "space_id", "architecture", "relaxed_weights", "seed", "recipe", "val_accuracy",
                "test_accuracy", "train_seconds"]
        rows = [r for r in self.store.experiments_arrow(task, status="ok").select(cols).to_pylist()
                if r["space_id"] == self.space.space_id and r["relaxed_weights"] is None]
        recipes = sorted({_recipe_key(r["recipe"]) for r in rows})
        if self.recipe is not None:
            want = _recipe_key(self.recipe)
            rows = [r for r in rows if _recipe_key(r["recipe"]) == want]
        elif len(recipes) > 1:
            raise ValueError(f"task {task!r} has rows trained with {len(recipes)} recipes ({'; '.join(recipes)}); "
                             f"pick one (e.g. --epochs) for the lookup evaluator")
        if not rows:
            which = f" with recipe {_recipe_key(self.recipe)}" if self.recipe is not None else ""
            raise NotTabulatedError(
                f"task {task!r} has no stored rows of space {self.space.space_id}{which} in store "
                f"{self.store.root!s}: nothing to look up (populate it first or use the train evaluator)")
        table: dict[tuple[int, ...], list[dict]] = {}
        for r in sorted(rows, key=lambda r: (r["seed"], r["experiment_id"])):
            table.setdefault(architecture_key(r["architecture"]), []).append(r)
        self._tables[task] = table
        return table

    def _submit(self, trial: Trial) -> None:
        table = self.table(trial.task)
        key = architecture_key(trial.architecture)
        if key not in table:
            raise NotTabulatedError(
                f"architecture {list(key)} of task {trial.task!r} is not tabulated in store {self.store.root!s} "
                f"({len(table)} architectures of space {self.space.space_id} are); the lookup evaluator needs a "
                f"fully tabulated benchmark")
        rows = table[key]
        row = rows[trial.seed % len(rows)]
        ev = Evaluation.of(trial, row["val_accuracy"], row["test_accuracy"], train_seconds=row["train_seconds"] or 0.0)
        self._done.append(replace(ev, experiment_id=row["experiment_id"], seed=int(row["seed"])))

    def results(self) -> list[Evaluation]:
        return [self._done.popleft()] if self._done else []

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "args": {"parallel": self.parallel, "recipe": self.recipe}}
