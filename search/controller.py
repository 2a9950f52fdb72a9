"""The NAS controller: an autoregressive LSTM that samples one choice per search-space dimension.

Zoph & Le's controller as T-NAML uses it (transfer-neural-automl-tnaml.md Sec. 2.1, 2.2, 4):
a 2-layer LSTM with 50 units, action embeddings of size 25, the previous action's embedding
fed as the next step's input, and (T-NAML) a learned task embedding of size 25 concatenated
to the action embedding at every step, with a skip connection across the RNN cell. All
weights are initialized uniformly at random so the initial policy is close to uniform.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from nasdb.errors import ArgumentError, ConfigError, NotFoundError


@dataclass(frozen=True)
class ControllerConfig:
    """Controller shape; defaults are T-NAML Sec. 4 ("2-layer LSTM with 50 units ... size 25")."""

    hidden_size: int = 50
    num_layers: int = 2
    action_embedding: int = 25
    task_embedding: int = 0  # 0: single-task controller (RL-NAS); 25 for T-NAML
    skip_connection: bool = False  # T-NAML Fig. 1: a skip connection across the RNN cell
    init_range: float = 0.1  # weights ~ U(-init_range, init_range)

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_layers", "action_embedding"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"controller {name} must be >= 1, got {getattr(self, name)!r}")
        if self.task_embedding < 0:
            raise ConfigError(f"controller task_embedding must be >= 0, got {self.task_embedding!r}")
        if not self.init_range > 0:
            raise ConfigError(f"controller init_range must be > 0, got {self.init_range!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ControllerConfig":
        return cls(**d)


class Controller(nn.Module):
    """Autoregressive policy over a categorical search space, optionally conditioned on a task.

    ``sizes[t]`` is the number of choices of dimension ``t``; each dimension has its own
    softmax head. Action embeddings are one table over all (dimension, choice) pairs plus a
    learned start token. Task embeddings are looked up by task name (``add_task`` grows the
    table, T-NAML Sec. 2.3); an optimizer must be rebuilt after ``add_task``.
    """

    def __init__(self, sizes: Sequence[int], config: ControllerConfig | None = None,
                 task_names: Sequence[str] = (), seed: int = 0):
        super().__init__()
        self.config = config or ControllerConfig()
        self.sizes = [int(s) for s in sizes]
        if not self.sizes or min(self.sizes) < 2:
            raise ArgumentError(f"every controller dimension needs >= 2 choices, got sizes {self.sizes}")
        if task_names and not self.config.task_embedding:
            raise ArgumentError("task names given to a controller without task embeddings (task_embedding=0)")
        c = self.config
        self.offsets = [0] + np.cumsum(self.sizes)[:-1].tolist()
        in_size = c.action_embedding + c.task_embedding
        self.start = nn.Parameter(torch.empty(c.action_embedding))
        self.action_embed = nn.Embedding(sum(self.sizes), c.action_embedding)
        self.lstm = nn.LSTM(in_size, c.hidden_size, num_layers=c.num_layers, batch_first=True)
        self.skip = nn.Linear(in_size, c.hidden_size, bias=False) if c.skip_connection else None
        self.heads = nn.ModuleList(nn.Linear(c.hidden_size, s) for s in self.sizes)
        self.task_names: list[str] = []
        self.task_table = nn.Parameter(torch.empty(0, c.task_embedding))
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-c.init_range, c.init_range, generator=gen)
        for name in task_names:
            self.add_task(name, seed=int(seed) + len(self.task_names) + 1)

    # -- tasks -------------------------------------------------------------------------
    @property
    def multitask(self) -> bool:
        return self.config.task_embedding > 0

    def add_task(self, name: str, seed: int | None = None) -> int:
        """Append a new uniformly initialized task embedding (T-NAML Sec. 2.3); returns its index."""
        if not self.multitask:
            raise ArgumentError(f"cannot add task {name!r}: this controller has no task embeddings")
        if name in self.task_names:
            raise ArgumentError(f"task {name!r} already has an embedding in this controller")
        gen = torch.Generator().manual_seed(int(seed) if seed is not None else len(self.task_names) + 1)
        row = torch.empty(1, self.config.task_embedding).uniform_(
            -self.config.init_range, self.config.init_range, generator=gen)
        self.task_table = nn.Parameter(torch.cat([self.task_table.data, row], dim=0))
        self.task_names.append(name)
        return len(self.task_names) - 1

    def task_index(self, task: str) -> int:
        try:
            return self.task_names.index(task)
        except ValueError:
            raise NotFoundError(f"controller has no embedding for task {task!r}; known: {self.task_names}") from None

    def _task_vectors(self, task: str | Sequence[str] | None, batch: int) -> torch.Tensor | None:
        if not self.multitask:
            if task is not None:
                raise ArgumentError(f"task {task!r} given to a controller without task embeddings")
            return None
        if task is None:
            raise ArgumentError("a multitask controller needs a task name")
        names = [task] * batch if isinstance(task, str) else list(task)
        if len(names) != batch:
            raise ArgumentError(f"got {len(names)} task names for a batch of {batch}")
        idx = torch.tensor([self.task_index(n) for n in names], dtype=torch.long)
        return self.task_table[idx]  # (B, T)

    # -- network -----------------------------------------------------------------------
    def _step_inputs(self, actions: torch.Tensor, task_vec: torch.Tensor | None) -> torch.Tensor:
        """Inputs of every step under teacher forcing: start token, then previous actions."""
        B, D = actions.shape
        start = self.start.expand(B, 1, -1)  # (B, 1, A)
        offsets = torch.tensor(self.offsets[:-1], dtype=torch.long)
        prev = self.action_embed(actions[:, :-1] + offsets)  # (B, D-1, A)
        x = torch.cat([start, prev], dim=1)  # (B, D, A)
        if task_vec is not None:
            x = torch.cat([x, task_vec[:, None, :].expand(B, D, -1)], dim=-1)  # (B, D, A+T)
        return x

    def _hidden(self, x: torch.Tensor, state=None):
        h, state = self.lstm(x, state)  # (B, L, H)
        if self.skip is not None:
            h = h + self.skip(x)  # (B, L, H)
        return h, state

    def forward(self, architectures: torch.Tensor, task: str | Sequence[str] | None = None) -> list[torch.Tensor]:
        """Per-dimension logits under teacher forcing: a list of ``D`` tensors ``(B, sizes[t])``."""
        actions = torch.as_tensor(np.asarray(architectures), dtype=torch.long)
        if actions.ndim != 2 or actions.shape[1] != len(self.sizes):
            raise ArgumentError(f"expected architectures of shape (B, {len(self.sizes)}), got {tuple(actions.shape)}")
        x = self._step_inputs(actions, self._task_vectors(task, actions.shape[0]))  # (B, D, in)
        h, _ = self._hidden(x)  # (B, D, H)
        return [head(h[:, t]) for t, head in enumerate(self.heads)]

    def log_prob(self, architectures, task=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of each architecture and the summed per-step policy entropy, both ``(B,)``."""
        actions = torch.as_tensor(np.asarray(architectures), dtype=torch.long)
        logits = self.forward(actions, task)
        logp = torch.zeros(actions.shape[0])
        entropy = torch.zeros(actions.shape[0])
        for t, z in enumerate(logits):
            lp = torch.log_softmax(z, dim=-1)  # (B, S_t)
            logp = logp + lp.gather(1, actions[:, t:t + 1]).squeeze(1)
            entropy = entropy - (lp.exp() * lp).sum(-1)
        return logp, entropy

    def probabilities(self, architectures, task=None) -> list[np.ndarray]:
        """Per-step choice distributions given each architecture's prefix: ``D`` arrays ``(B, S_t)``."""
        with torch.no_grad():
            return [torch.softmax(z, dim=-1).numpy() for z in self.forward(architectures, task)]

    @torch.no_grad()
    def sample(self, n: int, task: str | None = None, generator: torch.Generator | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Sample ``n`` architectures step by step; returns ``(architectures (n, D), log_probs (n,))``."""
        if n < 1:
            raise ArgumentError(f"number of architectures to sample must be >= 1, got {n}")
        task_vec = self._task_vectors(task, n)
        x = self.start.expand(n, 1, -1)  # (n, 1, A)
        state, logp, out = None, torch.zeros(n), []
        for t, head in enumerate(self.heads):
            inp = x if task_vec is None else torch.cat([x, task_vec[:, None, :]], dim=-1)  # (n, 1, in)
            h, state = self._hidden(inp, state)  # (n, 1, H)
            lp = torch.log_softmax(head(h[:, 0]), dim=-1)  # (n, S_t)
            a = torch.multinomial(lp.exp(), 1, generator=generator)  # (n, 1)
            logp += lp.gather(1, a).squeeze(1)
            out.append(a[:, 0])
            x = self.action_embed(a + self.offsets[t])  # (n, 1, A)
        return torch.stack(out, dim=1).numpy().astype(np.int64), logp.numpy()

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to rebuild this controller: config, sizes, task names, weights."""
        return {"config": self.config.to_dict(), "sizes": list(self.sizes),
                "task_names": list(self.task_names),
                "state_dict": {k: v.detach().clone() for k, v in self.state_dict().items()}}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "Controller":
        ctrl = cls(ckpt["sizes"], ControllerConfig.from_dict(ckpt["config"]))
        n_tasks = len(ckpt["task_names"])
        ctrl.task_table = nn.Parameter(torch.empty(n_tasks, ctrl.config.task_embedding))
        ctrl.task_names = list(ckpt["task_names"])
        ctrl.load_state_dict(ckpt["state_dict"])
        return ctrl
