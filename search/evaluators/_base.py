"""The evaluator contract: turn proposed architectures (trials) into validation/test accuracies."""

from __future__ import annotations

import abc
import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from nasdb.errors import ArgumentError


@dataclass(frozen=True)
class Trial:
    """One architecture proposed by an agent: the ``index``-th trial of its run, on ``task``."""

    task: str
    index: int
    architecture: tuple[int, ...]
    seed: int
    experiment_id: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "architecture": list(self.architecture)}


def child_reward(val_accuracy: float, stopped_early: bool = False, predicted_final: float | None = None) -> float:
    """The reward of a successful child: its validation accuracy, or if it was stopped early its
    predicted final accuracy clipped to [0, 1] (Baker et al. Sec. 3 gives the agent y_hat_T)."""
    if stopped_early and predicted_final is not None and math.isfinite(predicted_final):
        return min(1.0, max(0.0, float(predicted_final)))
    return float(val_accuracy)


@dataclass(frozen=True)
class Evaluation:
    """A trial's outcome. ``reward`` is the validation accuracy, 0 for a failed child.

    A child stopped early by learning-curve prediction (accelerating-nas-performance-prediction-
    baker.md Sec. 3) has ``stopped_early``, the ``epochs`` it ran (its accuracies are those of
    the partly trained model) and ``predicted_final``, the predictor's estimate of its final
    validation accuracy; its reward is that estimate (the paper gives the agent y_hat_T for y_T).
    """

    task: str
    index: int
    architecture: tuple[int, ...]
    seed: int
    experiment_id: str
    val_accuracy: float
    test_accuracy: float
    status: str = "ok"
    error: str | None = None
    train_seconds: float = 0.0
    stopped_early: bool = False
    predicted_final: float | None = None  # set only for a child stopped early (finite)
    epochs: int | None = None  # epochs trained, where known

    @classmethod
    def of(cls, trial: Trial, val_accuracy: float, test_accuracy: float, *, status: str = "ok",
           error: str | None = None, train_seconds: float = 0.0, stopped_early: bool = False,
           predicted_final: float | None = None, epochs: int | None = None) -> "Evaluation":
        ok = status == "ok" and math.isfinite(val_accuracy) and math.isfinite(test_accuracy)
        if predicted_final is not None and not math.isfinite(predicted_final):
            predicted_final = None
        return cls(trial.task, trial.index, tuple(trial.architecture), trial.seed, trial.experiment_id,
                   float(val_accuracy), float(test_accuracy), "ok" if ok else "failed",
                   error, float(train_seconds), bool(stopped_early),
                   None if predicted_final is None else float(predicted_final),
                   None if epochs is None else int(epochs))

    @classmethod
    def from_row(cls, trial: Trial, row: dict[str, Any]) -> "Evaluation":
        """The evaluation a stored experiments row gives ``trial`` (early-stopping columns when present)."""
        test = row["test_accuracy"]
        return cls.of(trial, row["val_accuracy"], math.nan if test is None else test,
                      status=row.get("status", "ok"), error=row.get("error"),
                      train_seconds=row.get("train_seconds") or 0.0,
                      stopped_early=bool(row.get("stopped_early") or False), predicted_final=row.get("predicted_final"),
                      epochs=row.get("epochs"))

    @classmethod
    def failed(cls, trial: Trial, error: str) -> "Evaluation":
        return cls.of(trial, math.nan, math.nan, status="failed", error=error)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def complete(self) -> bool:
        """Trained to the end: its accuracies are final (what "best" and test statistics use)."""
        return self.ok and not self.stopped_early

    @property
    def reward(self) -> float:
        """What the agent learns from: the validation accuracy; for a child stopped early its
        predicted final accuracy clipped to [0, 1] (its partial accuracy if there is none); 0 if failed."""
        return child_reward(self.val_accuracy, self.stopped_early, self.predicted_final) if self.ok else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "architecture": list(self.architecture)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Evaluation":
        """Inverse of ``to_dict``; accepts JSON's None for a failed child's NaN accuracies."""
        nan = {k: math.nan for k in ("val_accuracy", "test_accuracy") if d.get(k) is None}
        return cls(**{**d, **nan, "architecture": tuple(int(v) for v in d["architecture"])})


