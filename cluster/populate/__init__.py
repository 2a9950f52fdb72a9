"""The offline phase as a Ray job: train many child models per task and store their rows.

``_config.py`` holds a run's settings (PopulateConfig, checked before anything starts),
``_populate.py`` drives the job (``_active.py``: by strategy, random or uncertainty, in
rounds), ``_plan.py`` plans the experiments and cuts them into chunks, ``_resources.py`` sizes
the trainer actors, ``_pool.py`` keeps them busy through failures, ``_progress.py`` reports.
``python -m cluster.populate`` runs it (``__main__.py``).
"""

from cluster.populate._active import STRATEGIES, check_strategy, populate_by_strategy
from cluster.populate._config import DEFAULT_BATCH_SIZE_MODELS, PopulateConfig
from cluster.populate._populate import populate, resolve_tasks
from cluster.populate._progress import PopulateSummary, TaskSummary
from cluster.populate._resources import ResourcePlan, plan_resources, shortfall, wait_for_resources
from nasdb.errors import InsufficientResourcesError

__all__ = ["DEFAULT_BATCH_SIZE_MODELS", "InsufficientResourcesError", "PopulateConfig", "PopulateSummary",
           "ResourcePlan", "STRATEGIES", "TaskSummary", "check_strategy", "plan_resources", "populate",
           "populate_by_strategy", "resolve_tasks", "shortfall", "wait_for_resources"]
