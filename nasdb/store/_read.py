"""Reading the experiments: the file catalog, the in-memory DuckDB views, and retried reads.

Readers never trust a glob. They list ``experiments/task=*/part-*.parquet`` themselves, keep
the files whose footer and schema check out (``_check.structure``: a Parquet footer,
the experiments columns and types, rows of the partition's task; cached per (path, size,
mtime)), and hand DuckDB the explicit list. A file that vanishes between listing and reading
(compaction removed it) makes the read start over from a new listing; a read that fails
although every footer looked fine has its files' pages checked (the one the error names
first) and the bad ones left out, with a warning naming each. So any number of processes
read while others write or compact, and one bad file never fails a read.

Each process keeps one in-memory DuckDB engine (a cursor per read; no database file) with
Parquet footer caching on, since files never change under their names. Partitions made of
one compacted file are known to hold each experiment_id once and skip deduplication.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence, TypeVar

import duckdb
import pyarrow as pa

from nasdb.errors import StoreError
from nasdb.store._check import CORE_COLUMNS, PARTITION_PREFIX, pages_problem, structure, warn_skipped
from nasdb.store._fs import FileInfo, StoreFS
from nasdb.store._schema import EXPERIMENT_SCHEMA

T = TypeVar("T")
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
#: Which of two rows with one experiment_id is kept: an ok row first, then the earliest.
DEDUP_ORDER = "(status <> 'ok'), created_at, worker, run_id, val_accuracy"
DEDUP_COLUMNS = CORE_COLUMNS[:7]  # task, experiment_id, status, created_at, worker, run_id, val_accuracy
#: How long a read keeps starting over while files vanish under it (compaction).
RETRY_SECONDS = 60.0
#: Threads that check the footers of files a process has not seen yet.
CHECK_THREADS = 8
#: Errors of the statement itself (or its interruption): no file can be to blame, nothing is checked.
_SQL_ERRORS = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
               duckdb.PermissionException, duckdb.SyntaxException, duckdb.InterruptException,
               duckdb.ConversionException, duckdb.OutOfRangeException, duckdb.TypeMismatchException,
               duckdb.NotImplementedException)
#: Errors of a read that a bad file can cause (its pages are then checked).
_READ_ERRORS = (duckdb.Error, OSError, pa.ArrowException)


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def sql_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(sql_str(v) for v in values) + "]"


class FileCatalog:
    """The valid experiments files of a store, listed fresh on every call (validity is cached)."""

    def __init__(self, sfs: StoreFS):
        self.sfs = sfs
        self.dir = sfs.join("experiments")
        self._checked: dict[tuple[str, int, Any], tuple[str | None, bool]] = {}  # (problem, deduplicated)
        self._pages_ok: set[tuple[str, int, Any]] = set()
        self._lock = threading.Lock()

    def tasks(self) -> list[str]:
        return [e.name[len(PARTITION_PREFIX):] for e in self.sfs.listdir(self.dir)
                if e.size < 0 and e.name.startswith(PARTITION_PREFIX)]

    def partition_dir(self, task: str) -> str:
        return self.sfs.join("experiments", PARTITION_PREFIX + task)

    def listed(self, task: str | None = None) -> list[FileInfo]:
        """Every published part file (valid or not) of one task or of all."""
        names = [task] if task is not None else self.tasks()
        return [f for t in names for f in self.sfs.listdir(self.partition_dir(t))
                if f.size >= 0 and f.name.startswith(PART_PREFIX) and f.name.endswith(PART_SUFFIX)]

    def problem(self, f: FileInfo) -> str | None:
        """Why readers leave ``f`` out (``_check.structure``, cached; a warning when first found), or None."""
        key = (f.path, f.size, f.mtime)
        if key not in self._checked:
            problem, dedup = structure(self.sfs, f)
            with self._lock:
                self._checked[key] = (problem, dedup)
            if problem is not None:
                warn_skipped(self.sfs, f, problem)
        return self._checked[key][0]

    def is_valid(self, f: FileInfo) -> bool:
        return self.problem(f) is None

    def mark_invalid(self, f: FileInfo, problem: str = "unreadable") -> None:
        """Leave ``f`` out of later reads of this process (warns once)."""
        key = (f.path, f.size, f.mtime)
        with self._lock:
            known = self._checked.get(key, (None, False))[0]
            self._checked[key] = (known or problem, False)
        if known is None:
            warn_skipped(self.sfs, f, problem)

    def pages_problem(self, f: FileInfo) -> str | None:
        """Why ``f``'s pages do not decode (every page read once per process), or None."""
        key = (f.path, f.size, f.mtime)
        if key not in self._pages_ok:
            problem = pages_problem(self.sfs, f)
            if problem is not None:
                return problem
            with self._lock:
                self._pages_ok.add(key)
        return None

    def files(self, task: str | None = None) -> list[FileInfo]:
        """The listed files that pass the footer and schema checks (a vanished one is left out).

        Files not checked yet in this process are checked in threads (footer reads wait on I/O).
        """
        listed = self.listed(task)
        new = [f for f in listed if (f.path, f.size, f.mtime) not in self._checked]
        if len(new) > CHECK_THREADS:
            with ThreadPoolExecutor(CHECK_THREADS, thread_name_prefix="nasdb-check") as pool:
                list(pool.map(self._check_quietly, new))
        return [f for f in listed if self._check_quietly(f)]

    def _check_quietly(self, f: FileInfo) -> bool:
        try:
            return self.is_valid(f)
        except FileNotFoundError:
            return False  # removed since the listing (compaction): its rows are in the merged file

    def deduplicated(self, f: FileInfo) -> bool:
        """Whether ``f`` was written by compaction with one row per experiment_id (footer metadata, cached)."""
        self.problem(f)
        return self._checked[(f.path, f.size, f.mtime)][1]

    def snapshot(self, task: str | None = None) -> "Snapshot":
        """The valid files now, split into partitions known to be duplicate-free and the rest."""
        files = self.files(task)
        by_partition: dict[str, list[FileInfo]] = {}
        for f in files:
            by_partition.setdefault(f.path.rsplit("/", 1)[0], []).append(f)
        clean, dirty = [], []
        for part in by_partition.values():
            ok = len(part) == 1 and self.deduplicated(part[0])
            (clean if ok else dirty).extend(self.sfs.duckdb_path(f.path) for f in part)
        return Snapshot(files, clean, dirty)


