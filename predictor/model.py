"""The task-aware performance predictor v(u, z) = rho(gate(u), z), z = aggregate_i phi([x_i, onehot(y_i)]).

task-aware-performance-prediction.md Sec. 3.1 (DeepSets meta-features learned from raw samples,
Eq. 1) and Sec. 5.1 (phi 50-50, rho 50-10-1, a learned sigmoid gating weight per dimension of u).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from predictor.config import PredictorConfig


def _mlp(sizes: list[int], *, final_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if final_activation or i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class PerformancePredictor(nn.Module):
    """Scores architecture encodings ``u`` for a task described by its meta-features ``z``.

    Higher score = better predicted validation accuracy (for the L2 loss the score estimates
    the task-normalized accuracy; for the ranking losses only its order matters). Without
    meta-features (``config.use_meta_features=False``, the paper's ablation) ``z`` is absent
    and the predictor is a function of ``u`` alone.
    """

    def __init__(self, encoding_size: int, config: PredictorConfig | None = None):
        super().__init__()
        if isinstance(encoding_size, bool) or not isinstance(encoding_size, int) or encoding_size <= 0:
            raise ValueError(f"`encoding_size` must be a positive integer, but got {encoding_size!r}.")
        self.config = config = config or PredictorConfig()
        self.encoding_size = encoding_size
        # Gating (Sec. 5.1): u_i * sigmoid(w_i); w starts at 0, i.e. every gate at 0.5.
        self.gate_logits = nn.Parameter(torch.zeros(encoding_size)) if config.gating else None
        if config.use_meta_features:
            phi_in = config.feature_dim + config.max_classes
            self.phi = _mlp([phi_in, *config.phi_hidden], final_activation=True)
            self.z_dim = config.phi_hidden[-1]
        else:
            self.phi = None
            self.z_dim = 0
        self.rho = _mlp([encoding_size + self.z_dim, *config.rho_hidden, 1], final_activation=False)

    # -- meta-features ------------------------------------------------------------------
    def embed_task(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Meta-features of one task from a batch of its samples: ``(N, F), (N,) -> (Z,)``.

        Invariant to the order of the samples (a sum or mean over them, Zaheer et al.).
        """
        if self.phi is None:
            raise ValueError("this predictor was built without meta-features (use_meta_features=False)")
        cfg = self.config
        if x.ndim != 2 or x.shape[1] != cfg.feature_dim:
            raise ValueError(f"task samples must have shape (N, {cfg.feature_dim}), got {tuple(x.shape)}")
        if y.ndim != 1 or y.shape[0] != x.shape[0]:
            raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if x.shape[0] == 0:
            raise ValueError("meta-features need at least one task sample, got 0")
        y = y.long()
        if int(y.min()) < 0 or int(y.max()) >= cfg.max_classes:
            raise ValueError(
                f"labels must lie in [0, max_classes={cfg.max_classes}), got range [{int(y.min())}, {int(y.max())}]"
            )
        onehot = F.one_hot(y, cfg.max_classes).to(x.dtype)  # (N, C)
        h = self.phi(torch.cat([x, onehot], dim=-1))  # (N, Z)
        return h.mean(dim=0) if cfg.aggregate == "mean" else h.sum(dim=0)  # (Z,)

    def task_embedding(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Meta-features from all of a task's samples, on the scale seen in training: -> (Z,).

        Training feeds phi batches of ``sample_batch_size`` samples. With ``aggregate="mean"``
        the mean over all samples is the expected batch embedding; with ``"sum"`` it is scaled
        by the batch size training used, min(N, sample_batch_size), to stay on the same scale.
        """
        n = x.shape[0]
        if n == 0:
            raise ValueError("meta-features need at least one task sample, got 0")
        mean = self.config.aggregate == "mean"
        total = 0.0
        for i in range(0, n, chunk):  # sum of phi over all samples, a chunk at a time
            z = self.embed_task(x[i:i + chunk], y[i:i + chunk])  # (Z,)
            total = total + (z * min(chunk, n - i) if mean else z)  # (Z,)
        return total / n * (1.0 if mean else min(n, self.config.sample_batch_size))  # (Z,)

    @torch.no_grad()
    def predict(self, u: np.ndarray, x: np.ndarray | None = None, y: np.ndarray | None = None) -> np.ndarray:
        """Scores of encodings ``u`` (B, D) on the task with samples ``(x, y)``, in eval mode: -> (B,)."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            z = None
            if self.phi is not None:
                if x is None or y is None:
                    raise ValueError("this predictor uses meta-features: pass the task's samples x and y")
                z = self.task_embedding(torch.from_numpy(np.array(x, dtype=np.float32)).to(device),
                                        torch.from_numpy(np.array(y, dtype=np.int64)).to(device))  # (Z,)
            scores = self(torch.from_numpy(np.array(u, dtype=np.float32)).to(device), z)  # (B,)
            return scores.cpu().numpy()
        finally:
            self.train(was_training)

    # -- scores ---------------------------------------------------------------------------
    def gate(self, u: torch.Tensor) -> torch.Tensor:
        """Per-dimension sigmoid gating of the encoding (Sec. 5.1); identity when gating is off."""
        if self.gate_logits is None:
            return u
        return u * torch.sigmoid(self.gate_logits)  # (B, D)

    def forward(self, u: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of encodings ``u`` (B, D) (or (D,)) for meta-features ``z`` (Z,) or (B, Z): -> (B,)."""
        single = u.ndim == 1
        if single:
            u = u.unsqueeze(0)  # (1, D)
        if u.ndim != 2 or u.shape[1] != self.encoding_size:
            raise ValueError(f"encodings must have shape (B, {self.encoding_size}), got {tuple(u.shape)}")
        h = self.gate(u)  # (B, D)
        if self.phi is not None:
            if z is None:
                raise ValueError("this predictor uses meta-features: pass z = embed_task(x, y)")
            if z.ndim == 1:
                z = z.unsqueeze(0).expand(u.shape[0], -1)  # (B, Z)
            if z.shape != (u.shape[0], self.z_dim):
                raise ValueError(f"meta-features must have shape ({self.z_dim},) or ({u.shape[0]}, {self.z_dim}), "
                                 f"got {tuple(z.shape)}")
            h = torch.cat([h, z.to(h.dtype)], dim=-1)  # (B, D + Z)
        scores = self.rho(h).squeeze(-1)  # (B,)
        return scores[0] if single else scores

    def score_task(self, u: torch.Tensor, x: torch.Tensor | None, y: torch.Tensor | None) -> torch.Tensor:
        """Scores of ``u`` (B, D) on the task whose samples are ``(x, y)``: -> (B,)."""
        z = self.embed_task(x, y) if self.phi is not None else None  # (Z,)
        return self(u, z)


class TaskScorer(nn.Module):
    """One forward pass from (u, task samples) to scores, so DDP sees phi and rho in ``forward``.

    DistributedDataParallel only hooks ``forward``; wrapping ``score_task`` keeps every
    parameter of the predictor inside one DDP forward call.
    """

    def __init__(self, predictor: PerformancePredictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, u: torch.Tensor, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.predictor.score_task(u, x, y)  # (B,)
