"""Curve prediction pooled over tasks (issue 19): a task's sequential regressor also learns from
the other tasks' complete curves, each curve beside statistics of its own task.

A per-task model at 25 % of the curve learns from the ~100 complete curves its task has; how a
partial curve ends is much the same across tasks of one recipe once the curve is seen relative
to its task (where the task's curves usually end, how much they still gain, how well the
accuracy at tau already orders the final one). So the model for ``tau`` is fitted on the task's
own training curves plus every comparable curve of the other tasks (same length, same
architecture features), with :func:`task_context` of each curve's task appended to its static
features; a new curve reads its own task's context, computed from that task's known curves only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cluster.early_stop._srm import SequentialRegressor

if TYPE_CHECKING:
    from cluster.early_stop._curves_eval import CurveSet

#: What :func:`task_context` says of a task at ``tau`` observed epochs, in this order.
CONTEXT_FEATURES = ("final_mean", "final_std", "tau_mean", "tau_std", "gain_mean", "tau_final_corr")


def task_context(curves: np.ndarray, tau: int) -> np.ndarray:
    """A task's context at ``tau`` from its complete curves ``(N, T)``: the mean and spread of
    their final accuracy and of their accuracy at ``tau``, the mean gain between the two, and
    their correlation (0 when either is constant): -> (6,)."""
    final, at = curves[:, -1], curves[:, tau - 1]
    corr = float(np.corrcoef(at, final)[0, 1]) if np.ptp(at) > 0 and np.ptp(final) > 0 else 0.0
    return np.array([final.mean(), final.std(), at.mean(), at.std(), (final - at).mean(), corr])


def comparable_curve_sets(cs: CurveSet, others: Sequence[CurveSet]) -> list[CurveSet]:
    """The tasks of ``others`` (not ``cs`` itself) whose curves a model of ``cs`` can read: the
    same number of epochs and the same architecture features."""
    return [o for o in others if o.task != cs.task and o.num_epochs == cs.num_epochs
            and o.feature_names == cs.feature_names]


def _with_context(features: np.ndarray, context: np.ndarray) -> np.ndarray:
    return np.hstack([features, np.repeat(context[None], len(features), axis=0)])  # (N, F + 6)


def fit_pooled(cs: CurveSet, train: np.ndarray, pool: Sequence[CurveSet], tau: int,
               **srm: Any) -> SequentialRegressor:
    """The SRM for ``tau`` on ``cs``'s ``train`` curves and every curve of ``pool`` (comparable
    tasks), each row's static features followed by its task's context (``cs``'s from ``train`` only)."""
    curves = [cs.curves[train]] + [o.curves for o in pool]
    feats = [_with_context(cs.features[train], task_context(cs.curves[train], tau))]
    feats += [_with_context(o.features, task_context(o.curves, tau)) for o in pool]
    return SequentialRegressor(**srm).fit(np.vstack(curves), np.vstack(feats), taus=[tau], estimate_sigma=False)


def predict_pooled(model: SequentialRegressor, cs: CurveSet, train: np.ndarray, rows: np.ndarray,
                   tau: int) -> np.ndarray:
    """``model``'s predicted final accuracy of ``cs``'s curves ``rows`` seen up to ``tau``: -> (M,)."""
    context = task_context(cs.curves[train], tau)
    return model.predict(cs.curves[rows, :tau], _with_context(cs.features[rows], context))[0]


__all__ = ["CONTEXT_FEATURES", "comparable_curve_sets", "fit_pooled", "predict_pooled", "task_context"]
