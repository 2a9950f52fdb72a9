"""The append-only writer: buffers rows, writes new immutable files, never touches another writer's.

Each writer has a unique id (host-pid-random) and names its files
``experiments/task=<task>/part-<writer>-<seq>.parquet``, published atomically, so writers need
no lock between them. Rows are flushed when ``flush_rows`` are buffered (checked on append),
when the oldest buffered row is ``flush_seconds`` old (a background thread, so rows reach the
store even if no further append comes), and on ``close`` (context manager exit, or at
interpreter exit as a best effort).
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import socket
import threading
import time
import weakref
from functools import partial
from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nasdb.errors import ArgumentError, StoreError
from nasdb.store._fs import StoreFS
from nasdb.store._read import PARTITION_PREFIX, PART_PREFIX, PART_SUFFIX
from nasdb.store._schema import ExperimentRecord, records_to_table, table_from_columns

_OPEN_WRITERS: "weakref.WeakSet[ExperimentWriter]" = weakref.WeakSet()
#: Writers favour speed (snappy); compaction rewrites for size (zstd). Only the low-cardinality
#: string columns are dictionary-encoded: trying it on floats and lists costs 3-4x the write time.
PARQUET_COMPRESSION = "snappy"
COMPACT_COMPRESSION = "zstd"
DICTIONARY_COLUMNS = ["task", "space_id", "recipe", "agent", "run_id", "device", "worker", "status", "error"]


def new_writer_id() -> str:
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


#: How ``task`` is typed in the files: as the hive key ``task=<name>`` is typed by pandas and
#: pyarrow's partition discovery, so ``pd.read_parquet(STORE/experiments)`` merges the two.
FILE_TASK_TYPE = pa.dictionary(pa.int32(), pa.string())


def file_table(table: pa.Table) -> pa.Table:
    """``table`` as written to an experiments file: ``task`` dictionary-encoded (FILE_TASK_TYPE).

    A plain string ``task`` column next to the ``task=<name>`` folder key makes pandas and
    pyarrow.dataset fail ("Field task has incompatible types: string vs dictionary"). Parquet
    stores the values the same way either way (DuckDB and older nasdb read VARCHAR); only the
    embedded Arrow schema differs, so files of both kinds stay readable.
    """
    i = table.schema.get_field_index("task")
    if i < 0 or table.schema.field(i).type == FILE_TASK_TYPE:
        return table
    column = table.column(i).cast(pa.string()).dictionary_encode()
    return table.set_column(i, table.schema.field(i).with_type(FILE_TASK_TYPE), column)


def _write_part(table: pa.Table, sink) -> None:
    pq.write_table(file_table(table), sink, compression=PARQUET_COMPRESSION, use_dictionary=DICTIONARY_COLUMNS)


class ExperimentWriter:
    """Buffered, thread-safe appender of experiment rows for one worker.

    ``append``/``extend`` take ExperimentRecords; ``append_table`` takes a columnar pyarrow
    table (the fast path, see ``nasdb.store._schema.table_from_columns``). Use as a context
    manager, or call ``close``; a writer cannot be reused after closing.
    """

    def __init__(self, sfs: StoreFS, worker: str, *, flush_rows: int = 500, flush_seconds: float | None = 5.0):
        if not isinstance(worker, str) or not worker:
            raise ArgumentError(f"worker must be a non-empty string, got {worker!r}")
        if isinstance(flush_rows, bool) or not isinstance(flush_rows, int) or flush_rows < 1:
            raise ArgumentError(f"flush_rows must be a positive int, got {flush_rows!r}")
        if flush_seconds is not None and not flush_seconds > 0:
            raise ArgumentError(f"flush_seconds must be > 0 or None, got {flush_seconds!r}")
        self.sfs, self.worker = sfs, worker
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.rows_written = self.files_written = 0
        self._reset_process_state()
        _OPEN_WRITERS.add(self)

    def _reset_process_state(self) -> None:
        """Everything tied to this process (after a fork the child starts over, empty)."""
        self._pid = os.getpid()
        self.writer_id = new_writer_id()
        self._seq = 0
        self._lock = threading.Condition(threading.Lock())
        self._io_lock = threading.Lock()
        self._tables: list[pa.Table] = []
        self._rows = 0
        self._oldest: float | None = None
        self._closed = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _check(self) -> None:
        if self._pid != os.getpid():  # forked: the buffered rows belong to the parent
            self._reset_process_state()
        if self._closed:
            raise StoreError(f"writer {self.writer_id} of worker {self.worker!r} is closed")
        if self._error is not None:
            err, self._error = self._error, None
            raise StoreError(f"background flush of writer {self.writer_id} failed: {err}") from err

    # -- appending -------------------------------------------------------------------
    def append(self, record: ExperimentRecord) -> None:
        self.extend([record])

    def extend(self, records: Iterable[ExperimentRecord]) -> None:
        records = list(records)
        if records:
            self._buffer(records_to_table(records))

    def append_table(self, table: pa.Table) -> None:
        """Append a columnar batch (columns of EXPERIMENT_SCHEMA; defaults filled, ids computed)."""
        if table.num_rows:
            self._buffer(table_from_columns(table, worker=self.worker))

    def _buffer(self, table: pa.Table) -> None:
        self._check()
        with self._lock:
            self._tables.append(table)
            self._rows += table.num_rows
            if self._oldest is None:
                self._oldest = time.monotonic()
                self._lock.notify_all()
            full = self._rows >= self.flush_rows
            if self._thread is None and self.flush_seconds is not None:
                self._thread = threading.Thread(target=self._timer, name=f"nasdb-flush-{self.writer_id}", daemon=True)
                self._thread.start()
        if full:
            self.flush()

    @property
    def buffered_rows(self) -> int:
        return self._rows

    @property
    def closed(self) -> bool:
        return self._closed

    # -- flushing --------------------------------------------------------------------
    def _timer(self) -> None:
        while True:
            with self._lock:
                while not self._closed and self._oldest is None:
                    self._lock.wait()
                if self._closed:
                    return
                due = self._oldest + self.flush_seconds - time.monotonic()
                if due > 0:
                    self._lock.wait(due)
                    continue
            try:
                self.flush()
            except BaseException as e:  # surfaced on the next append/flush/close
                self._error = e
                time.sleep(min(self.flush_seconds, 1.0))

    def flush(self) -> int:
        """Write every buffered row now; returns the number of rows written."""
        if self._pid != os.getpid():
            self._check()
        with self._io_lock:
            with self._lock:
                tables, rows = self._tables, self._rows
                self._tables, self._rows, self._oldest = [], 0, None
            if not tables:
                return 0
            try:
                self._write(pa.concat_tables(tables))
            except BaseException:
                with self._lock:  # keep the rows; a retry may duplicate some, which reads deduplicate
                    self._tables[:0] = tables
                    self._rows += rows
                    self._oldest = self._oldest or time.monotonic()
                raise
            self.rows_written += rows
            return rows

    def _write(self, table: pa.Table) -> None:
        """One new file per task in ``table``, each published atomically (fsynced together)."""
        tasks = sorted(pc.unique(table.column("task")).to_pylist())
        items = []
        for i, task in enumerate(tasks):
            part = table if len(tasks) == 1 else table.filter(pc.equal(table.column("task"), task))
            name = f"{PART_PREFIX}{self.writer_id}-{self._seq + i:06d}{PART_SUFFIX}"
            items.append((self.sfs.join("experiments", PARTITION_PREFIX + task, name), partial(_write_part, part)))
        self._seq += len(tasks)  # never reuse a name, even if this write fails
        self.sfs.write_many(items)
        self.files_written += len(tasks)

    def close(self) -> None:
        """Flush and stop. Idempotent."""
        if self._pid != os.getpid():
            self._reset_process_state()
        if self._closed:
            return
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        _OPEN_WRITERS.discard(self)
        self.flush()
        if self._error is not None:
            err, self._error = self._error, None
            raise StoreError(f"background flush of writer {self.writer_id} failed: {err}") from err

    def __enter__(self) -> "ExperimentWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ExperimentWriter({self.writer_id!r}, worker={self.worker!r}, buffered={self._rows}, "
                f"written={self.rows_written})")


@atexit.register
def _close_open_writers() -> None:
    """Best effort: flush writers left open at interpreter exit (not run on SIGKILL / os._exit)."""
    for w in list(_OPEN_WRITERS):
        if w._pid == os.getpid():
            try:
                w.close()
            except Exception:
                pass
