"""The experiment store's API, run against every back end (local folder and an fsspec memory:// root).

Reads are checked against naive Python references (nasdb.store.testing): dedup, top-k, stats.
"""

from __future__ import annotations

import math
import secrets
import statistics

import numpy as np
import pyarrow as pa
import pytest

from nasdb.errors import QueryError, SchemaError, StoreError, UnknownTaskError
from nasdb.space import default_space
from nasdb.store import (EXPERIMENT_SCHEMA, SCHEMA_VERSION, ExperimentRecord, ExperimentStore, ReadOnlyQueryError,
                         TaskExistsError, experiment_id)
from nasdb.store.testing import RECIPE, SPACE_ID, make_record, naive_dedup, naive_top_k, row_of, same_value


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path):
    root = str(tmp_path / "store") if request.param == "local" else f"memory://nasdb-{secrets.token_hex(6)}"
    s = ExperimentStore(root)
    s.init()
    yield s
    s.close()
    if request.param == "memory":
        s.fs.rm(s.root, recursive=True)


def fill(store: ExperimentStore, n: int = 120, tasks=("alpha", "beta", "gamma"), flush_rows: int = 25) -> list:
    records = [make_record(i, tasks[i % len(tasks)]) for i in range(n)]
    with store.writer("w0", flush_rows=flush_rows) as w:
        for r in records:
            w.append(r)
    return records


def test_root_from_env_and_missing_root(monkeypatch, tmp_path):
    monkeypatch.delenv("NASDB_STORE", raising=False)
    with pytest.raises(StoreError, match="NASDB_STORE"):
        ExperimentStore()
    monkeypatch.setenv("NASDB_STORE", str(tmp_path / "s"))
    s = ExperimentStore()
    assert s.root == str(tmp_path / "s")
    with pytest.raises(StoreError, match="init"):
        s.count()  # reads never create a store
    s.init()
    assert s.count() == 0 and s.top_k("alpha").num_rows == 0 and s.task_stats().num_rows == 0


def test_rows_round_trip_exactly_including_nan_and_inf(store):
    records = fill(store)
    got = {r["experiment_id"]: r for r in store.experiments_arrow(status=None).to_pylist()}
    assert len(got) == len(records)
    for rec in records:
        row = got[rec.experiment_id]
        for k, v in row_of(rec).items():
            assert same_value(row[k], v), (k, row[k], v)
        assert row["schema_version"] == SCHEMA_VERSION
    vals = [r["val_accuracy"] for r in got.values()]
    assert any(math.isnan(v) for v in vals) and math.inf in vals and -math.inf in vals


def test_experiments_arrow_reads_only_the_columns_asked_for(store):
    fill(store)
    full = store.experiments_arrow("alpha", status=None)
    some = store.experiments_arrow("alpha", status=None, columns=["val_accuracy", "experiment_id", "predicted_final"])
    assert some.schema.names == ["val_accuracy", "experiment_id", "predicted_final"]
    assert some.schema.field("predicted_final").type == EXPERIMENT_SCHEMA.field("predicted_final").type
    expected = full.select(some.schema.names).to_pylist()
    assert len(expected) == some.num_rows and all(
        same_value(a[k], b[k]) for a, b in zip(some.to_pylist(), expected) for k in a)
    with pytest.raises(ValueError, match="unknown experiment column.*'nope'"):
        store.experiments_arrow("alpha", columns=["val_accuracy", "nope"])
    with pytest.raises(ValueError, match="unknown experiment column"):
        store.experiments_arrow("alpha", columns=[])


def test_retried_write_is_counted_once(store):
    rec = make_record(1, "alpha")
    with store.writer("w0") as w:
        w.append(rec)
    with store.writer("w1") as w:  # a retry from another process/worker writes the same experiment
        w.append(make_record(1, "alpha", worker="w0"))
    assert store.count() == 1 and store.count("alpha") == 1
    assert store.query("SELECT count(*) AS n FROM experiments_raw").column("n")[0].as_py() == 2
    assert store.done_ids() == {rec.experiment_id}


