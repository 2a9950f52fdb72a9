"""Small real stores and predictors for tests and benchmarks of the suggestion path (like optuna.testing).

Everything is real: child models trained by cluster.child.train_children, rows written by the
store's writer, a predictor fitted by Algorithm 1 in-process and saved as a checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

TINY_TASKS = ("digits_loops", "digits_parity", "digits_mod3", "digits_confusable4")


def build_tiny_store(root: str, tasks: Sequence[str] = TINY_TASKS, *, num_architectures: int = 12, epochs: int = 2,
                     seed: int = 0) -> Any:
    """A store with ``num_architectures`` random children per task, trained ``epochs`` epochs each."""
    import torch

    from cluster.child import TrainRecipe, train_children
    from nasdb.space import default_space
    from nasdb.store import ExperimentStore
    from predictor.zero_shot import record_from_result

    torch.set_num_threads(1)
    store = ExperimentStore(str(root))
    store.init()
    space = default_space()
    store.save_space(space)
    recipe = TrainRecipe(epochs=epochs)
    with store.writer("tiny-store") as writer:
        for i, name in enumerate(tasks):
            archs = space.sample(num_architectures, seed=seed + i)  # (N, 15)
            results = train_children(store.task(name), space, archs, recipe=recipe, seeds=np.zeros(len(archs), dtype=np.int64))
            writer.extend(record_from_result(name, space, a, 0, recipe, r, agent="random", run_id="tiny-store",
                                             worker="tiny-store") for a, r in zip(archs, results))
    return store


def fit_tiny_predictor(store: ExperimentStore, tasks: Sequence[str], *, num_steps: int = 300, seed: int = 0,
                       **config: Any) -> str:
    """Fit a small predictor on ``tasks`` of ``store`` in-process and save it; returns its id."""
    from predictor.checkpoint import save_predictor
    from predictor.config import PredictorConfig
    from predictor.data import load_for_config
    from predictor.fit import fit_in_process

    cfg = PredictorConfig(**{"batch_size": 8, "sample_batch_size": 128, "num_steps": num_steps, "seed": seed,
                             **config})
    data, cfg, _ = load_for_config(store, cfg, tasks=list(tasks))
    model, history = fit_in_process(data, cfg)
    return save_predictor(store, model.eval(), data.space, tasks=data.task_names, data_snapshot=data.snapshot(),
                          metrics={"final_train_loss": history.final_loss, "steps": history.steps})


TRAIN_TASKS = ("digits_loops", "digits10_small", "digits_confusable4")
HELD_OUT_TASK = "digits_0to5"  # never trained on: the "new task" of Algorithm 2


def shared_tiny_store(base_dir: str, *, num_steps: int = 300) -> tuple[str, str]:
    """Build (once per ``base_dir``) a tiny store on TRAIN_TASKS and fit a predictor on it.

    Returns ``(store root, predictor id)``. Test modules of one pytest session share it through
    ``tmp_path_factory.getbasetemp()``; a test that writes to the store must copy it first.
    """
    return _shared(base_dir, "nasdb-tiny-store", TRAIN_TASKS, {}, num_steps=num_steps)


#: A store of mixed widths: a digits task (64 features) and three sklearn tables (4, 13 and 30).
TABLE_TRAIN_TASKS = ("digits_loops", "tab_iris", "tab_wine", "tab_breast_cancer")


def shared_table_store(base_dir: str, *, num_steps: int = 150) -> tuple[str, str]:
    """Like :func:`shared_tiny_store`, on TABLE_TRAIN_TASKS (10 children of 1 epoch per task), with a
    predictor of the width-invariant ``cells`` meta encoder (2 members, 128 rows per task)."""
    return _shared(base_dir, "nasdb-table-store", TABLE_TRAIN_TASKS,
                   {"meta_encoder": "cells", "ensemble_size": 2, "task_sample_budget": 128},
                   num_steps=num_steps, num_architectures=10, epochs=1)


def _shared(base_dir: str, name: str, tasks: Sequence[str], config: dict[str, Any], *, num_steps: int,
            **build: Any) -> tuple[str, str]:
    import os
    import shutil

    root = os.path.join(str(base_dir), name)
    marker = os.path.join(str(base_dir), f"{name}.predictor")
    if os.path.exists(marker):
        with open(marker) as f:
            return root, f.read().strip()
    shutil.rmtree(root, ignore_errors=True)  # an interrupted earlier build
    store = build_tiny_store(root, tasks, **build)
    pid = fit_tiny_predictor(store, tasks, num_steps=num_steps, **config)
    with open(marker, "w") as f:
        f.write(pid)
    return root, pid
