"""REINFORCE for the controller: EMA baselines, T-NAML advantage normalization, entropy bonus.

RL-NAS (Zoph & Le) subtracts an exponential moving average of the previous rewards. T-NAML
(transfer-neural-automl-tnaml.md Sec. 2.2) keeps, per task, EMAs of the reward mean and
variance with decay alpha = 0.01 and divides the advantage by the standard deviation:
``b_t = (1-a) b_{t-1} + a R``, ``s2_t = (1-a) s2_{t-1} + a (R - b_t)^2``, ``A' = (R - b_t) / s_t``.
The controller gets one gradient update after every child completes (Sec. 4), learning rate 1e-4.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch

from nasdb.errors import ArgumentError, ConfigError
from search.controller import Controller


class RewardNormalizer:
    """Per-task EMA of the reward (and, with ``scale``, of its variance); turns rewards into advantages.

    The EMAs are bias-corrected (divided by ``1 - (1-a)^t``, as Adam does) so that the first
    trials are not measured against a baseline of zero. Without ``scale`` (RL-NAS) the advantage
    is ``R - b_{t-1}`` (the first trial has none: 0). With ``scale`` (T-NAML) it is the paper's
    ``(R - b_t) / s_t``, which is 0 while the variance is still 0.
    """

    def __init__(self, decay: float = 0.01, scale: bool = False, eps: float = 1e-8):
        if not 0.0 < decay <= 1.0:
            raise ArgumentError(f"EMA decay must be in (0, 1], got {decay!r}")
        self.decay, self.scale, self.eps = float(decay), bool(scale), float(eps)
        self.count, self._mean, self._var = 0, 0.0, 0.0

    @property
    def mean(self) -> float:
        return self._mean / (1.0 - (1.0 - self.decay) ** self.count) if self.count else 0.0

    @property
    def var(self) -> float:
        return self._var / (1.0 - (1.0 - self.decay) ** self.count) if self.count else 0.0

    def __call__(self, reward: float) -> float:
        """Update the statistics with ``reward`` and return its advantage."""
        reward = float(reward)
        if not np.isfinite(reward):
            raise ArgumentError(f"reward must be finite, got {reward!r}")
        prev_mean, had = self.mean, self.count > 0
        a = self.decay
        self.count += 1
        self._mean = (1 - a) * self._mean + a * reward
        self._var = (1 - a) * self._var + a * (reward - self.mean) ** 2
        if not self.scale:
            return reward - prev_mean if had else 0.0
        std = np.sqrt(self.var)
        return (reward - self.mean) / std if std > self.eps else 0.0

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "scale": self.scale, "eps": self.eps,
                "count": self.count, "mean": self._mean, "var": self._var}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.decay, self.scale, self.eps = float(d["decay"]), bool(d["scale"]), float(d["eps"])
        self.count, self._mean, self._var = int(d["count"]), float(d["mean"]), float(d["var"])


@dataclass(frozen=True)
class ReinforceConfig:
    """Policy-gradient settings. lr 1e-4 (T-NAML Sec. 4) with Adam (the optimizer of Zoph & Le;
    T-NAML names only the rate). T-NAML's decay is 0.01; RL-NAS uses the same EMA, unscaled.
    The entropy weight is not given in either paper."""

    learning_rate: float = 1e-4
    entropy_weight: float = 1e-3
    baseline_decay: float = 0.01
    normalize_advantage: bool = False  # True: T-NAML task-specific advantage normalization
    max_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if self.entropy_weight < 0:
            raise ConfigError(f"entropy_weight must be >= 0, got {self.entropy_weight!r}")
        if not 0.0 < self.baseline_decay <= 1.0:
            raise ConfigError(f"baseline_decay must be in (0, 1], got {self.baseline_decay!r}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def reinforce_loss(logp: torch.Tensor, entropy: torch.Tensor, advantage: torch.Tensor,
                   entropy_weight: float) -> torch.Tensor:
    """``-mean(A * log pi(m) + beta * H(pi))``: its gradient is the REINFORCE estimate plus an entropy bonus."""
    return -(advantage * logp + entropy_weight * entropy).mean()


class Reinforce:
    """Trains a ``Controller`` by REINFORCE; one normalizer per task (``None`` for single-task)."""

    def __init__(self, controller: Controller, config: ReinforceConfig | None = None):
        self.controller = controller
        self.config = config or ReinforceConfig()
        self.normalizers: dict[str | None, RewardNormalizer] = {}
        self.num_updates = 0
        self.reset_optimizer()

    def reset_optimizer(self) -> None:
        """Fresh Adam over the current parameters (needed after ``Controller.add_task``), built on first use."""
        self._optimizer: torch.optim.Adam | None = None

    @property
    def optimizer(self) -> torch.optim.Adam:
        # Built lazily: torch's first optimizer imports torch._dynamo (~1.5 s), which planning a
        # search (it builds the agent only to check its arguments) and a driver's start-up skip.
        if self._optimizer is None:
            self._optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.config.learning_rate)
        return self._optimizer

    def normalizer(self, task: str | None) -> RewardNormalizer:
        if task not in self.normalizers:
            self.normalizers[task] = RewardNormalizer(self.config.baseline_decay, self.config.normalize_advantage)
        return self.normalizers[task]

    def advantages(self, rewards: Sequence[float], tasks: Sequence[str | None]) -> np.ndarray:
        """Advantages of a sequence of rewards, updating each task's statistics in order."""
        return np.array([self.normalizer(t)(r) for r, t in zip(rewards, tasks)], dtype=np.float32)

    def step(self, architectures: np.ndarray, advantages: np.ndarray, task=None) -> dict[str, float]:
        """One gradient step on a batch of (architecture, advantage) pairs."""
        logp, entropy = self.controller.log_prob(architectures, task)  # (B,), (B,)
        loss = reinforce_loss(logp, entropy, torch.as_tensor(advantages, dtype=torch.float32),
                              self.config.entropy_weight)
        self.optimizer.zero_grad()
        loss.backward()
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.controller.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.num_updates += 1
        return {"loss": loss.item(), "entropy": entropy.detach().mean().item()}

    def update(self, architectures, rewards, task: str | None = None, batch_size: int = 1) -> None:
        """Paper schedule: advantages in order, then one update per ``batch_size`` children (1 = per child)."""
        archs = np.asarray(architectures, dtype=np.int64).reshape(len(rewards), -1)
        task_arg = task if self.controller.multitask else None
        adv = self.advantages(rewards, [task] * len(rewards))
        for i in range(0, len(adv), batch_size):
            self.step(archs[i:i + batch_size], adv[i:i + batch_size], task_arg)

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "num_updates": self.num_updates,
                "normalizers": {("" if k is None else k): n.state_dict() for k, n in self.normalizers.items()},
                "single_task": None in self.normalizers}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        self.reset_optimizer()
        self.optimizer.load_state_dict(d["optimizer"])
        self.num_updates = int(d["num_updates"])
        self.normalizers = {}
        for k, nd in d["normalizers"].items():
            key = None if (k == "" and d.get("single_task")) else k
            n = RewardNormalizer()
            n.load_state_dict(nd)
            self.normalizers[key] = n