def test_dedup_prefers_ok_then_earliest(store):
    failed = make_record(2, "alpha", status="failed", error="boom")
    late_ok = make_record(2, "alpha", status="ok", val_accuracy=0.9, created_at=failed.created_at.replace(year=2030))
    early_ok = make_record(2, "alpha", status="ok", val_accuracy=0.1)
    assert failed.experiment_id == late_ok.experiment_id == early_ok.experiment_id
    with store.writer("w0") as w:
        w.extend([failed, late_ok, early_ok])
    rows = store.experiments_arrow(status=None).to_pylist()
    assert len(rows) == 1 and rows[0]["status"] == "ok" and rows[0]["val_accuracy"] == 0.1
    assert store.count(status="failed") == 0 and store.count(status="ok") == 1
    assert store.experiment(early_ok.experiment_id)["val_accuracy"] == 0.1
    assert store.top_k("alpha", 5).column("val_accuracy").to_pylist() == [0.1]


def test_reads_match_naive_references(store):
    records = fill(store, n=150)
    dupes = [make_record(i, ("alpha", "beta", "gamma")[i % 3], worker="w9") for i in range(0, 150, 7)]
    with store.writer("w9") as w:
        w.extend(dupes)
    rows = [row_of(r) for r in records + dupes]
    ref = naive_dedup(rows)
    assert store.count() == len(ref)
    for task in ("alpha", "beta", "gamma"):
        assert store.top_k(task, 7).column("experiment_id").to_pylist() == naive_top_k(rows, task, 7)
        assert store.top_k(task, 5, "test_accuracy").column("experiment_id").to_pylist() == \
            naive_top_k(rows, task, 5, "test_accuracy")
        assert store.count(task, status="failed") == sum(
            1 for r in ref.values() if r["task"] == task and r["status"] == "failed")
    stats = {r["task"]: r for r in store.task_stats().to_pylist()}
    for task, s in stats.items():
        mine = [r for r in ref.values() if r["task"] == task]
        ok_vals = [r["val_accuracy"] for r in mine if r["status"] == "ok" and math.isfinite(r["val_accuracy"])]
        assert s["rows"] == len(mine) and s["ok"] + s["failed"] == len(mine)
        assert s["best_val_accuracy"] == max(ok_vals)
        assert s["median_val_accuracy"] == pytest.approx(statistics.median(ok_vals))
    assert store.done_ids("beta") == {i for i, r in ref.items() if r["task"] == "beta"}
    assert store.done_ids(status="ok") == {i for i, r in ref.items() if r["status"] == "ok"}
    top = store.top_k("alpha", 3)
    assert top.schema.names == EXPERIMENT_SCHEMA.names
    rel = store.experiments("alpha")
    assert rel.aggregate("count(*)").fetchall()[0][0] == store.count("alpha", status="ok")


def test_columnar_append_matches_records(store):
    records = [make_record(i, "alpha") for i in range(40)]
    table = store_table = pa.Table.from_pylist([row_of(r) for r in records], schema=EXPERIMENT_SCHEMA)
    store_table = table.drop_columns(["experiment_id", "schema_version", "worker"])
    with store.writer("wcol") as w:
        w.append_table(store_table)
    got = {r["experiment_id"] for r in store.experiments_arrow(status=None).to_pylist()}
    assert got == {r.experiment_id for r in records}
    with pytest.raises(SchemaError, match="does not match"):
        bad = table.set_column(0, "experiment_id", pa.array(["0" * 24] * len(records)))
        store.writer("w").append_table(bad)
    with pytest.raises(SchemaError, match="lacks required"):
        store.writer("w").append_table(table.drop_columns(["seed"]))
    with pytest.raises(SchemaError, match="unknown experiment column"):
        store.writer("w").append_table(table.append_column("extra", pa.array([1] * len(records))))