class Evaluator(abc.ABC):
    """Evaluates trials on up to ``parallel`` workers; results come back in completion order.

    Contract (``test_evaluator_contract`` in tests/search/test_search_ray.py and tests/search/test_search_run.py):
    - ``submit(trial)`` never blocks on the evaluation itself; at most ``parallel`` trials are
      pending, and submitting more raises ``RuntimeError``.
    - ``results()`` blocks until at least one pending trial is done and returns the done ones
      (an empty list when nothing is pending). Every submitted trial comes back exactly once,
      as an ``Evaluation`` (a child that fails to train comes back with status "failed").
    - ``submit_batch(trials)`` hands a search batch to one worker, evaluated together (the
      training evaluator: one batched-trainer call and one flush); at most ``parallel`` batches
      are in flight (``num_busy``), more raises ``RuntimeError``. ``batch_results()`` blocks until
      at least one batch is done and returns the done batches, each in the order submitted.
      ``resume``: the batch was in flight before an interruption, so some of its children may
      already be stored (the training evaluator reads those back, never retrains them).
      A search uses either trials or batches, not both at once.
    - A problem with the request itself (e.g. an architecture the lookup table lacks) raises.
    - ``close()`` releases resources (actors); evaluators are context managers.
    """

    name: ClassVar[str]

    def __init__(self, parallel: int = 1):
        if int(parallel) != parallel or parallel < 1:
            raise ArgumentError(f"parallel (evaluations in flight) must be an integer >= 1, got {parallel!r}")
        self.parallel = int(parallel)
        self._batches: list[list[Trial]] = []  # the default batch methods' queue (see submit_batch)

    @property
    @abc.abstractmethod
    def num_pending(self) -> int:
        """Trials submitted and not yet returned by ``results``."""

    @property
    def num_busy(self) -> int:
        """Workers holding a submitted batch not yet returned by ``batch_results``."""
        return len(self._batches)

    @abc.abstractmethod
    def _submit(self, trial: Trial) -> None:
        ...

    @abc.abstractmethod
    def results(self) -> list[Evaluation]:
        ...

    def submit(self, trial: Trial) -> None:
        if self.num_pending >= self.parallel:
            raise RuntimeError(f"{self.name} evaluator already has {self.num_pending} trials in flight "
                               f"(parallel={self.parallel})")
        self._submit(trial)

    def evaluate(self, trials: list[Trial]) -> list[Evaluation]:
        """Evaluate ``trials`` (``parallel`` at a time); results in the order of ``trials``."""
        if self.num_pending:
            raise RuntimeError(f"evaluate() needs an idle evaluator, but {self.num_pending} trials are in flight")
        queue, done = list(trials), {}
        while queue or self.num_pending:
            while queue and self.num_pending < self.parallel:
                self.submit(queue.pop(0))
            for ev in self.results():
                done[ev.index] = ev
        return [done[t.index] for t in trials]

    def submit_batch(self, trials: list[Trial], resume: bool = False) -> None:
        """Hand ``trials`` to one worker, evaluated together (see the class docstring)."""
        if not trials:
            raise ArgumentError("a batch needs at least one trial, got none")
        if self.num_busy >= self.parallel:
            raise RuntimeError(f"{self.name} evaluator already has {self.num_busy} batches in flight "
                               f"(parallel={self.parallel})")
        self._submit_batch(list(trials), resume)

    def _submit_batch(self, trials: list[Trial], resume: bool) -> None:
        """By default a batch is queued and evaluated by ``evaluate`` when its results are asked for."""
        self._batches.append(trials)

    def batch_results(self) -> list[list[Evaluation]]:
        """The done batches (see the class docstring); by default the oldest queued one."""
        return [self.evaluate(self._batches.pop(0))] if self._batches else []

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "args": {"parallel": self.parallel}}

    def close(self) -> None:
        pass

    def __enter__(self) -> "Evaluator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def architecture_key(architecture) -> tuple[int, ...]:
    return tuple(int(v) for v in np.asarray(architecture).reshape(-1))
