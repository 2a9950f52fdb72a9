"""The task-aware performance predictor v(u, z) = rho(gate(f(u)), z), as a deep ensemble of K members.

task-aware-performance-prediction.md Sec. 3.1 (DeepSets meta-features learned from raw samples,
Eq. 1) and Sec. 5.1 (phi 50-50, rho 50-10-1, a learned sigmoid gating weight per input of rho).
Departures, each measured (README, "The predictor"):

- K members with their own initialization and mini-batches (a deep ensemble): the score is
  their mean, the uncertainty their spread. The members are one network with stacked weights
  (``(K, in, out)`` and one ``baddbmm`` per layer), so K members cost about what one does.
- ``f(u)``: the encoding plus structured features of it (predictor/features.py).
- Meta-features read any table (``meta_encoder="cells"``): a hierarchical DeepSets over the
  (feature value, label) cells of the samples, in the spirit of Dataset2Vec: f over cells,
  a mean over samples gives each feature's label-conditional statistics, g over those, a
  mean over features. Invariant to the order of samples and of features, so one encoder
  serves tasks of any width. ``"samples"`` is the paper's phi over whole rows (fixed width).
- Landmarking descriptors beside z (``PredictorConfig.uses_landmarks``, predictor/landmarks.py): how well three
  cheap learners do on the task, standardized over the training tasks. The task vector that
  scores, distances and the ascent read is ``[z, landmarks]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from nasdb.errors import ArgumentError
from nasdb.space import SearchSpace
from predictor.config import PredictorConfig
from predictor.features import ArchitectureFeatures
from predictor.landmarks import LANDMARKS, silverman_bandwidth, task_landmarks

#: Cells (rows x features) one pass of the cells encoder's inference reads (about 20 MB per member).
CELLS_PER_PASS = 1 << 18


class StackedLinear(nn.Module):
    """K independent linear layers applied at once: (K, B, in) -> (K, B, out)."""

    def __init__(self, members: int, fan_in: int, fan_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialization, per member
        self.weight = nn.Parameter(torch.empty(members, fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(members, 1, fan_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)  # (K, B, out)


class StackedMLP(nn.Module):
    """Linear/ReLU stacks of K members; dropout after hidden activations while training."""

    def __init__(self, members: int, sizes: list[int], *, final_activation: bool, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(StackedLinear(members, a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.final_activation = final_activation
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last or self.final_activation:
                x = torch.relu(x)
                if i < last and self.dropout and self.training:
                    x = F.dropout(x, self.dropout)
        return x


class PerformancePredictor(nn.Module):
    """Scores architecture encodings ``u`` for a task described by its meta-features ``z``.

    Higher score = better predicted validation accuracy (for the L2 loss the score estimates
    the task-normalized target; for the ranking losses only its order matters). ``z`` is the
    members' meta-features concatenated, then the task's standardized landmarking descriptors
    (``(K * Z + L,)``, L = 0 without them), so distances between tasks and the ascent treat it
    as one vector. Without meta-features (``use_meta_features=False``, the paper's ablation)
    ``z`` is absent.
    """

    def __init__(self, space: SearchSpace | int, config: PredictorConfig | None = None):
        super().__init__()
        self.config = config = config or PredictorConfig()
        if isinstance(space, SearchSpace):
            self.features = ArchitectureFeatures(space, structured=config.architecture_features)
            self.encoding_size = space.encoding_size
        elif isinstance(space, bool) or not isinstance(space, int) or space <= 0:
            raise ArgumentError(f"`space` must be a SearchSpace or a positive encoding size, but got {space!r}.")
        else:  # a bare encoding size: no structure known, u alone
            self.features, self.encoding_size = None, space
        width = self.features.out_size if self.features is not None else self.encoding_size
        k = self.members = config.ensemble_size
        # Gating (Sec. 5.1): f * sigmoid(w); w starts at 0, i.e. every gate at 0.5.
        self.gate_logits = nn.Parameter(torch.zeros(k, 1, width)) if config.gating else None
        self.phi = self.cell_phi = None
        self.member_z_dim = 0
        if config.use_meta_features:
            c = config.max_classes
            if config.meta_encoder == "cells":
                self.cell_phi = StackedMLP(k, [1 + c, *config.phi_hidden], final_activation=True)
                self.phi = StackedMLP(k, [config.phi_hidden[-1], *config.phi_hidden], final_activation=True)
            else:
                self.phi = StackedMLP(k, [config.feature_dim + c, *config.phi_hidden], final_activation=True)
            self.member_z_dim = config.phi_hidden[-1]
        self.num_landmarks = len(LANDMARKS) if config.uses_landmarks else 0
        if self.num_landmarks:  # set from the training tasks' descriptors (set_landmark_scale), saved with the weights
            self.register_buffer("landmark_center", torch.zeros(self.num_landmarks))
            self.register_buffer("landmark_scale", torch.ones(self.num_landmarks))
        self.landmark_noise = 0.0  # training only: resolved for the training tasks by set_landmark_scale
        self.task_dim = self.member_z_dim + self.num_landmarks  # what each member's rho reads of the task
        self.z_dim = k * self.member_z_dim + self.num_landmarks
        self.rho = StackedMLP(k, [width + self.task_dim, *config.rho_hidden, 1], final_activation=False,
                              dropout=config.dropout)

    # -- meta-features ------------------------------------------------------------------
    def _check_samples(self, x: torch.Tensor, y: torch.Tensor) -> None:
        cfg = self.config
        if self.phi is None:
            raise ArgumentError("this predictor was built without meta-features (use_meta_features=False)")
        if x.ndim < 2 or (cfg.meta_encoder == "samples" and x.shape[-1] != cfg.feature_dim):
            want = f"(N, {cfg.feature_dim})" if cfg.meta_encoder == "samples" else "(N, features)"
            raise ArgumentError(f"task samples must have shape {want}, got {tuple(x.shape)}")
        if y.shape != x.shape[:-1]:
            raise ArgumentError(f"labels must have shape {tuple(x.shape[:-1])}, got {tuple(y.shape)}")
        if x.shape[-2] == 0 or x.shape[-1] == 0:
            raise ArgumentError(f"meta-features need at least one sample and one feature, got {tuple(x.shape)}")
        if int(y.min()) < 0 or int(y.max()) >= cfg.max_classes:
            raise ArgumentError(f"labels must lie in [0, max_classes={cfg.max_classes}), "
                                f"got range [{int(y.min())}, {int(y.max())}]")

    def _phi_sum(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Sum over samples of each member's per-sample embedding: (K, N, F), (K, N) -> (K, Z)."""
        onehot = F.one_hot(y.long(), self.config.max_classes).to(x.dtype)  # (K, N, C)
        if self.cell_phi is None:
            return self.phi(torch.cat([x, onehot], dim=-1)).sum(dim=1)  # (K, Z)
        k, n, w = x.shape
        cells = torch.cat([x.unsqueeze(-1), onehot.unsqueeze(2).expand(k, n, w, onehot.shape[-1])], dim=-1)
        h = self.cell_phi(cells.reshape(k, n * w, -1)).reshape(k, n, w, -1)  # (K, N, W, H)
        per_feature = self.phi(h.mean(dim=1))  # (K, W, Z): label-conditional statistics of each feature
        return per_feature.mean(dim=1) * n  # (K, Z), scaled so that / n is the mean over samples

    def embed_task(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Meta-features of one task from a batch of its samples: ``(N, F), (N,) -> (K * Z,)``.

        Also ``(K, N, F), (K, N)``: a batch per member (training). Invariant to the order of
        the samples (a mean over them, or the paper's sum with ``aggregate="sum"``).
        """
        per_member = x.ndim == 3
        self._check_samples(x, y)
        if not per_member:
            x, y = x.unsqueeze(0).expand(self.members, -1, -1), y.unsqueeze(0).expand(self.members, -1)
        z = self._phi_sum(x, y)  # (K, Z)
        if self.config.aggregate == "mean":
            z = z / x.shape[1]
        return z.reshape(-1)  # (K * Z,)

    # -- landmarking descriptors ---------------------------------------------------------
    def set_landmark_scale(self, landmarks: np.ndarray) -> None:
        """Standardize the descriptors by their mean and spread over the training tasks' ``(T, L)``."""
        values = torch.as_tensor(np.asarray(landmarks, dtype=np.float32)).reshape(-1, self.num_landmarks)
        self.landmark_center.copy_(values.mean(dim=0))
        self.landmark_scale.copy_(values.std(dim=0, unbiased=False).clamp_min(1e-3))  # a constant one stays 0
        noise = self.config.landmark_noise
        self.landmark_noise = silverman_bandwidth(len(values), self.num_landmarks) if noise == "silverman" else noise

    def standardized_landmarks(self, landmarks: torch.Tensor) -> torch.Tensor:
        """Raw descriptors (L,) on the scale rho was trained on: -> (L,)."""
        return (landmarks.to(self.landmark_center) - self.landmark_center) / self.landmark_scale

    def task_embedding(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192,
                       landmarks: np.ndarray | None = None) -> torch.Tensor:
        """The task vector from all of a task's samples: learned z (``learned_embedding``), then
        the standardized landmarking descriptors (``landmarks``, the raw ones if already known,
        e.g. ``TaskData.landmarks_for``; else computed from ``x, y``): -> (K * Z + L,)."""
        z = self.learned_embedding(x, y, chunk)
        if not self.num_landmarks:
            return z
        raw = task_landmarks(x.detach().cpu().numpy(), y.detach().cpu().numpy()) if landmarks is None else landmarks
        d = torch.as_tensor(np.asarray(raw, dtype=np.float32))
        return torch.cat([z, self.standardized_landmarks(d).to(z)])

    def learned_embedding(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
        """Meta-features from all of a task's samples, on the scale seen in training: -> (K * Z,).

        Training feeds phi batches of ``sample_batch_size`` samples. With ``aggregate="mean"``
        the mean over all samples is the expected batch embedding (for ``meta_encoder="cells"``
        a mean of per-feature statistics over at most ``chunk`` samples each); with ``"sum"``
        it is scaled by the batch size training used, min(N, sample_batch_size).
        """
        n = x.shape[0]
        if n == 0:
            raise ArgumentError("meta-features need at least one task sample, got 0")
        if self.cell_phi is not None:
            chunk = min(chunk, max(1, 65536 // max(1, x.shape[1])))  # cells, not rows, bound the memory
            if x.ndim == 2 and x.dtype == torch.float32:
                for i in range(0, n, chunk):  # the loop's checks, chunk by chunk
                    self._check_samples(x[i:i + chunk], y[i:i + chunk])
                scale = 1.0 if self.config.aggregate == "mean" else min(n, self.config.sample_batch_size)
                return self._distinct_cells_embedding(x, y, chunk) * scale  # (K * Z,)
        mean = self.config.aggregate == "mean"
        total = 0.0
        for i in range(0, n, chunk):
            z = self.embed_task(x[i:i + chunk], y[i:i + chunk])  # (K * Z,)
            total = total + (z * min(chunk, n - i) if mean else z)
        return total / n * (1.0 if mean else min(n, self.config.sample_batch_size))  # (K * Z,)

    def _distinct_cells_embedding(self, x: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
        """The mean over rows of ``embed_task`` (``aggregate="mean"``) on chunks of ``chunk`` rows,
        weighted by their rows, for the ``cells`` encoder: ``(N, W), (N,) -> (K * Z,)``.

        The same computation as that loop, arranged to do less: f (``cell_phi``) runs once per
        distinct (value, class) cell rather than once per cell (a one-hot, hashed or missing-value
        column holds two values; a filled-in numeric column repeats its median), each chunk's
        per-feature mean is a count-weighted sum of those outputs, and g (``phi``) reads every
        chunk's features in one batch. The sums run in another order, so z agrees to float32
        rounding (test_predictor_model.py checks it against the loop).
        """
        n, w = x.shape
        group = chunk * max(1, CELLS_PER_PASS // (chunk * w))  # rows per pass: bounds the memory
        total = 0.0
        for i in range(0, n, group):
            rows = min(group, n - i)
            sizes = torch.full(((rows + chunk - 1) // chunk,), chunk, dtype=torch.float32)  # rows per chunk
            sizes[-1] = rows - chunk * (len(sizes) - 1)
            z = self._chunk_means(x[i:i + rows], y[i:i + rows], chunk, sizes)  # (K, chunks, Z)
            total = total + (z * sizes[:, None]).sum(dim=1)  # (K, Z)
        return (total / n).reshape(-1)  # (K * Z,)

    def _chunk_means(self, x: torch.Tensor, y: torch.Tensor, chunk: int, sizes: torch.Tensor) -> torch.Tensor:
        """``embed_task``'s z (mean aggregate) of each ``chunk`` rows of ``(N, W), (N,)``: -> (K, chunks, Z)."""
        n, w = x.shape
        c = self.config.max_classes
        bits = x.contiguous().view(torch.int32).to(torch.int64)  # (N, W): equal bits, equal value
        key = bits * c + y.to(torch.int64)[:, None]  # (N, W): value and class
        distinct, which = torch.unique(key.reshape(-1), return_inverse=True)  # (U,), (N * W,)
        value = torch.div(distinct, c, rounding_mode="floor").to(torch.int32).view(torch.float32)  # (U,)
        onehot = F.one_hot(torch.remainder(distinct, c), c).to(torch.float32)  # (U, C)
        cells = torch.cat([value[:, None], onehot], dim=-1).unsqueeze(0).expand(self.members, -1, -1)  # (K, U, 1 + C)
        h = self.cell_phi(cells)  # (K, U, H)
        slot = (torch.arange(n)[:, None] // chunk * w + torch.arange(w)[None, :]).reshape(-1)  # (N * W,) chunk, feature
        u = len(distinct)
        pairs, count = torch.unique(slot * u + which, return_counts=True)  # (P,): each (chunk, feature, cell) once
        where, cell = torch.div(pairs, u, rounding_mode="floor"), torch.remainder(pairs, u)  # (P,), (P,)
        weight = count.to(torch.float32) / sizes[torch.div(where, w, rounding_mode="floor")]  # (P,)
        per_slot = torch.bincount(where, minlength=len(sizes) * w)  # (chunks * W,) pairs of each; sorted by slot
        starts = torch.cumsum(per_slot, 0) - per_slot
        means = torch.stack([F.embedding_bag(cell, h[k], starts, mode="sum", per_sample_weights=weight)
                             for k in range(self.members)])  # (K, chunks * W, H): per chunk and feature, the mean of f
        per_feature = self.phi(means)  # (K, chunks * W, Z)
        return per_feature.reshape(self.members, len(sizes), w, -1).mean(dim=2)  # (K, chunks, Z)

    # -- scores ---------------------------------------------------------------------------
    def gate(self, u: torch.Tensor) -> torch.Tensor:
        """Features of ``u`` (B, D) or (K, B, D), gated per dimension and member (Sec. 5.1): -> (K, B, F)."""
        h = self.features(u) if self.features is not None else u
        if h.ndim == 2:
            h = h.unsqueeze(0).expand(self.members, -1, -1)  # (K, B, F)
        return h * torch.sigmoid(self.gate_logits) if self.gate_logits is not None else h

    def member_scores(self, u: torch.Tensor, z: torch.Tensor | None = None,
                      landmark_offsets: torch.Tensor | None = None) -> torch.Tensor:
        """Every member's scores: ``u`` (B, D) or (K, B, D), ``z`` (K * Z,) or (B, K * Z) -> (K, B);
        ``landmark_offsets`` (K, L) shift each member's standardized descriptors (training noise)."""
        if u.ndim not in (2, 3) or u.shape[-1] != self.encoding_size or (u.ndim == 3 and u.shape[0] != self.members):
            raise ArgumentError(f"encodings must have shape (B, {self.encoding_size}), got {tuple(u.shape)}")
        h = self.gate(u)  # (K, B, F)
        if self.phi is not None:
            if z is None:
                raise ArgumentError("this predictor uses meta-features: pass z = embed_task(x, y)")
            b = h.shape[1]
            if z.shape not in ((self.z_dim,), (b, self.z_dim)):
                raise ArgumentError(f"meta-features must have shape ({self.z_dim},) or ({b}, {self.z_dim}), "
                                    f"got {tuple(z.shape)}")
            task = self._member_task_inputs(z, b)  # (K, B, Z + L)
            if landmark_offsets is not None:
                task = torch.cat([task[..., :self.member_z_dim],
                                  task[..., self.member_z_dim:] + landmark_offsets[:, None, :].to(task)], dim=-1)
            h = torch.cat([h, task.to(h.dtype)], dim=-1)  # (K, B, F + Z + L)
        return self.rho(h).squeeze(-1)  # (K, B)

    def _member_task_inputs(self, z: torch.Tensor, b: int) -> torch.Tensor:
        """What each member's rho reads of the task vector ``z`` (K * Z + L,) or (B, K * Z + L):
        its own z and the shared landmarks: -> (K, B, Z + L)."""
        rows = z.reshape(-1, self.z_dim)  # (1 or B, K * Z + L)
        learned = rows[:, :self.members * self.member_z_dim].reshape(len(rows), self.members,
                                                                     self.member_z_dim)  # (1 or B, K, Z)
        shared = rows[:, None, self.members * self.member_z_dim:].expand(-1, self.members, -1)  # (1 or B, K, L)
        return torch.cat([learned, shared], dim=-1).transpose(0, 1).expand(-1, b, -1)  # (K, B, Z + L)

    def forward(self, u: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """The ensemble's score (the members' mean) of ``u`` (B, D) or (D,): -> (B,) or ()."""
        single = u.ndim == 1
        scores = self.member_scores(u.unsqueeze(0) if single else u, z).mean(dim=0)  # (B,)
        return scores[0] if single else scores

    @torch.no_grad()
    def predict_with_std(self, u: np.ndarray, x: np.ndarray | None = None, y: np.ndarray | None = None,
                         landmarks: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Mean and spread (std over members; None for one member) of the scores of ``u`` (B, D);
        ``landmarks``: the task's raw descriptors if already known (``task_embedding``)."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            z = None
            if self.phi is not None:
                if x is None or y is None:
                    raise ArgumentError("this predictor uses meta-features: pass the task's samples x and y")
                z = self.task_embedding(torch.from_numpy(np.array(x, dtype=np.float32)).to(device),
                                        torch.from_numpy(np.array(y, dtype=np.int64)).to(device), landmarks=landmarks)
            scores = self.member_scores(torch.from_numpy(np.array(u, dtype=np.float32)).to(device), z)  # (K, B)
            std = scores.std(dim=0, unbiased=False).cpu().numpy() if self.members > 1 else None
            return scores.mean(dim=0).cpu().numpy(), std
        finally:
            self.train(was_training)

    def predict(self, u: np.ndarray, x: np.ndarray | None = None, y: np.ndarray | None = None,
                landmarks: np.ndarray | None = None) -> np.ndarray:
        """Scores of encodings ``u`` (B, D) on the task with samples ``(x, y)``, in eval mode: -> (B,)."""
        return self.predict_with_std(u, x, y, landmarks)[0]

    def score_task(self, u: torch.Tensor, x: torch.Tensor | None, y: torch.Tensor | None,
                   landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """Member scores of ``u`` (K, B, D) on per-member sample batches ``(K, S, F), (K, S)`` and the
        task's raw landmarking descriptors (L,) (computed once per task: task_landmarks): -> (K, B)."""
        z = self.embed_task(x, y) if self.phi is not None else None  # (K * Z,)
        offsets = None
        if self.num_landmarks:
            if landmarks is None:
                raise ArgumentError("this predictor reads landmarking descriptors: pass the task's landmarks")
            z = torch.cat([z, self.standardized_landmarks(landmarks).to(z)])  # (K * Z + L,)
            if self.training and self.landmark_noise > 0:  # each member its own draw (config.landmark_noise)
                offsets = torch.randn(self.members, self.num_landmarks, device=z.device) * self.landmark_noise
        return self.member_scores(u, z, offsets)


class TaskScorer(nn.Module):
    """One forward pass from (u, task samples) to member scores, so DDP sees phi and rho in ``forward``.

    DistributedDataParallel only hooks ``forward``; wrapping ``score_task`` keeps every
    parameter of the predictor inside one DDP forward call.
    """

    def __init__(self, predictor: PerformancePredictor):
        super().__init__()
        self.predictor = predictor

    def forward(self, u: torch.Tensor, x: torch.Tensor | None = None, y: torch.Tensor | None = None,
                landmarks: torch.Tensor | None = None) -> torch.Tensor:
        return self.predictor.score_task(u, x, y, landmarks)  # (K, B)


def legacy_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A single-predictor checkpoint's state (nn.Linear stacks, format 1) in the stacked layout (K = 1)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "gate_logits":
            out[key] = value.reshape(1, 1, -1)
            continue
        net, index, kind = key.split(".")  # e.g. rho.2.weight: Linear modules sit at even indices
        layer = f"{net}.layers.{int(index) // 2}.{kind}"
        out[layer] = value.t().unsqueeze(0) if kind == "weight" else value.reshape(1, 1, -1)
    return out
