"""The experiment store: an append-only, lock-free Parquet database read through in-memory DuckDB.

Layout under the root (a local folder or any fsspec URI; README, "Store layout")::

    store.json                      marker written by init()
    spaces/<space_id>.json          search spaces
    tasks/<task>/                   registered tasks: samples.parquet + metadata.json
                                    (imported benchmarks, nasdb.benchmarks: metadata.json only)
    experiments/task=<task>/part-<writer>-<seq>.parquet
    predictors/<id>/                predictor checkpoints (predictor/checkpoint.py)
    aliases/<name>.json             predictor aliases such as champion (predictor/registry.py)
    search/<run_id>/                a search run's plan, agent checkpoint and result (search/_driver.py)
    quarantine/                     files verify() found unreadable, at their relative path

The last three areas hold whole-file artifacts, written through ``artifacts(area)``
(nasdb/store/_artifacts.py): each file atomically, the commit file last.

One row per trained child model: the "database of model training experiments" of
task-aware-performance-prediction.md Sec. 3.2, to which new tasks only add rows (Sec. 3).
Writers never share a file and rows are deduplicated on read by their deterministic
experiment_id, so retried writes are counted once.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence, TypeVar

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from nasdb.errors import (ArgumentError, InvalidTaskError, NotFoundError, QueryError, SchemaError, StoreError,
                          TaskExistsError, TaskHasNoSamplesError, UnknownTaskError)
from nasdb.store import _maint
from nasdb.store._artifacts import ArtifactArea
from nasdb.store._check import read_table
from nasdb.store._fs import StoreFS, open_store_fs
from nasdb.store._queries import lookup_rows, top_k_rows
from nasdb.store._read import (FileCatalog, Reader, Snapshot, connect, fetch, full_raw_source, sql_list, sql_str,
                              unique_rows)
from nasdb.store._schema import EXPERIMENT_SCHEMA, SCHEMA_VERSION, check_task_name, conform
from nasdb.store._sql import check_parsed, check_read_only, check_timeout, run_interruptible
from nasdb.store._writer import ExperimentWriter

T = TypeVar("T")
ENV_VAR = "NASDB_STORE"
MARKER = "store.json"
LAYOUT = ("spaces", "tasks", "experiments", "predictors", "quarantine")
METRICS = ("val_accuracy", "test_accuracy", "train_seconds", "num_params", "epochs")
TASK_SAMPLES, TASK_METADATA = "samples.parquet", "metadata.json"
#: ``source`` of a task registered without samples (an imported tabular benchmark), and the
#: metadata keys that identify one: a second registration must agree on all of them.
BENCHMARK_SOURCE = "benchmark"
BENCHMARK_IDENTITY = ("source", "benchmark", "dataset", "package", "package_version", "space_id", "metric",
                      "performance")


def provenance_fingerprint(metadata: Mapping[str, Any]) -> str:
    """The data fingerprint of an imported benchmark task (16 hex chars): a hash of its provenance
    (BENCHMARK_IDENTITY: package and version, dataset, metric...), which pins the table's rows."""
    key = json.dumps({k: metadata.get(k) for k in BENCHMARK_IDENTITY}, sort_keys=True, default=str)
    return hashlib.sha256(b"nasdb-benchmark-v1:" + key.encode()).hexdigest()[:16]


def _builtin_names() -> list[str]:
    from nasdb import tasks

    return sorted({n for suite in tasks.SUITES.values() for n in suite})


