"""Calls of an early-stop observer (cluster.early_stop.EpochObserver) from the child trainers.

``train_child`` and the batched trainer both take the static features of their children from the
observer (:func:`observer_features`), ask it after each epoch who stops
(:func:`observe_epoch`) and tell it of the children that ran every epoch
(:func:`observe_complete`). The observer's own faults raise :class:`ObserverError`, which the
trainers let through: they are not a child's training failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from cluster.early_stop import model_features
from nasdb.errors import ObserverError

if TYPE_CHECKING:
    from cluster.early_stop import EpochObserver
    from nasdb.space import SearchSpace


def observer_features(observer: "EpochObserver", space: SearchSpace, architectures: Any, num_params: Any,
                      recipe: Any) -> np.ndarray:
    """The static features ``(N, F)`` the observer decides on: its own ``static_features`` where it
    has one (a stopper that pools with an architecture prior), else :func:`model_features`."""
    own = getattr(observer, "static_features", None)
    if own is None:
        return model_features(space, architectures, num_params, recipe)
    try:
        return np.asarray(own(space, architectures, num_params, recipe), dtype=np.float64)
    except Exception as e:
        raise ObserverError(f"early-stop observer {type(observer).__name__}.static_features failed: "
                            f"{type(e).__name__}: {e}") from e


def observe_epoch(observer: "EpochObserver", curves: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``observer.decide_many`` on the curves (N, tau) of the models still training: their stop
    flags (N,) bool and predicted final accuracies (N,) float (NaN: no prediction)."""
    try:
        decision = observer.decide_many(curves, features)
        stop = np.asarray(decision.stop, dtype=bool)
        predicted = np.asarray(decision.predicted_final, dtype=np.float64)
    except Exception as e:
        raise ObserverError(f"early-stop observer {type(observer).__name__}.decide_many failed: "
                            f"{type(e).__name__}: {e}") from e
    if stop.shape != (len(curves),) or predicted.shape != (len(curves),):
        raise ObserverError(f"early-stop observer {type(observer).__name__}.decide_many answered stop "
                            f"{stop.shape} / predicted_final {predicted.shape} for {len(curves)} curves")
    return stop, predicted


def observe_complete(observer: "EpochObserver", curves: np.ndarray, features: np.ndarray) -> None:
    """``observer.report_complete`` on the curves (N, T) of the models that ran every epoch."""
    try:
        observer.report_complete(curves, features)
    except Exception as e:
        raise ObserverError(f"early-stop observer {type(observer).__name__}.report_complete failed: "
                            f"{type(e).__name__}: {e}") from e
