"""T-NAML (Wong et al. 2018): multitask controller pre-training, then transfer to a new task.

transfer-neural-automl-tnaml.md Sec. 2.2-2.3: one learned task embedding per task fed at every
step, task-specific advantage normalization, a task sampled at random at every pre-training
iteration; transfer = keep the pre-trained parameters, add a new randomly initialized
embedding for the new task, and continue the search there (fresh optimizer).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from nasdb.errors import ArgumentError
from nasdb.space import SearchSpace
from search.agents._rl import ControllerAgent
from search.controller import ControllerConfig
from search.reinforce import ReinforceConfig

PRETRAIN_SOURCES = ("store", "live")


class TNAML(ControllerAgent):
    """Multitask controller with task embeddings (size 25) and per-task advantage normalization.

    ``pretrain_tasks`` get embeddings at construction. Pre-training comes either from rows
    already in the store (``pretrain_rows``: each stored child replayed as a REINFORCE trial
    of its task, tasks interleaved at random) or from live trials (``ask``/``tell`` with
    ``task=`` one of the pre-training tasks). The target task's embedding is added on
    first use (``transfer``), after which the optimizer restarts.
    """

    name = "tnaml"

    def __init__(self, space: SearchSpace, task: str, *, seed: int = 0,
                 pretrain_tasks: Sequence[str] = (), pretrain_source: str = "store",
                 pretrain_budget: int = 1000, pretrain_epochs: int = 1, pretrain_batch: int = 1,
                 learning_rate: float = 1e-4, entropy_weight: float = 1e-3, advantage_decay: float = 0.01,
                 hidden_size: int = 50, num_layers: int = 2, action_embedding: int = 25,
                 task_embedding: int = 25):
        pretrain_tasks = list(pretrain_tasks)
        if task in pretrain_tasks:
            raise ArgumentError(f"the pre-training tasks {pretrain_tasks} include the target task {task!r}")
        if len(set(pretrain_tasks)) != len(pretrain_tasks):
            raise ArgumentError(f"pre-training tasks are repeated: {pretrain_tasks}")
        if pretrain_source not in PRETRAIN_SOURCES:
            raise ArgumentError(f"pretrain_source must be one of {PRETRAIN_SOURCES}, got {pretrain_source!r}")
        for name, v in (("pretrain_budget", pretrain_budget), ("pretrain_epochs", pretrain_epochs),
                        ("pretrain_batch", pretrain_batch), ("task_embedding", task_embedding)):
            if int(v) != v or v < 1:
                raise ArgumentError(f"{name} must be an integer >= 1, got {v!r}")
        self._args = dict(pretrain_tasks=pretrain_tasks, pretrain_source=pretrain_source,
                          pretrain_budget=int(pretrain_budget), pretrain_epochs=int(pretrain_epochs),
                          pretrain_batch=int(pretrain_batch), learning_rate=learning_rate,
                          entropy_weight=entropy_weight, advantage_decay=advantage_decay,
                          hidden_size=hidden_size, num_layers=num_layers, action_embedding=action_embedding,
                          task_embedding=int(task_embedding))
        super().__init__(
            space, task, seed=seed, task_names=tuple(pretrain_tasks),
            controller=ControllerConfig(hidden_size=hidden_size, num_layers=num_layers,
                                        action_embedding=action_embedding, task_embedding=int(task_embedding),
                                        skip_connection=True),
            reinforce=ReinforceConfig(learning_rate=learning_rate, entropy_weight=entropy_weight,
                                      baseline_decay=advantage_decay, normalize_advantage=True))
        self.pretrain_steps = 0

    @property
    def pretrain_tasks(self) -> list[str]:
        return list(self._args["pretrain_tasks"])

    def args(self) -> dict[str, Any]:
        return {**super().args(), **self._args}

    def tasks(self) -> list[str]:
        return [self.task, *self.pretrain_tasks]

    @property
    def transferred(self) -> bool:
        return self.task in self.controller.task_names

    def transfer(self) -> None:
        """Sec. 2.3: keep the pre-trained controller, add a new random embedding for the target."""
        if self.transferred:
            return
        self.controller.add_task(self.task, seed=self.seed + 104729)
        self.reinforce.reset_optimizer()

    def _use(self, task: str) -> None:
        if task == self.task:
            self.transfer()

    def _tell(self, architectures: np.ndarray, rewards: np.ndarray, task: str) -> None:
        if task != self.task and self.transferred:
            raise ArgumentError(f"pre-training result for task {task!r} told after transfer to {self.task!r}")
        super()._tell(architectures, rewards, task)

    def pretrain_rows(self, rows: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> int:
        """Multitask pre-training on stored children: ``rows[task] = (architectures (N, D), rewards (N,))``.

        Every iteration samples a pre-training task uniformly (Sec. 2.2) and replays its next
        stored child (a fresh shuffle per epoch) as a trial of that task. Stored children were
        not sampled from the current policy, so this is an off-policy use of REINFORCE (an
        advantage-weighted likelihood update); with the normalized advantage it raises the
        probability of children better than the task's running mean. Returns the number of updates.
        """
        if self.transferred:
            raise ArgumentError(f"pre-training after transfer to {self.task!r} is not supported")
        missing = [t for t in rows if t not in self.pretrain_tasks]
        if missing:
            raise ArgumentError(f"rows for tasks {missing} that are not pre-training tasks {self.pretrain_tasks}")
        data = {t: self._check_results(*rows[t]) for t in self.pretrain_tasks if t in rows and len(rows[t][1])}
        if not data:
            raise ArgumentError(f"no stored rows to pre-train on for tasks {self.pretrain_tasks}")
        rng = np.random.default_rng(self.seed + 15485863)
        batch = self._args["pretrain_batch"]
        steps = 0
        for _ in range(self._args["pretrain_epochs"]):
            queues = {t: list(rng.permutation(len(r))) for t, (_, r) in data.items()}
            while queues:
                names = sorted(queues)
                t = names[int(rng.integers(len(names)))]
                idx, queues[t] = queues[t][:batch], queues[t][batch:]
                if not queues[t]:
                    del queues[t]
                archs, rewards = data[t]
                adv = self.reinforce.advantages(rewards[idx], [t] * len(idx))
                self.reinforce.step(archs[idx], adv, t)
                steps += 1
        self.pretrain_steps += steps
        return steps

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "pretrain_steps": self.pretrain_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.pretrain_steps = int(state["pretrain_steps"])
