"""One early stopper shared by all trainer actors of a Ray job (issue 8).

:class:`CurvePredictorService` holds an :class:`~cluster.early_stop.EarlyStopper` per key (a
task: best-so-far and curve shapes are per task) and runs as a threaded Ray actor
(:func:`curve_predictor_actor`). Trainers use :class:`ActorEarlyStopper`, an
:class:`~cluster.early_stop.EpochObserver` that decides locally on the latest fitted
:class:`~cluster.early_stop.StopRule` it fetched from the actor, refreshed without blocking,
and sends complete curves fire-and-forget. So a refit (seconds, holding the actor's GIL) never
stalls an epoch loop, and per-epoch queries cost no round trip.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cluster.early_stop._arch_prior import ArchitecturePrior, architecture_prior, static_features
from cluster.early_stop._srm import load_model_library
from cluster.early_stop._stopper import EarlyStopConfig, EarlyStopper, StopDecision, StopRule
from nasdb.errors import ArgumentError

if TYPE_CHECKING:
    from cluster.early_stop._curves_eval import CurveSet
    from nasdb.space import SearchSpace

#: Seconds a trainer waits for its task's architecture prior (the actor fits it in milliseconds,
#: but may be busy refitting another task's models under the GIL for a few seconds).
PRIOR_TIMEOUT_S = 60.0


class CurvePredictorService:
    """Per-key early stoppers behind one lock; a plain class, made remote by :func:`curve_predictor_actor`."""

    def __init__(self, config: EarlyStopConfig | dict | None = None, prior: Sequence[CurveSet] = ()):
        if isinstance(config, dict):
            config = EarlyStopConfig.from_dict(config)
        self.config = config or EarlyStopConfig()
        self._prior = list(prior)  # complete curves of tasks the stoppers may pool over
        self._stoppers: dict[str, EarlyStopper] = {}
        self._lock = threading.Lock()
        load_model_library()  # this actor refits: not inside its first refit, while trainers wait

    def _stopper(self, key: str) -> EarlyStopper:
        """``key``'s stopper; it pools over every prior task but ``key`` itself (with their
        cross-fitted architecture prior, when the config asks for it)."""
        if not isinstance(key, str) or not key:
            raise ArgumentError(f"an early-stop key (task name) must be a non-empty string, got {key!r}")
        with self._lock:
            if key not in self._stoppers:
                others, arch = [cs for cs in self._prior if cs.task != key], None
                if self.config.arch_prior and self.config.pool_curves and others:
                    arch, others = architecture_prior(others, others[0].space)
                self._stoppers[key] = EarlyStopper(self.config, [(cs.curves, cs.features) for cs in others],
                                                   arch_prior=arch)
            return self._stoppers[key]

    def arch_prior(self, key: str) -> ArchitecturePrior | None:
        """The architecture prior whose column ends ``key``'s static features (None: no column)."""
        return self._stopper(key).arch_prior

    def report_complete(self, key: str, curves: Any, features: Any) -> int:
        """Add complete curves of ``key``; refits in this call when due. Returns curves held."""
        return self._stopper(key).report_complete(curves, features)

    def decide_many(self, key: str, curves: Any, features: Any) -> StopDecision:
        return self._stopper(key).decide_many(curves, features)

    def rule(self, key: str, have_version: int = -1) -> StopRule | None:
        """The current stop rule of ``key``, or ``None`` when it is still ``have_version``."""
        rule = self._stopper(key).snapshot()
        return None if rule.version == have_version else rule

    def get_config(self) -> dict:
        return self.config.to_dict()

    def status(self) -> dict[str, dict]:
        with self._lock:
            items = list(self._stoppers.items())
        return {k: {kk: v for kk, v in s.describe().items() if kk != "predictor"} for k, s in items}

    def describe(self, key: str) -> dict:
        return self._stopper(key).describe()


