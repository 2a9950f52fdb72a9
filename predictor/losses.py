"""Training losses of the predictor, vectorized over a mini-batch of one task's experiments.

- ``l2``: squared error against the task-normalized accuracy (v - mu_k) / sigma_k
  (task-aware-performance-prediction.md Sec. 5.1).
- ``linear`` / ``quadratic``: the pairwise ranking losses with margin m and uncertainty gap of
  ranking-architectures-meta-learning.md Sec. 3; a pair (i, j) counts only when
  p_i - p_j > gap, so each unordered pair counts at most once (Appendix A.3).
"""

from __future__ import annotations

from typing import Callable

import torch

from predictor.config import LOSSES


def normalize_performance(perf: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """(p - mu_k) / sigma_k; a task whose accuracies are all equal (sigma_k = 0) maps to zeros."""
    return (perf - mean) / (std if std > 0 else 1.0)  # (B,)


def l2_loss(scores: torch.Tensor, perf: torch.Tensor, *, mean: float, std: float, **_: float) -> torch.Tensor:
    """Mean squared error between scores (B,) and the task-normalized accuracies (B,)."""
    target = normalize_performance(perf.to(scores.dtype), mean, std)  # (B,)
    return torch.mean((scores - target) ** 2)


def _pair_hinges(scores: torch.Tensor, perf: torch.Tensor, margin: float, gap: float):
    """Hinge max(0, m - (v_i - v_j)) for every ordered pair and the mask of pairs that count."""
    if scores.shape != perf.shape or scores.ndim != 1:
        raise ValueError(f"scores and accuracies must be matching vectors, got {tuple(scores.shape)} "
                         f"and {tuple(perf.shape)}")
    counted = (perf[:, None] - perf[None, :]) > gap  # (B, B): p_i - p_j > gap
    hinge = torch.clamp(margin - (scores[:, None] - scores[None, :]), min=0.0)  # (B, B)
    return hinge, counted


def _mean_over_counted(values: torch.Tensor, counted: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    n = counted.sum()
    if int(n) == 0:  # no pair is distinguishable: zero loss that still has a graph (DDP needs one)
        return scores.sum() * 0.0
    return torch.where(counted, values, torch.zeros_like(values)).sum() / n


def linear_ranking_loss(scores: torch.Tensor, perf: torch.Tensor, *, margin: float = 0.3,
                        gap: float = 0.01, **_: float) -> torch.Tensor:
    """L(v_i, v_j) = max(0, m - (v_i - v_j)) for pairs with p_i - p_j > gap, mean over those pairs."""
    hinge, counted = _pair_hinges(scores, perf.to(scores.dtype), margin, gap)
    return _mean_over_counted(hinge, counted, scores)


def quadratic_ranking_loss(scores: torch.Tensor, perf: torch.Tensor, *, margin: float = 0.3,
                           gap: float = 0.01, **_: float) -> torch.Tensor:
    """Q(v_i, v_j) = max(0, m - (v_i - v_j))^2 / m for pairs with p_i - p_j > gap, mean over those pairs."""
    hinge, counted = _pair_hinges(scores, perf.to(scores.dtype), margin, gap)
    return _mean_over_counted(hinge**2 / margin, counted, scores)


LOSS_FUNCTIONS: dict[str, Callable[..., torch.Tensor]] = {
    "l2": l2_loss,
    "linear": linear_ranking_loss,
    "quadratic": quadratic_ranking_loss,
}
assert set(LOSS_FUNCTIONS) == set(LOSSES)


def prediction_loss(name: str, scores: torch.Tensor, perf: torch.Tensor, *, margin: float, gap: float,
                    mean: float, std: float) -> torch.Tensor:
    """Dispatch to the loss ``name``: scores (B,) and raw validation accuracies (B,) of one task."""
    try:
        fn = LOSS_FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSS_FUNCTIONS)}") from None
    return fn(scores, perf, margin=margin, gap=gap, mean=mean, std=std)
