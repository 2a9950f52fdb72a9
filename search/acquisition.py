"""Acquisition over candidate architectures: a frozen predictor's score, conditioned on the task's own results.

The predictor agent (search/agents/_predictor.py) scores candidates with a performance
predictor that has never seen the target task: a deep ensemble's mean m(x) and spread s(x)
(Lakshminarayanan et al. 2017), standardized over the candidate pool. After each observed
child it conditions on the task's results with a residual Gaussian process (Rasmussen &
Williams 2006, Alg. 2.1) whose prior mean is ``a + b m(x)``, with (a, b) fitted by ridge toward
(0, 1): with few results the ensemble decides, with more the GP corrects it where this task
disagrees. Rewards enter as normal scores of their ranks, so heavy-tailed values (HPOLib's
-val_loss) and accuracies look alike. The acquisition is the upper confidence bound
``mu + beta sigma`` (Srinivas et al. 2010) or the expected improvement over the best result
so far (Jones et al. 1998).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri
from threadpoolctl import ThreadpoolController

from nasdb.errors import ArgumentError, ConfigError

ACQUISITIONS = ("ucb", "ei")
RESIDUALS = ("gp", "none")
#: the GP's length scales (in changed dimensions, as fractions of the space's dimensions) and
#: noise-to-signal ratios, chosen per fit by marginal likelihood
LENGTH_FRACTIONS = (0.125, 0.25, 0.5, 1.0)
NOISE_RATIOS = (0.05, 0.3)
#: The GP's matrices are at most a few hundred wide, where one BLAS thread is fastest; on the loaded
#: 2-core machine OpenBLAS's two spinning threads made a 100 x 100 solve take 50-120 ms instead of 0.1 ms
#: (benchmarks/predictor_search.py), so ``posterior`` runs on one.
_BLAS = ThreadpoolController()


def _number(name: str, value: Any, low: float, *, strict: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating)) \
        and math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        raise ArgumentError(f"`{name} {'>' if strict else '>='} {low}` must hold, but got {name}={value!r}.")
    return float(value)


def _count(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ArgumentError(f"`{name}` must be an integer >= {low}, but got {name}={value!r}.")
    return int(value)


@dataclass(frozen=True)
class AcquisitionConfig:
    """How the predictor agent picks the next child.

    - ``acquisition``: "ucb" (``mu + beta sigma``) or "ei" (expected improvement, margin ``xi``).
    - ``residual``: "gp" conditions on the task's results (see the module docstring); "none"
      keeps the frozen ensemble (an ablation).
    - ``random_pool``: fresh uniformly random architectures among the candidates at each pick;
      ``neighbours_of``: the best results so far whose one-change neighbours are candidates;
      ``ascend_from``: the best results so far from which the predictor's gradient ascent runs.
    - ``prior_weight``: ridge strength pulling the recalibration (a, b) toward (0, 1).
    """

    acquisition: str = "ucb"
    beta: float = 1.0
    xi: float = 0.0
    residual: str = "gp"
    random_pool: int = 256
    neighbours_of: int = 3
    ascend_from: int = 1
    prior_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.acquisition not in ACQUISITIONS:
            raise ConfigError(f"unknown acquisition {self.acquisition!r}; known: {list(ACQUISITIONS)}")
        if self.residual not in RESIDUALS:
            raise ConfigError(f"unknown residual model {self.residual!r}; known: {list(RESIDUALS)}")
        for name in ("beta", "xi"):
            object.__setattr__(self, name, _number(name, getattr(self, name), 0.0))
        object.__setattr__(self, "prior_weight", _number("prior_weight", self.prior_weight, 0.0, strict=True))
        for name in ("random_pool", "neighbours_of", "ascend_from"):
            object.__setattr__(self, name, _count(name, getattr(self, name), 0))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def normal_scores(values: np.ndarray) -> np.ndarray:
    """``Phi^-1((rank - 0.5) / n)`` of each value (ties share their mean rank): (n,) -> (n,)."""
    from scipy.stats import rankdata  # scipy.stats costs ~0.6 s at import: only where it is used

    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    return ndtri((rankdata(values) - 0.5) / len(values))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Changed dimensions between every row of ``a`` (N, D) and of ``b`` (M, D): (N, M)."""
    return (a[:, None, :] != b[None, :, :]).sum(axis=-1).astype(np.float64)


