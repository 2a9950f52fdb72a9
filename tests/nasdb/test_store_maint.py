"""verify (quarantine of bad files), compaction, vanished-file retries and schema evolution."""

from __future__ import annotations

import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nasdb.store import EXPERIMENT_SCHEMA, ExperimentStore
from nasdb.store.testing import make_record, row_of, same_value


@pytest.fixture
def store(tmp_path):
    s = ExperimentStore(str(tmp_path / "store"))
    s.init()
    return s


def write_files(store, n_files: int, per_file: int = 10, task: str = "alpha") -> list:
    recs = [make_record(i, task) for i in range(n_files * per_file)]
    with store.writer("w", flush_rows=per_file) as w:
        for r in recs:
            w.append(r)
    return recs


def part_files(store, task="alpha") -> list[str]:
    d = store.path("experiments", f"task={task}")
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.startswith("part-"))


def test_truncated_file_is_quarantined_and_reads_keep_working(store):
    write_files(store, 3)
    victim = part_files(store)[1]
    data = open(victim, "rb").read()
    with open(victim, "wb") as f:  # a writer killed mid-write on a filesystem without atomic rename
        f.write(data[: len(data) // 2])
    assert store.count() == 20  # the bad file is skipped, never fatal
    assert store.top_k("alpha", 3).num_rows == 3
    assert store.query("SELECT count(*) AS n FROM experiments").column("n")[0].as_py() == 20
    report = store.verify()
    rel = os.path.relpath(victim, store.root)
    assert report["quarantined"] == [rel] and report["checked"] == 3 and report["ok"] == 2
    assert os.path.exists(os.path.join(store.root, "quarantine", rel)) and not os.path.exists(victim)
    assert store.count() == 20 and store.verify()["quarantined"] == []


def test_corrupt_file_with_a_valid_looking_footer_is_left_out(store):
    write_files(store, 2)
    victim = part_files(store)[0]
    with open(victim, "wb") as f:  # garbage that ends like Parquet: passes the cheap check
        f.write(b"PAR1" + os.urandom(300) + (10).to_bytes(4, "little") + b"PAR1")
    assert store.count() == 10  # the footer fails to parse: left out before any read, no retry needed
    assert store.verify()["quarantined"] == [os.path.relpath(victim, store.root)]


def test_stale_temp_files_are_quarantined(store):
    write_files(store, 1)
    d = store.path("experiments", "task=alpha")
    old = os.path.join(d, "_tmp-part-x-000000.parquet-ab.tmp")
    fresh = os.path.join(d, "_tmp-part-y-000000.parquet-cd.tmp")
    for p in (old, fresh):
        open(p, "wb").write(b"PAR1 half")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    report = store.verify()
    assert report["stale_temp"] == [os.path.relpath(old, store.root)] and os.path.exists(fresh)
    assert store.count() == 10


def test_compaction_merges_small_files_and_keeps_rows(store):
    recs = write_files(store, 6, per_file=7)
    with store.writer("retry", flush_rows=3) as w:  # duplicates from retries
        for r in recs[:9]:
            w.append(r)
    before = {r["experiment_id"]: r for r in store.experiments_arrow(status=None).to_pylist()}
    raw_before = store.query("SELECT count(*) AS n FROM experiments_raw").column("n")[0].as_py()
    result = store.compact()
    assert result["merged_files"] == 9 and result["files_written"] == 1 and result["rows"] == raw_before
    assert len(part_files(store)) == 1
    after = {r["experiment_id"]: r for r in store.experiments_arrow(status=None).to_pylist()}
    assert after.keys() == before.keys()
    for eid in before:
        assert all(same_value(after[eid][k], before[eid][k]) for k in before[eid])
    assert store.compact()["merged_files"] == 0  # nothing left to merge
    assert store.top_k("alpha", 5).num_rows == 5


def test_read_started_before_compaction_retries_after_files_vanish(store):
    write_files(store, 5)
    calls = []

    def count(conn, snap):
        calls.append(len(snap.paths))
        if len(calls) == 1:
            store.compact()  # the listed files vanish between listing and reading
        return conn.sql(f"SELECT count(*) FROM read_parquet({snap.paths!r})").fetchall()[0][0]

    assert store.read("alpha", count) == 50
    assert calls == [5, 1] and store.read_retries == 1


def test_old_file_without_a_later_column_still_reads(store):
    recs = write_files(store, 1, per_file=6)
    old = [make_record(100 + i) for i in range(4)]
    table = pa.Table.from_pylist([row_of(r) | {"schema_version": 0} for r in old], schema=EXPERIMENT_SCHEMA)
    table = table.drop_columns(["relaxed_weights", "stopped_early", "predicted_final"]).replace_schema_metadata(None)
    pq.write_table(table, store.path("experiments", "task=alpha", "part-oldwriter-000000.parquet"))
    assert store.count() == 10
    rows = {r["experiment_id"]: r for r in store.experiments_arrow(status=None).to_pylist()}
    for r in old:
        assert rows[r.experiment_id]["relaxed_weights"] is None and rows[r.experiment_id]["stopped_early"] is None
        assert rows[r.experiment_id]["schema_version"] == 0
    for r in recs:
        assert rows[r.experiment_id]["stopped_early"] == r.stopped_early
    described = store.query("DESCRIBE experiments").column("column_name").to_pylist()
    assert described == EXPERIMENT_SCHEMA.names
    # a store holding only old files still exposes every column
    only_old = ExperimentStore(store.root)
    for f in part_files(only_old):
        if "oldwriter" not in f:
            os.remove(f)
    assert only_old.query("SELECT count(relaxed_weights) AS n FROM experiments").column("n")[0].as_py() == 0
    assert only_old.top_k("alpha", 2).schema.names == EXPERIMENT_SCHEMA.names
    some = only_old.experiments_arrow("alpha", status=None, columns=["stopped_early", "predicted_final", "seed"])
    assert some.schema.names == ["stopped_early", "predicted_final", "seed"] and some.num_rows == 4
    assert some.column("stopped_early").null_count == 4 and some.column("predicted_final").null_count == 4
    store.compact()  # merging old and new files fills the missing columns with nulls
    assert store.count() == 4


def test_compaction_leaves_files_of_a_newer_schema_alone(store):
    write_files(store, 2)
    newer = pa.Table.from_pylist([row_of(make_record(500))], schema=EXPERIMENT_SCHEMA)
    newer = newer.append_column("future_col", pa.array([1.5])).replace_schema_metadata({"nasdb.schema_version": "99"})
    path = store.path("experiments", "task=alpha", "part-future-000000.parquet")
    pq.write_table(newer, path)
    assert store.count() == 21
    assert store.compact()["merged_files"] == 2
    assert os.path.exists(path) and store.count() == 21
    assert "future_col" in store.experiments_arrow().column_names  # newer columns are kept on read
