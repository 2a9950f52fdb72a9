"""An architecture prior for curve prediction (issue 19): how the other tasks rank an architecture.

Baker et al.'s architecture features (parameter count, depth, widths) say little about which
layer choices train well; the other tasks in the store say more. :class:`ArchitecturePrior` is a
ridge regression of the within-task quantile rank of a curve's final accuracy on the one-hot
encoding of its architecture, fitted on other tasks' complete curves: the architecture's expected
rank on a task it has never seen. It joins the static features of the pooled curve models as one
more column, ``architecture_prior``. For the prior of a pooled task's own rows to be out of task,
as it is for the new task's, each pooled task's column comes from a prior fitted on the other
pooled tasks only (cross-fitting; :func:`architecture_prior`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cluster.early_stop._features import model_features
from nasdb.errors import ArgumentError
from nasdb.ranks import quantile_rank

if TYPE_CHECKING:
    from cluster.early_stop._curves_eval import CurveSet
    from nasdb.space import SearchSpace

#: The static feature the prior adds, after the model features.
ARCH_PRIOR_FEATURE = "architecture_prior"
#: Ridge penalty on the one-hot coefficients (as the task-agnostic ``ridge`` baseline of the predictor).
PRIOR_ALPHA = 1.0


class ArchitecturePrior:
    """Ridge of the within-task rank on the one-hot encoding: ``prior(architectures (N, D)) -> (N,)``.
    Picklable and numpy only (it travels to trainers)."""

    def __init__(self, space: SearchSpace, coef: np.ndarray, intercept: float, num_tasks: int, num_curves: int):
        self.space, self.coef, self.intercept = space, coef, float(intercept)
        self.num_tasks, self.num_curves = int(num_tasks), int(num_curves)

    def __call__(self, architectures: np.ndarray) -> np.ndarray:
        u = self.space.encode_many(np.asarray(architectures)).astype(np.float64)  # (N, E)
        return u @ self.coef + self.intercept

    def describe(self) -> dict:
        return {"name": "ridge-on-one-hot", "alpha": PRIOR_ALPHA, "tasks": self.num_tasks, "curves": self.num_curves}


def _moments(space: SearchSpace, cs: CurveSet) -> tuple[np.ndarray, ...]:
    """A task's sufficient statistics for the ridge: count, sum of u, sum of y, u'u, u'y (the
    cross-fitted priors then cost one small solve each)."""
    u = space.encode_many(cs.architectures).astype(np.float64)  # (N, E)
    y = quantile_rank(cs.finals)  # (N,)
    return np.array(len(y), dtype=np.float64), u.sum(0), y.sum(), u.T @ u, u.T @ y


def _solve(space: SearchSpace, moments: list[tuple[np.ndarray, ...]], num_tasks: int) -> ArchitecturePrior:
    n, su, sy, uu, uy = (sum(m[i] for m in moments) for i in range(5))
    mu, my = su / n, sy / n
    gram = uu - n * np.outer(mu, mu) + PRIOR_ALPHA * np.eye(len(mu))  # centred: the intercept is not penalized
    coef = np.linalg.solve(gram, uy - n * mu * my)
    return ArchitecturePrior(space, coef, my - mu @ coef, num_tasks, int(n))


def architecture_prior(sets: Sequence[CurveSet], space: SearchSpace | None
                       ) -> tuple[ArchitecturePrior | None, list[CurveSet]]:
    """The prior a new task of ``space`` reads, fitted on every set of ``sets`` in that space, and
    those sets with their ``architecture_prior`` column, each from a prior fitted on the others
    (None and ``sets`` unchanged when fewer than two sets are in ``space``). Sets of other spaces,
    or without architectures, are left out: their architectures have no encoding in ``space``."""
    usable = [cs for cs in sets if space is not None and cs.architectures is not None and cs.space is not None
              and cs.space.space_id == space.space_id and cs.num_curves >= 2]
    if len(usable) < 2:
        return None, list(sets)
    moments = [_moments(space, cs) for cs in usable]
    prior = _solve(space, moments, len(usable))
    held = [_solve(space, moments[:k] + moments[k + 1:], len(usable) - 1) for k in range(len(usable))]
    return prior, [with_prior(cs, p) for cs, p in zip(usable, held)]


def static_features(space: SearchSpace, architectures: Any, num_params: Any, recipe: Any,
                    prior: ArchitecturePrior | None = None) -> np.ndarray:
    """What the curve models read of a child that does not change while it trains: its
    :func:`model_features`, then, when the stopper pools with a prior, the prior's column."""
    features = model_features(space, architectures, num_params, recipe)  # (N, F)
    if prior is None:
        return features
    return np.hstack([features, prior(np.asarray(architectures))[:, None]])  # (N, F + 1)


def with_prior(cs: CurveSet, prior: ArchitecturePrior) -> CurveSet:
    """``cs`` with the ``architecture_prior`` column appended to its static features."""
    if cs.architectures is None:
        raise ArgumentError(f"task {cs.task!r}: its curve set has no architectures to read a prior for")
    features = np.hstack([cs.features, prior(cs.architectures)[:, None]])
    return replace(cs, features=features, feature_names=cs.feature_names + (ARCH_PRIOR_FEATURE,))


__all__ = ["ARCH_PRIOR_FEATURE", "ArchitecturePrior", "architecture_prior", "static_features", "with_prior"]