def test_experiment_id_is_deterministic_and_sensitive():
    base = ("alpha", SPACE_ID, list(range(15)), 3, RECIPE)
    eid = experiment_id(*base)
    assert eid == experiment_id(*base) and len(eid) == 24
    assert eid == experiment_id("alpha", SPACE_ID, np.arange(15), np.int64(3), dict(reversed(list(RECIPE.items()))))
    variants = [("beta", SPACE_ID, list(range(15)), 3, RECIPE), ("alpha", "x", list(range(15)), 3, RECIPE),
                ("alpha", SPACE_ID, list(range(1, 16)), 3, RECIPE), ("alpha", SPACE_ID, list(range(15)), 4, RECIPE),
                ("alpha", SPACE_ID, list(range(15)), 3, {**RECIPE, "epochs": 5})]
    assert len({experiment_id(*v) for v in variants} | {eid}) == 6
    assert experiment_id(*base, relaxed_weights=[0.5, 0.5]) != eid
    assert experiment_id(*base, relaxed_weights=[]) != eid
    rec = make_record(0)
    assert ExperimentRecord.from_row(row_of(rec)).experiment_id == rec.experiment_id


def test_record_validation_names_the_problem():
    with pytest.raises(SchemaError, match="status"):
        make_record(1, status="weird")
    with pytest.raises(SchemaError, match="task name"):
        make_record(1, task="../etc")
    with pytest.raises(SchemaError, match="non-finite"):
        make_record(1, relaxed_weights=[math.nan])
    with pytest.raises(SchemaError, match="does not match"):
        make_record(1, experiment_id="ffffffffffffffffffffffff")


def test_query_is_read_only(store):
    fill(store, n=30)
    assert store.query("SELECT count(*) AS n FROM experiments").column("n")[0].as_py() == 30
    assert store.query("WITH t AS (SELECT task FROM experiments) SELECT count(DISTINCT task) AS n FROM t;") \
        .column("n")[0].as_py() == 3
    assert store.query("SELECT 'copy; attach' AS s").column("s")[0].as_py() == "copy; attach"
    assert store.query("DESCRIBE experiments").num_rows == len(EXPERIMENT_SCHEMA)
    refused = ["COPY experiments TO '/tmp/x.csv'", "SELECT 1; DROP VIEW experiments", "ATTACH 'x.db'",
               "INSTALL httpfs", "LOAD httpfs", "SET threads = 1", "PRAGMA version", "CREATE TABLE t AS SELECT 1",
               "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM read_text('/etc/hostname')",
               "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x'", "SELECT * FROM glob('/*')", "", "EXPORT DATABASE 'x'",
               "DELETE FROM experiments", "SELECT 1 /* unterminated"]
    for sql in refused:
        with pytest.raises(ReadOnlyQueryError):
            store.query(sql)


def test_sandbox_blocks_file_access_the_guard_misses(store, tmp_path):
    fill(store, n=10)
    import duckdb

    secret = tmp_path / "secret.csv"
    secret.write_text("a\n1\n")
    # A file named by a string literal (DuckDB's replacement scan) calls no function: the
    # keyword guard lets it through, and the sandbox is what refuses it.
    with pytest.raises(QueryError) as err:  # DuckDB's refusal, as the store's error
        store.query(f"SELECT * FROM '{secret}'")
    assert isinstance(err.value.__cause__, duckdb.Error)
    with pytest.raises((QueryError, ReadOnlyQueryError)):
        store.query("SET enable_external_access = true")


def test_spaces_round_trip(store):
    space = default_space()
    assert store.save_space(space) == space.space_id
    assert store.save_space(space) == space.space_id  # idempotent
    assert store.space(space.space_id) == space
    assert list(store.spaces()) == [space.space_id]
    with pytest.raises(KeyError, match="nope"):
        store.space("nope")


def test_user_tasks_register_load_and_refuse(store):
    from nasdb import tasks

    rng = np.random.default_rng(0)
    x, y = rng.random((90, tasks.FEATURE_DIM)).astype(np.float32), rng.integers(0, 3, 90)
    task = tasks.task_from_arrays("mine", x, y)
    assert store.save_task(task) is True
    assert store.registered_tasks() == ["mine"]
    loaded = store.task("mine")
    assert loaded.fingerprint() == task.fingerprint() and loaded.num_classes == task.num_classes
    np.testing.assert_array_equal(loaded.x_train, task.x_train)
    assert store.save_task(tasks.task_from_arrays("mine", x, y)) is False  # the same data again: a no-op
    assert store.task_fingerprint("mine") == task.fingerprint()
    other = tasks.task_from_arrays("mine", x[::-1].copy(), y[::-1].copy())
    with pytest.raises(TaskExistsError, match=rf"^task 'mine' is already registered with other data \(fingerprint "
                                              rf"{task.fingerprint()} in the store, {other.fingerprint()} given\)"):
        store.save_task(other)
    builtin = tasks.builtin_task_names()[0]
    with pytest.raises(TaskExistsError, match="built-in"):
        store.save_task(tasks.task_from_arrays(builtin, x, y))
    assert store.task(builtin).name == builtin
    with pytest.raises(UnknownTaskError, match="registered: mine"):
        store.task("no-such-task")
    assert {"mine", builtin} <= set(store.task_names())


