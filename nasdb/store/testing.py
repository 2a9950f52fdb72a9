"""Test helpers for the store: record factories, naive reference reads, and process entry points.

Kept inside the package (like ``optuna.testing``) so that processes started with the
``spawn`` method can import the functions they run.
"""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

import numpy as np

from nasdb.store._schema import ExperimentRecord

SPACE_ID = "0123456789abcdef"
RECIPE = {"epochs": 20, "batch_size": 64, "learning_rate": 1e-4, "optimizer": "adam"}
_T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def make_record(i: int, task: str = "alpha", *, worker: str = "w0", seed: int | None = None, **overrides: Any) -> ExperimentRecord:
    """A deterministic record numbered ``i``; every 17th has val NaN, every 19th +inf, every 23rd -inf.

    Every 29th has no test accuracy and no parameter count (an imported benchmark row); odd ones
    stopped early, and every third of those carries a predicted final accuracy.
    """
    rng = np.random.default_rng(i)
    val = float(rng.random())
    if i % 17 == 5:
        val = math.nan
    elif i % 19 == 7:
        val = math.inf
    elif i % 23 == 11:
        val = -math.inf
    fields: dict[str, Any] = dict(
        task=task, space_id=SPACE_ID, architecture=rng.integers(0, 12, 15).tolist(), seed=i if seed is None else seed,
        recipe=dict(RECIPE), agent="random", run_id="run-1", val_accuracy=val, test_accuracy=float(rng.random()),
        val_curve=rng.random(int(rng.integers(1, 21))).tolist(), epochs=20, train_seconds=float(rng.random() * 10),
        num_params=int(rng.integers(100, 100_000)), device="cpu", worker=worker,
        created_at=_T0 + timedelta(seconds=i), status="failed" if i % 13 == 3 else "ok",
        error="diverged: non-finite loss at epoch 3" if i % 13 == 3 else None,
        stopped_early=bool(i % 2), predicted_final=float(rng.random()) if i % 6 == 1 else None,
        relaxed_weights=rng.random(5).astype(np.float32).tolist() if i % 11 == 0 else None,
    )
    if i % 29 == 13:
        fields.update(test_accuracy=None, num_params=None)
    fields.update(overrides)
    return ExperimentRecord(**fields)


def row_of(r: ExperimentRecord) -> dict[str, Any]:
    """The row a record should read back as (recipe as canonical JSON)."""
    d = {k: getattr(r, k) for k in r.__dataclass_fields__}
    d["recipe"] = json.dumps(r.recipe, sort_keys=True, separators=(",", ":"))
    return d


