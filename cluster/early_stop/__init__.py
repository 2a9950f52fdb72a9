"""Learning-curve early stopping (accelerating-nas-performance-prediction-baker.md).

``_stopper.py`` is the rule and the in-process observer, ``_srm.py`` the sequential regression
models, ``_features.py`` the curve and model features, ``_pooled.py`` those models fitted over
several tasks' curves, ``_actor.py`` one stopper shared by the trainer actors of a Ray job,
``_arch_prior.py`` how the other tasks rank an architecture (a static feature of the pooled
models), ``_curves_eval.py`` the offline evaluation on stored curves.
"""

from cluster.early_stop._actor import ActorEarlyStopper, CurvePredictorService, curve_predictor_actor
from cluster.early_stop._arch_prior import (ARCH_PRIOR_FEATURE, ArchitecturePrior, architecture_prior,
                                            static_features, with_prior)
from cluster.early_stop._curves_eval import (CurveSet, evaluate_curves, format_markdown, load_full_curves,
                                             load_other_curves, r2_by_tau, simulate_early_stopping)
from cluster.early_stop._features import (LAYERED_ARCH_FEATURES, TREND_FEATURES, architecture_features, curve_features,
                                          hparam_features, model_features, trend_features)
from cluster.early_stop._pooled import (CONTEXT_FEATURES, PerTauChoice, PooledRegressor, TaskCurveModel,
                                        comparable_curve_sets, recalibrate, subsample_tasks, task_context)
from cluster.early_stop._srm import SequentialRegressor, SVRParams
from cluster.early_stop._stopper import (EarlyStopConfig, EarlyStopper, EpochObserver, StopDecision, StopRule,
                                         pooled_prior, resolve_early_stop, stop_probability)

__all__ = ["ARCH_PRIOR_FEATURE", "ActorEarlyStopper", "ArchitecturePrior", "CONTEXT_FEATURES", "CurvePredictorService",
           "CurveSet", "EarlyStopConfig", "EarlyStopper", "EpochObserver", "LAYERED_ARCH_FEATURES", "PerTauChoice",
           "PooledRegressor", "SVRParams", "SequentialRegressor", "StopDecision", "StopRule", "TREND_FEATURES",
           "TaskCurveModel", "architecture_features", "architecture_prior", "comparable_curve_sets", "curve_features",
           "curve_predictor_actor", "evaluate_curves", "format_markdown", "hparam_features", "load_full_curves",
           "load_other_curves", "model_features", "pooled_prior", "r2_by_tau", "recalibrate", "resolve_early_stop",
           "simulate_early_stopping", "static_features", "stop_probability", "subsample_tasks", "task_context",
           "trend_features", "with_prior"]