def test_top_k_arguments_are_checked(store):
    with pytest.raises(ValueError, match="metric"):
        store.top_k("alpha", 3, metric="seed; DROP")
    with pytest.raises(ValueError, match="k must"):
        store.top_k("alpha", 0)
    with pytest.raises(SchemaError, match="task name"):
        store.top_k("alpha' OR 1=1 --")


def test_top_k_is_exact_when_duplicates_disagree(store):
    # ids whose best raw row is not their dedup winner: an earlier ok row with a low score, or a
    # failed row that wins over nothing (ok rows always win) -- top_k must rank winners only
    base = [make_record(i, "alpha", status="ok", val_accuracy=0.5 + i / 1000) for i in range(40)]
    shadowed = [make_record(i, "alpha", status="ok", val_accuracy=0.99 - i / 1000, worker="late",
                            created_at=base[i].created_at.replace(year=2031)) for i in range(0, 40, 3)]
    failed_first = [make_record(100 + i, "alpha", status="failed", error="x", val_accuracy=0.999) for i in range(5)]
    ok_later = [make_record(100 + i, "alpha", status="ok", val_accuracy=0.2,
                            created_at=failed_first[i].created_at.replace(year=2032)) for i in range(5)]
    with store.writer("w", flush_rows=7) as w:
        w.extend(shadowed + base + failed_first + ok_later)
    rows = [row_of(r) for r in shadowed + base + failed_first + ok_later]
    for k in (1, 5, 10, 30, 100):
        assert store.top_k("alpha", k).column("experiment_id").to_pylist() == naive_top_k(rows, "alpha", k)
    top = store.top_k("alpha", 3).to_pylist()
    assert [r["worker"] for r in top] == ["w0"] * 3 and top[0]["val_accuracy"] == 0.539


def test_compaction_deduplicates_and_sorts(store):
    records = fill(store, n=60, tasks=("alpha",), flush_rows=10)
    with store.writer("retry", flush_rows=10) as w:
        for r in records[:20]:
            w.append(r)
    result = store.compact()
    assert result["merged_files"] == 8 and result["rows"] == 80 and result["unique_rows"] == 60
    assert store.query("SELECT count(*) AS n FROM experiments_raw").column("n")[0].as_py() == 60
    vals = store.query("SELECT val_accuracy FROM experiments_raw").column("val_accuracy").to_pylist()
    finite = [v for v in vals if math.isfinite(v)]
    assert finite == sorted(finite, reverse=True) and vals[: len(finite)] == finite
    assert store.count() == 60
    # a compacted (duplicate-free) partition next to new files that repeat some of its rows
    late = [make_record(i, "alpha", worker="zz", val_accuracy=2.0, created_at=records[i].created_at.replace(year=2030))
            for i in range(0, 60, 6)]
    with store.writer("again") as w:
        w.extend(late + records[30:35])
    rows = [row_of(r) for r in records + late]
    assert store.count() == 60 and store.count(status="ok") == store.count("alpha", status="ok")
    assert store.top_k("alpha", 12).column("experiment_id").to_pylist() == naive_top_k(rows, "alpha", 12)
    assert store.task_stats().column("rows").to_pylist() == [60]


def test_query_on_an_empty_store(store):
    assert store.query("SELECT count(*) AS n FROM experiments").column("n")[0].as_py() == 0
    assert store.query("SELECT * FROM experiments_raw").schema.names == EXPERIMENT_SCHEMA.names
