"""The search-agent contract: propose architectures (``ask``), learn from their rewards (``tell``)."""

from __future__ import annotations

import abc
from typing import Any, ClassVar, Sequence

import numpy as np

from nasdb.errors import ArgumentError
from nasdb.space import SearchSpace


class SearchAgent(abc.ABC):
    """A strategy that proposes architectures of ``space`` for ``task`` and learns from rewards.

    Contract (tested for every agent in tests/search/test_search_controller.py, ``test_agent_contract_*``):
    - ``ask(n)`` returns an ``(n, num_dimensions)`` int64 array of valid architectures; it may be
      called several times before the matching ``tell`` (several evaluations in flight).
    - ``tell(architectures, rewards)`` takes architectures this agent proposed, in any order
      of completion; the reward is the validation accuracy (0 for a failed child).
    - ``state_dict()`` holds everything needed to continue: after ``load_state_dict`` on a
      fresh agent built from the same ``describe()``, ``ask`` continues the same stream.
    - ``describe()`` is ``{"name": ..., "args": {...}}``, JSON-serializable, stored with the
      rows and checkpoints the agent produces; ``create_agent(**describe())`` rebuilds it.
    """

    name: ClassVar[str]

    def __init__(self, space: SearchSpace, task: str, *, seed: int = 0):
        if not isinstance(space, SearchSpace):
            raise TypeError(f"space must be a nasdb SearchSpace, got {type(space).__name__}")
        if not task or not isinstance(task, str):
            raise ArgumentError(f"task must be a non-empty task name, got {task!r}")
        self.space, self.task, self.seed = space, task, int(seed)
        self.num_told = 0

    @abc.abstractmethod
    def _ask(self, n: int, task: str) -> np.ndarray:
        """``n`` architectures for ``task`` (already checked), shape ``(n, num_dimensions)``."""

    @abc.abstractmethod
    def _tell(self, architectures: np.ndarray, rewards: np.ndarray, task: str) -> None:
        """Learn from validated architectures and finite rewards on ``task``."""

    def ask(self, n: int = 1, task: str | None = None) -> np.ndarray:
        """``n`` architectures to evaluate next, shape ``(n, num_dimensions)``.

        ``task`` defaults to the agent's target task; only multitask agents accept others."""
        return self._ask(self._check_n(n), self._check_task(task))

    def tell(self, architectures: Sequence[Sequence[int]], rewards: Sequence[float],
             task: str | None = None) -> None:
        """Report the rewards (validation accuracies) of architectures this agent proposed."""
        task = self._check_task(task)
        archs, rewards = self._check_results(architectures, rewards)
        if len(rewards):
            self._tell(archs, rewards, task)
        self.num_told += len(rewards)

    def tasks(self) -> list[str]:
        """Tasks this agent can be asked about: the target, plus pre-training tasks if multitask."""
        return [self.task]

    def args(self) -> dict[str, Any]:
        """Constructor arguments other than the space (JSON-serializable)."""
        return {"task": self.task, "seed": self.seed}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "args": self.args()}

    def state_dict(self) -> dict[str, Any]:
        return {"describe": self.describe(), "num_told": self.num_told}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("describe") != self.describe():
            raise ArgumentError(f"checkpoint of agent {state.get('describe')} does not match {self.describe()}")
        self.num_told = int(state["num_told"])

    # -- helpers -----------------------------------------------------------------------
    def _check_task(self, task: str | None) -> str:
        if task is None:
            return self.task
        if task not in self.tasks():
            raise ArgumentError(f"agent {self.name!r} searches {self.tasks()}, not task {task!r}")
        return task

    def _check_n(self, n: int) -> int:
        if int(n) != n or n < 1:
            raise ArgumentError(f"number of architectures to ask for must be an integer >= 1, got {n!r}")
        return int(n)

    def _check_results(self, architectures, rewards) -> tuple[np.ndarray, np.ndarray]:
        archs = np.stack([self.space.validate(a) for a in architectures]) if len(architectures) else \
            np.zeros((0, self.space.num_dimensions), dtype=np.int64)
        rewards = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if len(rewards) != len(archs):
            raise ArgumentError(f"got {len(archs)} architectures but {len(rewards)} rewards")
        if not np.all(np.isfinite(rewards)):
            raise ArgumentError(f"rewards must be finite, got {rewards.tolist()}")
        return archs, rewards

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.args().items())
        return f"{type(self).__name__}({args})"
