"""Versioned predictor checkpoints inside the experiment store, under ``predictors/<id>/``.

Each checkpoint is three files: ``model.pt`` (the state_dict), ``config.json`` (the
PredictorConfig) and ``metadata.json`` (space, tasks, loss, data snapshot, metrics, time,
warm-start parent). ``metadata.json`` is written last, through a temporary name, and is the
commit marker: a folder without it is an interrupted write and readers ignore it. Paths go
through ``store.path`` / ``store.fs`` (fsspec) so a non-local store root works the same way.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch

from nasdb.errors import ArgumentError, NotFoundError
from nasdb.space import SearchSpace
from predictor.config import PredictorConfig
from predictor.model import PerformancePredictor, legacy_state_dict

logger = logging.getLogger(__name__)

#: 2: the deep ensemble (stacked member weights); format-1 checkpoints (one predictor) still load.
FORMAT_VERSION = 2
PREDICTORS_DIR = "predictors"
MODEL_FILE, CONFIG_FILE, METADATA_FILE = "model.pt", "config.json", "metadata.json"


# -- file access through the store's fsspec filesystem --------------------------------------
def _write(fs: Any, path: str, data: bytes) -> None:
    with fs.open(path, "wb") as f:
        f.write(data)


def _read(fs: Any, path: str) -> bytes:
    with fs.open(path, "rb") as f:
        return f.read()


def _subdirs(fs: Any, path: str) -> list[str]:
    if not fs.exists(path):
        return []
    return [e["name"].rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(path, detail=True) if e.get("type") == "directory"]


# -- ids --------------------------------------------------------------------------------------
def new_predictor_id(now: datetime | None = None) -> str:
    """Time-sortable id: UTC timestamp to the microsecond, then a short random hash."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S%fZ}-{hashlib.sha256(os.urandom(16)).hexdigest()[:8]}"


def _check_id(predictor_id: str) -> str:
    if not isinstance(predictor_id, str) or not predictor_id or "/" in predictor_id or predictor_id.startswith("."):
        raise ArgumentError(f"not a predictor id: {predictor_id!r}")
    return predictor_id


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


def save_predictor(store: Any, model: PerformancePredictor, space: SearchSpace, *, predictor_id: str | None = None,
                   tasks: list[str], data_snapshot: dict[str, Any], metrics: dict[str, Any],
                   warm_start_parent: str | None = None, extra: dict[str, Any] | None = None) -> str:
    """Write a checkpoint of ``model`` into ``store`` and return its id (metadata last = commit)."""
    if model.encoding_size != space.encoding_size:
        raise ArgumentError(f"model encoding size {model.encoding_size} does not match space {space.name!r} "
                            f"({space.encoding_size})")
    predictor_id = _check_id(predictor_id or new_predictor_id())
    fs, folder = store.fs, store.path(PREDICTORS_DIR, predictor_id)
    if fs.exists(f"{folder}/{METADATA_FILE}"):
        raise ArgumentError(f"predictor {predictor_id!r} already exists in the store")
    fs.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    _write(fs, f"{folder}/{MODEL_FILE}", buf.getvalue())
    _write(fs, f"{folder}/{CONFIG_FILE}", model.config.to_json().encode())
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
    tmp = f"{folder}/.{METADATA_FILE}.tmp"
    _write(fs, tmp, json.dumps(metadata, indent=2, sort_keys=True, default=_json_default).encode())
    fs.mv(tmp, f"{folder}/{METADATA_FILE}")  # a rename on local disks: the commit
    logger.info("saved predictor %s (%s, %d tasks)", predictor_id, model.config.loss, len(tasks))
    return predictor_id


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def read_metadata(store: Any, predictor_id: str) -> dict[str, Any]:
    """The metadata of a committed checkpoint; KeyError naming the id when there is none."""
    path = store.path(PREDICTORS_DIR, _check_id(predictor_id), METADATA_FILE)
    if not store.fs.exists(path):
        known = ", ".join(predictor_ids(store)) or "none"
        raise NotFoundError(f"no predictor {predictor_id!r} in the store (known: {known})")
    metadata = json.loads(_read(store.fs, path))
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise ArgumentError(f"predictor {predictor_id!r} has checkpoint format {metadata['format_version']}, "
                            f"newer than this nasdb reads ({FORMAT_VERSION})")
    return metadata


def load_predictor(store: Any, predictor_id: str | None = None, *, device: str = "cpu") -> PredictorCheckpoint:
    """Load a checkpoint (the latest when ``predictor_id`` is None); the model is in eval mode."""
    if predictor_id is None:
        predictor_id = latest_predictor(store)
        if predictor_id is None:
            raise NotFoundError("the store has no predictor yet (fit one first)")
    metadata = read_metadata(store, predictor_id)
    folder = store.path(PREDICTORS_DIR, predictor_id)
    legacy = metadata.get("format_version", 0) < 2
    config_text = _read(store.fs, f"{folder}/{CONFIG_FILE}").decode()
    config = PredictorConfig.legacy(json.loads(config_text)) if legacy else PredictorConfig.from_json(config_text)
    space = SearchSpace.from_dict(metadata["space"]["spec"])
    model = PerformancePredictor(space, config)
    state = torch.load(io.BytesIO(_read(store.fs, f"{folder}/{MODEL_FILE}")), map_location=device, weights_only=True)
    model.load_state_dict(legacy_state_dict(state) if legacy else state)
    model.to(device).eval()
    return PredictorCheckpoint(predictor_id, model, config, space, metadata)


def predictor_ids(store: Any) -> list[str]:
    """Ids of committed checkpoints, oldest first (ids sort by creation time)."""
    root = store.path(PREDICTORS_DIR)
    return sorted(d for d in _subdirs(store.fs, root)
                  if not d.startswith(".") and store.fs.exists(f"{root}/{d}/{METADATA_FILE}"))


def list_predictors(store: Any) -> list[dict[str, Any]]:
    """One summary per committed checkpoint, oldest first: id, time, loss, tasks, metrics, parent."""
    out = []
    for pid in predictor_ids(store):
        try:
            m = read_metadata(store, pid)
        except (ValueError, KeyError) as e:
            logger.warning("skipping unreadable predictor %s: %s", pid, e)
            continue
        out.append({k: m.get(k) for k in ("predictor_id", "created_at", "loss", "use_meta_features", "tasks",
                                          "metrics", "warm_start_parent")} | {"space_id": m["space"]["id"]})
    return out


def latest_predictor(store: Any) -> str | None:
    """Id of the most recent committed checkpoint, or None when there is none."""
    ids = predictor_ids(store)
    return ids[-1] if ids else None
