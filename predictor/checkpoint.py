"""Versioned predictor checkpoints inside the experiment store, under ``predictors/<id>/``.

Each checkpoint is three files: ``model.pt`` (the state_dict), ``config.json`` (the
PredictorConfig) and ``metadata.json`` (space, tasks, loss, data snapshot, metrics, time,
warm-start parent). Each is written atomically through the store's artifact area
``predictors`` (any store root, local or fsspec); ``metadata.json`` is written last and is the
commit marker: a folder without it is an interrupted write and readers ignore it. Reading the
metadata needs no torch: ``read_metadata``, ``predictor_ids``, ``list_predictors`` and
``latest_predictor`` live in nasdb/records.py (for ``nasdb runs`` and the dashboard) and are
re-exported here.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import torch

from nasdb.errors import ArgumentError, NotFoundError
from nasdb.records import (CONFIG_FILE, FORMAT_VERSION, METADATA_FILE, MODEL_FILE, PREDICTORS_DIR, check_predictor_id,
                           latest_predictor, list_predictors, predictor_ids, read_metadata)
from nasdb.space import SearchSpace
from predictor.config import PredictorConfig
from predictor.model import PerformancePredictor, legacy_state_dict

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

logger = logging.getLogger(__name__)

__all__ = ["CONFIG_FILE", "FORMAT_VERSION", "METADATA_FILE", "MODEL_FILE", "PREDICTORS_DIR", "PredictorCheckpoint",
           "latest_predictor", "list_predictors", "load_predictor", "new_predictor_id", "predictor_ids",
           "read_metadata", "save_predictor"]


# -- ids --------------------------------------------------------------------------------------
def new_predictor_id(now: datetime | None = None) -> str:
    """Time-sortable id: UTC timestamp to the microsecond, then a short random hash."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S%fZ}-{hashlib.sha256(os.urandom(16)).hexdigest()[:8]}"


# -- save / load --------------------------------------------------------------------------------
@dataclass
class PredictorCheckpoint:
    """A loaded predictor: the network (in eval mode), its config, its space and its metadata."""

    predictor_id: str
    model: PerformancePredictor
    config: PredictorConfig
    space: SearchSpace
    metadata: dict[str, Any]

    @property
    def tasks(self) -> list[str]:
        return list(self.metadata.get("tasks", []))


def save_predictor(store: ExperimentStore, model: PerformancePredictor, space: SearchSpace, *,
                   predictor_id: str | None = None, tasks: list[str], data_snapshot: dict[str, Any],
                   metrics: dict[str, Any], warm_start_parent: str | None = None,
                   extra: dict[str, Any] | None = None) -> str:
    """Write a checkpoint of ``model`` into ``store`` and return its id (metadata last = commit)."""
    if model.encoding_size != space.encoding_size:
        raise ArgumentError(f"model encoding size {model.encoding_size} does not match space {space.name!r} "
                            f"({space.encoding_size})")
    predictor_id = check_predictor_id(predictor_id or new_predictor_id())
    area = store.artifacts(PREDICTORS_DIR)
    if area.has(f"{predictor_id}/{METADATA_FILE}"):
        raise ArgumentError(f"predictor {predictor_id!r} already exists in the store")
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    area.put(f"{predictor_id}/{MODEL_FILE}", buf.getvalue())
    area.put(f"{predictor_id}/{CONFIG_FILE}", model.config.to_json().encode())
    metadata = {
        "format_version": FORMAT_VERSION,
        "predictor_id": predictor_id,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "predictor": model.config.describe(),
        "loss": model.config.loss,
        "use_meta_features": model.config.use_meta_features,
        "space": {"id": space.space_id, "spec": space.to_dict()},
        "encoding_size": space.encoding_size,
        "tasks": list(tasks),
        "data_snapshot": data_snapshot,
        "metrics": metrics,
        "warm_start_parent": warm_start_parent,
        "torch_version": torch.__version__,
        **(extra or {}),
    }
    metadata_json = json.dumps(metadata, indent=2, sort_keys=True, default=_json_default).encode()
    area.put(f"{predictor_id}/{METADATA_FILE}", metadata_json)  # the commit
    logger.info("saved predictor %s (%s, %d tasks)", predictor_id, model.config.loss, len(tasks))
    return predictor_id


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def load_predictor(store: ExperimentStore, predictor_id: str | None = None, *,
                   device: str = "cpu") -> PredictorCheckpoint:
    """Load a checkpoint (the latest when ``predictor_id`` is None); the model is in eval mode."""
    if predictor_id is None:
        predictor_id = latest_predictor(store)
        if predictor_id is None:
            raise NotFoundError("the store has no predictor yet (fit one first)")
    metadata = read_metadata(store, predictor_id)
    area = store.artifacts(PREDICTORS_DIR)
    legacy = metadata.get("format_version", 0) < 2
    config = PredictorConfig.stored(PredictorConfig.parse_json(area.get(f"{predictor_id}/{CONFIG_FILE}").decode()),
                                    metadata.get("format_version", 0))
    space = SearchSpace.from_dict(metadata["space"]["spec"])
    model = PerformancePredictor(space, config)
    state = torch.load(io.BytesIO(area.get(f"{predictor_id}/{MODEL_FILE}")), map_location=device, weights_only=True)
    model.load_state_dict(legacy_state_dict(state) if legacy else state)
    model.to(device).eval()
    return PredictorCheckpoint(predictor_id, model, config, space, metadata)
