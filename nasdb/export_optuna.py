"""The store as Optuna studies: one study per task, one completed trial per experiment (issue 20).

``optuna-dashboard URL`` then shows the store: per task, every trained child as a trial whose
parameters are the search space's dimensions (categorical, named by dimension, valued by the
choice names) and whose value is the validation accuracy (direction maximize); the test
accuracy, seed, epochs, run and agent ride along as user attributes. Rows are the store's
deduplicated ``ok`` rows. Needs the ``optuna`` extra (``pip install nasdb[optuna]``).

A study that already exists under a task's name is refused unless ``overwrite`` (then it is
deleted first). A study is written in one ``add_trials`` call after every trial is built;
if writing fails half-way, the partial study is deleted, so no half-written study is left.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from nasdb.errors import ExportExistsError, NasdbError

USER_ATTRS = ("experiment_id", "test_accuracy", "seed", "epochs", "train_seconds", "num_params", "run_id", "agent",
              "space_id")


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise NasdbError("the optuna export needs optuna: pip install 'nasdb[optuna]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def space_distributions(space: Any) -> dict[str, Any]:
    """A nasdb search space as Optuna distributions: one categorical per dimension, named by it,
    valued by its choice names (what the export writes and search.optuna_sampler expects)."""
    optuna = _optuna()
    return {dim.name: optuna.distributions.CategoricalDistribution(dim.choices) for dim in space.dimensions}


def _trials(optuna: Any, store: Any, task: str) -> list[Any]:
    table = store.experiments_arrow(task, status="ok")
    spaces: dict[str, Any] = {}
    dists_of: dict[str, dict[str, Any]] = {}
    trials = []
    for row in table.select(["architecture", "val_accuracy", *USER_ATTRS]).to_pylist():
        value = row["val_accuracy"]
        if value is None or not math.isfinite(value):
            continue  # Optuna refuses a completed trial without a finite value
        space = spaces.get(row["space_id"]) or spaces.setdefault(row["space_id"], store.space(row["space_id"]))
        params = {dim.name: dim.choices[index] for dim, index in zip(space.dimensions, row["architecture"])}
        dists = dists_of.get(row["space_id"]) or dists_of.setdefault(row["space_id"], space_distributions(space))
        attrs = {k: row[k] for k in USER_ATTRS if row[k] is not None and not (isinstance(row[k], float)
                                                                             and not math.isfinite(row[k]))}
        trials.append(optuna.trial.create_trial(params=params, distributions=dists, value=float(value),
                                                user_attrs=attrs))
    return trials


def export_optuna(store: Any, storage: str, *, tasks: Sequence[str] | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    """Write one study per task (``tasks`` or every task with rows) to Optuna ``storage`` (a URL)."""
    optuna = _optuna()
    names = list(tasks) if tasks else [r["task"] for r in store.task_stats().to_pylist()]
    for name in names:
        if name not in store.task_names():
            store.task(name)  # UnknownTaskError naming it
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    taken = [n for n in names if n in existing]
    if taken and not overwrite:
        raise ExportExistsError(f"Optuna storage {storage} already has studies {taken}: pass --overwrite to replace "
                                f"them")
    studies = []
    for name in names:
        trials = _trials(optuna, store, name)  # built before anything is written
        if name in existing:
            optuna.delete_study(study_name=name, storage=storage)
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        try:
            study.add_trials(trials)
        except BaseException:
            optuna.delete_study(study_name=name, storage=storage)
            raise
        studies.append({"study": name, "trials": len(trials)})
    return {"storage": storage, "studies": studies, "trials": sum(s["trials"] for s in studies)}
