"""Within-task ranks: what the task-agnostic models (predictor baselines, the curve models'
architecture prior) fit, since accuracies of different tasks are not on one scale."""

from __future__ import annotations

import numpy as np


def quantile_rank(values: np.ndarray) -> np.ndarray:
    """Each value's rank within ``values`` scaled to [0, 1] (ties share their mean rank): (M,) -> (M,)."""
    from scipy import stats  # ~0.6 s at import: a Serve replica or trainer that never ranks starts without it

    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return np.full(values.shape, 0.5)
    return (stats.rankdata(values, method="average") - 1.0) / (values.size - 1.0)


__all__ = ["quantile_rank"]