class ExperimentStore:
    """The database of child-model training experiments under one root.

    Thread-safe; any number of processes may read while any number write (each through its
    own ExperimentWriter). Reads see the files published when they start.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, fsync: bool = True):
        root = os.fspath(root) if root is not None else os.environ.get(ENV_VAR)
        if not root:
            raise StoreError(f"no store given: pass a root (--store ROOT) or set {ENV_VAR}")
        self._sfs: StoreFS = open_store_fs(str(root), fsync=fsync)
        self.root = self._sfs.root  # fs-native (an object store's without its scheme): use with self.fs
        self.fs = self._sfs.fs
        self._catalog = FileCatalog(self._sfs)
        self._reader = Reader(self._sfs, self._catalog)
        self._lock = threading.RLock()
        self._conn: duckdb.DuckDBPyConnection | None = None

    def __repr__(self) -> str:
        return f"ExperimentStore({self.uri!r})"

    @property
    def uri(self) -> str:
        """The store's address for another process (a Ray actor, a Serve replica, a Train
        worker, a CLI): ``ExperimentStore(store.uri)`` reopens this store on any node. A local
        folder's absolute path, else the full URI with its scheme; never ``root``, which an
        object store gives without its scheme (``bucket/prefix``, a relative local path)."""
        return self._sfs.uri

    # -- layout ------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """fs-native path under the root (use with ``self.fs``), e.g. ``path("predictors", pid)``."""
        return self._sfs.join(*parts)

    def artifacts(self, area: str) -> ArtifactArea:
        """The artifact area ``area`` (``predictors``, ``aliases``, ``search``): atomic put, get, list, delete."""
        return ArtifactArea(self._sfs, area)

    def exists(self) -> bool:
        return self._sfs.exists(self.path(MARKER)) or self._sfs.exists(self.path("experiments"))

    def init(self) -> None:
        """Create the layout; idempotent. StoreError when the root cannot hold it (a file, no permission)."""
        try:
            for d in LAYOUT:
                self._sfs.makedirs(self.path(d))
        except (NotADirectoryError, FileExistsError, PermissionError) as e:
            raise StoreError(f"store {self.uri!r} is not writable: cannot create its folders ({e.strerror or e})") from e
        if not self._sfs.exists(self.path(MARKER)):
            marker = {"format": "nasdb-store", "schema_version": SCHEMA_VERSION,
                      "created_at": datetime.now(timezone.utc).isoformat()}
            self._sfs.write_bytes(self.path(MARKER), json.dumps(marker, indent=1).encode())

    def require(self) -> None:
        """StoreError unless the store has been initialized (reads never create it)."""
        if not self.exists():
            raise StoreError(f"no nasdb store at {self.uri!r} (create it with `nasdb --store {self.uri} init`)")

    # -- writing -----------------------------------------------------------------------
    def writer(self, worker: str, *, flush_rows: int = 500, flush_seconds: float | None = 5.0) -> ExperimentWriter:
        """A buffered appender for one worker (context manager; ``append``/``extend``/``append_table``)."""
        self.init()
        return ExperimentWriter(self._sfs, worker, flush_rows=flush_rows, flush_seconds=flush_seconds)

    # -- search spaces -----------------------------------------------------------------
    def save_space(self, space: Any) -> str:
        """Store a SearchSpace under its content id (idempotent); returns the id."""
        self.init()
        path = self.path("spaces", f"{space.space_id}.json")
        if not self._sfs.exists(path):
            self._sfs.write_bytes(path, space.to_json().encode())
        return space.space_id

    def space(self, space_id: str) -> Any:
        from nasdb.space import SearchSpace

        path = self.path("spaces", f"{space_id}.json")
        if not self._sfs.exists(path):
            known = ", ".join(self.spaces()) or "none"
            raise NotFoundError(f"no search space {space_id!r} in the store (known: {known})")
        return SearchSpace.from_json(self._sfs.read_bytes(path).decode())

    def spaces(self) -> dict[str, Any]:
        """{space_id: SearchSpace} of every stored space."""
        from nasdb.space import SearchSpace

        out = {}
        for f in self._sfs.listdir(self.path("spaces")):
            if f.size >= 0 and f.name.endswith(".json") and not f.name.startswith(("_", ".")):
                out[f.name[:-5]] = SearchSpace.from_json(self._sfs.read_bytes(f.path).decode())
        return out

    # -- tasks -------------------------------------------------------------------------
    def registered_tasks(self) -> list[str]:
        return sorted(f.name for f in self._sfs.listdir(self.path("tasks"))
                      if f.size < 0 and not f.name.startswith(("_", "."))
                      and self._sfs.exists(self._sfs.join("tasks", f.name, TASK_METADATA)))

    def save_task(self, task: Any) -> bool:
        """Register a user task (samples + metadata), atomically; never overwrites a task or a built-in name.

        Returns True if registered now, False if the same data is already registered under the
        name (a no-op); TaskExistsError naming both fingerprints if other data is.
        """
        name = task.name
        try:
            check_task_name(name)
        except SchemaError as e:
            raise InvalidTaskError(str(e)) from None
        if name in _builtin_names():
            raise TaskExistsError(f"task name {name!r} is taken by a built-in task; choose another name")
        self.init()
        final = self.path("tasks", name)
        if self._sfs.exists(self._sfs.join("tasks", name, TASK_METADATA)):
            return not self._same_task_data(name, task.fingerprint)
        metadata = json.dumps({**task.metadata(), "format": 1}, indent=1, sort_keys=True).encode()
        if self._sfs.is_local:  # a complete folder appears under its name in one rename
            tmp = self.path("tasks", f"_tmp-{name}-{secrets.token_hex(4)}")
            self._sfs.makedirs(tmp)
            try:
                pq.write_table(task.to_arrow(), f"{tmp}/{TASK_SAMPLES}")
                with open(f"{tmp}/{TASK_METADATA}", "wb") as f:
                    f.write(metadata)
                self._sfs.publish_dir(tmp, final)
            except FileExistsError:
                raise TaskExistsError(f"task {name!r} is already registered in the store; choose another name") from None
            finally:
                self._sfs.remove_tree(tmp)
        else:  # object stores: samples first, metadata (the commit marker) last
            with self._sfs.atomic_output(self._sfs.join("tasks", name, TASK_SAMPLES)) as sink:
                pq.write_table(task.to_arrow(), sink)
            self._sfs.write_bytes(self._sfs.join("tasks", name, TASK_METADATA), metadata)
        return True

    def _same_task_data(self, name: str, fingerprint: Callable[[], str]) -> bool:
        """True if ``name`` is registered with data of ``fingerprint()``; else TaskExistsError naming both."""
        held = self.task_fingerprint(name)
        if self.task_metadata(name).get("source") == BENCHMARK_SOURCE:
            raise TaskExistsError(f"task {name!r} is already registered as an imported tabular benchmark "
                                  f"(fingerprint {held}); register it under another name")
        given = fingerprint()
        if held != given:
            raise TaskExistsError(f"task {name!r} is already registered with other data (fingerprint {held} in the "
                                  f"store, {given} given); register it under another name")
        return True

    def task_fingerprint(self, name: str) -> str:
        """The fingerprint of the data task ``name`` holds now (what rows record, schema v3): its
        samples' ``Task.fingerprint()``, or an imported benchmark's ``provenance_fingerprint``.
        Registered tasks are answered from their metadata (samples are not read)."""
        meta_path = self._sfs.join("tasks", name, TASK_METADATA) if isinstance(name, str) else None
        if meta_path and not name.startswith(("_", ".")) and "/" not in name and self._sfs.exists(meta_path):
            meta = json.loads(self._sfs.read_bytes(meta_path))
            if meta.get("source") == BENCHMARK_SOURCE:
                return provenance_fingerprint(meta)
            if meta.get("fingerprint"):
                return str(meta["fingerprint"])
        return self.task(name).fingerprint()

    def check_benchmark_task(self, metadata: Mapping[str, Any]) -> bool:
        """Whether a task without samples can be registered: False if new, True if the same one already is.

        TaskExistsError if the name is built in, or registered as a user task or as another
        benchmark table (any of BENCHMARK_IDENTITY differs, e.g. another package version).
        """
        name = metadata.get("name")
        try:
            check_task_name(name)
        except SchemaError as e:
            raise InvalidTaskError(str(e)) from None
        if metadata.get("source") != BENCHMARK_SOURCE:
            raise InvalidTaskError(f"task {name!r}: only tasks with source {BENCHMARK_SOURCE!r} are registered "
                                   f"without samples, got source {metadata.get('source')!r}")
        if name in _builtin_names():
            raise TaskExistsError(f"task name {name!r} is taken by a built-in task")
        if name not in self.registered_tasks():
            return False
        old = self.task_metadata(name)
        differ = {k: (old.get(k), metadata.get(k)) for k in BENCHMARK_IDENTITY if old.get(k) != metadata.get(k)}
        if differ:
            raise TaskExistsError(f"task {name!r} is already registered with other provenance (fingerprint "
                                  f"{provenance_fingerprint(old)} in the store, {provenance_fingerprint(metadata)} "
                                  f"given: {', '.join(f'{k}: {a!r} != {b!r}' for k, (a, b) in differ.items())})")
        return True

    def register_benchmark_task(self, metadata: Mapping[str, Any]) -> bool:
        """Register a task without samples (``tasks/<name>/metadata.json`` only); idempotent.

        Returns True if it was registered now, False if the same task already was (see
        ``check_benchmark_task``). ``task(name)`` of such a task raises TaskHasNoSamplesError.
        """
        if self.check_benchmark_task(metadata):
            return False
        self.init()
        data = json.dumps({**metadata, "format": 1}, indent=1, sort_keys=True, allow_nan=False).encode()
        self._sfs.write_bytes(self._sfs.join("tasks", metadata["name"], TASK_METADATA), data)
        return True

    def task(self, name: str) -> Any:
        """A registered task, else a built-in one; UnknownTaskError naming both lists.

        TaskHasNoSamplesError for a registered task without samples (an imported benchmark).
        """
        from nasdb import tasks

        meta_path = self._sfs.join("tasks", name, TASK_METADATA) if isinstance(name, str) else None
        if meta_path and not name.startswith(("_", ".")) and "/" not in name and self._sfs.exists(meta_path):
            meta = json.loads(self._sfs.read_bytes(meta_path))
            if meta.get("source") == BENCHMARK_SOURCE:
                raise TaskHasNoSamplesError(f"task {name!r} is an imported tabular benchmark "
                                            f"({meta.get('benchmark')}) and has no samples")
            table = read_table(self._sfs, self._sfs.join("tasks", name, TASK_SAMPLES))  # no Python file in Arrow threads
            task = tasks.Task.from_arrow(name, table, num_classes=int(meta["num_classes"]), source=meta["source"],
                                         description=meta.get("description", ""))
            if meta.get("fingerprint") and task.fingerprint() != meta["fingerprint"]:
                raise StoreError(f"registered task {name!r} is corrupt: its samples do not match its fingerprint")
            return task
        try:
            return tasks.load_builtin_task(name)
        except UnknownTaskError:
            registered = ", ".join(self.registered_tasks()) or "none"
            raise UnknownTaskError(f"unknown task {name!r}: not registered in the store (registered: {registered}) "
                                   f"and not built in (built-in: {', '.join(_builtin_names())})") from None

    def task_names(self) -> list[str]:
        """Every task the store knows: built in, registered, or with experiments."""
        self.require()
        return sorted(set(_builtin_names()) | set(self.registered_tasks()) | set(self._catalog.tasks()))

    def task_metadata(self, name: str, *, load: bool = True) -> dict[str, Any]:
        """A task's metadata (name, source, classes, sizes, fingerprint); registered tasks' samples are not read.

        An imported benchmark task (source "benchmark") has its provenance instead of classes and sizes.

        With ``load=False`` a built-in task is described from its spec without building it
        (no fingerprint), which keeps listing every built-in task fast.
        """
        if name in self.registered_tasks():
            meta = json.loads(self._sfs.read_bytes(self._sfs.join("tasks", name, TASK_METADATA)))
            meta.pop("format", None)
            return {**meta, "registered": True}
        from nasdb.tasks import builtin_task_info

        summary = None if load else builtin_task_info(name)
        return {**(summary or self.task(name).metadata()), "registered": False}

    # -- reading -----------------------------------------------------------------------
    def read(self, task: str | None, fn: Callable[[duckdb.DuckDBPyConnection, Snapshot], T]) -> T:
        """``fn(conn, snapshot)`` over one listing of the valid experiment files of ``task`` (all
        tasks if None; ``snapshot.paths``), started over when files vanish under it (a concurrent
        compaction): every read of the store goes through here. ``read_retries`` counts the restarts."""
        self.require()
        if task is not None:
            check_task_name(task)
        return self._reader.run(task, fn)

    @property
    def read_retries(self) -> int:
        """Reads this store object started over because files vanished under them (observability)."""
        return self._reader.retries

    def _connection(self) -> duckdb.DuckDBPyConnection:
        with self._lock:
            if self._conn is None:
                self._conn = connect(self._sfs)
            return self._conn

    def experiments(self, task: str | None = None, *, status: str | None = "ok") -> duckdb.DuckDBPyRelation:
        """Deduplicated experiments as a lazy DuckDB relation over the files published now.

        The relation lists files when called: if a compaction removes them before it runs,
        call again (``experiments_arrow`` retries by itself).
        """
        self.require()
        if task is not None:
            check_task_name(task)
        snap = self._catalog.snapshot(task)
        conn = self._connection()
        return conn.sql(f"SELECT * FROM {unique_rows(snap, full_schema=True)} {_status_where(status)}")

    def experiments_arrow(self, task: str | None = None, *, status: str | None = "ok",
                          columns: Sequence[str] | None = None) -> pa.Table:
        """Deduplicated experiments (EXPERIMENT_SCHEMA), ordered by created_at then experiment_id.

        ``columns`` reads only those (in that order): an imported benchmark task holds a
        quarter of a million rows, and its curves and recipes are most of their bytes.
        """
        if columns is None:
            select, full = "*", False
        else:
            columns = list(columns)
            unknown = [c for c in columns if c not in EXPERIMENT_SCHEMA.names]
            if unknown or not columns:
                raise ArgumentError(f"unknown experiment column(s) {unknown or columns}; known: {EXPERIMENT_SCHEMA.names}")
            select, full = ", ".join(f'"{c}"' for c in dict.fromkeys(columns)), True  # old files lack new columns

        def fn(conn, snap):
            return fetch(conn, f"SELECT {select} FROM {unique_rows(snap, full_schema=full)} {_status_where(status)} "
                               "ORDER BY created_at, experiment_id")
        table = conform(self.read(task, fn))
        return table if columns is None else table.select(columns)

    def top_k(self, task: str, k: int = 10, metric: str = "val_accuracy", *, descending: bool = True) -> pa.Table:
        """The ``k`` best ok experiments of one task by ``metric`` (NaN/inf never rank)."""
        if metric not in METRICS:
            raise ArgumentError(f"metric must be one of {METRICS}, got {metric!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ArgumentError(f"k must be a positive int, got {k!r}")

        def fn(conn, snap):
            return top_k_rows(conn, self._sfs, snap, k, metric, descending)
        return conform(self.read(task, fn))

    def task_stats(self) -> pa.Table:
        """Per task: rows, ok, failed, best and median val/test accuracy of ok rows (finite values)."""
        def agg(col: str, fn: str) -> str:
            return f"{fn}({col}) FILTER (WHERE status = 'ok' AND isfinite({col}))"

        def fn(conn, snap):
            cols = "task, experiment_id, status, val_accuracy, test_accuracy"
            return fetch(conn, (
                f"SELECT task, count(*)::BIGINT AS rows, count(*) FILTER (WHERE status = 'ok')::BIGINT AS ok, "
                f"count(*) FILTER (WHERE status = 'failed')::BIGINT AS failed, "
                f"{agg('val_accuracy', 'max')} AS best_val_accuracy, {agg('val_accuracy', 'median')} AS median_val_accuracy, "
                f"{agg('test_accuracy', 'max')} AS best_test_accuracy, {agg('test_accuracy', 'median')} AS median_test_accuracy "
                f"FROM {unique_rows(snap, cols)} GROUP BY task ORDER BY task"))
        return self.read(None, fn)

    def done_ids(self, task: str | None = None, *, status: str | None = None) -> set[str]:
        """Experiment ids present (any status unless given): what a resumed run skips."""
        def fn(conn, snap):
            return fetch(conn, f"SELECT experiment_id FROM {unique_rows(snap, 'experiment_id, status')} "
                               f"{_status_where(status)}")
        return set(self.read(task, fn).column("experiment_id").to_pylist())

    def count(self, task: str | None = None, status: str | None = None) -> int:
        """Number of distinct experiments (deduplicated), optionally of one status."""
        def fn(conn, snap):
            return conn.sql(f"SELECT count(*) FROM {unique_rows(snap, 'experiment_id, status')} "
                            f"{_status_where(status)}").fetchall()[0][0]
        return int(self.read(task, fn))

    def experiment(self, experiment_id: str) -> dict[str, Any]:
        """One experiment's row as a dict; KeyError naming the id if the store has none."""
        def fn(conn, snap):
            return lookup_rows(conn, self._sfs, snap, [experiment_id])
        rows = conform(self.read(None, fn)).to_pylist()
        if not rows:
            raise NotFoundError(f"no experiment {experiment_id!r} in the store")
        return rows[0]

    def query(self, sql: str, *, timeout: float | None = None) -> pa.Table:
        """Run one read-only SQL statement over the views ``experiments`` (deduplicated) and ``experiments_raw``.

        Refused (ReadOnlyQueryError) unless it is a single read; it runs in a DuckDB sandbox
        that can open only the store's experiment files and cannot change its settings.
        Ctrl-C stops it, and so does ``timeout`` seconds (QueryTimeoutError; None: no limit). A
        statement DuckDB refuses (a syntax error, an unknown column) raises QueryError.
        """
        sql = check_read_only(sql)
        timeout = check_timeout(timeout)
        self.require()
        running: list[duckdb.DuckDBPyConnection] = []

        def fn(conn, snap):
            running[:] = [conn]
            check_parsed(conn, sql)
            conn.execute(f"CREATE VIEW experiments_raw AS {full_raw_source(snap.paths)}")
            conn.execute(f"CREATE VIEW experiments AS SELECT * FROM {unique_rows(snap, full_schema=True)}")
            conn.execute(f"SET allowed_paths = {sql_list(snap.paths)}")
            conn.execute("SET enable_external_access = false")
            conn.execute("SET lock_configuration = true")
            return fetch(conn, sql)
        try:
            return run_interruptible(lambda: self._reader.run(None, fn, fresh=True),
                                     lambda: running[0] if running else None, timeout)
        except duckdb.Error as e:  # what a bad file causes was retried by the reader: the statement's own fault
            raise QueryError(str(e)) from e

    def export(self, out: str, *, format: str = "parquet", task: str | None = None) -> int:
        """Write the deduplicated experiments (all statuses) to a local file; returns the row count."""
        if format not in ("parquet", "csv"):
            raise ArgumentError(f"export format must be 'parquet' or 'csv', got {format!r}")
        table = self.experiments_arrow(task, status=None)
        conn = duckdb.connect()
        try:
            conn.execute("SET TimeZone = 'UTC'")
            conn.register("_export", table)
            conn.execute(f"COPY (SELECT * FROM _export) TO {sql_str(os.fspath(out))} (FORMAT {format})")
        finally:
            conn.close()
        return table.num_rows

    # -- files and maintenance -----------------------------------------------------------
    def storage(self) -> dict[str, dict[str, int]]:
        """{task: {"files": n, "bytes": b}} of the published experiments files (valid or not)."""
        self.require()
        out: dict[str, dict[str, int]] = {}
        for f in self._catalog.listed():
            task = f.path.rsplit("/", 2)[-2].split("=", 1)[1]
            s = out.setdefault(task, {"files": 0, "bytes": 0})
            s["files"] += 1
            s["bytes"] += f.size
        return dict(sorted(out.items()))

    def compact(self, task: str | None = None, *, small_rows: int = _maint.SMALL_FILE_ROWS) -> dict[str, Any]:
        """Merge each partition's small files into one (safe while others read and write)."""
        self.require()
        if task is not None:
            check_task_name(task)
        return _maint.compact(self._sfs, self._catalog, task, small_rows=small_rows)

    def verify(self, *, deep: bool = False) -> dict[str, Any]:
        """Quarantine experiments files that are not valid Parquet; returns what was checked and moved."""
        self.require()
        return _maint.verify(self._sfs, self._catalog, deep=deep)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _status_where(status: str | None) -> str:
    if status is None:
        return ""
    if status not in ("ok", "failed"):
        raise ArgumentError(f"status must be 'ok', 'failed' or None, got {status!r}")
    return f"WHERE status = '{status}'"
