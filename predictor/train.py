"""The Ray Train job that fits the predictor (Algorithm 1) and writes its checkpoint into the store.

    python -m predictor.train --store ROOT [--loss l2|linear|quadratic] [--exclude-task T ...]
        [--workers N] [--steps S] [--no-meta-features] [--warm-start PREDICTOR_ID] [--seed S]

The driver reads and validates the training data (so bad input fails before any worker
starts) and puts it in the object store; a TorchTrainer runs ``run_algorithm1`` in N
data-parallel workers (DDP through ``ray.train.torch.prepare_model``, a GPU each when Ray
reports enough of them), each drawing its own tasks and batches by rank; rank 0 writes the
checkpoint into ``<store>/predictors/<id>/``. Ray Train's own run folder is a temporary
directory: the real checkpoint lives in the store.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Iterable

from nasdb.errors import ArgumentError
from predictor.checkpoint import load_predictor, new_predictor_id, read_metadata, save_predictor
from predictor.config import PredictorConfig
from predictor.data import TrainingData, load_for_config

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

logger = logging.getLogger(__name__)

#: Fields that fix the network's shape: a warm start must keep them.
SHAPE_FIELDS = ("phi_hidden", "rho_hidden", "use_meta_features", "gating", "feature_dim", "max_classes", "aggregate",
                "meta_encoder", "architecture_features", "ensemble_size", "uses_landmarks")


def _open_store(store: ExperimentStore | str | os.PathLike) -> ExperimentStore:
    if isinstance(store, (str, os.PathLike)):
        from nasdb.store import ExperimentStore

        return ExperimentStore(str(store))
    return store


def _train_loop_per_worker(cfg: dict) -> dict | None:
    """Runs in every Ray Train worker: Algorithm 1 under DDP, then rank 0 saves the checkpoint."""
    import numpy as np
    import ray
    import ray.train
    import ray.train.torch
    import torch

    from predictor.fit import new_predictor, run_algorithm1, task_correlations
    from predictor.model import TaskScorer

    data: TrainingData = ray.get(cfg["data"])
    config = PredictorConfig.from_dict(cfg["config"])
    rank = ray.train.get_context().get_world_rank()
    model = new_predictor(data, config)  # seeded: identical init on every rank (DDP also broadcasts rank 0's)
    if cfg.get("init_state") is not None:
        model.load_state_dict(ray.get(cfg["init_state"]))
    scorer = ray.train.torch.prepare_model(TaskScorer(model))
    device = ray.train.torch.get_device()
    history = run_algorithm1(scorer, data, config, rank=rank, device=device, report_every=cfg["report_every"],
                             on_report=lambda step, metrics: ray.train.report(metrics))
    if rank != 0:
        return None
    model = model.cpu().eval()  # DDP wrapped the same module: its weights are the trained ones
    correlations = task_correlations(model, data)
    spearman = [c["spearman"] for c in correlations.values()]
    metrics = {
        "final_train_loss": history.final_loss,
        "train_correlations": correlations,
        "mean_train_spearman": float(np.nanmean(spearman)) if not np.all(np.isnan(spearman)) else None,
        "steps_per_worker": history.steps,
        "workers": cfg["workers"],
        "seconds": history.seconds,
        "task_draws_rank0": history.task_draws,
    }
    store = cfg["open_store"]()
    embeddings = {}
    if config.use_meta_features:
        with torch.no_grad():
            for name, t in data.tasks.items():
                x, y = torch.from_numpy(np.array(t.x)), torch.from_numpy(np.array(t.y))  # copies of read-only arrays
                embeddings[name] = model.task_embedding(x, y, landmarks=t.landmarks_for(model)).tolist()
    pid = save_predictor(store, model, data.space, predictor_id=cfg["predictor_id"], tasks=data.task_names,
                         data_snapshot=data.snapshot(), metrics=metrics, warm_start_parent=cfg.get("warm_start"),
                         extra={"excluded_tasks": cfg["exclude_tasks"], "task_embeddings": embeddings,
                                "meta_encoder_choice": cfg.get("meta_encoder_reason")})
    return {"predictor_id": pid, "metrics": metrics}


def _warm_start_state(store: ExperimentStore, parent_id: str, config: PredictorConfig, data: TrainingData) -> dict:
    parent = load_predictor(store, parent_id)
    if parent.space.space_id != data.space.space_id:
        raise ArgumentError(f"warm start from {parent_id!r}: its space {parent.space.space_id} differs from the "
                            f"training data's space {data.space.space_id}")
    differing = [f for f in SHAPE_FIELDS if getattr(parent.config, f) != getattr(config, f)]
    if differing:
        detail = ", ".join(f"{f}={getattr(parent.config, f)!r} vs {getattr(config, f)!r}" for f in differing)
        raise ArgumentError(f"warm start from {parent_id!r}: the network shape differs ({detail})")
    return parent.model.state_dict()


def fit_predictor(store: ExperimentStore | str | os.PathLike, config: PredictorConfig | None = None, *,
                  exclude_tasks: Iterable[str] = (), tasks: Iterable[str] | None = None, workers: int = 2,
                  warm_start: str | None = None, space_id: str | None = None, report_every: int = 100,
                  use_gpu: bool | None = None, meta_encoder: str | None = None) -> str:
    """Fit a predictor on ``store`` with a Ray Train job of ``workers`` workers; return its checkpoint id.

    Uses the running Ray, else starts or joins one (``ray.init(address=$RAY_ADDRESS or None)``)
    and shuts it down at the end. ``workers=0`` is Ray Train's local mode: the loop runs in
    this process (no DDP). With ``warm_start`` the network starts from that checkpoint's
    weights; when ``config`` is None it is the parent's config (else the default).
    ``config.target`` and ``config.include_stopped``: see predictor/data.py (tasks without samples need
    ``config.use_meta_features=False``). ``meta_encoder``: ``auto`` (cells when a task is not
    ``feature_dim`` wide, predictor/data.py choose_meta_encoder), ``samples``, ``cells``, or None
    for the config's; the choice and its reason go into the checkpoint's metadata.
    """
    import ray

    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ArgumentError(f"`workers >= 0` must hold, but got workers={workers!r}.")
    store = _open_store(store)
    if config is None:
        config = (PredictorConfig.stored(read_metadata(store, warm_start)["predictor"]["args"])
                  if warm_start else PredictorConfig())
    exclude = list(exclude_tasks)
    data, config, reason = load_for_config(store, config, meta_encoder=meta_encoder, space=space_id, tasks=tasks,
                                           exclude_tasks=exclude)
    init_state = _warm_start_state(store, warm_start, config, data) if warm_start else None
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=os.environ.get("RAY_ADDRESS") or None)
    try:
        return _run_trainer(store, data, config, init_state, workers=workers, warm_start=warm_start,
                            exclude=exclude, report_every=report_every, use_gpu=use_gpu, reason=reason)
    finally:
        if started_ray:
            ray.shutdown()


def _run_trainer(store: ExperimentStore, data: TrainingData, config: PredictorConfig, init_state: dict | None, *,
                 workers: int, warm_start: str | None, exclude: list[str], report_every: int, use_gpu: bool | None,
                 reason: str | None = None) -> str:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if use_gpu is None:
        use_gpu = workers > 0 and ray.cluster_resources().get("GPU", 0) >= workers
    predictor_id = new_predictor_id()
    run_dir = tempfile.mkdtemp(prefix="nasdb-ray-train-")
    try:
        trainer = TorchTrainer(
            _train_loop_per_worker,
            train_loop_config={
                "data": ray.put(data), "config": config.to_dict(),
                # the workers reopen the store from its root (a store object need not pickle)
                "open_store": functools.partial(type(store), store.uri),
                "predictor_id": predictor_id, "warm_start": warm_start, "exclude_tasks": exclude,
                "init_state": ray.put(init_state) if init_state is not None else None,
                "report_every": report_every, "workers": workers, "meta_encoder_reason": reason,
            },
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
            run_config=RunConfig(name=f"predictor-{predictor_id}", storage_path=run_dir),
        )
        result = trainer.fit()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    if result.error is not None:
        raise result.error
    returned = result.return_value or {}
    if returned.get("predictor_id") != predictor_id:
        raise RuntimeError(f"training finished but rank 0 reported {returned!r}, not predictor {predictor_id!r}")
    read_metadata(store, predictor_id)  # the commit marker is there
    return predictor_id


if __name__ == "__main__":  # the CLI's entry point (predictor/cli.py)
    from predictor.cli import fit_main

    sys.exit(fit_main())
