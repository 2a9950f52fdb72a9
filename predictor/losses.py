"""Training losses of the predictor, vectorized over a mini-batch of one task's experiments.

Scores and accuracies are ``(B,)``, or ``(K, B)`` for K ensemble members with a mini-batch each:
then each member's loss is computed as for ``(B,)`` and the K losses are summed (the members are
independent), in one set of tensor operations rather than K.

- ``l2``: squared error against the task-normalized accuracy (v - mu_k) / sigma_k
  (task-aware-performance-prediction.md Sec. 5.1).
- ``linear`` / ``quadratic``: the pairwise ranking losses with margin m and uncertainty gap of
  ranking-architectures-meta-learning.md Sec. 3; a pair (i, j) counts only when
  p_i - p_j > gap, so each unordered pair counts at most once (Appendix A.3).
"""

from __future__ import annotations

from typing import Callable

import torch

from nasdb.errors import ArgumentError
from predictor.config import LOSSES


def normalize_performance(perf: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """(p - mu_k) / sigma_k; a task whose accuracies are all equal (sigma_k = 0) maps to zeros."""
    return (perf - mean) / (std if std > 0 else 1.0)  # (B,)


def l2_loss(scores: torch.Tensor, perf: torch.Tensor, *, mean: float, std: float, **_: float) -> torch.Tensor:
    """Mean squared error between scores (..., B) and the task-normalized accuracies (..., B)."""
    _check_shapes(scores, perf)
    target = normalize_performance(perf.to(scores.dtype), mean, std)  # (..., B)
    return ((scores - target) ** 2).mean(dim=-1).sum()


def _check_shapes(scores: torch.Tensor, perf: torch.Tensor) -> None:
    if scores.shape != perf.shape or scores.ndim not in (1, 2):
        raise ArgumentError(f"scores and accuracies must be matching vectors (B,) or (K, B), got "
                            f"{tuple(scores.shape)} and {tuple(perf.shape)}")


def _pair_hinges(scores: torch.Tensor, perf: torch.Tensor, margin: float, gap: float):
    """Hinge max(0, m - (v_i - v_j)) for every ordered pair and the mask of pairs that count."""
    _check_shapes(scores, perf)
    counted = (perf[..., :, None] - perf[..., None, :]) > gap  # (..., B, B): p_i - p_j > gap
    hinge = torch.clamp(margin - (scores[..., :, None] - scores[..., None, :]), min=0.0)  # (..., B, B)
    return hinge, counted


def _mean_over_counted(values: torch.Tensor, counted: torch.Tensor) -> torch.Tensor:
    """Per member, the mean over its counted pairs (0 when none is distinguishable), summed over members.

    ``where`` keeps the graph even when no pair counts (DDP needs one in every step)."""
    total = torch.where(counted, values, torch.zeros_like(values)).sum(dim=(-2, -1))  # (...,)
    return (total / counted.sum(dim=(-2, -1)).clamp_min(1)).sum()


def linear_ranking_loss(scores: torch.Tensor, perf: torch.Tensor, *, margin: float = 0.3,
                        gap: float = 0.01, **_: float) -> torch.Tensor:
    """L(v_i, v_j) = max(0, m - (v_i - v_j)) for pairs with p_i - p_j > gap, mean over those pairs."""
    hinge, counted = _pair_hinges(scores, perf.to(scores.dtype), margin, gap)
    return _mean_over_counted(hinge, counted)


def quadratic_ranking_loss(scores: torch.Tensor, perf: torch.Tensor, *, margin: float = 0.3,
                           gap: float = 0.01, **_: float) -> torch.Tensor:
    """Q(v_i, v_j) = max(0, m - (v_i - v_j))^2 / m for pairs with p_i - p_j > gap, mean over those pairs."""
    hinge, counted = _pair_hinges(scores, perf.to(scores.dtype), margin, gap)
    return _mean_over_counted(hinge**2 / margin, counted)


LOSS_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "l2": l2_loss,
    "linear": linear_ranking_loss,
    "quadratic": quadratic_ranking_loss,
}
assert set(LOSS_FUNCTIONS) == set(LOSSES)


def prediction_loss(name: str, scores: torch.Tensor, perf: torch.Tensor, *, margin: float, gap: float,
                    mean: float, std: float) -> torch.Tensor:
    """Dispatch to the loss ``name``: scores and raw validation accuracies of one task, (B,) or (K, B)."""
    try:
        fn = LOSS_FUNCTIONS[name]
    except KeyError:
        raise ArgumentError(f"unknown loss {name!r}; known: {sorted(LOSS_FUNCTIONS)}") from None
    return fn(scores, perf, margin=margin, gap=gap, mean=mean, std=std)