def same_value(a: Any, b: Any) -> bool:
    """Equality that treats NaN == NaN, recursing into lists."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def naive_dedup(rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Reference dedup: per experiment_id keep the ok row, then the earliest created_at."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        key = (r["status"] != "ok", r["created_at"], r["worker"], r["run_id"])
        cur = best.get(r["experiment_id"])
        if cur is None or key < (cur["status"] != "ok", cur["created_at"], cur["worker"], cur["run_id"]):
            best[r["experiment_id"]] = r
    return best


def naive_top_k(rows: Iterable[dict[str, Any]], task: str, k: int, metric: str = "val_accuracy") -> list[str]:
    """Reference top-k: ok rows of ``task`` with a finite, non-null metric, best first (ties by id)."""
    cand = [r for r in naive_dedup(rows).values()
            if r["task"] == task and r["status"] == "ok" and r[metric] is not None and math.isfinite(r[metric])]
    cand.sort(key=lambda r: (-r[metric], r["experiment_id"]))
    return [r["experiment_id"] for r in cand[:k]]


#: The kinds of bad experiments file ``plant_bad_files`` writes (issue 15): readers skip each, verify quarantines it.
BAD_FILE_KINDS = ("garbage", "empty", "truncated", "corrupt_page_header", "corrupt_page_data", "foreign_schema",
                  "wrong_types", "wrong_partition")


def _flip(data: bytes, start: int, stop: int) -> bytes:
    out = bytearray(data)
    for k in range(start, stop):
        out[k] ^= 0xFF
    return bytes(out)


def plant_bad_files(store: Any, task: str, other_task: str) -> dict[str, str]:
    """Write one bad file of each of BAD_FILE_KINDS into ``task``'s partition; returns {kind: path relative to the root}.

    ``task`` must already hold a file (the corrupted copies are made from it); the
    wrong-partition file holds rows of ``other_task``. Corrupted pages keep a valid footer:
    ``corrupt_page_header`` breaks the first page header of the largest column chunk,
    ``corrupt_page_data`` its compressed data (a Snappy decompression failure).
    """
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from nasdb.store._schema import EXPERIMENT_SCHEMA

    folder = store.path("experiments", f"task={task}")
    source = sorted(f for f in os.listdir(folder) if f.startswith("part-"))[0]
    data = open(os.path.join(folder, source), "rb").read()
    meta = pq.read_metadata(os.path.join(folder, source))
    chunk = max((meta.row_group(0).column(j) for j in range(meta.num_columns)), key=lambda c: c.total_compressed_size)
    start = chunk.data_page_offset
    rows = lambda i, t: [row_of(make_record(10_000 + i + j, t)) for j in range(3)]  # noqa: E731
    good = pa.Table.from_pylist(rows(0, task), schema=EXPERIMENT_SCHEMA)
    val = good.schema.get_field_index("val_accuracy")
    tables = {
        "foreign_schema": pa.table({"a": [1, 2], "b": ["x", "y"]}),
        "wrong_types": good.set_column(val, "val_accuracy", pa.array(["high"] * 3)),
        "wrong_partition": pa.Table.from_pylist(rows(10, other_task), schema=EXPERIMENT_SCHEMA),
    }
    raw = {"garbage": os.urandom(500), "empty": b"", "truncated": data[: len(data) // 2],
           "corrupt_page_header": _flip(data, start + 2, start + 12),
           "corrupt_page_data": _flip(data, start + 40, start + 80)}
    out = {}
    for kind in BAD_FILE_KINDS:
        path = os.path.join(folder, f"part-bad-{kind}.parquet")
        if kind in tables:
            pq.write_table(tables[kind], path)
        else:
            with open(path, "wb") as f:
                f.write(raw[kind])
        out[kind] = os.path.relpath(path, store.root)
    return out


# -- process entry points (spawned) ----------------------------------------------------------
def append_worker(root: str, worker: int, n: int, tasks: list[str], flush_rows: int, start_at: float) -> int:
    """Append ``n`` records (retrying every 10th once) through one writer; returns rows appended."""
    from nasdb.store._store import ExperimentStore

    store = ExperimentStore(root)
    while time.time() < start_at:
        time.sleep(0.005)
    appended = 0
    with store.writer(f"w{worker}", flush_rows=flush_rows, flush_seconds=0.5) as w:
        for i in range(n):
            rec = make_record(worker * 100_000 + i, tasks[i % len(tasks)], worker=f"w{worker}")
            w.append(rec)
            appended += 1
            if i % 10 == 0:  # a retried write: same record again, must be counted once
                w.append(rec)
                appended += 1
    return appended


def count_reader(root: str, stop_file: str, out_file: str) -> None:
    """Count experiments in a loop until ``stop_file`` exists; write every observed count to ``out_file``."""
    import os

    from nasdb.store._store import ExperimentStore

    store = ExperimentStore(root)
    seen = []
    while not os.path.exists(stop_file):
        seen.append(store.count())
        seen.append(store.experiments_arrow(status=None).num_rows)
        if len(seen) == 2:
            open(out_file + ".ready", "w").close()
    with open(out_file, "w") as f:
        json.dump({"counts": seen, "retries": store.read_retries}, f)
