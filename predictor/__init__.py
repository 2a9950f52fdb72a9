"""predictor: the task-aware performance predictor, a deep ensemble, and what uses it.

Its settings (``PredictorConfig``, ``SuggestConfig``), fitting (``fit_predictor``; ``python -m
predictor.train``) and leave-one-task-out evaluation (``python -m predictor.evaluate``),
checkpoints and their aliases (``predictor.registry``), suggestions (Algorithm 2), the Ray Serve
API, and the predictor as a search surrogate and active population's proposer. Imports ``nasdb``
and ``cluster``; the names below are imported on first use, so ``import predictor`` stays light.
"""

from nasdb.exports import lazy_exports as _lazy_exports

__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "predictor.active": ["ActiveConfig", "UncertaintyProposer"],
    "predictor.checkpoint": ["PredictorCheckpoint", "latest_predictor", "list_predictors", "load_predictor",
                             "read_metadata", "save_predictor"],
    "predictor.config": ["PredictorConfig", "SuggestConfig"],
    "predictor.data": ["load_training_data"],
    "predictor.evaluate": ["evaluate_loto"],
    "predictor.model": ["PerformancePredictor"],
    "predictor.server": ["start_server"],
    "predictor.suggest": ["SuggestionEngine", "engine_for", "suggest_for_task"],
    "predictor.surrogate": ["EnsembleSurrogate", "SurrogateFactory"],
    "predictor.train": ["fit_predictor"],
}, modules=["registry"])
