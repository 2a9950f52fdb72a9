"""The `nasdb` admin command: every command and every refusal, through CliRunner and a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import click
import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from nasdb.cli import NasdbGroup, main
from nasdb.space import default_space
from nasdb.store import ExperimentStore
from nasdb.store.testing import make_record

TASKS = ("alpha", "beta")


@pytest.fixture
def root(tmp_path):
    store = ExperimentStore(str(tmp_path / "store"))
    store.init()
    space = default_space()
    store.save_space(space)
    archs = space.sample(60, seed=0)
    with store.writer("w0", flush_rows=20) as w:
        for i in range(60):
            w.append(make_record(i, TASKS[i % 2], architecture=archs[i].tolist(), space_id=space.space_id))
    return store.root


@pytest.fixture
def run(monkeypatch):
    monkeypatch.delenv("NASDB_STORE", raising=False)
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, (args, result.output)
        return result
    return invoke


def assert_one_line_error(result, *fragments: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in result.output, err
    for f in fragments:
        assert f in err, (f, err)


def test_init_creates_and_is_idempotent(run, tmp_path):
    root = str(tmp_path / "new")
    assert "initialized store" in run("--store", root, "init").stdout
    assert "already exists" in run("--store", root, "init").stdout
    assert json.loads(run("--store", root, "init", "--json").stdout) == {"root": root, "created": False}
    assert sorted(os.listdir(root)) == ["experiments", "predictors", "quarantine", "spaces", "store.json", "tasks"]


def test_store_from_env(run, root, monkeypatch):
    monkeypatch.setenv("NASDB_STORE", root)
    assert json.loads(run("stats", "--json").stdout)["rows"] == 60


def test_stats(run, root):
    text = run("--store", root, "stats").stdout
    assert "rows" in text and "alpha" in text and "beta" in text and "best_val_accuracy" in text
    data = json.loads(run("--store", root, "stats", "--json").stdout)
    store = ExperimentStore(root)
    assert data["rows"] == store.count() == 60 and data["tasks"] == 2
    assert data["files"] == sum(s["files"] for s in store.storage().values()) and data["bytes"] > 0
    assert {r["task"]: r["rows"] for r in data["per_task"]} == {"alpha": 30, "beta": 30}


def test_top(run, root):
    rows = json.loads(run("--store", root, "top", "--task", "alpha", "-k", "4", "--json").stdout)
    expected = ExperimentStore(root).top_k("alpha", 4).column("experiment_id").to_pylist()
    assert [r["experiment_id"] for r in rows] == expected
    lines = run("--store", root, "top", "--task", "alpha", "-k", "4").stdout.strip().splitlines()
    assert len(lines) == 2 + 4 and lines[0].split()[:3] == ["rank", "experiment_id", "val_accuracy"]
    assert expected[0] in lines[2]


def test_show(run, root):
    eid = ExperimentStore(root).top_k("beta", 1).column("experiment_id")[0].as_py()
    data = json.loads(run("--store", root, "show", eid, "--json").stdout)
    assert data["experiment_id"] == eid and data["task"] == "beta" and len(data["architecture"]) == 15
    assert data["architecture_choices"]["embedding"] in ("identity", "pca8", "pca16", "pca32", "rff64", "rff128",
                                                         "rff256")
    text = run("--store", root, "show", eid).stdout
    assert eid in text and "val_curve" in text and "architecture_choices" in text


def test_query(run, root):
    data = json.loads(run("--store", root, "query", "SELECT task, count(*) AS n FROM experiments "
                          "GROUP BY task ORDER BY task", "--json").stdout)
    assert data == [{"task": "alpha", "n": 30}, {"task": "beta", "n": 30}]
    text = run("--store", root, "query", "SELECT val_accuracy FROM experiments WHERE isnan(val_accuracy)").stdout
    assert "nan" in text
    nan_json = json.loads(run("--store", root, "query", "SELECT 'nan'::DOUBLE AS x, 'inf'::DOUBLE AS y",
                              "--json").stdout)
    assert nan_json == [{"x": "nan", "y": "inf"}]


def test_export(run, root, tmp_path):
    out = tmp_path / "all.parquet"
    assert "exported 60 rows" in run("--store", root, "export", "--out", str(out)).stdout
    assert pq.read_table(out).num_rows == 60
    csv = tmp_path / "alpha.csv"
    data = json.loads(run("--store", root, "export", "--format", "csv", "--out", str(csv), "--task", "alpha",
                          "--json").stdout)
    assert data["rows"] == 30 and len(csv.read_text().strip().splitlines()) == 31


def test_compact_and_verify(run, root):
    data = json.loads(run("--store", root, "compact", "--json").stdout)
    assert data["merged_files"] == 6 and data["files_written"] == 2
    victim = next((p for p in (ExperimentStore(root).storage())), None)
    part = os.path.join(root, "experiments", f"task={victim}")
    f = os.path.join(part, os.listdir(part)[0])
    with open(f, "r+b") as fh:
        fh.truncate(100)
    text = run("--store", root, "verify").stdout
    assert "1 quarantined" in text and "quarantined experiments/task=" in text
    assert json.loads(run("--store", root, "verify", "--json").stdout)["quarantined"] == []
    assert json.loads(run("--store", root, "stats", "--json").stdout)["rows"] == 30


def test_tasks_list_show_add(run, root, tmp_path):
    from nasdb import tasks

    builtin = tasks.builtin_task_names()[0]
    listed = json.loads(run("--store", root, "tasks", "list", "--json").stdout)
    kinds = {r["task"]: r["kind"] for r in listed}
    assert kinds[builtin] == "built-in" and kinds["alpha"] == "unknown"
    shown = json.loads(run("--store", root, "tasks", "show", builtin, "--json").stdout)
    assert shown["name"] == builtin and shown["num_classes"] >= 2 and shown["registered"] is False
    table = json.loads(run("--store", root, "tasks", "show", "tab_wine", "--json").stdout)  # a suite table
    assert table["ceiling"] >= 0.5 and table["ceiling_archs"] == 50 and "scikit-learn" in table["licence"]
    assert table["dataset"] == "load_wine" and table["features"] == {"numeric": 13, "categorical": 0}

    rng = np.random.default_rng(0)
    csv = tmp_path / "mine.csv"
    header = ",".join(f"f{i}" for i in range(tasks.FEATURE_DIM)) + ",label"
    lines = [",".join(f"{v:.3f}" for v in rng.random(tasks.FEATURE_DIM)) + f",{i % 3}" for i in range(60)]
    csv.write_text(header + "\n" + "\n".join(lines) + "\n")
    out = run("--store", root, "tasks", "add", "mine", "--from", str(csv), "--label", "label").stdout
    assert "registered task 'mine': 3 classes" in out
    assert ExperimentStore(root).registered_tasks() == ["mine"]
    assert "registered" in run("--store", root, "tasks", "list").stdout
    assert "mine" in run("--store", root, "tasks", "show", "mine").stdout
    assert json.loads(run("--store", root, "tasks", "show", "alpha", "--json").stdout)["experiments"]["rows"] == 30
    assert_one_line_error(run("--store", root, "tasks", "show", "nope", ok=False), "unknown task 'nope'")
    again = run("--store", root, "tasks", "add", "mine", "--from", str(csv), "--label", "label").stdout
    assert "already registered with the same data" in again and "nothing to do" in again  # a no-op
    other = tmp_path / "other.csv"
    other.write_text(header + "\n" + "\n".join(lines[::-1]) + "\n")
    assert_one_line_error(run("--store", root, "tasks", "add", "mine", "--from", str(other), "--label", "label",
                              ok=False), "already registered with other data (fingerprint ", " in the store, ")
    assert_one_line_error(run("--store", root, "tasks", "add", builtin, "--from", str(csv), "--label", "label",
                              ok=False), "built-in")
    assert_one_line_error(run("--store", root, "tasks", "add", "x", "--from", str(csv), "--label", "nope",
                              ok=False), "label column 'nope' not found")
    assert_one_line_error(run("--store", root, "tasks", "add", "x", "--from", str(tmp_path / "missing.csv"),
                              "--label", "y", ok=False), "does not exist", code=2)


def test_refusals_are_one_line(run, root, tmp_path):
    missing = str(tmp_path / "missing")
    for args in (["stats"], ["top", "--task", "alpha"], ["query", "SELECT 1"], ["verify"], ["compact"],
                 ["tasks", "list"], ["show", "x"], ["export", "--out", str(tmp_path / "x.parquet")]):
        assert_one_line_error(run("--store", missing, *args, ok=False), "no nasdb store")
    assert not os.path.exists(missing)  # reads never create a store
    assert_one_line_error(run("stats", ok=False), "NASDB_STORE")
    assert_one_line_error(run("--store", root, "top", "--task", "nope", ok=False), "unknown task 'nope'")
    assert_one_line_error(run("--store", root, "show", "feedfacefeedfacefeedface", ok=False),
                          "no experiment 'feedfacefeedfacefeedface'")
    for sql in ("COPY experiments TO 'x.csv'", "SELECT 1; SELECT 2", "ATTACH 'x.db'",
                "SELECT * FROM read_csv('/etc/passwd')", "INSTALL httpfs"):
        assert_one_line_error(run("--store", root, "query", sql, ok=False), "query")
    assert_one_line_error(run("--store", root, "query", "SELEC 1", ok=False), "query must be a read")
    assert_one_line_error(run("--store", root, "query", "SELECT nope FROM experiments", ok=False), "nope")
    assert_one_line_error(run("--store", root, "stats", "--bogus", ok=False), "--bogus", code=2)
    assert_one_line_error(run("--store", root, "top", "-k", "3", ok=False), "--task", code=2)
    assert_one_line_error(run("--store", root, "frobnicate", ok=False), "frobnicate", code=2)
    assert_one_line_error(run("--store", root, "export", "--format", "xml", "--out", "x", ok=False), "xml", code=2)


def test_lazy_command_groups_are_imported_on_use():
    @click.group(cls=NasdbGroup, lazy_commands={"later": "nasdb.cli._store:stats_cmd"})
    def group():
        pass

    assert group.list_commands(click.Context(group)) == ["later"]
    assert "later" not in group.commands
    assert group.get_command(click.Context(group), "later").name == "stats"


def test_entry_point_runs_as_a_real_process(root, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "nasdb")
    env = {**os.environ, "NASDB_STORE": root}
    done = subprocess.run([exe, "stats", "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rows"] == 60
    bad = subprocess.run([exe, "--store", str(tmp_path / "nope"), "query", "SELECT 1"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.startswith("error: no nasdb store") and bad.stderr.count("\n") == 1
