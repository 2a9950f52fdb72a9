"""Experiment identity covers the data (issue 14, item 6): rows record the fingerprints of the task
data and embedding bank they were trained on, the id includes them, old stores still read, `nasdb
verify` reports stale rows, the predictor skips them, and imported benchmarks fingerprint their
provenance. Real stores in temp folders; no Ray (populate's planned == written ids with
fingerprints are checked on Ray in test_populate.py and test_early_stop.py).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from nasdb import tasks
from nasdb.cli import main
from nasdb.fingerprints import check_fingerprints
from nasdb.space import default_space
from nasdb.store import (SCHEMA_VERSION_KEY, ExperimentRecord, ExperimentStore, TaskExistsError, compute_ids,
                         experiment_id, provenance_fingerprint, records_to_table)
from nasdb.store.testing import make_record

STALE = "0000deadbeef0000"  # a task-data fingerprint of data the task no longer holds


def test_ids_cover_the_data_and_pre_v3_ids_are_unchanged():
    args = ("digits10", "abc123", [1, 2, 3, 4], 7, {"epochs": 20})
    assert experiment_id(*args) == "6fbc3d0af4825bc0bac7e554"  # what schema v2 computed: old rows still check out
    ids = {experiment_id(*args), experiment_id(*args, task_fingerprint="a"), experiment_id(*args, task_fingerprint="b"),
           experiment_id(*args, bank_fingerprint="x"), experiment_id(*args, task_fingerprint="a", bank_fingerprint="x")}
    assert len(ids) == 5
    recs = [make_record(i, task_fingerprint=[None, "a", "b"][i % 3], bank_fingerprint=[None, "x"][i % 2])
            for i in range(40)]  # mixed lengths and relaxed weights: the row-by-row path
    assert compute_ids(records_to_table(recs)).to_pylist() == [r.experiment_id for r in recs]
    fast = [make_record(i, relaxed_weights=None, architecture=list(range(15)), task_fingerprint=[None, "a"][i % 2],
                        bank_fingerprint=[None, "x", "y"][i % 3]) for i in range(40)]  # the vectorized path
    assert compute_ids(records_to_table(fast)).to_pylist() == [r.experiment_id for r in fast]


def _task(name: str, seed: int) -> tasks.Task:
    rng = np.random.default_rng(seed)
    x, y = rng.random((90, tasks.FEATURE_DIM)).astype(np.float32), rng.integers(0, 3, 90)
    return tasks.task_from_arrays(name, x, y)


def _rows(task: str, n: int, start: int, **fingerprints) -> list[ExperimentRecord]:
    space, rng = default_space(), np.random.default_rng(start)
    return [ExperimentRecord(task=task, space_id=space.space_id, architecture=a.tolist(), seed=start + i,
                             recipe={"epochs": 1}, agent="random", run_id="fp-test", val_accuracy=float(rng.random()),
                             test_accuracy=0.5, val_curve=[0.5], epochs=1, train_seconds=0.1, num_params=10,
                             device="cpu", worker="w", **fingerprints)
            for i, a in enumerate(space.sample(n, rng))]


def _write_v2_file(store: ExperimentStore, records: list[ExperimentRecord]) -> None:
    """A file as schema v2 wrote it: no fingerprint columns, version 2 in the footer and the rows."""
    table = records_to_table(records).drop_columns(["task_fingerprint", "bank_fingerprint"])
    table = table.set_column(table.schema.get_field_index("schema_version"), "schema_version",
                             pa.array([2] * table.num_rows, pa.int32()))
    table = table.replace_schema_metadata({SCHEMA_VERSION_KEY: b"2"})
    part = f"{store.root}/experiments/task={records[0].task}"
    store.fs.makedirs(part, exist_ok=True)
    pq.write_table(table, f"{part}/part-v2writer-000001.parquet")


@pytest.fixture
def store(tmp_path):
    """Registered task "mine": 3 rows written by schema v2, 4 verified rows and 2 stale ones."""
    store = ExperimentStore(str(tmp_path / "store"))
    store.init()
    store.save_space(default_space())
    mine = _task("mine", 0)
    assert store.save_task(mine)
    _write_v2_file(store, _rows("mine", 3, 0))
    with store.writer("v3") as w:
        w.extend(_rows("mine", 4, 100, task_fingerprint=mine.fingerprint()))
        w.extend(_rows("mine", 2, 200, task_fingerprint=STALE))
    return store


def test_old_files_read_with_null_fingerprints_and_are_not_dropped(store):
    rows = store.experiments_arrow("mine", status=None).to_pylist()
    assert len(rows) == 9 and store.count("mine") == 9
    old = [r for r in rows if r["schema_version"] == 2]
    assert len(old) == 3 and all(r["task_fingerprint"] is None and r["bank_fingerprint"] is None for r in old)
    for r in old:  # their ids, computed without fingerprints, still match their fields
        assert ExperimentRecord.from_row(r).experiment_id == r["experiment_id"]
    assert store.verify(deep=True)["quarantined"] == []


def test_verify_reports_stale_and_unverified_rows(store):
    current = store.task_fingerprint("mine")
    res = CliRunner().invoke(main, ["--store", store.root, "verify"])
    assert res.exit_code == 1, res.output  # stale rows are a finding; unverified ones are not
    assert ("fingerprints of 9 rows: 4 verified, 3 unverified (written before schema v3), 2 stale (trained on "
            "other data)") in res.output
    assert f"stale mine: 2 rows trained on task data {STALE}; now: task data {current}" in res.output
    res = CliRunner().invoke(main, ["--store", store.root, "verify", "--json"])
    report = json.loads(res.output)["fingerprints"]
    assert res.exit_code == 1 and (report["verified"], report["unverified"], report["stale"]) == (4, 3, 2)

    with store.writer("bank") as w:  # rows of an embedding bank that is not today's
        w.extend(_rows("mine", 2, 300, task_fingerprint=current, bank_fingerprint="bank-then"))
        w.extend(_rows("mine", 1, 400, task_fingerprint=current, bank_fingerprint="bank-now"))
    report = check_fingerprints(store, lambda: "bank-now")
    (t,) = report["tasks"]
    assert (t["verified"], t["unverified"], t["stale"]) == (5, 3, 4) and report["bank"] == "bank-now"
    assert t["stale_fingerprints"] == {"task": [STALE], "bank": ["bank-then"]}


def test_the_predictor_skips_stale_rows_and_keeps_unverified_ones(store):
    from predictor.data import load_training_data

    yours = _task("yours", 1)
    store.save_task(yours)
    _write_v2_file(store, _rows("yours", 3, 500))
    with store.writer("v3-yours") as w:
        w.extend(_rows("yours", 4, 600, task_fingerprint=yours.fingerprint()))
        w.extend(_rows("yours", 2, 700, task_fingerprint=STALE))
    data = load_training_data(store, min_experiments=2)
    for name in ("mine", "yours"):
        td = data.tasks[name]
        assert td.num_experiments == 7 and td.skipped_stale == 2 and td.snapshot()["stale"] == 2
    everything = load_training_data(store, min_experiments=2, include_stale=True)
    assert everything.tasks["mine"].num_experiments == 9 and everything.tasks["mine"].skipped_stale == 0


def test_registering_a_task_again_same_data_is_a_no_op_other_data_is_refused(store):
    assert store.save_task(_task("mine", 0)) is False
    other = _task("mine", 9)
    with pytest.raises(TaskExistsError, match=rf"other data \(fingerprint {store.task_fingerprint('mine')} in the "
                                              rf"store, {other.fingerprint()} given\)"):
        store.save_task(other)


def test_imported_benchmark_rows_record_their_provenance(tmp_path):
    from nasdb.benchmarks import IMPORT_WORKER, get_benchmark, import_benchmark

    store = ExperimentStore(str(tmp_path / "bench"))
    store.init()
    first = import_benchmark(store, "hpolib", tasks="naval_propulsion", max_configurations=3)
    task = "hpolib.naval_propulsion"
    prints = store.experiments_arrow(task, columns=["task_fingerprint", "bank_fingerprint"])
    fp = provenance_fingerprint(store.task_metadata(task))
    assert set(prints.column("task_fingerprint").to_pylist()) == {fp} == {store.task_fingerprint(task)}
    assert prints.column("bank_fingerprint").null_count == prints.num_rows  # no embedding bank here
    assert check_fingerprints(store, lambda: "unused")["verified"] == first["rows_added"] > 0
    assert import_benchmark(store, "hpolib", tasks="naval_propulsion", max_configurations=3)["rows_added"] == 0

    meta = {**store.task_metadata(task), "package_version": "0.0.1"}  # the same name, another table
    with pytest.raises(TaskExistsError, match=rf"other provenance \(fingerprint {fp} in the store, "
                                              rf"{provenance_fingerprint(meta)} given: package_version"):
        store.check_benchmark_task(meta)

    # A store imported before schema v3 (rows without fingerprints) gains no duplicates.
    old = ExperimentStore(str(tmp_path / "old"))
    old.init()
    bench = get_benchmark("hpolib")
    space = bench.space()
    old.save_space(space)
    old.register_benchmark_task(bench.metadata("naval_propulsion", space.space_id, {}))
    with old.writer(IMPORT_WORKER) as w:
        w.append_table(bench.experiment_table("naval_propulsion", space.space_id, max_configurations=3))
    again = import_benchmark(old, "hpolib", tasks="naval_propulsion", max_configurations=3)
    assert again["rows_added"] == 0 and again["rows_present"] == first["rows_added"]
