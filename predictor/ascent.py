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
from torch import nn

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
            raise ValueError(f"predictor encoding size {model.encoding_size} != space {space.encoding_size}")
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
    """The predictor as plain matrices with a hand-written gradient (Linear/ReLU rho only).

    rho(gate(u) ++ z) = W_n relu(... relu(W_1u (g * u) + W_1z z + b_1) ...) + b_n; the gate g and
    the padded-grid scatter are folded into W_1u (rows of padding are 0), z into the bias.
    """

    def __init__(self, model: PerformancePredictor, space: SearchSpace):
        super().__init__(model, space)
        if not self.supports(model):
            raise ValueError("CompiledAscent needs rho = Linear(, ReLU, Linear)*; use AutogradAscent")
        linears = [m for m in model.rho if isinstance(m, nn.Linear)]
        with torch.no_grad():
            w1 = linears[0].weight.detach().float()  # (H1, D + Z)
            d = space.encoding_size
            gate = model.gate(torch.ones(1, d)).squeeze(0).detach().float()  # (D,)
            w1u = (w1[:, :d] * gate).t()  # (D, H1)
            grid = torch.zeros(self.layout.num_blocks * self.layout.width, w1.shape[0])  # (B*K, H1)
            grid[self.layout.flat_index] = w1u
            self.w_in = grid.contiguous()  # (B*K, H1)
            self.w_in_t = grid.t().contiguous()  # (H1, B*K)
            self.w1z = w1[:, d:].t().contiguous()  # (Z, H1)
            self.b1 = linears[0].bias.detach().float().clone()  # (H1,)
            self.hidden = [(m.weight.detach().float().t().contiguous(), m.weight.detach().float().contiguous(),
                            m.bias.detach().float().clone()) for m in linears[1:-1]]  # (Hi, Hj), (Hj, Hi), (Hj,)
            self.w_out = linears[-1].weight.detach().float().squeeze(0).clone()  # (Hn,)
            self.b_out = float(linears[-1].bias.detach())

    @staticmethod
    def supports(model: PerformancePredictor) -> bool:
        mods = list(model.rho)
        kinds = [type(m) for m in mods]
        ok = len(mods) % 2 == 1 and all(k is nn.Linear for k in kinds[::2]) and all(k is nn.ReLU for k in kinds[1::2])
        return ok and mods[-1].out_features == 1

    def _bias(self, z: torch.Tensor | None, s: int) -> torch.Tensor:
        if z is None:
            return self.b1.expand(s, -1)  # (S, H1)
        z = z.float()
        return (z @ self.w1z + self.b1).expand(s, -1) if z.ndim == 1 else z @ self.w1z + self.b1  # (S, H1)

    def score_and_grad(self, logits, z):
        s = logits.shape[0]
        return self._score_and_grad(logits, self._bias(z, s))

    def _score_and_grad(self, logits: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = logits.shape[0]
        u = (logits - logits.amax(dim=-1, keepdim=True)).exp_()  # (S, B, K); by hand: torch.softmax over a
        u = u.div_(u.sum(dim=-1, keepdim=True))  # last dim of 12 costs 2.5x more on CPU
        pre = torch.addmm(bias, u.view(s, -1), self.w_in)  # (S, H1)
        acts, masks = [pre.clamp_min(0.0)], [pre > 0]
        for w_t, _, b in self.hidden:
            pre = torch.addmm(b, acts[-1], w_t)  # (S, Hj)
            acts.append(pre.clamp_min(0.0))
            masks.append(pre > 0)
        scores = acts[-1] @ self.w_out + self.b_out  # (S,)
        delta = self.w_out * masks[-1]  # (S, Hn): d score / d pre-activation of the last hidden layer
        for (_, w, _), mask in zip(reversed(self.hidden), reversed(masks[:-1])):
            delta = (delta @ w) * mask  # (S, Hi)
        g_u = (delta @ self.w_in_t).view_as(u)  # (S, B, K) d score / d u (0 on padding)
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
