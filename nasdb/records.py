"""What other packages keep in the store's artifact areas, read without their heavy imports.

A predictor checkpoint's ``predictors/<id>/metadata.json`` (its commit file, written last by
predictor/checkpoint.py, which alone writes checkpoints and loads their torch model) and the
search runs, one folder each under ``search/<run_id>/`` (search/run.py). ``nasdb runs`` and the
dashboard read them here without importing torch or Ray; predictor.checkpoint and search.run use
the same functions.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from nasdb.errors import ArgumentError, UnknownPredictorError

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

logger = logging.getLogger(__name__)

#: 2: the deep ensemble (stacked member weights); format-1 checkpoints (one predictor) still load.
FORMAT_VERSION = 2
PREDICTORS_DIR, SEARCH_DIR = "predictors", "search"
MODEL_FILE, CONFIG_FILE, METADATA_FILE = "model.pt", "config.json", "metadata.json"


def check_predictor_id(predictor_id: str) -> str:
    """``predictor_id`` when it can name a checkpoint folder; ArgumentError naming it when not."""
    if not isinstance(predictor_id, str) or not predictor_id or "/" in predictor_id or predictor_id.startswith("."):
        raise ArgumentError(f"not a predictor id: {predictor_id!r}")
    return predictor_id


def read_metadata(store: ExperimentStore, predictor_id: str) -> dict[str, Any]:
    """The metadata of a committed checkpoint; UnknownPredictorError naming the id when there is none."""
    area, key = store.artifacts(PREDICTORS_DIR), f"{check_predictor_id(predictor_id)}/{METADATA_FILE}"
    if not area.has(key):
        known = ", ".join(predictor_ids(store)) or "none"
        raise UnknownPredictorError(f"no predictor {predictor_id!r} in the store (known: {known})")
    metadata = json.loads(area.get(key))
    if metadata.get("format_version", 0) > FORMAT_VERSION:
        raise ArgumentError(f"predictor {predictor_id!r} has checkpoint format {metadata['format_version']}, "
                            f"newer than this nasdb reads ({FORMAT_VERSION})")
    return metadata


def predictor_ids(store: ExperimentStore) -> list[str]:
    """Ids of committed checkpoints, oldest first (ids sort by creation time)."""
    area = store.artifacts(PREDICTORS_DIR)
    return [d for d in area.list(folders=True) if not d.startswith(".") and area.has(f"{d}/{METADATA_FILE}")]


def list_predictors(store: ExperimentStore) -> list[dict[str, Any]]:
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


def latest_predictor(store: ExperimentStore) -> str | None:
    """Id of the most recent committed checkpoint, or None when there is none."""
    ids = predictor_ids(store)
    return ids[-1] if ids else None


def search_run_ids(store: ExperimentStore) -> set[str]:
    """Run ids of the search runs in the store (folders under ``<root>/search/``)."""
    return set(store.artifacts(SEARCH_DIR).list(folders=True))
