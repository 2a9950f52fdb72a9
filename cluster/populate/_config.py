"""PopulateConfig: the settings of one populate run, every one checked before anything starts."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from cluster.populate._plan import task_names
from cluster.populate._resources import check_worker_shares
from nasdb.checks import int_at_least, positive_int
from nasdb.errors import ConfigError

#: Child models one actor trains together (one ``train_children`` call, one file written).
DEFAULT_BATCH_SIZE_MODELS = 16
#: Upper bounds of sizes held in memory: the plan of one task, the child models one actor trains at once.
MAX_SIZES = {"per-task": 100_000, "batch-size-models": 1_024}


@dataclass(frozen=True)
class PopulateConfig:
    """What a populate run trains, and on how many actors.

    ``per_task`` uniformly sampled architectures per task, trained with ``recipe`` (a TrainRecipe;
    None: the default one) from ``seed``; on ``tasks`` (names, built-in or registered, as a list or
    "a,b"; None: every task of ``suite``; checked against the store when the run starts). ``workers``
    trainer actors (None: as many as the cluster holds) of ``cpus_per_worker`` and
    ``gpus_per_worker`` each train ``batch_size_models`` children at once; a chunk is tried
    ``max_attempts`` times, each for at most ``chunk_timeout_s`` (None: no limit).
    ``retry_failed`` trains again the planned experiments whose only rows are failed.
    ``early_stop``: None (off), True, a dict of settings or an EarlyStopConfig, resolved against
    the recipe's epochs. Rows carry ``agent`` and ``run_id`` (None: each run draws a new
    ``populate-<time>-<hex>``).
    """

    per_task: int
    tasks: Sequence[str] | str | None = None
    recipe: Any = None
    workers: int | None = None
    seed: int = 0
    agent: str = "random"
    run_id: str | None = None
    suite: str = "digits"
    batch_size_models: int = DEFAULT_BATCH_SIZE_MODELS
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    max_attempts: int = 3
    chunk_timeout_s: float | None = None
    retry_failed: bool = False
    early_stop: Any = None

    def __post_init__(self) -> None:
        from cluster.child import TrainRecipe
        from cluster.early_stop import resolve_early_stop

        for what, value in (("per-task", self.per_task), ("batch-size-models", self.batch_size_models),
                            ("max-attempts", self.max_attempts), ("workers", 1 if self.workers is None else self.workers)):
            positive_int(what, value, error=ConfigError)
            if value > MAX_SIZES.get(what, value):  # the plan (per task) or one actor's batch is held in memory
                raise ConfigError(f"{what} {value} is above the limit of {MAX_SIZES[what]:,}; run several smaller "
                                  "populate runs instead (each resumes the last)")
        check_worker_shares(self.cpus_per_worker, self.gpus_per_worker)  # before Ray starts
        int_at_least("seed", self.seed, 0, error=ConfigError)
        recipe = TrainRecipe() if self.recipe is None else self.recipe
        if not isinstance(recipe, TrainRecipe):
            raise ConfigError(f"recipe must be a TrainRecipe, got {type(recipe).__name__}")
        if self.chunk_timeout_s is not None and self.chunk_timeout_s <= 0:
            raise ConfigError(f"chunk timeout must be > 0 seconds, got {self.chunk_timeout_s}")
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(task_names(self.tasks, error=ConfigError)))
        object.__setattr__(self, "recipe", recipe)
        object.__setattr__(self, "early_stop", resolve_early_stop(self.early_stop, recipe.epochs))

    def replace(self, **changes: Any) -> "PopulateConfig":
        return replace(self, **changes)
