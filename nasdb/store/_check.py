"""Which experiments files a reader may trust, and reading Parquet files without stray threads.

One bad file must never take the store down (issue 15). A file is checked at three depths,
each only when the cheaper one passed:

- ``footer``: the last 8 bytes look like a Parquet footer (one tiny read; catches empty,
  truncated and garbage files);
- ``structure``: the parsed footer has every core column, every known column has its type
  family (string, int, float, ...), and its rows belong to the partition's task (the ``task``
  column's min/max statistics, else that one column read); catches foreign files, wrong
  column types and rows filed under another task. Readers run these two, cached per
  (path, size, mtime), so a file is parsed once per process;
- ``pages``: every page decoded (catches corrupted pages behind an intact footer). Readers
  run it only after a read failed, on the file the error names or else on each file of the
  read; ``verify`` runs it on every file. ``rows`` (``verify --deep``) also re-derives every
  experiment_id from its fields.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nasdb.store._fs import FileInfo, StoreFS
from nasdb.store._schema import EXPERIMENT_SCHEMA, NULLABLE_COLUMNS, compute_ids, conform

logger = logging.getLogger("nasdb.store")

#: Columns every experiments file has, now and in every later schema version (never drop one).
CORE_COLUMNS = ("task", "experiment_id", "status", "created_at", "worker", "run_id", "val_accuracy", "space_id",
                "test_accuracy", "seed", "architecture", "train_seconds", "num_params", "epochs")
#: Footer key of files written by compaction, which hold each experiment_id once.
DEDUPLICATED_KEY = b"nasdb.deduplicated"
PARTITION_PREFIX = "task="


@contextlib.contextmanager
def parquet_file(sfs: StoreFS, path: str) -> Iterator[tuple[pq.ParquetFile, bool]]:
    """``(ParquetFile, use_threads)`` of a store file: pass ``use_threads`` to its ``read*`` calls.

    A local file is opened by its path (pyarrow's native IO, threads allowed). Any other is
    read through its fsspec handle with pre-buffering and threads off: a Python file object
    read from pyarrow's IO threads made about 1 in 10 processes abort at interpreter shutdown
    ("terminate called without an active exception", SIGABRT; issue 15).
    """
    if sfs.is_local:
        with pq.ParquetFile(path) as pf:
            yield pf, True
    else:
        with sfs.fs.open(path, "rb") as fh, pq.ParquetFile(fh, pre_buffer=False) as pf:
            yield pf, False


def read_metadata(sfs: StoreFS, path: str) -> pq.FileMetaData:
    """The parsed footer of a store file (a local file by its path; no threads involved)."""
    if sfs.is_local:
        return pq.read_metadata(path)
    with sfs.fs.open(path, "rb") as fh:
        return pq.read_metadata(fh)


def read_table(sfs: StoreFS, path: str, columns: list[str] | None = None) -> pa.Table:
    """The whole file (or ``columns``) as a table, read as ``parquet_file`` explains."""
    with parquet_file(sfs, path) as (pf, threads):
        return pf.read(columns=columns, use_threads=threads)


def partition_task(f: FileInfo) -> str | None:
    """The task of the ``task=<name>`` folder holding ``f`` (None outside a partition)."""
    parent = f.path.rstrip("/").rsplit("/", 2)
    return parent[-2][len(PARTITION_PREFIX):] if len(parent) >= 2 and parent[-2].startswith(PARTITION_PREFIX) else None


def footer_ok(sfs: StoreFS, f: FileInfo) -> bool:
    """Cheap check that ``f`` is a complete Parquet file: its last 8 bytes are a sane footer."""
    if f.size < 12:
        return False
    try:
        tail = sfs.tail(f.path, 8, f.size)
    except FileNotFoundError:
        raise
    except OSError:
        return False
    return len(tail) == 8 and tail[4:] == b"PAR1" and int.from_bytes(tail[:4], "little") + 12 <= f.size


@functools.lru_cache(maxsize=256)
def _family(t: pa.DataType) -> str:
    """A type's family: what a reader may cast between (int32/int64, string/large_string, ...)."""
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", bool)(t):
        return "string"
    for name, test in (("int", pa.types.is_integer), ("float", pa.types.is_floating), ("bool", pa.types.is_boolean),
                       ("timestamp", pa.types.is_timestamp), ("null", pa.types.is_null)):
        if test(t):
            return name
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"list<{_family(t.value_type)}>"
    return str(t)


def schema_problem(schema: pa.Schema) -> str | None:
    """Why ``schema`` is not one of an experiments file (any version), or None if it is.

    Every core column must be there; a known column must have its type family (a null-typed
    column is accepted where the schema allows nulls); columns of a newer version are kept.
    """
    names = schema.names
    types = dict(zip(names, schema.types))
    missing = [c for c in CORE_COLUMNS if c not in types]
    if missing:
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        return f"not an experiments file: lacks column(s) {', '.join(missing)} (has {shown or 'none'})"
    if len(types) != len(names):
        return "not an experiments file: a column name appears twice"
    for name, want in _EXPECTED.items():
        got = types.get(name)
        if got is None or got == want:
            continue
        if _family(got) != _family(want) and not (_family(got) == "null" and name in NULLABLE_COLUMNS):
            return f"column {name!r} has type {got}, expected {want}"
    return None


_EXPECTED = dict(zip(EXPERIMENT_SCHEMA.names, EXPERIMENT_SCHEMA.types))


def _task_problem(sfs: StoreFS, f: FileInfo, meta: pq.FileMetaData, task: str) -> str | None:
    """Whether every row of ``f`` is of ``task``: row-group statistics, else the task column read."""
    leaf = next((j for j in range(meta.num_columns) if meta.schema.column(j).path == "task"), None)
    if leaf is None:
        return "not an experiments file: no task column"
    stats = [meta.row_group(g).column(leaf).statistics for g in range(meta.num_row_groups)]
    if all(s is not None and s.has_min_max and s.has_null_count for s in stats):
        if not any(s.null_count or s.min != task or s.max != task for s in stats):
            return None
    values = pc.unique(read_table(sfs, f.path, columns=["task"]).column("task")).to_pylist()
    other = sorted((v for v in values if v != task), key=str)
    if other:
        return f"holds rows of task {other[0]!r} in the partition of task {task!r}"
    return None


def structure(sfs: StoreFS, f: FileInfo) -> tuple[str | None, bool]:
    """``(problem or None, deduplicated)`` from the footer alone (and, rarely, the task column).

    ``deduplicated``: written by compaction, one row per experiment_id (footer metadata).
    FileNotFoundError if ``f`` vanished (compaction removed it).
    """
    if not footer_ok(sfs, f):
        return "not a complete Parquet file (no valid footer: empty, truncated or not Parquet)", False
    try:
        meta = read_metadata(sfs, f.path)
        schema = meta.schema.to_arrow_schema()
    except FileNotFoundError:
        raise
    except Exception as e:  # any parse failure means "not valid Parquet"
        return f"unreadable Parquet footer: {_short(e)}", False
    problem = schema_problem(schema)
    task = partition_task(f)
    if problem is None and task is not None:
        try:
            problem = _task_problem(sfs, f, meta, task)
        except FileNotFoundError:
            raise
        except Exception as e:
            problem = f"unreadable task column: {_short(e)}"
    return problem, (meta.metadata or {}).get(DEDUPLICATED_KEY) == b"1"


def pages_problem(sfs: StoreFS, f: FileInfo, *, rows: bool = False) -> str | None:
    """Why decoding every page of ``f`` fails (None if it does not); ``rows`` also re-derives each id."""
    try:
        table = read_table(sfs, f.path)
    except FileNotFoundError:
        raise
    except Exception as e:
        return f"unreadable pages: {_short(e)}"
    if rows and table.num_rows:
        try:
            ids = compute_ids(conform(table))
        except Exception as e:
            return f"rows do not fit the experiment schema: {_short(e)}"
        stored = table.column("experiment_id").cast(pa.string())
        bad = pc.invert(pc.fill_null(pc.equal(stored, ids), False))
        n = pc.sum(bad).as_py() or 0
        if n:
            return f"{n} row(s) whose experiment_id does not match their fields"
    return None


def warn_skipped(sfs: StoreFS, f: FileInfo, problem: str) -> None:
    """One warning line naming the file readers leave out (``nasdb verify`` quarantines it)."""
    logger.warning("warning: skipping experiments file %s: %s (`nasdb verify` moves it to quarantine/)",
                   sfs.relpath(f.path), problem)


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__
