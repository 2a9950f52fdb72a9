"""Learning-curve early stopping of child-model training (accelerating-nas-performance-prediction-baker.md Sec. 3).

After ``burn_in`` fully trained curves, sequential regression models predict each new model's
final validation accuracy ``y_T`` from its first ``tau`` epochs; training stops at ``tau`` when

    P(y_T <= y_ref - delta) = Phi((y_ref - delta - yhat_T) / sigma(tau)) >= confidence

where ``y_ref`` is the best final accuracy seen so far (or the ``top_n``-th best, the paper's
variant that keeps the top n fully trained) and ``confidence`` is the paper's Delta (0.99).

Trainers talk to an :class:`EpochObserver`: after each epoch they call ``decide_many`` with the
curves so far (rows of the models still training) and drop the rows it stops; when models
finish all epochs they ``report_complete`` them. :class:`EarlyStopper` is the in-process
observer (tests, simulations, one trainer); ``cluster.early_stop._actor`` shares one across the
trainer actors of a Ray job.
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import numpy as np

from cluster.early_stop._arch_prior import ArchitecturePrior, static_features
from cluster.early_stop._pooled import PerTauChoice, PooledRegressor, TaskCurveModel, subsample_tasks
from cluster.early_stop._srm import FEATURE_SETS, MIN_TRAIN_CURVES, MODELS, TARGETS, SequentialRegressor
from nasdb.checks import int_at_least
from nasdb.errors import ArgumentError, ConfigError
from nasdb.settings import from_settings

if TYPE_CHECKING:
    from nasdb.space import SearchSpace



@dataclass(frozen=True)
class EarlyStopConfig:
    """Early-stopping settings; defaults follow the paper (burn-in 100 curves, Delta = 0.99, delta = 0).

    - ``confidence`` is the paper's Delta, ``delta`` its margin; ``top_n`` compares with the
      n-th best final accuracy instead of the best (keeps the top n fully trained).
    - ``min_tau``: never stop before this many epochs. ``retrain_every``: refit after this many
      new complete curves. ``retune_growth``: rerun the hyperparameter search only when the
      training set grew by this factor since the last search (1.0 = every refit).
    - ``search_trials`` random nu-SVR candidates (plus the defaults), scored by ``cv_folds``-fold
      CV at ``search_points`` taus (cluster/early_stop/_srm.py). sigma(tau): exact leave-one-out up to
      ``loo_max`` curves, ``sigma_folds``-fold CV above (LOO at 150 curves costs ~16 s per refit
      on one core, 10-fold ~1 s).
    - ``target``: "final" regresses y_T (the paper), "gain" regresses y_T - y_tau.
    - ``model``: "svr" (the paper's nu-SVR) or "gbt" (gradient-boosted trees); ``features``:
      "paper" or "trend" (plus slope, gain and parametric extrapolations, cluster/early_stop/_features.py).
    - ``max_train``: fit on at most this many most recent complete curves (bounds refit time).
    - ``num_epochs``: the full curve length T; ``None`` takes it from the first complete curve.
    - ``pool_burn_in``, ``pool_curves``: given comparable complete curves of other tasks (a
      prior), the stopper fits a model pooled over at most ``pool_curves`` of them once and starts
      after ``pool_burn_in`` of its task's own complete curves instead of ``burn_in``: those fix
      the task's context; every own complete curve recalibrates the pooled prediction and
      measures sigma(tau) out of sample (cluster/early_stop/_pooled.py). From ``burn_in`` own
      curves on, each tau reads the pooled model or the task's own SRM, whichever has the
      smaller sigma(tau). ``pool_curves=0`` ignores a prior.
    - ``arch_prior``: the pooled models also read each child's architecture prior, how the pooled
      tasks rank its architecture (a ridge on the one-hot encoding, cross-fitted so that every
      pooled task's column is out of task; cluster/early_stop/_arch_prior.py).
    """

    burn_in: int = 100
    confidence: float = 0.99
    delta: float = 0.0
    top_n: int = 1
    min_tau: int = 1
    retrain_every: int = 10
    retune_growth: float = 1.5
    max_train: int | None = 1000
    search_trials: int = 12
    search_points: int = 5
    cv_folds: int = 3
    loo_max: int = 100
    sigma_folds: int = 10
    target: str = "final"
    model: str = "svr"
    features: str = "paper"
    num_epochs: int | None = None
    pool_burn_in: int = 20
    pool_curves: int = 2000
    arch_prior: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        def integer(name: str, low: int) -> None:
            int_at_least(name, getattr(self, name), low, error=ConfigError)

        integer("burn_in", MIN_TRAIN_CURVES)
        integer("pool_burn_in", MIN_TRAIN_CURVES)
        integer("pool_curves", 0)
        for name in ("top_n", "min_tau", "retrain_every"):
            integer(name, 1)
        integer("search_trials", 0)
        integer("search_points", 0)
        integer("loo_max", 0)
        integer("cv_folds", 2)
        integer("sigma_folds", 2)
        if self.target not in TARGETS:
            raise ConfigError(f"early-stop target must be one of {TARGETS}, got {self.target!r}")
        if self.model not in MODELS:
            raise ConfigError(f"early-stop model must be one of {MODELS}, got {self.model!r}")
        if self.features not in FEATURE_SETS:
            raise ConfigError(f"early-stop features must be one of {FEATURE_SETS}, got {self.features!r}")
        if not (0.0 < self.confidence < 1.0):
            raise ConfigError(f"early-stop confidence (Delta) must be in (0, 1), got {self.confidence!r}")
        if not (math.isfinite(self.delta) and self.delta >= 0):
            raise ConfigError(f"early-stop delta must be finite and >= 0, got {self.delta!r}")
        if not (math.isfinite(self.retune_growth) and self.retune_growth >= 1.0):
            raise ConfigError(f"early-stop retune_growth must be >= 1.0, got {self.retune_growth!r}")
        if self.max_train is not None:
            integer("max_train", self.burn_in)
        if self.num_epochs is not None:
            integer("num_epochs", 2)
            if self.min_tau >= self.num_epochs:
                raise ConfigError(f"early-stop min_tau={self.min_tau} leaves no epoch to stop at "
                                  f"(num_epochs={self.num_epochs})")
        if self.top_n > self.burn_in:
            raise ConfigError(f"early-stop top_n={self.top_n} exceeds burn_in={self.burn_in}")
        if not isinstance(self.arch_prior, bool):
            raise ConfigError(f"early-stop arch_prior must be true or false, got {self.arch_prior!r}")
        if self.pool_curves and self.top_n > self.pool_burn_in:
            raise ConfigError(f"early-stop top_n={self.top_n} exceeds pool_burn_in={self.pool_burn_in}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EarlyStopConfig":
        return from_settings(cls, d, "early-stop settings")


def resolve_early_stop(value: Any, epochs: int) -> EarlyStopConfig | None:
    """The early-stop setting of a job whose children train ``epochs`` epochs: ``None``/``False``
    (off), ``True`` (the paper's defaults), a dict of settings or an :class:`EarlyStopConfig`;
    ``num_epochs`` is set to ``epochs`` (a different value set by the caller is refused)."""
    if value is None or value is False:
        return None
    if value is True:
        value = EarlyStopConfig()
    elif isinstance(value, dict):
        try:
            value = EarlyStopConfig.from_dict(value)
        except TypeError as e:  # e.g. {"confidence": "high"}
            raise ArgumentError(f"early-stop settings {value} hold a value of the wrong type ({e})") from None
    elif not isinstance(value, EarlyStopConfig):
        raise ArgumentError(f"early_stop must be None, True, a dict of settings or an EarlyStopConfig, "
                            f"got {type(value).__name__}")
    if value.num_epochs is not None and value.num_epochs != epochs:
        raise ArgumentError(f"early-stop num_epochs={value.num_epochs} differs from the recipe's epochs={epochs}")
    if epochs < 2:
        raise ArgumentError(f"early stopping needs children of >= 2 epochs, the recipe has epochs={epochs}")
    return replace(value, num_epochs=int(epochs))  # __post_init__ checks min_tau < epochs


@dataclass
class StopDecision:
    """Per-row outcome of a stop query for ``tau`` observed epochs.

    ``predicted_final`` and ``probability`` are NaN where no prediction was made (before burn-in,
    ``tau < min_tau``); a row whose curve holds a non-finite value diverged: stop, probability 1.
    """

    tau: int
    stop: np.ndarray  # (N,) bool
    predicted_final: np.ndarray  # (N,) float
    probability: np.ndarray  # (N,) float: P(y_T <= reference - delta)
    reference: float | None = None  # the best (top_n-th best) complete final accuracy so far

    def __len__(self) -> int:
        return len(self.stop)


@runtime_checkable
class EpochObserver(Protocol):
    """What a child trainer calls: ``decide_many`` after each epoch ``tau < T`` with the curves
    ``(N, tau)`` and static features ``(N, F)`` (:func:`model_features`) of the models still
    training; ``report_complete`` with the ``(N, T)`` curves of models that ran all epochs."""

    def decide_many(self, curves: Any, features: Any) -> StopDecision: ...

    def report_complete(self, curves: Any, features: Any) -> None: ...


def stop_probability(predicted: Any, sigma: float, threshold: float) -> np.ndarray:
    """``P(y_T <= threshold)`` for ``y_T ~ N(predicted, sigma^2)`` (the paper's Phi(y_BEST; yhat, sigma))."""
    from scipy.special import ndtr  # the normal CDF; imported here to keep trainer start-up light (issue 19)

    mu = np.asarray(predicted, dtype=np.float64)
    s = max(float(sigma), 1e-9) if math.isfinite(sigma) else math.inf
    return ndtr((threshold - mu) / s)


def _as_curves(curves: Any, what: str) -> np.ndarray:
    y = np.asarray(curves, dtype=np.float64)
    if y.ndim == 1:
        y = y[None, :]
    if y.ndim != 2 or y.shape[1] < 1:
        raise ArgumentError(f"{what} must have shape (N, epochs) with >= 1 epoch, got {np.shape(curves)}")
    return y


def _as_features(features: Any, n: int, num_features: int | None) -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim == 1:
        f = f[None, :]
    if f.ndim != 2 or f.shape[0] != n:
        raise ArgumentError(f"features must have shape ({n}, F) for {n} curves, got {np.shape(features)}")
    if num_features is not None and f.shape[1] != num_features:
        raise ArgumentError(f"features have {f.shape[1]} columns, the stopper was given {num_features} before")
    if not np.all(np.isfinite(f)):
        raise ArgumentError(f"features hold a non-finite value at (row, column) {tuple(np.argwhere(~np.isfinite(f))[0])}")
    return f


@dataclass
class StopRule:
    """A fitted predictor plus the reference accuracy: everything a decision needs, picklable, so
    trainer processes can decide locally on a snapshot from the shared actor."""

    config: EarlyStopConfig
    predictor: SequentialRegressor | TaskCurveModel | PerTauChoice | None = None
    reference: float | None = None
    num_epochs: int | None = None
    num_features: int | None = None
    version: int = 0

    @property
    def ready(self) -> bool:
        return self.predictor is not None and self.reference is not None

    def decide_many(self, curves: Any, features: Any) -> StopDecision:
        y = _as_curves(curves, "partial curves")
        n, tau = y.shape
        if self.num_epochs is not None and tau >= self.num_epochs:
            raise ConfigError(f"a partial curve has tau={tau} epochs but full curves have {self.num_epochs}: "
                              "nothing left to stop")
        f = _as_features(features, n, self.num_features)
        finite = np.all(np.isfinite(y), axis=1)  # (N,) False = diverged
        stop = ~finite
        predicted = np.full(n, math.nan)
        prob = np.where(finite, math.nan, 1.0)
        if self.ready and tau >= self.config.min_tau and finite.any():
            mean, sigma = self.predictor.predict(y[finite], f[finite])
            predicted[finite] = mean
            prob[finite] = stop_probability(mean, sigma, self.reference - self.config.delta)
            stop[finite] = prob[finite] >= self.config.confidence
        return StopDecision(tau, stop, predicted, prob, self.reference)

    def should_stop_many(self, curves: Any, features: Any) -> np.ndarray:
        return self.decide_many(curves, features).stop

    def should_stop(self, curve: Any, features: Any) -> bool:
        return bool(self.decide_many(np.asarray(curve, dtype=np.float64)[None, :],
                                     np.asarray(features, dtype=np.float64)[None, :]).stop[0])


def pooled_prior(config: EarlyStopConfig, tasks: Sequence[tuple[Any, Any]]) -> PooledRegressor | None:
    """The model pooled over at most ``config.pool_curves`` of ``tasks``' complete curves
    ``(curves, features)`` that stoppers of ``config`` read (fitted on first use; None without
    tasks or with ``pool_curves=0``). The regressor's defaults, no search: thousands of curves."""
    if not config.pool_curves or not len(tasks):
        return None
    return PooledRegressor(subsample_tasks(tasks, config.pool_curves, config.seed), search_trials=0,
                           target=config.target, model=config.model, features=config.features, seed=config.seed)


class EarlyStopper:
    """The in-process early stopper: collects complete curves, refits the sequential regression
    models (after ``burn_in`` curves, then every ``retrain_every``) and answers stop queries.

    ``prior``: comparable complete curves ``(curves, features)`` of other tasks (or a
    :class:`PooledRegressor` over them, shared by several stoppers): the stopper then reads its
    task through the pooled model after ``pool_burn_in`` own curves (issue 19). ``arch_prior``:
    the architecture prior whose column those features end with (:func:`architecture_prior`);
    its children's features then end with it too (:meth:`static_features`).

    Thread-safe: a threaded Ray actor may call it from several threads; a refit runs outside the
    lock and swaps in the new models when done (queries meanwhile use the previous ones).
    """

    def __init__(self, config: EarlyStopConfig | dict | None = None,
                 prior: PooledRegressor | Sequence[tuple[Any, Any]] = (), *,
                 arch_prior: ArchitecturePrior | None = None):
        if isinstance(config, dict):
            config = EarlyStopConfig.from_dict(config)
        self.config = config or EarlyStopConfig()
        self._prior = self._pooled(prior)
        self.arch_prior = arch_prior if self._prior is not None else None
        self._lock = threading.Lock()
        self._curves: list[np.ndarray] = []  # each (T,)
        self._features: list[np.ndarray] = []  # each (F,)
        self._finals: list[float] = []
        self._rule = StopRule(self.config, num_epochs=self.config.num_epochs)
        self._fitting = False
        self._fitted_at = 0  # complete curves when the models were last fitted
        self._searched_at = 0  # training-set size of the last hyperparameter search
        self._params: dict = {}
        self.fits = 0

    def _pooled(self, prior: PooledRegressor | Sequence[tuple[Any, Any]]) -> PooledRegressor | None:
        if not isinstance(prior, PooledRegressor):
            prior = pooled_prior(self.config, prior)
        if prior is not None and self.config.num_epochs not in (None, prior.num_epochs):
            raise ArgumentError(f"the prior's curves have {prior.num_epochs} epochs, the stopper's "
                                f"{self.config.num_epochs}")
        if prior is None or not self.config.pool_curves:
            return None
        prior.start_fit()  # seconds of fitting, done while the task trains its first children
        return prior

    # -- state ------------------------------------------------------------------------------
    @property
    def num_complete(self) -> int:
        return len(self._finals)

    @property
    def burn_in(self) -> int:
        """Own complete curves before the first fit: ``pool_burn_in`` with a prior, else ``burn_in``."""
        return self.config.burn_in if self._prior is None else self.config.pool_burn_in

    @property
    def ready(self) -> bool:
        return self._rule.ready

    @property
    def predictor(self) -> SequentialRegressor | TaskCurveModel | PerTauChoice | None:
        return self._rule.predictor

    @property
    def reference(self) -> float | None:
        return self._rule.reference

    def snapshot(self) -> StopRule:
        """The current stop rule (shared, read-only: replaced, never mutated, on refit)."""
        return self._rule

    # -- observer protocol ------------------------------------------------------------------
    def static_features(self, space: SearchSpace, architectures: Any, num_params: Any, recipe: Any) -> np.ndarray:
        """The static features of children this stopper decides on (see the class docstring)."""
        return static_features(space, architectures, num_params, recipe, self.arch_prior)

    def report_complete(self, curves: Any, features: Any) -> int:
        """Add fully trained curves ``(N, T)`` (finite values) with their static features ``(N, F)``;
        refits when due. Returns the number of complete curves held."""
        y = _as_curves(curves, "complete curves")
        if not np.all(np.isfinite(y)):
            row = int(np.argwhere(~np.isfinite(y))[0][0])
            raise ArgumentError(f"complete curve {row} holds a non-finite value; report only successful children")
        with self._lock:
            rule = self._rule
            if rule.num_epochs is not None and y.shape[1] != rule.num_epochs:
                raise ArgumentError(f"complete curves have {y.shape[1]} epochs, expected {rule.num_epochs}")
            if y.shape[1] < 2:
                raise ArgumentError(f"complete curves need >= 2 epochs to stop anything, got {y.shape[1]}")
            if self.config.min_tau >= y.shape[1]:
                raise ArgumentError(f"min_tau={self.config.min_tau} leaves no epoch to stop at in "
                                    f"{y.shape[1]}-epoch curves")
            f = _as_features(features, y.shape[0], rule.num_features)
            prior = self._prior
            if prior is not None and (y.shape[1], f.shape[1]) != (prior.num_epochs, prior.num_features):
                raise ArgumentError(f"complete curves of {y.shape[1]} epochs with {f.shape[1]} features do not match "
                                    f"the prior's ({prior.num_epochs} epochs, {prior.num_features} features)")
            self._curves.extend(y)
            self._features.extend(f)
            self._finals.extend(float(v) for v in y[:, -1])
            reference = self._reference()
            self._rule = StopRule(self.config, rule.predictor, reference if rule.predictor else None,
                                  y.shape[1], f.shape[1], rule.version + 1)
        self._maybe_refit()
        return self.num_complete

    def decide_many(self, curves: Any, features: Any) -> StopDecision:
        return self._rule.decide_many(curves, features)

    def should_stop_many(self, curves: Any, features: Any) -> np.ndarray:
        return self._rule.should_stop_many(curves, features)

    def should_stop(self, curve: Any, features: Any) -> bool:
        return self._rule.should_stop(curve, features)

    # -- fitting ----------------------------------------------------------------------------
    def _reference(self) -> float | None:
        n = self.config.top_n
        if len(self._finals) < n:
            return None
        return float(np.partition(np.asarray(self._finals), -n)[-n])

    def _due(self) -> bool:
        n = self.num_complete
        if n < self.burn_in:
            return False
        own_ready = self._prior is not None and self._fitted_at < self.config.burn_in <= n  # the own SRM joins
        return self._rule.predictor is None or own_ready or n - self._fitted_at >= self.config.retrain_every

    def _maybe_refit(self) -> None:
        while True:
            with self._lock:
                if self._fitting or not self._due():
                    return
                self._fitting = True
                keep = self.config.max_train or len(self._curves)
                curves = np.stack(self._curves[-keep:])  # (n, T)
                features = np.stack(self._features[-keep:])  # (n, F)
                count = self.num_complete
                retune = self._searched_at == 0 or len(curves) >= self.config.retune_growth * self._searched_at
                params = None if retune else self._params
                # a pooled model reads the task through its first curves, trained before any stop
                context = None if self._prior is None else np.stack(self._curves[:self.config.pool_burn_in])
            try:
                predictor = self._fit(curves, features, params, context)
            finally:
                with self._lock:
                    self._fitting = False
            with self._lock:
                if retune:
                    self._searched_at = len(curves)
                self._params = dict(predictor.params)
                self._fitted_at = count
                self.fits += 1
                rule = self._rule
                self._rule = StopRule(self.config, predictor, self._reference(), rule.num_epochs,
                                      rule.num_features, rule.version + 1)

    def _fit(self, curves: np.ndarray, features: np.ndarray, params: dict | None,
             context: np.ndarray | None) -> SequentialRegressor | TaskCurveModel | PerTauChoice:
        """The task's own SRM (the paper's) once it holds ``burn_in`` curves; with a prior, the
        pooled model before that and, after, per tau the better of the two out of sample."""
        c = self.config
        own = None
        if self._prior is None or len(curves) >= c.burn_in:
            own = SequentialRegressor(search_trials=c.search_trials, search_points=c.search_points,
                                      cv_folds=c.cv_folds, loo_max=c.loo_max, sigma_folds=c.sigma_folds,
                                      target=c.target, model=c.model, features=c.features,
                                      seed=c.seed).fit(curves, features, params=params)
        if self._prior is None:
            return own
        pooled = self._prior.for_task(context, curves, features)
        return pooled if own is None else PerTauChoice(pooled, own)

    def refit(self) -> bool:
        """Fit now if at least :attr:`burn_in` complete curves are held (ignores ``retrain_every``)."""
        with self._lock:
            if self.num_complete < self.burn_in:
                return False
            self._fitted_at = -self.config.retrain_every  # makes the next check due
        self._maybe_refit()
        return self.ready

    def describe(self) -> dict[str, Any]:
        rule = self._rule
        return {
            "name": "srm-early-stop",
            "args": self.config.to_dict(),
            "num_complete": self.num_complete,
            "ready": rule.ready,
            "reference": rule.reference,
            "fits": self.fits,
            "pooled_curves": 0 if self._prior is None else self._prior.num_curves,
            "arch_prior": None if self.arch_prior is None else self.arch_prior.describe(),
            "predictor": rule.predictor.describe() if rule.predictor else None,
        }

