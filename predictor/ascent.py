"""Batched gradient ascent on relaxed architecture encodings: the inner loop of Algorithm 2.

task-aware-performance-prediction.md Sec. 3.3 (Algorithm 2) and Sec. 3.4 (relaxation). Every
starting point ascends at once: the state is one ``(S, B, K)`` tensor of per-block logits
(S starts, B blocks of the space, K the widest block; shorter blocks padded with a large
negative logit so their padding gets softmax weight 0), and ``u = softmax per block``.

Why logits and not ``u`` with a projection: the predictor was trained on one-hot encodings,
the vertices of a product of simplices. A softmax per block keeps every iterate inside that
product (Sec. 3.4's own parametrization, Eq. 4), so the predictor is never asked to
extrapolate to encodings it cannot have seen (entries > 1 or < 0, blocks summing to 3), and
it needs no per-step Euclidean projection onto the simplex (a sort per block). The price is
that a saturated softmax has a vanishing gradient, so a start is a *smoothed* one-hot
(``start_logits``), not a vertex.

Two interchangeable implementations of one step ``L <- L + eta * dv/dL``:

- ``AutogradAscent``: any predictor, torch.autograd on the batch.
- ``CompiledAscent``: the predictor's rho as plain matrices (Linear/ReLU stacks, the model's
  shape), the gradient written out by hand and z folded into the first layer's bias. It
  skips autograd's graph building, which dominates at this size (S=10, 155 inputs).
  ``make_ascent`` picks it whenever the model allows and falls back to autograd otherwise;
  tests check both against a naive per-start autograd loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nasdb.errors import ArgumentError
from nasdb.space import SearchSpace
from predictor.model import PerformancePredictor

PAD_LOGIT = -1.0e4  # exp(PAD_LOGIT - max) == 0 in float32: padding never gets softmax weight


@dataclass(frozen=True)
class BlockLayout:
    """Where each entry of an encoding sits in the padded ``(B, K)`` block grid."""

    num_blocks: int
    width: int  # K: the widest block
    flat_index: torch.Tensor  # (D,) position of encoding entry d in the flattened (B*K,) grid
    pad_mask: torch.Tensor  # (B, K) True at padding

    @classmethod
    def of(cls, space: SearchSpace) -> "BlockLayout":
        sizes = [int(s) for s in space.sizes]
        width = max(sizes)
        flat = torch.cat([torch.arange(s) + b * width for b, s in enumerate(sizes)])  # (D,)
        pad = torch.ones(len(sizes), width, dtype=torch.bool)
        pad.view(-1)[flat] = False
        return cls(len(sizes), width, flat, pad)

    def to_grid(self, v: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """``(S, D) -> (S, B, K)``, padding set to ``fill``."""
        out = torch.full((v.shape[0], self.num_blocks * self.width), fill, dtype=v.dtype)  # (S, B*K)
        out[:, self.flat_index] = v
        return out.view(-1, self.num_blocks, self.width)  # (S, B, K)

    def to_flat(self, grid: torch.Tensor) -> torch.Tensor:
        """``(S, B, K) -> (S, D)``."""
        return grid.reshape(grid.shape[0], -1)[:, self.flat_index]  # (S, D)


def start_logits(space: SearchSpace, architectures: np.ndarray, smoothing: float) -> torch.Tensor:
    """Logits of smoothed one-hots: ``log((1 - s) * onehot + s / size)`` per block -> (S, D).

    With ``0 < s < 1`` the argmax stays the start architecture while the softmax is far
    enough from saturation for gradients to flow.
    """
    onehot = torch.as_tensor(space.encode_many(np.asarray(architectures)), dtype=torch.float32)  # (S, D)
    sizes = torch.as_tensor(np.repeat(space.sizes, space.sizes), dtype=torch.float32)  # (D,)
    return torch.log((1.0 - smoothing) * onehot + smoothing / sizes)  # (S, D)


@dataclass
class AscentResult:
    logits: torch.Tensor  # (S, B, K) final logits
    u: torch.Tensor  # (S, D) final relaxed encodings, a softmax per block
    scores: torch.Tensor  # (S,) predicted score of each final u
    iterations: int
    converged: bool


class BatchedAscent:
    """Gradient ascent of the predictor's score for fixed meta-features over S starts at once."""

    def __init__(self, model: PerformancePredictor, space: SearchSpace):
        if model.encoding_size != space.encoding_size:
            raise ArgumentError(f"predictor encoding size {model.encoding_size} != space {space.encoding_size}")
        self.model, self.space, self.layout = model, space, BlockLayout.of(space)

    # -- one step, per implementation --------------------------------------------------------
    def score_and_grad(self, logits: torch.Tensor, z: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores ``(S,)`` and ``d score / d logits`` ``(S, B, K)`` at ``logits`` (S, B, K)."""
        raise NotImplementedError

    def step(self, logits: torch.Tensor, z: torch.Tensor | None, step_size: float) -> torch.Tensor:
        """One step of Algorithm 2 for every start: ``L + eta * dv/dL`` -> (S, B, K)."""
        _, grad = self.score_and_grad(logits, z)
        return logits + step_size * grad  # (S, B, K)

    def relax(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-block softmax in the grid: (S, B, K) -> (S, B, K)."""
        return torch.softmax(logits, dim=-1)

    @torch.no_grad()
    def score(self, u: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """Predictor scores of encodings ``u`` (S, D) -> (S,)."""
        return self.model(u, z)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, logits0: torch.Tensor, z: torch.Tensor | None, *, step_size: float, max_iters: int,
            tolerance: float, check_every: int) -> AscentResult:
        """Ascend from ``logits0`` (S, D) for up to ``max_iters`` steps.

        Convergence is checked every ``check_every`` steps (a check per step would cost as much
        as the step): stop when no entry of any start's ``u`` moved more than ``tolerance``
        since the previous check.
        """
        logits = self.layout.to_grid(logits0.to(torch.float32), fill=PAD_LOGIT)  # (S, B, K)
        last_u = self.relax(logits)  # (S, B, K)
        it, converged = 0, False
        while it < max_iters:
            n = min(check_every, max_iters - it)
            logits = self._steps(logits, z, step_size, n)
            it += n
            u = self.relax(logits)  # (S, B, K)
            if float((u - last_u).abs().max()) <= tolerance:
                converged = True
                break
            last_u = u
        u = self.layout.to_flat(self.relax(logits))  # (S, D)
        return AscentResult(logits, u, self.score(u, z), it, converged)

    def _steps(self, logits: torch.Tensor, z: torch.Tensor | None, step_size: float, n: int) -> torch.Tensor:
        for _ in range(n):
            logits = self.step(logits, z, step_size)
        return logits


class AutogradAscent(BatchedAscent):
    """Any predictor: the gradient by torch.autograd through ``model(u, z)``."""

    def score_and_grad(self, logits, z):
        with torch.enable_grad():
            logits = logits.detach().requires_grad_(True)
            u = self.layout.to_flat(torch.softmax(logits, dim=-1))  # (S, D)
            scores = self.model(u, z)  # (S,)
            (grad,) = torch.autograd.grad(scores.sum(), logits)  # (S, B, K); starts are independent
        return scores.detach(), grad


class CompiledAscent(BatchedAscent):
    """The predictor as plain matrices with a hand-written gradient.

    The K members' rho are one Linear/ReLU stack of block-diagonal matrices (member k's units
    in block k) whose output is their mean. The first layer reads ``f(u) = u @ P_u + vec(g) @ P_g``
    (predictor/features.py) with the gate folded in, so it becomes ``u @ A + vec(g) @ G``:
    ``A`` scattered into the padded block grid, ``z`` folded into the bias.
    """

    def __init__(self, model: PerformancePredictor, space: SearchSpace):
        super().__init__(model, space)
        if not self.supports(model):
            raise ArgumentError("CompiledAscent needs a stacked Linear/ReLU rho; use AutogradAscent")
        layers = list(model.rho.layers)
        k = model.members
        with torch.no_grad():
            w1 = layers[0].weight.detach().float()  # (K, F + Z, H1)
            f = w1.shape[1] - model.task_dim
            gate = (torch.sigmoid(model.gate_logits.detach().float()).transpose(1, 2)
                    if model.gate_logits is not None else torch.ones(k, f, 1))  # (K, F, 1)
            w1f = (w1[:, :f] * gate).permute(1, 0, 2).reshape(f, -1)  # (F, K*H1), columns member-major
            feats = model.features
            self.structured = feats is not None and feats.structured
            a_mat = feats.p_u @ w1f if self.structured else w1f  # (D, K*H1)
            grid = torch.zeros(self.layout.num_blocks * self.layout.width, a_mat.shape[1])  # (B*K, K*H1)
            grid[self.layout.flat_index] = a_mat
            self.w_in = grid.contiguous()
            self.w_in_t = grid.t().contiguous()  # (K*H1, B*K)
            if self.structured:
                self.g_mat = (feats.p_g @ w1f).contiguous()  # (L*C, K*H1)
                self.g_mat_t = self.g_mat.t().contiguous()
                self.layer_cells = self.layout.flat_index[feats.layer_index]  # (L, C) grid cells of each slot
                self.on_cells = self.layout.flat_index[feats.on_index]  # (L,)
                self.slot_cells = self.layer_cells.reshape(-1)
            self.w1z = self._task_weights(w1[:, f:], model) if model.task_dim else None  # (K*Z + L, K*H1)
            self.b1 = layers[0].bias.detach().float().reshape(-1).clone()  # (K*H1,)
            self.hidden = []
            for layer in layers[1:-1]:
                w = torch.block_diag(*layer.weight.detach().float())  # (K*Hi, K*Hj)
                self.hidden.append((w.contiguous(), w.t().contiguous(), layer.bias.detach().float().reshape(-1)))
            self.w_out = layers[-1].weight.detach().float().reshape(-1) / k  # (K*Hn,): the members' mean
            self.b_out = float(layers[-1].bias.detach().float().mean())

    @staticmethod
    def _task_weights(w: torch.Tensor, model: PerformancePredictor) -> torch.Tensor:
        """rho's first-layer weights on the task vector ``[z_1..z_K, landmarks]``: each member's z
        reaches its own block, the shared landmarks every member's: (K, Z + L, H1) -> (K*Z + L, K*H1)."""
        z = model.member_z_dim
        shared = w[:, z:].permute(1, 0, 2).reshape(model.num_landmarks, w.shape[0] * w.shape[2])  # (L, K*H1)
        return torch.cat([torch.block_diag(*w[:, :z]), shared]) if z else shared

    @staticmethod
    def supports(model: PerformancePredictor) -> bool:
        layers = getattr(getattr(model, "rho", None), "layers", None)
        return layers is not None and len(layers) >= 2 and layers[-1].weight.shape[-1] == 1

    def _bias(self, z: torch.Tensor | None, s: int) -> torch.Tensor:
        if z is None or self.w1z is None:
            return self.b1.expand(s, -1)  # (S, K*H1)
        z = z.float()
        return (z @ self.w1z + self.b1).expand(s, -1) if z.ndim == 1 else z @ self.w1z + self.b1  # (S, K*H1)

    def score_and_grad(self, logits, z):
        s = logits.shape[0]
        return self._score_and_grad(logits, self._bias(z, s))

    def _score_and_grad(self, logits: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = logits.shape[0]
        u = (logits - logits.amax(dim=-1, keepdim=True)).exp_()  # (S, B, K); by hand: torch.softmax over a
        u = u.div_(u.sum(dim=-1, keepdim=True))  # last dim of 12 costs 2.5x more on CPU
        flat = u.view(s, -1)  # (S, B*K)
        pre = torch.addmm(bias, flat, self.w_in)  # (S, K*H1)
        if self.structured:
            a, on = flat[:, self.layer_cells], flat[:, self.on_cells]  # (S, L, C), (S, L)
            pre.addmm_((a * on.unsqueeze(-1)).view(s, -1), self.g_mat)
        acts, masks = [pre.clamp_min(0.0)], [pre > 0]
        for w, _, b in self.hidden:
            pre = torch.addmm(b, acts[-1], w)  # (S, K*Hj)
            acts.append(pre.clamp_min(0.0))
            masks.append(pre > 0)
        scores = acts[-1] @ self.w_out + self.b_out  # (S,)
        delta = self.w_out * masks[-1]  # (S, K*Hn): d score / d pre-activation of the last hidden layer
        for (_, w_t, _), mask in zip(reversed(self.hidden), reversed(masks[:-1])):
            delta = (delta @ w_t) * mask  # (S, K*Hi)
        g_flat = delta @ self.w_in_t  # (S, B*K) d score / d u through A (0 on padding)
        if self.structured:
            g_g = (delta @ self.g_mat_t).view_as(a)  # (S, L, C) d score / d g
            g_flat.index_add_(1, self.slot_cells, (g_g * on.unsqueeze(-1)).view(s, -1))
            g_flat.index_add_(1, self.on_cells, (g_g * a).sum(dim=-1))
        g_u = g_flat.view_as(u)  # (S, B, K)
        grad = u * (g_u - (u * g_u).sum(dim=-1, keepdim=True))  # (S, B, K) softmax Jacobian-vector product
        return scores, grad

    def _steps(self, logits, z, step_size, n):
        bias = self._bias(z, logits.shape[0])  # z is fixed during the ascent: fold it once
        logits = logits.detach().clone()  # updated in place below; the caller's tensor is left alone
        for _ in range(n):
            _, grad = self._score_and_grad(logits, bias)
            logits.add_(grad, alpha=step_size)
        return logits


def make_ascent(model: PerformancePredictor, space: SearchSpace, *, compiled: bool = True) -> BatchedAscent:
    """The fast hand-written ascent when the model's shape allows it, autograd otherwise."""
    if compiled and CompiledAscent.supports(model):
        return CompiledAscent(model, space)
    return AutogradAscent(model, space)
