"""No silent surprises at the command line (issue 15): bad input is refused before anything starts.

Queries stop on Ctrl-C and after --timeout; populate refuses a store that does not exist, sizes
above their memory bound and impossible resource shares before Ray starts; serve refuses a bad
--refresh-seconds before Ray starts; tasks add refuses too many classes, fractional labels,
reserved names and duplicate columns; a local publish fsyncs the folder after the rename.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

from nasdb.cli import main
from nasdb.store import ExperimentStore, QueryTimeoutError
from nasdb.store.testing import make_record

LONG_QUERY = "SELECT sum(i) FROM range(100000000000000) t(i)"  # hours of work


@pytest.fixture
def store(tmp_path):
    s = ExperimentStore(str(tmp_path / "store"))
    s.init()
    with s.writer("w", flush_rows=5) as w:
        for i in range(10):
            w.append(make_record(i))
    return s


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_query_stops_at_its_timeout(store):
    t0 = time.monotonic()
    r = invoke("--store", store.root, "query", "--timeout", "1", LONG_QUERY)
    assert r.exit_code == 1 and "time limit of 1 s" in r.output, r.output
    assert time.monotonic() - t0 < 30
    with pytest.raises(QueryTimeoutError):
        store.query(LONG_QUERY, timeout=0.5)
    assert store.query("SELECT count(*) AS n FROM experiments", timeout=30).column("n")[0].as_py() == 10
    for bad in ("0", "-1", "nan"):
        r = invoke("--store", store.root, "query", "--timeout", bad, "SELECT 1")
        assert r.exit_code != 0 and "timeout" in r.output, r.output


def test_query_stops_on_ctrl_c(store):
    # Python's own SIGINT handler, as in a terminal: a library that ran earlier in this process
    # (Ray's driver) may have installed another one
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))  # a real SIGINT to this process
    t0 = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            store.query(LONG_QUERY, timeout=120)  # the limit only bounds a failure of this test
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - t0 < 30
    assert store.count() == 10  # the store is fine afterwards


def test_commands_other_than_init_refuse_a_missing_store(tmp_path):
    missing = str(tmp_path / "nope")
    for args in (["stats"], ["verify"], ["query", "SELECT 1"],
                 ["populate", "--tasks", "digits10_small", "--per-task", "2", "--no-progress"]):
        r = invoke("--store", missing, *args)
        assert r.exit_code == 1 and "no nasdb store" in r.output and missing in r.output, (args, r.output)
        assert not os.path.exists(missing)
    assert invoke("--store", missing, "init").exit_code == 0 and os.path.isdir(missing)


@pytest.mark.parametrize("args, match", [
    (["--per-task", "1000000000"], "per-task 1000000000 is above the limit of 100,000"),
    (["--per-task", "2", "--batch-size-models", "100000"], "batch-size-models 100000 is above the limit of 1,024"),
    (["--per-task", "2", "--cpus-per-worker", "nan"], "`cpus per worker` must be a finite number > 0, but got nan"),
    (["--per-task", "2", "--cpus-per-worker", "0"], "`cpus per worker` must be a finite number > 0, but got 0"),
    (["--per-task", "2", "--gpus-per-worker", "-1"], "gpus per worker must be 0, a fraction of 1"),
    (["--per-task", "2", "--gpus-per-worker", "1.5"], "gpus per worker must be 0, a fraction of 1"),
])
def test_populate_refuses_bad_sizes_before_ray_starts(store, args, match):
    import ray

    before = ray.is_initialized()  # the session's shared cluster may be up already (an earlier test)
    r = invoke("--store", store.root, "populate", "--tasks", "digits10_small", "--no-progress", *args)
    assert r.exit_code == 1 and match in r.output, r.output
    assert ray.is_initialized() == before  # refused before any Ray was started


@pytest.mark.parametrize("value, match", [("-1", "not in the range"), ("nan", "is not a number"),
                                          ("1e12", "not in the range")])
def test_serve_refuses_a_bad_refresh_before_anything_starts(store, value, match):
    import ray

    before = ray.is_initialized()  # the session's shared cluster may be up already (an earlier test)
    t0 = time.monotonic()
    r = invoke("--store", store.root, "serve", "--allow-unauthenticated", "--refresh-seconds", value)
    assert r.exit_code == 2 and "--refresh-seconds" in r.output and match in r.output, r.output
    assert ray.is_initialized() == before and time.monotonic() - t0 < 10


def _csv(path, labels, *, header=None):
    rng = np.random.default_rng(0)
    cols = header or [f"f{i}" for i in range(64)] + ["y"]
    with open(path, "w") as f:
        f.write(",".join(cols) + "\n")
        for lab in labels:
            f.write(",".join(f"{v:.3f}" for v in rng.random(64)) + f",{lab}\n")
    return str(path)


def test_tasks_add_refuses_what_later_steps_cannot_use(store, tmp_path):
    def add(name, path):
        return invoke("--store", store.root, "tasks", "add", name, "--from", path, "--label", "y")

    many = _csv(tmp_path / "many.csv", [i % 101 for i in range(303)])
    r = add("many", many)
    assert r.exit_code == 1 and "101 distinct labels; a task takes at most 100 classes" in r.output, r.output
    frac = _csv(tmp_path / "frac.csv", [0.5 + i % 3 for i in range(30)])
    r = add("frac", frac)
    assert r.exit_code == 1 and "label 0.5 at row 0 is not a whole number" in r.output, r.output
    whole = _csv(tmp_path / "whole.csv", [float(i % 3) for i in range(30)])  # 0.0, 1.0, 2.0: classes
    assert add("whole", whole).exit_code == 0
    for name in ("CON", "nul", "Com1", "lpt9.data", "aux.txt"):
        r = add(name, whole)
        assert r.exit_code == 1 and f"task name {name!r} is reserved" in r.output, r.output
    assert add("console", whole).exit_code == 0  # only the device names themselves are reserved
    header = [f"f{i}" for i in range(64)] + ["y"]
    header[5] = "f3"
    dup = _csv(tmp_path / "dup.csv", [i % 3 for i in range(30)], header=header)
    r = add("dup", dup)
    assert r.exit_code == 1 and "column name 'f3' appears more than once" in r.output, r.output


def test_a_local_publish_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):  # records what is synced, then syncs it
        st = os.fstat(fd)
        synced.append(("dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_ino))
        return real_fsync(fd)

    store = ExperimentStore(str(tmp_path / "store"))
    store.init()
    monkeypatch.setattr(os, "fsync", recording_fsync)
    with store.writer("w", flush_rows=5) as w:
        for i in range(5):
            w.append(make_record(i))
    partition = os.stat(store.path("experiments", "task=alpha")).st_ino
    experiments = os.stat(store.path("experiments")).st_ino
    assert ("dir", partition) in synced and ("dir", experiments) in synced  # the new name and the new folder
    assert synced.index(("dir", partition)) > max(i for i, s in enumerate(synced) if s[0] == "file")
