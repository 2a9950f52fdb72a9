"""The store as a Syne Tune blackbox repository: one offline blackbox per task, one folder (issue 20).

Syne Tune's own loader opens it (``syne_tune.blackbox_repository.deserialize(DIR)``, the
reader ``load_blackbox`` uses for offline blackboxes) and returns ``{task: BlackboxOffline}``;
its simulator (``UserBlackboxBackend``) can then replay the store's searches. The folder holds

- ``configspace.json``: one categorical hyperparameter per search-space dimension, named by the
  dimension and valued by its choice names (the space every exported task shares);
- ``fidelityspace.json``: ``epoch``, an integer from 1 to the longest curve's last epoch;
- ``data-<task>.parquet``: one row per (experiment, epoch of its validation curve): the
  dimensions, ``epoch``, ``seed`` and the objectives ``metric_valid_accuracy`` (the curve's
  value at that epoch), ``metric_elapsed_time`` (the row's training seconds pro rata to the
  epoch: the store keeps no per-epoch times) and ``metric_test_accuracy`` (known only at the
  last epoch; NaN before);
- ``metadata.json``: Syne Tune's keys (objectives, task names, seed column, categorical
  columns) and, under ``nasdb``, the store, space id and rows per task.

A curve of L values of a row trained E epochs covers epochs E-L+1..E (a full curve 1..E; an
imported table's single value sits at its last epoch). Rows are the store's deduplicated
``ok`` rows; an offline blackbox is indexed by (configuration, epoch, seed), so of several
rows with the same architecture and seed (other recipes) the first stored is kept and the
others counted as ``dropped``.

The folder is written under a temporary name beside ``out`` and renamed into place when
complete, so a failed export leaves nothing; an ``out`` that exists and is not empty is
refused unless ``overwrite`` (then replaced only once the new export is complete). Writing
needs no Syne Tune; reading it back does (``pip install 'nasdb[syne-tune]'``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nasdb.errors import ExportExistsError, NasdbError
from nasdb.space import unique_rows
from nasdb.store import sql_str

FIDELITY = "epoch"
SEED = "seed"
OBJECTIVES = ("metric_valid_accuracy", "metric_elapsed_time", "metric_test_accuracy")
_COLUMNS = ["space_id", "architecture", "seed", "val_curve", "val_accuracy", "test_accuracy", "epochs",
            "train_seconds"]


def _categorical(choices: Sequence[Any]) -> dict[str, Any]:
    """A Syne Tune ``choice(...)`` as ``config_space_to_json_dict`` writes it."""
    return {"domain_cls": "Categorical", "domain_kwargs": {"categories": list(choices)}, "sampler_cls": "Uniform",
            "sampler_kwargs": {}}


def _integer(lower: int, upper: int) -> dict[str, Any]:
    return {"domain_cls": "Integer", "domain_kwargs": {"lower": int(lower), "upper": int(upper)},
            "sampler_cls": "Uniform", "sampler_kwargs": {}}


def _task_table(store: Any, task: str, space: Any) -> tuple[pa.Table, int, int]:
    """(rows of ``data-<task>.parquet``, experiments kept, experiments dropped as repeats of (architecture, seed))."""
    rows = store.experiments_arrow(task, status="ok", columns=_COLUMNS)
    rows = rows.filter(pc.equal(rows["space_id"], space.space_id))
    arch = np.asarray(pc.list_flatten(rows["architecture"]).to_numpy(), dtype=np.int64)
    arch = arch.reshape(rows.num_rows, len(space.dimensions))  # (N, D)
    seeds = rows["seed"].to_numpy(zero_copy_only=False).astype(np.int64)  # (N,)
    _, first = unique_rows(np.column_stack([arch, seeds]), return_index=True)
    keep = np.sort(first)  # the first stored of each (architecture, seed): rows come ordered by created_at
    dropped = rows.num_rows - len(keep)
    rows, arch, seeds = rows.take(pa.array(keep)), arch[keep], seeds[keep]
    # A row without a curve contributes its final value; L curve values sit at epochs E-L+1..E.
    final = pa.array([[v] for v in rows["val_accuracy"].to_pylist()], type=pa.list_(pa.float64()))
    curves = pc.if_else(pc.fill_null(pc.greater(pc.list_value_length(rows["val_curve"]), 0), False),
                        rows["val_curve"].cast(pa.list_(pa.float64())), final)
    lengths = pc.list_value_length(curves).to_numpy().astype(np.int64)  # (N,)
    parent = np.repeat(np.arange(rows.num_rows), lengths)  # (M,) row of each curve point
    position = np.arange(len(parent)) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # (M,) 0..L-1
    epochs = np.maximum(rows["epochs"].to_numpy(zero_copy_only=False).astype(np.int64), lengths)  # (N,)
    epoch = epochs[parent] - lengths[parent] + 1 + position  # (M,)
    seconds = rows["train_seconds"].to_numpy(zero_copy_only=False).astype(np.float64)
    test = rows["test_accuracy"].to_numpy(zero_copy_only=False).astype(np.float64)  # null -> nan
    columns: dict[str, Any] = {}
    for d, dim in enumerate(space.dimensions):
        names = pa.array([str(c) for c in dim.choices])
        columns[dim.name] = pa.DictionaryArray.from_arrays(pa.array(arch[parent, d].astype(np.int32)), names)
    columns[FIDELITY] = pa.array(epoch)
    columns[SEED] = pa.array(seeds[parent])
    columns[OBJECTIVES[0]] = pc.list_flatten(curves)
    columns[OBJECTIVES[1]] = pa.array(seconds[parent] * epoch / epochs[parent])
    columns[OBJECTIVES[2]] = pa.array(np.where(position == lengths[parent] - 1, test[parent], np.nan))
    columns["task"] = pa.array([task] * len(parent), type=pa.string())
    return pa.table(columns), len(keep), dropped


def _one_space(store: Any, names: list[str]) -> Any:
    listed = ", ".join(sql_str(n) for n in names)
    found = store.query(f"SELECT space_id, list(DISTINCT task ORDER BY task) AS tasks FROM experiments "
                        f"WHERE status = 'ok' AND task IN ({listed}) GROUP BY space_id ORDER BY space_id").to_pylist()
    if not found:
        raise NasdbError(f"no ok experiments to export in tasks {names}")
    if len(found) > 1:
        spaces = "; ".join(f"space {r['space_id']}: {', '.join(r['tasks'])}" for r in found)
        raise NasdbError(f"a blackbox repository holds one search space, but these tasks span {len(found)} ({spaces}); "
                         f"export one space at a time with --task")
    return store.space(found[0]["space_id"])


def _check_target(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExportExistsError(f"--out {out} is a file, not a folder")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise ExportExistsError(f"--out {out} is not empty: pass --overwrite to replace it")


def export_syne_tune(store: Any, out: str | os.PathLike, *, tasks: Sequence[str] | None = None,
                     overwrite: bool = False) -> dict[str, Any]:
    """Write the blackbox repository of ``tasks`` (default: every task with rows) to the folder ``out``."""
    out = os.path.abspath(os.fspath(out))
    _check_target(out, overwrite)
    names = list(tasks) if tasks else [r["task"] for r in store.task_stats().to_pylist()]
    for name in names:
        if name not in store.task_names():
            store.task(name)  # UnknownTaskError naming it
    space = _one_space(store, names)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        summary, max_epoch = [], 1
        for name in names:
            table, kept, dropped = _task_table(store, name, space)
            if table.num_rows:
                max_epoch = max(max_epoch, int(pc.max(table[FIDELITY]).as_py()))
            pq.write_table(table, os.path.join(tmp, f"data-{name}.parquet"), compression="gzip")
            summary.append({"task": name, "experiments": kept, "rows": table.num_rows, "dropped": dropped})
        dims = [d.name for d in space.dimensions]
        _write_json(tmp, "configspace.json", {d.name: _categorical([str(c) for c in d.choices])
                                             for d in space.dimensions})
        _write_json(tmp, "fidelityspace.json", {FIDELITY: _integer(1, max_epoch)})
        _write_json(tmp, "metadata.json", {
            "objectives_names": list(OBJECTIVES), "task_names": names, "seed_col": SEED, "categorical_cols": dims,
            "nasdb": {"store": store.uri, "space_id": space.space_id, "tasks": summary,
                      "exported_at": datetime.now(timezone.utc).isoformat()}})
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": out, "space_id": space.space_id, "tasks": summary,
            "experiments": sum(s["experiments"] for s in summary), "rows": sum(s["rows"] for s in summary)}


def _write_json(folder: str, name: str, value: Any) -> None:
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1)


def _publish(tmp: str, out: str) -> None:
    """Rename the complete export into place; a folder already there is moved aside first, removed after."""
    old = None
    if os.path.isdir(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.rename(out, os.path.join(old, "export"))
    try:
        os.rename(tmp, out)
    except BaseException:
        if old is not None:
            os.rename(os.path.join(old, "export"), out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
