"""cluster: training at scale, the offline phase that fills the store.

One child model and the trainer actor (``cluster.child``), the populate Ray job
(``cluster.populate``; ``python -m cluster.populate``) and learning-curve early stopping
(``cluster.early_stop``). Imports only ``nasdb``; the names below are imported on first use, so
``import cluster`` imports neither torch nor Ray.
"""

from nasdb.exports import lazy_exports as _lazy_exports

__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "cluster.child": ["ChildTrainer", "TrainRecipe", "default_bank", "train_child", "train_children"],
    "cluster.early_stop": ["EarlyStopConfig", "EarlyStopper", "curve_predictor_actor", "resolve_early_stop"],
    "cluster.populate": ["PopulateConfig", "PopulateSummary", "plan_resources"],
}, modules=["child", "early_stop", "populate"])
