"""Sequential regression models: one nu-SVR (RBF) per number of observed epochs ``tau``.

accelerating-nas-performance-prediction-baker.md Sec. 2 and 3: for ``tau = 1 .. T-1`` a
regressor maps the features of the first ``tau`` epochs to the final validation accuracy
``y_T``; its uncertainty ``sigma(tau)`` (independent of the configuration) comes from
leave-one-out cross-validation. Hyperparameters (C, nu, gamma) are chosen per ``tau`` by a
random search (Appendix C; ranges adapted to standardized targets, see ``svr_candidates``)
scored by K-fold CV; the paper draws 1,000 candidates, we draw ``search_trials`` (plus
scikit-learn's defaults) to keep a refit to seconds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.svm import NuSVR

from cluster.early_stop._features import curve_features
from nasdb.errors import ArgumentError

#: Fewest complete curves a fit accepts (K-fold search and LOO need a few points).
MIN_TRAIN_CURVES = 5


def load_model_library() -> None:
    """Import scikit-learn now. It is imported where a model is built, not at the top, so that a
    trainer without early stopping starts ~1 s sooner (issue 19); a process that will fit or apply
    curve models (the stopper actor, a trainer with early stopping) calls this at start instead of
    paying the import inside its first refit or decision."""
    import sklearn.ensemble  # noqa: F401
    import sklearn.model_selection  # noqa: F401
    import sklearn.svm  # noqa: F401


@dataclass(frozen=True)
class SVRParams:
    """nu-SVR hyperparameters; ``gamma`` is relative to ``1 / num_features`` (1.0 = sklearn 'scale'
    on standardized features), so one candidate list fits every ``tau``."""

    C: float = 1.0
    nu: float = 0.5
    gamma: float = 1.0

    def build(self, num_features: int) -> NuSVR:
        from sklearn.svm import NuSVR

        return NuSVR(C=self.C, nu=self.nu, kernel="rbf", gamma=self.gamma / max(num_features, 1))


@dataclass(frozen=True)
class GBTParams:
    """Gradient-boosted trees (scikit-learn's histogram GBT), the alternative to the paper's nu-SVR:
    trees need no kernel width, ignore uninformative features and pick up thresholds in the
    architecture features (issue 19); small leaves and shrinkage for ~100-1000 curves."""

    max_iter: int = 200
    learning_rate: float = 0.05
    max_leaf_nodes: int = 7
    min_samples_leaf: int = 10
    l2_regularization: float = 1.0

    def build(self, num_features: int) -> HistGradientBoostingRegressor:
        from sklearn.ensemble import HistGradientBoostingRegressor

        return HistGradientBoostingRegressor(max_iter=self.max_iter, learning_rate=self.learning_rate,
                                             max_leaf_nodes=self.max_leaf_nodes,
                                             min_samples_leaf=self.min_samples_leaf,
                                             l2_regularization=self.l2_regularization, early_stopping=False,
                                             random_state=0)


def gbt_candidates(trials: int, seed: int) -> list[GBTParams]:
    """The defaults plus ``trials`` random draws of depth (leaves), leaf size and shrinkage."""
    rng = np.random.default_rng(seed)
    out = [GBTParams()]
    for _ in range(trials):
        out.append(GBTParams(max_iter=int(rng.choice([100, 200, 400])), learning_rate=float(10 ** rng.uniform(-2, -1)),
                             max_leaf_nodes=int(rng.choice([3, 5, 7, 15])), min_samples_leaf=int(rng.choice([5, 10, 20])),
                             l2_regularization=float(10 ** rng.uniform(-2, 1))))
    return out


def svr_candidates(trials: int, seed: int) -> list[SVRParams]:
    """sklearn's defaults plus ``trials`` random draws (the paper's random search, Appendix C).

    The paper draws C ~ LogUniform(1e-5, 10), nu ~ U(0, 1), gamma ~ LogUniform(1e-5, 10) for raw
    targets and features. Ours are standardized, which moves the useful region: we draw
    C ~ LogUniform(0.1, 100), nu ~ U(0.2, 0.9) and gamma ~ LogUniform(0.03, 3) / num_features.
    On 600 stored mnist10_small curves this region held every winner of a wider grid, while
    draws from the paper's range were nearly all worse than the defaults (most have C < 0.01).
    """
    rng = np.random.default_rng(seed)
    out = [SVRParams()]
    for _ in range(trials):
        out.append(SVRParams(C=float(10 ** rng.uniform(-1, 2)), nu=float(rng.uniform(0.2, 0.9)),
                             gamma=float(10 ** rng.uniform(-1.5, 0.5))))
    return out


def _oof_predictions(params: SVRParams, x: np.ndarray, y: np.ndarray, splits) -> np.ndarray:
    """Out-of-fold predictions (standardized units) of ``params`` over ``splits``."""
    pred = np.empty_like(y)
    for train, test in splits:
        pred[test] = params.build(x.shape[1]).fit(x[train], y[train]).predict(x[test])
    return pred


def _kfold(n: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold

    return list(KFold(n_splits=min(folds, n), shuffle=True, random_state=seed).split(np.zeros(n)))


def _loo(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    idx = np.arange(n)
    return [(np.delete(idx, i), idx[i:i + 1]) for i in range(n)]


@dataclass
class _TauModel:
    """A fitted nu-SVR for one tau with the standardization of its inputs and target."""

    x_mean: np.ndarray  # (d,)
    x_scale: np.ndarray  # (d,)
    y_mean: float
    y_scale: float
    svr: NuSVR

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.x_mean) / self.x_scale  # (M, d)
        return self.svr.predict(z) * self.y_scale + self.y_mean  # (M,)


def _standardize(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = v.mean(axis=0)
    scale = v.std(axis=0)
    return mean, np.where(scale > 1e-12, scale, 1.0)


TARGETS = ("final", "gain")
#: Regressors: the paper's nu-SVR (RBF) and gradient-boosted trees.
MODELS = ("svr", "gbt")
#: Inputs: the paper's (curve, differences, architecture, hyperparameters), or those plus trend_features.
FEATURE_SETS = ("paper", "trend")


class SequentialRegressor:
    """``T - 1`` nu-SVR models predicting ``y_T`` from ``tau`` observed epochs plus static features.

    ``fit(curves (N, T), features (N, F))``; ``predict(curves (M, tau), features (M, F))`` returns
    the predicted final accuracies ``(M,)`` and ``sigma(tau)``.

    - ``target="final"`` regresses ``y_T`` itself (the paper); ``"gain"`` regresses the remaining
      gain ``y_T - y_tau`` and adds ``y_tau`` back, which an RBF kernel on standardized features
      finds much easier late in the curve (measured in cluster/early_stop/_curves_eval.py).
    - Inputs and target are standardized once per tau on the whole training set (the CV folds
      share that scaling; a negligible leak that saves rebuilding a pipeline per fold).
    - The hyperparameter search runs at ``search_points`` evenly spaced taus (0 = every tau);
      the other taus take the winner of the nearest searched tau (neighbouring taus see nearly
      the same inputs; this cuts a refit's search cost ~4x for T = 20).
    - ``sigma`` is the root mean square of the leave-one-out residuals, exact up to ``loo_max``
      curves; above it ``sigma_folds``-fold CV (each held-out model sees 10% fewer curves, so
      sigma is slightly pessimistic, i.e. stopping slightly more conservative).
    """

    def __init__(self, *, search_trials: int = 12, search_points: int = 5, cv_folds: int = 3, loo_max: int = 100,
                 sigma_folds: int = 10, target: str = "final", model: str = "svr", features: str = "paper",
                 seed: int = 0):
        if search_trials < 0 or search_points < 0:
            raise ArgumentError(f"search_trials and search_points must be >= 0, got {search_trials} and {search_points}")
        if cv_folds < 2 or sigma_folds < 2:
            raise ArgumentError(f"cv_folds and sigma_folds must be >= 2, got {cv_folds} and {sigma_folds}")
        if target not in TARGETS:
            raise ArgumentError(f"unknown regression target {target!r}; known: {TARGETS}")
        if model not in MODELS:
            raise ArgumentError(f"unknown curve regression model {model!r}; known: {MODELS}")
        if features not in FEATURE_SETS:
            raise ArgumentError(f"unknown curve feature set {features!r}; known: {FEATURE_SETS}")
        self.model, self.features = model, features
        self.search_trials = int(search_trials)
        self.search_points = int(search_points)
        self.cv_folds = int(cv_folds)
        self.loo_max = int(loo_max)
        self.sigma_folds = int(sigma_folds)
        self.target = target
        self.seed = int(seed)
        self.num_epochs: int | None = None  # T
        self.num_features: int | None = None  # F
        self.num_train = 0
        self.models: dict[int, _TauModel] = {}
        self.params: dict[int, SVRParams | GBTParams] = {}
        self.sigma: dict[int, float] = {}

    @property
    def fitted(self) -> bool:
        return bool(self.models)

    @property
    def taus(self) -> list[int]:
        return sorted(self.models)

    def _inputs(self, partial: np.ndarray, static: np.ndarray, num_epochs: int) -> np.ndarray:
        return curve_features(partial, static, num_epochs=num_epochs if self.features == "trend" else None)

    def _offset(self, partial: np.ndarray) -> np.ndarray:
        return partial[:, -1] if self.target == "gain" else np.zeros(len(partial))  # (N,)

    def fit(self, curves: Any, features: Any, *, taus: Any = None, estimate_sigma: bool = True,
            params: dict[int, SVRParams | GBTParams] | None = None) -> "SequentialRegressor":
        """Fit the models for ``taus`` (default ``1 .. T-1``) on complete curves ``(N, T)``.

        ``params`` reuses hyperparameters per tau (skipping the search for those taus).
        """
        y = np.asarray(curves, dtype=np.float64)
        static = np.asarray(features, dtype=np.float64)
        if y.ndim != 2 or y.shape[1] < 2:
            raise ArgumentError(f"complete curves must have shape (N, T) with T >= 2 epochs, got {y.shape}")
        if y.shape[0] < MIN_TRAIN_CURVES:
            raise ArgumentError(f"fitting needs at least {MIN_TRAIN_CURVES} complete curves, got {y.shape[0]}")
        if static.ndim != 2 or static.shape[0] != y.shape[0]:
            raise ArgumentError(f"features must have shape ({y.shape[0]}, F), got {static.shape}")
        n, num_epochs = y.shape
        taus = list(range(1, num_epochs)) if taus is None else sorted({int(t) for t in taus})
        if not taus or taus[0] < 1 or taus[-1] >= num_epochs:
            raise ArgumentError(f"taus must lie in [1, {num_epochs - 1}] for {num_epochs}-epoch curves, got {taus}")
        import sklearn  # see load_model_library

        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):  # ~30% of a fit
            return self._fit(y, static, taus, estimate_sigma, params)

    def _fit(self, y: np.ndarray, static: np.ndarray, taus: list[int], estimate_sigma: bool,
             params: dict[int, SVRParams | GBTParams] | None) -> "SequentialRegressor":
        n, num_epochs = y.shape
        candidates = (svr_candidates if self.model == "svr" else gbt_candidates)(self.search_trials, self.seed)
        search_splits = _kfold(n, self.cv_folds, self.seed) if len(candidates) > 1 else []
        sigma_splits = []
        if estimate_sigma:
            sigma_splits = _loo(n) if n <= self.loo_max else _kfold(n, self.sigma_folds, self.seed)
        def standardized(tau: int):
            x = self._inputs(y[:, :tau], static, num_epochs)  # (N, d)
            target = y[:, -1] - self._offset(y[:, :tau])  # (N,)
            x_mean, x_scale = _standardize(x)
            y_mean, y_scale = float(target.mean()), float(target.std()) or 1.0
            return (x - x_mean) / x_scale, (target - y_mean) / y_scale, (x_mean, x_scale, y_mean, y_scale)

        chosen = {tau: p for tau, p in (params or {}).items() if tau in taus}
        todo = [tau for tau in taus if tau not in chosen]
        if todo and search_splits:
            k = self.search_points or len(todo)
            searched = sorted({todo[int(round(i))] for i in np.linspace(0, len(todo) - 1, min(k, len(todo)))})
            for tau in searched:
                z, t, _ = standardized(tau)
                scores = [np.mean((_oof_predictions(p, z, t, search_splits) - t) ** 2) for p in candidates]
                chosen[tau] = candidates[int(np.argmin(scores))]
            for tau in todo:
                chosen.setdefault(tau, chosen[min(searched, key=lambda s: (abs(s - tau), s))])
        for tau in todo:
            chosen.setdefault(tau, candidates[0])
        models, sigma = {}, {}
        for tau in taus:
            z, t, (x_mean, x_scale, y_mean, y_scale) = standardized(tau)
            best = chosen[tau]
            models[tau] = _TauModel(x_mean, x_scale, y_mean, y_scale, best.build(z.shape[1]).fit(z, t))
            if estimate_sigma:
                resid = (_oof_predictions(best, z, t, sigma_splits) - t) * y_scale  # (N,) accuracy units
                sigma[tau] = float(math.sqrt(np.mean(resid ** 2)))
        self.models, self.params, self.sigma = models, chosen, sigma
        self.num_epochs, self.num_features, self.num_train = num_epochs, static.shape[1], n
        return self

    def predict(self, curves: Any, features: Any) -> tuple[np.ndarray, float]:
        """Predicted ``y_T`` for partial curves ``(M, tau)``, and ``sigma(tau)`` (NaN if not estimated)."""
        if not self.fitted:
            raise RuntimeError("the sequential regressor is not fitted yet")
        y = np.asarray(curves, dtype=np.float64)
        if y.ndim != 2:
            raise ArgumentError(f"partial curves must have shape (M, tau), got {y.shape}")
        tau = y.shape[1]
        if tau not in self.models:
            raise ArgumentError(f"no regression model for tau={tau} observed epochs (fitted: {self.taus})")
        static = np.asarray(features, dtype=np.float64)
        if static.ndim != 2 or static.shape != (y.shape[0], self.num_features):
            raise ArgumentError(f"features must have shape ({y.shape[0]}, {self.num_features}), got {static.shape}")
        if y.shape[0] == 0:
            return np.zeros(0), self.sigma.get(tau, math.nan)
        mean = self.models[tau].predict(self._inputs(y, static, self.num_epochs)) + self._offset(y)  # (M,)
        return np.asarray(mean, dtype=np.float64), self.sigma.get(tau, math.nan)

    def describe(self) -> dict[str, Any]:
        return {
            "name": "nu-svr-rbf-srm" if self.model == "svr" else "gbt-srm",
            "args": {"search_trials": self.search_trials, "search_points": self.search_points,
                     "cv_folds": self.cv_folds, "loo_max": self.loo_max, "sigma_folds": self.sigma_folds,
                     "target": self.target, "model": self.model, "features": self.features, "seed": self.seed},
            "num_epochs": self.num_epochs, "num_train": self.num_train,
            "params": {str(t): asdict(p) for t, p in self.params.items()},
            "sigma": {str(t): s for t, s in self.sigma.items()},
        }
