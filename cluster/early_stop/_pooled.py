"""Curve prediction pooled over tasks (issue 19): a task's sequential regressor also learns from
the other tasks' complete curves, each curve beside statistics of its own task.

A per-task model at 25 % of the curve learns from the ~100 complete curves its task has; how a
partial curve ends is much the same across tasks of one recipe once the curve is seen relative
to its task (where the task's curves usually end, how much they still gain, how well the
accuracy at tau already orders the final one). So the model for ``tau`` is fitted on every
comparable curve of several tasks (same length, same architecture features), with
:func:`task_context` of each curve's task appended to its static features; a new curve reads its
own task's context, computed from that task's known complete curves only.

Two uses: the offline evaluation fits a task's own training curves together with the other
tasks' (:func:`fit_pooled`); the live early stopper fits the other tasks' curves alone, once,
and reads a new task through its first complete curves (the context) and a linear
recalibration on all its complete curves, whose leave-one-out residuals give sigma
(:meth:`PooledRegressor.for_task`) -- so it can stop after a few of the task's own curves
instead of the paper's burn-in of 100, and needs no refit of the pooled models as they come.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cluster.early_stop._srm import SequentialRegressor
from nasdb.errors import ArgumentError

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


def subsample_tasks(tasks: Sequence[tuple[np.ndarray, np.ndarray]], max_curves: int | None,
                    seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """At most ``max_curves`` curves in all, the same share from each task (seeded): bounds a
    pooled fit's time and the size of the models shipped to trainers."""
    if max_curves is None or sum(len(c) for c, _ in tasks) <= max_curves:
        return list(tasks)
    rng = np.random.default_rng(seed)
    share = max(2, max_curves // len(tasks))
    picks = [np.sort(rng.permutation(len(c))[:share]) for c, _ in tasks]
    return [(c[p], f[p]) for (c, f), p in zip(tasks, picks)]


class PooledRegressor:
    """One sequential regressor per ``tau`` over several tasks' complete curves ``(curves (N_k, T),
    features (N_k, F))``, each row's features followed by its task's :func:`task_context`.

    Fitted lazily and once (thread-safe): early stoppers of several orders or keys may share one.
    """

    def __init__(self, tasks: Sequence[tuple[np.ndarray, np.ndarray]], **srm: Any):
        tasks = [(np.asarray(c, dtype=np.float64), np.asarray(f, dtype=np.float64)) for c, f in tasks]
        if not tasks:
            raise ArgumentError("a pooled curve model needs at least one task's curves")
        shapes = {(c.shape[1], f.shape[1]) for c, f in tasks}
        if len(shapes) != 1 or any(len(c) != len(f) or len(c) < 2 for c, f in tasks):
            raise ArgumentError(f"pooled tasks need >= 2 curves each of one length and feature count, "
                                f"got {[(c.shape, f.shape) for c, f in tasks]}")
        self.tasks = tasks
        (self.num_epochs, self.num_features), = shapes
        self.srm = srm
        self.models: dict[int, SequentialRegressor] = {}
        self._lock = threading.Lock()  # held while fitting
        self._background: threading.Thread | None = None

    @property
    def num_curves(self) -> int:
        return sum(len(c) for c, _ in self.tasks)

    def fit(self, taus: Any = None) -> "PooledRegressor":
        """Fit the models for ``taus`` (default ``1 .. T-1``) not fitted yet."""
        taus = range(1, self.num_epochs) if taus is None else taus
        curves = np.vstack([c for c, _ in self.tasks])  # (sum N_k, T)
        with self._lock:
            for tau in sorted({int(t) for t in taus} - set(self.models)):
                feats = [_with_context(f, task_context(c, tau)) for c, f in self.tasks]
                self.models[tau] = SequentialRegressor(**self.srm).fit(curves, np.vstack(feats), taus=[tau],
                                                                       estimate_sigma=False)
        return self

    def start_fit(self) -> None:
        """Fit every tau in a background thread (once), so the models are ready when the task's
        own curves first ask for them; a failure there resurfaces in the next :meth:`fit`."""
        if self._background is None:
            self._background = threading.Thread(target=self._fit_quietly, name="pooled-curve-fit", daemon=True)
            self._background.start()

    def _fit_quietly(self) -> None:
        try:
            self.fit()
        except Exception:  # noqa: BLE001 - for_task's own fit raises it where a caller sees it
            pass

    def predict(self, context_curves: np.ndarray, partial: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Predicted final accuracy of ``partial`` curves ``(M, tau)`` of a task whose known complete
        curves are ``context_curves``: -> (M,)."""
        tau = partial.shape[1]
        if tau not in self.models:
            raise ArgumentError(f"no pooled curve model for tau={tau} (fitted: {sorted(self.models)})")
        context = task_context(context_curves, tau)
        return self.models[tau].predict(partial, _with_context(features, context))[0]

    def for_task(self, context_curves: np.ndarray, curves: np.ndarray, features: np.ndarray,
                 taus: Any = None) -> "TaskCurveModel":
        """The fitted models read for one task the pool never saw: its context from
        ``context_curves`` (complete curves), then per tau a linear recalibration of the pooled
        prediction on the task's complete ``curves`` with ``features`` (:func:`recalibrate`: where
        the pool's predictions for this task sit too high or too low, or too close together), and
        sigma(tau) from the recalibration's exact leave-one-out residuals (none of these curves was
        pooled). ``taus``: those only (default ``1 .. T-1``)."""
        taus = range(1, self.num_epochs) if taus is None else taus
        self.fit(taus)
        contexts, recal, sigma = {}, {}, {}
        for tau in sorted({int(t) for t in taus}):
            contexts[tau] = task_context(context_curves, tau)
            raw = self.predict(context_curves, curves[:, :tau], features)  # (N,)
            recal[tau], sigma[tau] = recalibrate(raw, curves[:, -1])
        return TaskCurveModel({t: self.models[t] for t in contexts}, contexts, recal, sigma, self.num_epochs,
                              len(context_curves), len(curves), self.num_curves)


def recalibrate(raw: np.ndarray, final: np.ndarray) -> tuple[tuple[float, float, float], float]:
    """The task's correction of the pooled prediction: ``final ~ raw + a + c (raw - m)``, ``m`` the
    mean of ``raw``, least squares with a ridge penalty on ``c`` equal to the finals' total sum of
    squares -- a shift is taken as the data say, a change of slope only as far as the task's own
    spread supports it (none when the pooled predictions hardly vary) -> ((a, c, m), the RMS of
    the exact leave-one-out residuals)."""
    m = float(raw.mean())
    x = np.column_stack([np.ones_like(raw), raw - m])  # (N, 2)
    err = final - raw  # (N,)
    gram = x.T @ x + np.diag([1e-12, float(np.sum((final - final.mean()) ** 2)) + 1e-12])
    coef = np.linalg.solve(gram, x.T @ err)
    hat = np.einsum("ij,jk,ik->i", x, np.linalg.inv(gram), x)  # leverages
    loo = (err - x @ coef) / np.maximum(1.0 - hat, 1e-6)
    return (float(coef[0]), float(coef[1]), m), float(np.sqrt(np.mean(loo ** 2)))


class TaskCurveModel:
    """A :class:`PooledRegressor` read for one task: ``predict(partial (M, tau), features (M, F))``
    -> (predicted finals (M,), sigma(tau)), what a :class:`~cluster.early_stop.StopRule` asks of
    a :class:`~cluster.early_stop.SequentialRegressor`. Picklable (travels to trainers)."""

    def __init__(self, models: dict[int, SequentialRegressor], contexts: dict[int, np.ndarray],
                 recal: dict[int, tuple[float, float, float]], sigma: dict[int, float], num_epochs: int,
                 num_context: int, num_residuals: int, num_pooled: int):
        self.models, self.contexts, self.recal, self.sigma = dict(models), contexts, recal, sigma
        self.num_epochs = num_epochs
        self.num_context, self.num_residuals, self.num_pooled = num_context, num_residuals, num_pooled
        self.params: dict = {}  # no per-task hyperparameter search to reuse

    def predict(self, curves: Any, features: Any) -> tuple[np.ndarray, float]:
        y = np.asarray(curves, dtype=np.float64)
        tau = y.shape[1]
        if tau not in self.models:
            raise ArgumentError(f"no pooled curve model for tau={tau} observed epochs (fitted: {sorted(self.models)})")
        static = _with_context(np.asarray(features, dtype=np.float64), self.contexts[tau])
        a, c, m = self.recal[tau]
        raw = self.models[tau].predict(y, static)[0]
        return raw + a + c * (raw - m), self.sigma[tau]

    def describe(self) -> dict[str, Any]:
        return {"name": "pooled-srm", "num_epochs": self.num_epochs, "pooled_curves": self.num_pooled,
                "context_curves": self.num_context, "recalibration_curves": self.num_residuals,
                "recalibration": {str(t): list(acm) for t, acm in self.recal.items()},
                "sigma": {str(t): s for t, s in self.sigma.items()}}


class PerTauChoice:
    """Per ``tau``, whichever of the pooled model and the task's own SRM predicts the task's own
    complete curves better out of sample (the smaller sigma(tau): the recalibration's
    leave-one-out against the SRM's), so the prior serves where the task's curves do not yet
    suffice and steps aside where they do. Same ``predict`` as either; picklable."""

    def __init__(self, pooled: TaskCurveModel, own: SequentialRegressor):
        self.choice = {tau: pooled if pooled.sigma[tau] < own.sigma.get(tau, math.inf) else own
                       for tau in pooled.sigma}
        self.sigma = {tau: m.sigma[tau] for tau, m in self.choice.items()}
        self.params = own.params  # the own SRM's hyperparameters, reused by the next refit

    def predict(self, curves: Any, features: Any) -> tuple[np.ndarray, float]:
        tau = np.shape(curves)[1]
        if tau not in self.choice:
            raise ArgumentError(f"no curve model for tau={tau} observed epochs (fitted: {sorted(self.choice)})")
        return self.choice[tau].predict(curves, features)

    def describe(self) -> dict[str, Any]:
        pooled = [t for t, m in self.choice.items() if isinstance(m, TaskCurveModel)]
        return {"name": "per-tau-choice", "pooled_taus": pooled,
                "own_taus": [t for t in self.choice if t not in pooled],
                "sigma": {str(t): s for t, s in self.sigma.items()}}


def fit_pooled(cs: CurveSet, train: np.ndarray, pool: Sequence[CurveSet], tau: int,
               **srm: Any) -> PooledRegressor:
    """The model for ``tau`` on ``cs``'s ``train`` curves and every curve of ``pool`` (comparable
    tasks), each row's static features followed by its task's context (``cs``'s from ``train`` only)."""
    tasks = [(cs.curves[train], cs.features[train])] + [(o.curves, o.features) for o in pool]
    return PooledRegressor(tasks, **srm).fit([tau])


def predict_pooled(model: PooledRegressor, cs: CurveSet, train: np.ndarray, rows: np.ndarray,
                   tau: int) -> np.ndarray:
    """``model``'s predicted final accuracy of ``cs``'s curves ``rows`` seen up to ``tau``, the task's
    context from its ``train`` curves: -> (M,)."""
    return model.predict(cs.curves[train], cs.curves[rows, :tau], cs.features[rows])


__all__ = ["CONTEXT_FEATURES", "PerTauChoice", "PooledRegressor", "TaskCurveModel", "comparable_curve_sets",
           "fit_pooled", "predict_pooled", "recalibrate", "subsample_tasks", "task_context"]
