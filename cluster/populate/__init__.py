"""The offline phase as a Ray job: train many child models per task and store their rows.

``_config.py`` holds a run's settings (PopulateConfig, checked before anything starts),
``_populate.py`` drives the job (``populate(store, config)``; ``_active.py``: by strategy, random
or uncertainty, in rounds), ``_plan.py`` plans the experiments and cuts them into chunks, ``_resources.py`` sizes
the trainer actors, ``_pool.py`` keeps them busy through failures, ``_progress.py`` reports.
``python -m cluster.populate`` runs it (``__main__.py``).
"""

from cluster.populate._active import STRATEGIES, check_strategy, populate_by_strategy
from cluster.populate._config import DEFAULT_BATCH_SIZE_MODELS, PopulateConfig
from cluster.populate._plan import Chunk, make_chunks, plan_task, sample_task_architectures, split_chunk
from cluster.populate._populate import check_ray_address, populate, resolve_tasks
from cluster.populate._progress import PopulateSummary, Progress, TaskSummary
from cluster.populate._resources import ResourcePlan, plan_resources, shortfall, wait_for_resources
from nasdb.errors import InsufficientResourcesError

__all__ = ["Chunk", "DEFAULT_BATCH_SIZE_MODELS", "InsufficientResourcesError", "PopulateConfig", "PopulateSummary",
           "Progress", "ResourcePlan", "STRATEGIES", "TaskSummary", "check_ray_address", "check_strategy",
           "make_chunks", "plan_resources", "plan_task", "populate", "populate_by_strategy", "resolve_tasks",
           "sample_task_architectures", "shortfall", "split_chunk", "wait_for_resources"]
