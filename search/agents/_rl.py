"""RL-NAS (Zoph & Le): a single-task LSTM controller trained by REINFORCE on validation accuracy."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nasdb.errors import ArgumentError
from nasdb.space import SearchSpace
from search.agents._base import SearchAgent
from search.controller import Controller, ControllerConfig
from search.reinforce import Reinforce, ReinforceConfig


class ControllerAgent(SearchAgent):
    """Shared machinery of the controller-based agents: sampling, REINFORCE updates, state."""

    def __init__(self, space: SearchSpace, task: str, *, seed: int, controller: ControllerConfig,
                 reinforce: ReinforceConfig, task_names: tuple[str, ...] = ()):
        super().__init__(space, task, seed=seed)
        self.controller = Controller(space.sizes.tolist(), controller, task_names=task_names, seed=self.seed)
        self.reinforce = Reinforce(self.controller, reinforce)
        self._gen = torch.Generator().manual_seed(self.seed + 7919)

    def _use(self, task: str) -> None:
        """Hook run before the controller is used for ``task`` (T-NAML transfers here)."""

    def _ask(self, n: int, task: str) -> np.ndarray:
        self._use(task)
        archs, _ = self.controller.sample(n, self._task_arg(task), generator=self._gen)
        return archs

    def _tell(self, architectures: np.ndarray, rewards: np.ndarray, task: str) -> None:
        self._use(task)
        # One REINFORCE update per tell, over the children told together: one child at a time is
        # T-NAML Sec. 4's "gradient updates after every child completes"; a batched search tells a
        # whole batch, the batch of samples per update of Zoph & Le and T-NAML's parallel training.
        self.reinforce.update(architectures, rewards, task=task, batch_size=len(rewards))

    def _task_arg(self, task: str) -> str | None:
        return task if self.controller.multitask else None

    def probabilities(self, task: str | None = None) -> np.ndarray:
        """The policy's distribution over the first dimension's choices (the one step without a prefix);
        ``controller.probabilities`` gives every step's distribution given a prefix."""
        task = self._check_task(task)
        self._use(task)
        probe = np.zeros((1, self.space.num_dimensions), dtype=np.int64)
        return self.controller.probabilities(probe, self._task_arg(task))[0][0]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "controller": self.controller.checkpoint(),
                "reinforce": self.reinforce.state_dict(), "generator": self._gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        ckpt = state["controller"]
        if ckpt["sizes"] != self.controller.sizes:
            raise ArgumentError(f"controller checkpoint has dimension sizes {ckpt['sizes']}, "
                                f"this space has {self.controller.sizes}")
        self.controller = Controller.from_checkpoint(ckpt)
        self.reinforce = Reinforce(self.controller, self.reinforce.config)
        self.reinforce.load_state_dict(state["reinforce"])
        self._gen.set_state(state["generator"])


class RLNAS(ControllerAgent):
    """Zoph & Le's NAS as the task-aware paper's Table 3 baseline: no task embedding, EMA baseline."""

    name = "rl"

    def __init__(self, space: SearchSpace, task: str, *, seed: int = 0, learning_rate: float = 1e-4,
                 entropy_weight: float = 1e-3, baseline_decay: float = 0.01, hidden_size: int = 50,
                 num_layers: int = 2, action_embedding: int = 25):
        self._args = dict(learning_rate=learning_rate, entropy_weight=entropy_weight,
                          baseline_decay=baseline_decay, hidden_size=hidden_size, num_layers=num_layers,
                          action_embedding=action_embedding)
        super().__init__(
            space, task, seed=seed,
            controller=ControllerConfig(hidden_size=hidden_size, num_layers=num_layers,
                                        action_embedding=action_embedding),
            reinforce=ReinforceConfig(learning_rate=learning_rate, entropy_weight=entropy_weight,
                                      baseline_decay=baseline_decay, normalize_advantage=False))

    def args(self) -> dict[str, Any]:
        return {**super().args(), **self._args}
