"""The writer: flush by count, by time (with no further append), on close and at exit; thread safety; atomicity."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from nasdb.errors import StoreError
from nasdb.store import ExperimentStore
from nasdb.store.testing import make_record


@pytest.fixture
def store(tmp_path):
    s = ExperimentStore(str(tmp_path / "store"))
    s.init()
    return s


def files(store) -> list[str]:
    return sorted(p for p in os.listdir(store.path("experiments", "task=alpha")) if not p.startswith("."))


def test_flush_by_count(store):
    w = store.writer("w", flush_rows=10, flush_seconds=None)
    for i in range(25):
        w.append(make_record(i))
    assert store.count() == 20 and w.buffered_rows == 5 and w.files_written == 2
    w.close()
    assert store.count() == 25 and w.rows_written == 25


def test_flush_by_time_without_further_appends(store):
    w = store.writer("w", flush_rows=1000, flush_seconds=0.3)
    w.extend([make_record(i) for i in range(3)])
    assert store.count() == 0
    deadline = time.time() + 10
    while store.count() < 3 and time.time() < deadline:
        time.sleep(0.05)
    assert store.count() == 3 and w.buffered_rows == 0
    w.append(make_record(3))  # the timer keeps working after a flush
    deadline = time.time() + 10
    while store.count() < 4 and time.time() < deadline:
        time.sleep(0.05)
    assert store.count() == 4
    w.close()


def test_flush_on_close_and_no_reuse(store):
    with store.writer("w", flush_rows=1000, flush_seconds=60) as w:
        w.extend([make_record(i) for i in range(7)])
        assert store.count() == 0
    assert store.count() == 7 and w.closed
    w.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        w.append(make_record(99))


def test_flush_at_interpreter_exit(store):
    code = (
        "from nasdb.store import ExperimentStore\n"
        "from nasdb.store.testing import make_record\n"
        f"w = ExperimentStore({store.root!r}).writer('exit', flush_rows=1000, flush_seconds=600)\n"
        "w.extend([make_record(i) for i in range(5)])\n"  # never closed
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    assert store.count() == 5


def test_thread_safe_append(store):
    w = store.writer("threads", flush_rows=37, flush_seconds=0.05)

    def work(t: int) -> None:
        for i in range(150):
            w.append(make_record(t * 1000 + i))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert store.count() == 900 and w.rows_written == 900
    assert store.query("SELECT count(*) AS n FROM experiments_raw").column("n")[0].as_py() == 900


def test_files_are_published_atomically_and_named_per_writer(store):
    with store.writer("a", flush_rows=5) as a, store.writer("b", flush_rows=5) as b:
        for i in range(10):
            (a if i % 2 else b).append(make_record(i))
        assert a.writer_id != b.writer_id
    names = files(store)
    assert len(names) == 2 and all(n.startswith("part-") and n.endswith(".parquet") for n in names)
    assert {n.rsplit("-", 1)[0] for n in names} == {f"part-{a.writer_id}", f"part-{b.writer_id}"}


def test_failed_background_flush_keeps_rows_and_surfaces(store, monkeypatch):
    w = store.writer("w", flush_rows=1000, flush_seconds=0.1)
    real = w._write
    calls = []

    def failing(table):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk full")
        real(table)

    monkeypatch.setattr(w, "_write", failing)
    w.extend([make_record(i) for i in range(4)])
    deadline = time.time() + 10
    while not calls and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    with pytest.raises(StoreError, match="disk full"):
        w.append(make_record(4))
    w.close()
    assert store.count() == 4  # nothing lost; record 4 was refused with the error


def test_forked_writer_starts_empty(store):
    w = store.writer("w", flush_rows=1000, flush_seconds=None)
    w.extend([make_record(i) for i in range(3)])
    parent_id = w.writer_id
    w._pid = -1  # what a forked child sees: another process's writer
    w.append(make_record(10))
    assert w.buffered_rows == 1 and w.writer_id != parent_id
    w.close()
    assert store.count() == 1


def test_writer_arguments_are_checked(store):
    with pytest.raises(ValueError, match="worker"):
        store.writer("")
    with pytest.raises(ValueError, match="flush_rows"):
        store.writer("w", flush_rows=0)
    with pytest.raises(ValueError, match="flush_seconds"):
        store.writer("w", flush_seconds=0)