@dataclass(frozen=True)
class ResidualGP:
    """``y ~ a + b f(x) + g(x)``, ``g ~ GP(0, sf2 exp(-hamming / length))``, noise ``sf2 * noise``."""

    a: float
    b: float
    sf2: float
    length: float
    noise: float
    x: np.ndarray  # (n, D) observed architectures
    alpha: np.ndarray  # (n,) (C + noise I)^-1 residuals
    chol: np.ndarray  # (n, n) Cholesky factor of C + noise I

    @classmethod
    def fit(cls, f: np.ndarray, y: np.ndarray, x: np.ndarray, prior_weight: float = 1.0) -> "ResidualGP":
        """Fit to prior scores ``f`` (n,), targets ``y`` (n,) at architectures ``x`` (n, D); n >= 1."""
        n, lam = len(y), prior_weight
        lhs = np.array([[n + lam, f.sum()], [f.sum(), f @ f + lam]])
        a, b = np.linalg.solve(lhs, np.array([y.sum(), f @ y + lam]))  # ridge toward (a, b) = (0, 1)
        resid = y - a - b * f
        dist = hamming(x, x)
        best = None
        for frac in LENGTH_FRACTIONS:
            corr = np.exp(-dist / max(frac * x.shape[1], 1e-9))
            for noise in NOISE_RATIOS:
                chol = np.linalg.cholesky(corr + noise * np.eye(n))
                alpha = _solve(chol, resid)
                sf2 = max(float(resid @ alpha) / n, 1e-3)  # the signal variance's profile-likelihood optimum
                loglik = -0.5 * n * math.log(sf2) - float(np.log(np.diag(chol)).sum())
                if best is None or loglik > best[0]:
                    best = (loglik, frac * x.shape[1], noise, sf2, chol, alpha)
        _, length, noise, sf2, chol, alpha = best
        return cls(float(a), float(b), sf2, float(length), noise, np.asarray(x), alpha, chol)

    def predict(self, f: np.ndarray, spread: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation at candidates with prior scores ``f`` and spreads (N,), ``x`` (N, D)."""
        cross = np.exp(-hamming(x, self.x) / self.length)  # (N, n)
        mean = self.a + self.b * f + cross @ self.alpha
        v = np.linalg.solve(self.chol, cross.T)  # (n, N)
        var = self.sf2 * np.clip(1.0 - (v * v).sum(axis=0), 0.0, None) + (self.b * spread) ** 2
        return mean, np.sqrt(var)


def _solve(chol: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.linalg.solve(chol.T, np.linalg.solve(chol, r))


def acquisition_values(config: AcquisitionConfig, mean: np.ndarray, std: np.ndarray, best: float | None) -> np.ndarray:
    """UCB ``mean + beta std``, or EI over ``best`` (UCB while nothing is observed): (N,)."""
    if config.acquisition == "ucb" or best is None:
        return mean + config.beta * std
    gain = mean - best - config.xi
    std = np.maximum(std, 1e-12)
    z = gain / std
    return gain * ndtr(z) + std * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def posterior(config: AcquisitionConfig, prior: np.ndarray, spread: np.ndarray, candidates: np.ndarray,
              observed_prior: np.ndarray, rewards: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                               float | None]:
    """Mean, standard deviation (N,) at ``candidates`` and the incumbent, on the normal-score scale.

    ``prior``, ``spread``: the ensemble's standardized mean and spread at the candidates;
    ``observed_prior``, ``rewards``, ``observed``: the same mean, the rewards and the architectures
    of the task's results. Without results (or with ``residual="none"``) the ensemble alone."""
    if config.residual == "none" or len(rewards) == 0:
        return prior, spread, None
    y = normal_scores(rewards)
    with _BLAS.limit(limits=1, user_api="blas"):
        gp = ResidualGP.fit(observed_prior, y, observed, config.prior_weight)
        mean, std = gp.predict(prior, spread, candidates)
    return mean, std, float(y.max())


__all__ = ["ACQUISITIONS", "AcquisitionConfig", "RESIDUALS", "ResidualGP", "acquisition_values", "hamming",
           "normal_scores", "posterior"]