@dataclass(frozen=True)
class Snapshot:
    """The files a read runs over: ``clean`` partitions hold each experiment_id once (one compacted file)."""

    files: list[FileInfo]
    clean: list[str]
    dirty: list[str]

    @property
    def paths(self) -> list[str]:
        return self.clean + self.dirty


_ENGINE: duckdb.DuckDBPyConnection | None = None
_ENGINE_PID = 0
_ENGINE_LOCK = threading.Lock()


def _engine() -> duckdb.DuckDBPyConnection:
    """This process's in-memory DuckDB for reads of local stores (created once: it costs ~10-40 ms)."""
    global _ENGINE, _ENGINE_PID
    with _ENGINE_LOCK:
        if _ENGINE is None or _ENGINE_PID != os.getpid():
            _ENGINE = duckdb.connect()
            _ENGINE.execute("SET TimeZone = 'UTC'")
            # Files are immutable under their names, so parsed footers can be reused by later reads.
            _ENGINE.execute("SET parquet_metadata_cache = true")
            _ENGINE_PID = os.getpid()
        return _ENGINE.cursor()


def connect_engine() -> duckdb.DuckDBPyConnection:
    """A cursor of this process's engine, for work on in-memory Arrow data."""
    return _engine()


def connect(sfs: StoreFS, *, fresh: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that can reach the store's files (never a shared database file).

    Local stores get a cursor of one per-process engine; ``fresh`` (the read-only sandbox,
    which locks its configuration) and non-local stores (whose filesystem registration must
    not leak to another store) get a database of their own.
    """
    if fresh or not sfs.is_local:
        conn = duckdb.connect()
        conn.execute("SET TimeZone = 'UTC'")
        sfs.prepare_duckdb(conn)
    else:
        conn = _engine()
    conn.register("_nasdb_empty", EXPERIMENT_SCHEMA.empty_table())
    return conn


def raw_source(paths: Sequence[str], *, row_ids: bool = False, by_name: bool = True) -> str:
    """FROM-clause source over the given files (the empty typed table when there are none).

    ``by_name`` unifies the files' schemas (old files lack later columns), which makes DuckDB
    read every footer before it starts; queries that use only CORE_COLUMNS, which every file
    has, pass ``by_name=False`` and are several times faster over many files.
    """
    if not paths:
        extra = ", NULL::VARCHAR AS filename, NULL::BIGINT AS file_row_number" if row_ids else ""
        return f"(SELECT *{extra} FROM _nasdb_empty)"
    opts = ", filename = true, file_row_number = true" if row_ids else ""
    return f"read_parquet({sql_list(paths)}, union_by_name = {str(by_name).lower()}, hive_partitioning = false{opts})"


def full_raw_source(paths: Sequence[str]) -> str:
    """Like ``raw_source`` but always with every current column (old files lack later ones)."""
    if not paths:
        return "(SELECT * FROM _nasdb_empty)"
    return f"(SELECT * FROM _nasdb_empty UNION ALL BY NAME SELECT * FROM {raw_source(paths)})"


def dedup_sql(source: str, columns: str = "*") -> str:
    """One row per experiment_id (the ok one, then the earliest): exact counts despite retried writes."""
    return (f"SELECT {columns} FROM {source} "
            f"QUALIFY row_number() OVER (PARTITION BY task, experiment_id ORDER BY {DEDUP_ORDER}) = 1")


def _split_dedup(source: str, columns: str) -> str:
    """``dedup_sql`` that ranks only the ids seen more than once (a window over every row costs 3x more)."""
    if columns == "*":
        inner = "*"
    else:
        wanted = [c.strip() for c in columns.split(",")]
        inner = ", ".join(dict.fromkeys(wanted + list(DEDUP_COLUMNS)))
    return (f"WITH _r AS (SELECT {inner} FROM {source}), "
            f"_d AS (SELECT experiment_id FROM _r GROUP BY experiment_id HAVING count(*) > 1) "
            f"SELECT {columns} FROM _r ANTI JOIN _d USING (experiment_id) "
            f"UNION ALL BY NAME SELECT {columns} FROM (SELECT * FROM _r SEMI JOIN _d USING (experiment_id) "
            f"QUALIFY row_number() OVER (PARTITION BY task, experiment_id ORDER BY {DEDUP_ORDER}) = 1)")


def unique_rows(snap: Snapshot, columns: str = "*", *, full_schema: bool = False) -> str:
    """A subquery with one row per experiment_id over ``snap``: clean partitions as they are, the rest deduplicated.

    ``columns`` other than "*" must be CORE_COLUMNS (then the files are read by position, fast).
    """
    if full_schema:
        source = full_raw_source
    elif columns == "*":
        source = raw_source
    else:
        source = partial(raw_source, by_name=False)
    parts = []
    if snap.clean:
        parts.append(f"SELECT {columns} FROM {source(snap.clean)}")
    if snap.dirty:
        parts.append(_split_dedup(source(snap.dirty), columns))
    if not parts:
        return f"(SELECT {columns} FROM _nasdb_empty)"
    return "(" + " UNION ALL BY NAME ".join(f"({p})" for p in parts) + ")"


class Reader:
    """Runs read functions over a fresh file listing, starting over when the files moved underneath."""

    def __init__(self, sfs: StoreFS, catalog: FileCatalog):
        self.sfs, self.catalog = sfs, catalog
        self.retries = 0  # reads started over because files moved underneath (observability)

    def run(self, task: str | None, fn: Callable[[duckdb.DuckDBPyConnection, Snapshot], T], *,
            fresh: bool = False) -> T:
        """``fn(conn, snapshot)`` over the valid files of ``task`` (all tasks if None).

        Starts over (with a short, growing pause) for as long as files keep vanishing under it,
        up to ``RETRY_SECONDS``: a compaction removes each partition's files once, so a long
        read over many partitions may need a few attempts.
        """
        last: Exception | None = None
        deadline = time.monotonic() + RETRY_SECONDS
        pause = 0.005
        while True:
            try:
                snap = self.catalog.snapshot(task)
            except FileNotFoundError as e:  # a file vanished while its footer was being read
                last = e
            else:
                c = connect(self.sfs, fresh=fresh)
                try:
                    return fn(c, snap)
                except _SQL_ERRORS:
                    raise  # the statement itself is wrong: no file can be to blame
                except _READ_ERRORS as e:
                    last = e
                    if not (self._moved(task, snap.files) or self._drop_unreadable(snap.files, e)):
                        raise
                finally:
                    c.close()
            self.retries += 1
            if time.monotonic() > deadline:
                raise StoreError(f"experiments files kept changing for {RETRY_SECONDS:.0f} s of read attempts: {last}")
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def _moved(self, task: str | None, files: list[FileInfo]) -> bool:
        now = {(f.path, f.size, f.mtime) for f in self.catalog.listed(task)}
        return any((f.path, f.size, f.mtime) not in now for f in files)

    def _drop_unreadable(self, files: list[FileInfo], error: BaseException) -> bool:
        """Check the pages of the read's files (first the one ``error`` names) and leave the bad ones out.

        Reading every page costs a full read, but happens only after a read failed, once per file
        and process; True if a file was left out (or has vanished), so the read can start over.
        """
        text = str(error)
        named = [f for f in files if f.path in text or self.sfs.duckdb_path(f.path) in text]
        for group in (named, [f for f in files if f not in named]):
            dropped = False
            for f in group:
                try:
                    problem = self.catalog.pages_problem(f)
                except FileNotFoundError:
                    return True  # gone: the next listing will not have it
                if problem is not None:
                    self.catalog.mark_invalid(f, problem)
                    dropped = True
            if dropped:
                return True
        return False


def fetch(conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None) -> pa.Table:
    return (conn.sql(sql, params=list(params)) if params else conn.sql(sql)).to_arrow_table()
