"""One bad file never takes the store down (issue 15): every reader skips it with a warning, verify quarantines it.

Each kind of bad file (``_store_testing.BAD_FILE_KINDS``: garbage, empty, truncated,
corrupted page header or data behind a valid footer, foreign schema, wrong column types, rows
of another task) is planted next to good files of a real store.
"""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from nasdb.cli import main
from nasdb.space import default_space
from nasdb.store import ExperimentStore
from nasdb.store.testing import BAD_FILE_KINDS, make_record, plant_bad_files
from predictor.data import load_training_data

TASKS = ("digits_0to5", "digits_mod3")
PER_TASK, PER_FILE = 24, 8


def build(root) -> ExperimentStore:
    store = ExperimentStore(str(root))
    store.init()
    space = default_space()
    store.save_space(space)
    archs = space.sample(PER_TASK, seed=0)
    for task in TASKS:
        with store.writer("w", flush_rows=PER_FILE) as w:
            for i in range(PER_TASK):
                w.append(make_record(i, task, space_id=space.space_id, architecture=archs[i].tolist(),
                                     status="ok", error=None, val_accuracy=0.1 + 0.03 * i))
    return store


@pytest.fixture
def planted(tmp_path):
    store = build(tmp_path / "store")
    return store, plant_bad_files(store, TASKS[0], TASKS[1])


def test_every_reader_skips_each_bad_file_with_a_warning(planted, caplog, tmp_path):
    store, bad = planted
    assert set(bad) == set(BAD_FILE_KINDS)
    with caplog.at_level(logging.WARNING, logger="nasdb.store"):
        stats = {r["task"]: r["rows"] for r in store.task_stats().to_pylist()}
        assert stats == {t: PER_TASK for t in TASKS}
        assert store.query("SELECT count(*) AS n FROM experiments").column("n")[0].as_py() == 2 * PER_TASK
        every = store.query("SELECT * FROM experiments_raw")  # every column: reaches the corrupted pages
        assert every.num_rows == 2 * PER_TASK
        top = store.top_k(TASKS[0], 3).column("val_accuracy").to_pylist()
        assert top == pytest.approx([0.1 + 0.03 * i for i in (23, 22, 21)])
        assert store.export(str(tmp_path / "out.parquet")) == 2 * PER_TASK
        assert pq.read_table(tmp_path / "out.parquet").num_rows == 2 * PER_TASK
        data = load_training_data(store, use_meta_features=False, min_experiments=4)
        assert sorted(data.tasks) == sorted(TASKS)
    warned = {name for name in bad.values() if any(name in r.getMessage() for r in caplog.records)}
    assert warned == set(bad.values())  # each skipped file is named, once per process
    assert len([r for r in caplog.records if r.name == "nasdb.store"]) == len(bad)


def test_compaction_merges_the_good_files_around_the_bad_ones(planted):
    store, bad = planted
    result = store.compact()
    assert result["merged_files"] == 2 * PER_TASK // PER_FILE and result["unique_rows"] == 2 * PER_TASK
    assert store.count() == 2 * PER_TASK
    assert all(os.path.exists(os.path.join(store.root, rel)) for rel in bad.values())  # left for verify


def test_plain_verify_quarantines_exactly_the_bad_files(planted):
    store, bad = planted
    report = store.verify()
    assert sorted(report["quarantined"]) == sorted(bad.values())
    assert report["ok"] == 2 * PER_TASK // PER_FILE and set(report["problems"]) == set(bad.values())
    assert "Snappy" in report["problems"][bad["corrupt_page_data"]] or "snappy" in report["problems"][
        bad["corrupt_page_data"]]
    assert "task 'digits_mod3'" in report["problems"][bad["wrong_partition"]]
    for rel in bad.values():
        assert os.path.exists(os.path.join(store.root, "quarantine", rel))
    fresh = ExperimentStore(store.root)
    assert fresh.verify(deep=True)["quarantined"] == [] and fresh.count() == 2 * PER_TASK


def test_deep_verify_also_finds_rows_whose_id_does_not_match(tmp_path):
    store = build(tmp_path / "store")
    folder = store.path("experiments", f"task={TASKS[0]}")
    victim = os.path.join(folder, sorted(os.listdir(folder))[0])
    table = pq.read_table(victim)
    seeds = table.column("seed").to_numpy().copy()
    seeds[0] += 1  # the row's fields no longer hash to its stored id
    pq.write_table(table.set_column(table.schema.get_field_index("seed"), "seed", [seeds]), victim)
    assert store.verify()["quarantined"] == []
    report = store.verify(deep=True)
    assert report["quarantined"] == [os.path.relpath(victim, store.root)]
    assert "1 row(s) whose experiment_id" in report["problems"][report["quarantined"][0]]


def test_valid_files_of_older_and_newer_schema_versions_are_kept(tmp_path):
    import pyarrow as pa

    store = build(tmp_path / "store")
    folder = store.path("experiments", f"task={TASKS[0]}")
    victim = os.path.join(folder, sorted(os.listdir(folder))[0])
    table = pq.read_table(victim)
    pq.write_table(table.drop_columns(["stopped_early", "predicted_final"]), victim)  # an older file
    newer = table.append_column("future_col", pa.array(np.ones(table.num_rows)))
    pq.write_table(newer, os.path.join(folder, "part-newer-000000.parquet"))
    assert store.verify(deep=True)["quarantined"] == []


def test_cli_commands_survive_the_bad_files(planted, tmp_path):
    store, bad = planted
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(main, ["--store", store.root, *args])
        assert result.exit_code == 0, result.output
        return result.output

    assert json.loads(run("stats", "--json"))["rows"] == 2 * PER_TASK
    assert json.loads(run("query", "--json", "SELECT count(*) AS n FROM experiments"))[0]["n"] == 2 * PER_TASK
    assert len(json.loads(run("top", "--json", "--task", TASKS[0], "-k", "5"))) == 5
    run("export", "--format", "csv", "--out", str(tmp_path / "e.csv"))
    assert json.loads(run("compact", "--json"))["unique_rows"] == 2 * PER_TASK
    out = run("verify")
    assert f"{len(bad)} quarantined" in out
    assert all(f"quarantined {rel}: " in out for rel in bad.values())
