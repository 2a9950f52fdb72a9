"""Store maintenance: ``compact`` (merge a partition's small files) and ``verify`` (quarantine bad files).

Compaction never lets a reader see missing or doubled rows: the merged file is published
first (for a moment its rows exist twice, which dedup-on-read hides exactly: the merged file
holds each id's dedup winner, and the winner of a set that contains it twice is unchanged),
and only then are the old files removed; a reader that listed an old file and finds it gone
starts over (``_read.Reader``).
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from nasdb.store._check import DEDUPLICATED_KEY, PARTITION_PREFIX, pages_problem, parquet_file, read_table, structure
from nasdb.store._fs import TMP_PREFIX, FileInfo, StoreFS
from nasdb.store._read import FileCatalog, connect_engine, dedup_sql
from nasdb.store._schema import COLUMNS, EXPERIMENT_SCHEMA, SCHEMA_VERSION, conform
from nasdb.store._writer import COMPACT_COMPRESSION, DICTIONARY_COLUMNS, file_table, new_writer_id

COMPACT_ROW_GROUP = 8_192
#: Files with at least this many rows are left alone by compaction.
SMALL_FILE_ROWS = 250_000
#: At most this many rows are merged into one file (bounds compaction's memory).
MAX_MERGED_ROWS = 2_000_000
#: Temp files older than this are leftovers of a killed writer (none takes this long).
STALE_TMP_SECONDS = 3600.0


def _mergeable(meta: pq.FileMetaData) -> bool:
    """Only files of a schema this version knows are merged (a newer file's extra columns would be lost)."""
    kv = meta.metadata or {}
    version = int(kv.get(b"nasdb.schema_version", b"0") or 0)
    return version <= SCHEMA_VERSION and set(meta.schema.to_arrow_schema().names) <= set(COLUMNS)


def _merge(sfs: StoreFS, catalog: FileCatalog, files: list[FileInfo]) -> tuple[pa.Table, list[FileInfo], int]:
    """Rows of ``files`` deduplicated (same rule as reads) and sorted best val_accuracy first.

    A file whose pages do not decode is left out and stays where it is (``verify`` quarantines it).
    """
    tables, merged = [], []
    for f in files:
        try:
            tables.append(conform(read_table(sfs, f.path)).select(list(COLUMNS)))
            merged.append(f)
        except FileNotFoundError:
            continue  # a concurrent compaction merged it already: its rows are in that file
        except Exception as e:  # corrupted pages behind a valid footer
            catalog.mark_invalid(f, f"unreadable pages: {' '.join(str(e).split())[:200]}")
    raw = pa.concat_tables(tables) if tables else EXPERIMENT_SCHEMA.empty_table()
    conn = connect_engine()
    try:
        conn.register("_merge", raw)
        out = conn.sql(f"SELECT * FROM ({dedup_sql('_merge')}) "
                       "ORDER BY isfinite(val_accuracy) DESC, val_accuracy DESC, experiment_id").to_arrow_table()
    finally:
        conn.close()
    return conform(out).cast(EXPERIMENT_SCHEMA), merged, raw.num_rows


def compact_partition(sfs: StoreFS, catalog: FileCatalog, task: str, *, small_rows: int = SMALL_FILE_ROWS,
                      max_rows: int = MAX_MERGED_ROWS) -> dict[str, Any]:
    """Merge the small valid files of one task into new deduplicated files; returns what was done.

    The merged file holds one row per experiment_id of the files it replaces, sorted by
    val_accuracy (best first) in small row groups, so top-k reads touch one row group.
    """
    candidates: list[tuple[FileInfo, int]] = []
    for f in catalog.files(task):
        try:
            with parquet_file(sfs, f.path) as (pf, _):
                meta = pf.metadata
        except FileNotFoundError:
            continue  # another compactor got there first
        except Exception as e:
            catalog.mark_invalid(f, f"unreadable Parquet footer: {e}")  # verify() will quarantine it
            continue
        if meta.num_rows < small_rows and _mergeable(meta):
            candidates.append((f, meta.num_rows))
    result = {"task": task, "merged_files": 0, "rows": 0, "unique_rows": 0, "files": []}
    if len(candidates) < 2:
        return result
    batches, batch, acc = [], [], 0  # groups of files of at most max_rows rows
    for f, n in candidates:
        if batch and acc + n > max_rows:
            batches.append(batch)
            batch, acc = [], 0
        batch.append(f)
        acc += n
    batches.append(batch)
    for files in batches:
        if len(files) < 2:
            continue
        table, merged, raw_rows = _merge(sfs, catalog, files)
        if not merged:
            continue
        name = f"part-compact-{new_writer_id()}-{int(time.time())}.parquet"
        path = sfs.join("experiments", PARTITION_PREFIX + task, name)
        meta = {**EXPERIMENT_SCHEMA.metadata, DEDUPLICATED_KEY: b"1"}
        with sfs.atomic_output(path) as sink:
            pq.write_table(file_table(table.replace_schema_metadata(meta)), sink, compression=COMPACT_COMPRESSION,
                           use_dictionary=DICTIONARY_COLUMNS, row_group_size=COMPACT_ROW_GROUP)
        # The merged file is visible: its rows now exist twice, which reads deduplicate exactly.
        for f in merged:
            sfs.remove(f.path)
        result["merged_files"] += len(merged)
        result["rows"] += raw_rows
        result["unique_rows"] += table.num_rows
        result["files"].append(sfs.relpath(path))
    return result


def compact(sfs: StoreFS, catalog: FileCatalog, task: str | None = None, **kw: Any) -> dict[str, Any]:
    tasks = [task] if task is not None else catalog.tasks()
    parts = [compact_partition(sfs, catalog, t, **kw) for t in sorted(tasks)]
    done = [p for p in parts if p["merged_files"]]
    return {"partitions": done, "merged_files": sum(p["merged_files"] for p in done),
            "files_written": sum(len(p["files"]) for p in done), "rows": sum(p["rows"] for p in done),
            "unique_rows": sum(p["unique_rows"] for p in done)}


def _quarantine(sfs: StoreFS, f: FileInfo) -> str:
    rel = sfs.relpath(f.path)
    dst = sfs.join("quarantine", rel)
    if sfs.exists(dst):
        dst = f"{dst}.{int(time.time() * 1000)}"
    sfs.move(f.path, dst)
    return rel


def verify(sfs: StoreFS, catalog: FileCatalog, *, deep: bool = False,
           stale_seconds: float = STALE_TMP_SECONDS) -> dict[str, Any]:
    """Check every experiments file; move the ones readers would skip to ``quarantine/``.

    Every file's footer, schema and partition (``_check.structure``) and the decoding of
    every page; ``deep`` also re-derives each row's experiment_id from its fields. Temp files
    of writers that died before publishing are quarantined once older than ``stale_seconds``.
    ``problems`` maps each quarantined file to why.
    """
    bad, stale, checked, problems = [], [], 0, {}
    for task in catalog.tasks():
        for f in sfs.listdir(catalog.partition_dir(task)):
            if f.size < 0:
                continue
            if f.name.startswith(TMP_PREFIX):
                if _age(f) > stale_seconds:
                    stale.append(_quarantine(sfs, f))
                continue
            if not (f.name.startswith("part-") and f.name.endswith(".parquet")):
                continue
            checked += 1
            try:
                problem = structure(sfs, f)[0] or pages_problem(sfs, f, rows=deep)
            except FileNotFoundError:
                continue  # removed by a compaction meanwhile
            if problem is not None:
                bad.append(_quarantine(sfs, f))
                problems[bad[-1]] = problem
    return {"checked": checked, "ok": checked - len(bad), "quarantined": bad, "stale_temp": stale,
            "problems": problems}


def _age(f: FileInfo) -> float:
    try:
        stamp = float(f.mtime)
    except (TypeError, ValueError):
        return 0.0
    if stamp > 1e15:  # nanoseconds (local stat)
        stamp /= 1e9
    return time.time() - stamp
