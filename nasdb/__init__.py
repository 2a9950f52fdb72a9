"""nasdb: the vocabulary and the database of the NAS experiments.

The search space, the task suite and imported tabular benchmarks, the append-only experiment
store, exports to Optuna and Syne Tune, and the exception hierarchy; ``nasdb.cli`` is the
``nasdb`` command. Imports none of ``cluster``, ``predictor`` or ``search``. The names below are
imported on first use, so ``import nasdb`` stays light.
"""

from nasdb.exports import lazy_exports as _lazy_exports

__all__, __getattr__, __dir__ = _lazy_exports(__name__, {
    "nasdb.benchmarks": ["BENCHMARKS", "Benchmark", "import_benchmark"],
    "nasdb.errors": ["NasdbError"],
    "nasdb.space": ["Dimension", "SearchSpace", "default_space"],
    "nasdb.store": ["ExperimentRecord", "ExperimentStore", "experiment_id"],
    "nasdb.tasks": ["Task", "builtin_task_names", "load_builtin_task", "task_from_file"],
}, modules=["benchmarks", "checks", "errors", "export_optuna", "export_syne_tune", "ranks", "records", "space",
            "store", "tasks"])
