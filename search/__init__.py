"""Search agents: predictor-guided search, RL-NAS, T-NAML and random search as Ray agents, and their comparison.

The papers' baselines (task-aware-performance-prediction.md Sec. 5.3; transfer-neural-automl-tnaml.md
Sec. 2 and 4) and the predictor agent (issue 18). Agents propose architectures (``search.agents``;
``AskTellSearch`` in the Python API, ``search.optuna_sampler`` under an Optuna study), evaluators
train or look them up (``search.evaluators``), ``run_search`` plans and drives one resumable run (the loop itself:
``SearchDriver``), ``compare`` builds Tables 3-4.
"""

from search._driver import SearchDriver, seed_base
from search.acquisition import AcquisitionConfig
from search.agents import AGENTS, RLNAS, TNAML, PredictorAgent, RandomSearch, SearchAgent, Surrogate, create_agent
from search.ask_tell import AskTellSearch
from search.compare import Comparison, compare
from search.controller import Controller, ControllerConfig
from search.evaluators import EVALUATORS, Evaluation, Evaluator, LookupEvaluator, NotTabulatedError, Trial
from search.reinforce import Reinforce, ReinforceConfig, RewardNormalizer
from search.result import SearchResult


def __getattr__(name: str):
    # search.run is imported on first use so that `python -m search.run` does not find it pre-imported.
    if name in ("SearchPlan", "plan_search", "run_search"):
        from search import run

        return getattr(run, name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = ["AGENTS", "AcquisitionConfig", "AskTellSearch", "EVALUATORS", "Comparison", "Controller",
           "ControllerConfig", "Evaluation", "Evaluator", "LookupEvaluator", "NotTabulatedError", "PredictorAgent",
           "RLNAS", "RandomSearch", "Reinforce", "ReinforceConfig", "RewardNormalizer", "SearchAgent", "SearchDriver",
           "SearchPlan", "SearchResult", "Surrogate", "TNAML", "Trial", "compare", "create_agent", "plan_search",
           "run_search", "seed_base"]
