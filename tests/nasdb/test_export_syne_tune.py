"""`nasdb export --format syne-tune`: the store as a blackbox repository, loaded back by Syne Tune itself (issue 20).

A copy of the shared tiny store (real digits rows with 2-epoch validation curves) is exported
through the real CLI and read with ``syne_tune.blackbox_repository.deserialize``, the loader of
offline blackboxes; every epoch of every stored curve must come back as an objective value of
its configuration. Bad input is one line; a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from nasdb.cli import main
from nasdb.store import ExperimentStore
from predictor.testing import TRAIN_TASKS, shared_tiny_store

repository = pytest.importorskip("syne_tune.blackbox_repository")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root, _ = shared_tiny_store(str(tmp_path_factory.getbasetemp()))
    copy = tmp_path_factory.mktemp("syne") / "store"
    shutil.copytree(root, copy)
    return ExperimentStore(str(copy))


def _cli(st, *args: str, code: int = 0):
    result = CliRunner().invoke(main, ["--store", st.root, "export", "--format", "syne-tune", *args])
    assert result.exit_code == code, result.output
    return result


def test_syne_tune_loads_every_epoch_of_every_curve(store, tmp_path):
    out = tmp_path / "bb"
    summary = json.loads(_cli(store, "--out", str(out), "--json").output)
    assert [t["task"] for t in summary["tasks"]] == sorted(TRAIN_TASKS)
    blackboxes = repository.deserialize(str(out))
    assert sorted(blackboxes) == sorted(TRAIN_TASKS)
    for task, bb in blackboxes.items():
        rows = store.experiments_arrow(task).to_pylist()
        space = store.space(rows[0]["space_id"])
        assert list(bb.configuration_space) == [d.name for d in space.dimensions]
        assert bb.objectives_names == ["metric_valid_accuracy", "metric_elapsed_time", "metric_test_accuracy"]
        assert bb.fidelity_space["epoch"].upper == max(r["epochs"] for r in rows)
        assert len(bb.df) == sum(len(r["val_curve"]) for r in rows)
        for row in rows:
            config = {d.name: d.choices[i] for d, i in zip(space.dimensions, row["architecture"])}
            values = bb.objective_function(dict(config), seed=row["seed"])  # (epochs, objectives)
            np.testing.assert_allclose(values[:, 0], row["val_curve"], rtol=1e-6)
            assert values[-1, 2] == pytest.approx(row["test_accuracy"]) and np.isnan(values[:-1, 2]).all()
            last = bb.objective_function(dict(config), fidelity={"epoch": row["epochs"]}, seed=row["seed"])
            assert last["metric_elapsed_time"] == pytest.approx(row["train_seconds"])
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["nasdb"]["space_id"] == summary["space_id"] and meta["nasdb"]["store"] == store.uri


def test_a_non_empty_folder_needs_overwrite_and_bad_input_is_one_line(store, tmp_path):
    out = tmp_path / "bb"
    _cli(store, "--out", str(out), "--task", TRAIN_TASKS[0])
    again = _cli(store, "--out", str(out), code=1)
    assert again.output == f"error: --out {out} is not empty: pass --overwrite to replace it\n"
    _cli(store, "--out", str(out), "--overwrite")
    assert sorted(repository.deserialize(str(out))) == sorted(TRAIN_TASKS)
    unknown = _cli(store, "--out", str(tmp_path / "x"), "--task", "nope", code=1)
    assert "nope" in unknown.output and unknown.output.count("\n") == 1
    assert "--out DIR" in _cli(store, code=2).output
    assert "--out DIR" in _cli(store, "--out", "-", code=2).output
    assert not (tmp_path / "x").exists()


def test_no_half_written_export(store, tmp_path, monkeypatch):
    from nasdb import export_syne_tune as module

    out = tmp_path / "bb"
    out.mkdir()
    (out / "keep.txt").write_text("the previous export")
    real, calls = module._task_table, []

    def failing(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kw)

    monkeypatch.setattr(module, "_task_table", failing)
    with pytest.raises(OSError, match="disk full"):
        module.export_syne_tune(store, out, overwrite=True)
    assert os.listdir(out) == ["keep.txt"]  # the old export is untouched
    assert sorted(os.listdir(tmp_path)) == ["bb"]  # and no temporary folder is left


def test_tasks_of_two_search_spaces_are_refused(store, tmp_path):
    from nasdb.benchmarks import import_benchmark

    other = ExperimentStore(str(tmp_path / "mixed"))
    shutil.copytree(store.root, other.root)
    import_benchmark(other, "hpobench", tasks=["car"], max_configurations=2)
    result = _cli(other, "--out", str(tmp_path / "bb"), code=1)
    assert "one search space" in result.output and "hpobench.car" in result.output
    assert result.output.count("\n") == 1
    _cli(other, "--out", str(tmp_path / "bb"), "--task", "hpobench.car")
    bb = repository.deserialize(str(tmp_path / "bb"))["hpobench.car"]
    assert len(bb.df) == other.count("hpobench.car")
