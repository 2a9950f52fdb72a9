"""Exact top-k of one task without deduplicating the whole partition.

Deduplicating every row of a partition (a window over ~60k rows per task at 1M rows) costs more
than the rest of the query. Instead: take the best M raw rows by the metric (narrow columns,
DuckDB's Top-N with its dynamic filter), look up every row that shares an id with them, keep
the candidates that are their id's dedup winner (the rule of ``DEDUP_ORDER``), and grow M
until k winners are found or the rows run out. Only the k winners' full rows are then read,
with pyarrow, from just the row groups that hold them (compaction writes files sorted by
val_accuracy in small row groups, so the best rows sit in the first one).

Exactness: a dedup winner that is ok and finite is a raw ok/finite row, so the winners' order
in the raw ranking is their order in the deduplicated ranking; winners found within the first
M raw rows are therefore exactly the best ones, in order.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from typing import Any, Sequence

import duckdb
import pyarrow as pa

from nasdb.store._check import parquet_file
from nasdb.store._fs import StoreFS
from nasdb.store._read import Snapshot, fetch, raw_source, sql_str
from nasdb.store._schema import EXPERIMENT_SCHEMA, conform

#: Dedup winner key in Python; the same order as _read.DEDUP_ORDER.
_KEY_COLUMNS = ("status", "created_at", "worker", "run_id", "val_accuracy")


def _winner_key(row: dict[str, Any]) -> tuple:
    v = row["val_accuracy"]
    nan = v is None or math.isnan(v)  # DuckDB sorts NaN after every number
    return (row["status"] != "ok", row["created_at"], row["worker"], row["run_id"], nan, 0.0 if nan else v,
            row["filename"], row["file_row_number"])


def top_k_rows(conn: duckdb.DuckDBPyConnection, sfs: StoreFS, snap: Snapshot, k: int, metric: str,
               descending: bool) -> pa.Table:
    """The k best deduplicated ok rows by ``metric`` in ``snap`` (one task's files)."""
    if not snap.paths:
        return EXPERIMENT_SCHEMA.empty_table()
    source = raw_source(snap.paths, row_ids=True, by_name=False)  # core columns only
    order = "DESC" if descending else "ASC"
    m = 2 * k + 8
    while True:
        cands = fetch(conn, (
            f"SELECT experiment_id, filename, file_row_number FROM {source} "
            f"WHERE status = 'ok' AND isfinite({metric}::DOUBLE) "
            f"ORDER BY {metric} {order}, experiment_id, filename, file_row_number LIMIT {m}")).to_pylist()
        if not snap.dirty:  # one compacted file: every id is there once, every candidate wins
            winners = {c["experiment_id"]: (c["filename"], c["file_row_number"]) for c in cands}
        else:
            winners = winner_rows(conn, source, {c["experiment_id"] for c in cands})
        picked = [(c["filename"], c["file_row_number"]) for c in cands
                  if winners.get(c["experiment_id"]) == (c["filename"], c["file_row_number"])]
        if len(picked) >= k or len(cands) < m:
            break
        m *= 4
    return read_rows(sfs, [(sfs.fs_path(f), r) for f, r in picked[:k]])


def winner_rows(conn: duckdb.DuckDBPyConnection, source: str, ids: set[str]) -> dict[str, tuple[str, int]]:
    """For each id, the (filename, file_row_number) of the row deduplication keeps (``source`` has row ids)."""
    if not ids:
        return {}
    same = fetch(conn, (
        f"SELECT experiment_id, {', '.join(_KEY_COLUMNS)}, filename, file_row_number FROM {source} "
        f"WHERE experiment_id IN ({', '.join(sql_str(i) for i in sorted(ids))})")).to_pylist()
    best: dict[str, tuple] = {}
    for row in same:
        key = _winner_key(row)
        if row["experiment_id"] not in best or key < best[row["experiment_id"]]:
            best[row["experiment_id"]] = key
    return {eid: key[-2:] for eid, key in best.items()}


def lookup_rows(conn: duckdb.DuckDBPyConnection, sfs: StoreFS, snap: Snapshot, ids: Sequence[str]) -> pa.Table:
    """The deduplicated rows of the given experiment ids (missing ids are left out), in the order given."""
    if not snap.paths or not ids:
        return EXPERIMENT_SCHEMA.empty_table()
    winners = winner_rows(conn, raw_source(snap.paths, row_ids=True, by_name=False), set(ids))
    return read_rows(sfs, [(sfs.fs_path(winners[i][0]), winners[i][1]) for i in ids if i in winners])


def read_rows(sfs: StoreFS, picks: Sequence[tuple[str, int]]) -> pa.Table:
    """Rows ``(path, row number)`` in the given order, reading only the row groups that hold them."""
    if not picks:
        return EXPERIMENT_SCHEMA.empty_table()
    wanted: dict[str, list[int]] = defaultdict(list)
    for path, row in picks:
        wanted[path].append(row)
    parts: dict[tuple[str, int], pa.Table] = {}
    for path, rows in wanted.items():
        with parquet_file(sfs, path) as (pf, threads):
            starts = [0]
            for g in range(pf.metadata.num_row_groups):
                starts.append(starts[-1] + pf.metadata.row_group(g).num_rows)
            groups = sorted({bisect.bisect_right(starts, r) - 1 for r in rows})
            table = conform(pf.read_row_groups(groups, use_threads=threads))
        offset, acc = {}, 0
        for g in groups:
            offset[g] = acc
            acc += starts[g + 1] - starts[g]
        for r in rows:
            g = bisect.bisect_right(starts, r) - 1
            parts[(path, r)] = table.slice(offset[g] + r - starts[g], 1)
    return pa.concat_tables([parts[p] for p in picks], promote_options="default")