def curve_predictor_actor(config: EarlyStopConfig | dict | None = None, *, prior: Sequence[CurveSet] = (),
                          name: str | None = None, namespace: str | None = None, num_cpus: float = 1,
                          max_concurrency: int = 8):
    """Start (or, given ``name``, get) the shared curve-predictor actor; returns its handle.

    ``prior``: tasks' complete curves the stoppers pool over, each stopper all but its own task's
    (:func:`~cluster.early_stop.load_other_curves`). ``num_cpus`` is reserved for refits; the actor is threaded
    (``max_concurrency``) so queries and reports are served while a refit runs.
    """
    import ray

    cfg = config.to_dict() if isinstance(config, EarlyStopConfig) else config
    opts: dict[str, Any] = {"num_cpus": num_cpus, "max_concurrency": max_concurrency}
    if name is not None:
        opts.update(name=name, get_if_exists=True)
        if namespace is not None:
            opts["namespace"] = namespace
    return ray.remote(CurvePredictorService).options(**opts).remote(cfg, list(prior))


class ActorEarlyStopper:
    """Trainer-side :class:`~cluster.early_stop.EpochObserver` backed by the shared actor.

    ``decide_many`` never waits on the actor: it uses the last rule fetched and starts a new
    fetch every ``refresh_seconds`` (a stale rule only stops less: the best-so-far only grows).
    ``report_complete`` sends curves without waiting; :meth:`flush` waits for them (and raises
    their errors). Picklable: the handle and key travel, pending calls do not.
    """

    def __init__(self, actor: Any, key: str, *, refresh_seconds: float = 1.0):
        if refresh_seconds < 0:
            raise ArgumentError(f"refresh_seconds must be >= 0, got {refresh_seconds!r}")
        self.actor = actor
        self.key = key
        self.refresh_seconds = float(refresh_seconds)
        self._rule: StopRule | None = None
        self._pending_rule = None
        self._last_fetch = -float("inf")
        self._pending_reports: list = []
        self._arch_prior: tuple[ArchitecturePrior | None] | None = None  # fetched once, on first use

    def __getstate__(self) -> dict:
        return {"actor": self.actor, "key": self.key, "refresh_seconds": self.refresh_seconds}

    def __setstate__(self, state: dict) -> None:
        load_model_library()  # unpickled in a trainer that will apply the actor's fitted rules
        self.__init__(state["actor"], state["key"], refresh_seconds=state["refresh_seconds"])

    def refresh(self, *, block: bool = False, timeout: float | None = None) -> StopRule | None:
        """Take a finished fetch of the actor's rule and start the next one when due."""
        import ray

        if self._pending_rule is None and (block or time.monotonic() - self._last_fetch >= self.refresh_seconds):
            self._pending_rule = self.actor.rule.remote(self.key, self._rule.version if self._rule else -1)
            self._last_fetch = time.monotonic()
        if self._pending_rule is not None:
            done, _ = ray.wait([self._pending_rule], timeout=timeout if block else 0)
            if done:
                rule = ray.get(done[0])
                self._pending_rule = None
                if rule is not None:
                    self._rule = rule
        return self._rule

    def static_features(self, space: SearchSpace, architectures: Any, num_params: Any, recipe: Any) -> np.ndarray:
        """The static features the actor's stopper for this key reads: the model features, plus the
        architecture prior's column when it pools with one (asked of the actor once, waiting at most
        ``PRIOR_TIMEOUT_S``: a dead or stuck actor raises, and the trainer's guard turns stopping off)."""
        import ray

        if self._arch_prior is None:
            self._arch_prior = (ray.get(self.actor.arch_prior.remote(self.key), timeout=PRIOR_TIMEOUT_S),)
        return static_features(space, architectures, num_params, recipe, self._arch_prior[0])

    def decide_many(self, curves: Any, features: Any) -> StopDecision:
        rule = self.refresh()
        if rule is None:  # nothing fetched yet: only divergence stops (via an empty rule)
            rule = StopRule(EarlyStopConfig())
        return rule.decide_many(curves, features)

    def should_stop_many(self, curves: Any, features: Any) -> np.ndarray:
        return self.decide_many(curves, features).stop

    def report_complete(self, curves: Any, features: Any) -> None:
        import ray

        curves = np.asarray(curves, dtype=np.float64)
        if len(curves):
            self._pending_reports.append(self.actor.report_complete.remote(self.key, curves, np.asarray(features)))
        still = []
        for ref in self._pending_reports:
            if ray.wait([ref], timeout=0)[0]:
                ray.get(ref)  # a finished report's error surfaces here, in the trainer
            else:
                still.append(ref)
        self._pending_reports = still

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every reported curve reached the actor; raises a report's error."""
        import ray

        pending, self._pending_reports = self._pending_reports, []
        ray.get(pending, timeout=timeout)

