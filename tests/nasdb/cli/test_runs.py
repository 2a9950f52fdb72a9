"""`nasdb runs list|show`: runs assembled from what populate/import, search and fit already record.

A real store: the shared tiny store (rows of run "tiny-store" and a fitted predictor), a real
import of HPOBench's car table (150,000 rows, about a second), and a real lookup search on it
(in-process, no Ray).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from nasdb.benchmarks import import_benchmark
from nasdb.cli import main
from nasdb.store import ExperimentStore
from predictor.config import PredictorConfig
from predictor.testing import TRAIN_TASKS, shared_tiny_store
from search import run_search

TASK = "hpobench.car"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root, pid = shared_tiny_store(str(tmp_path_factory.getbasetemp()))
    copy = tmp_path_factory.mktemp("runs") / "store"
    shutil.copytree(root, copy)
    st = ExperimentStore(str(copy))
    imported = st.count(None)
    import_benchmark(st, "hpobench", tasks=["car"])
    imported = st.count(None) - imported
    result = run_search(st, "random", TASK, 6, evaluator="lookup", seed=3)
    return st, pid, result, imported


def _cli(st, *args: str, ok: bool = True):
    result = CliRunner().invoke(main, ["--store", st.root, "runs", *args])
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_list_has_every_kind_with_rows_tasks_and_status(store):
    st, pid, result, imported_rows = store
    runs = {r["run_id"]: r for r in json.loads(_cli(st, "list", "--json").output)}
    search = runs[result.run_id]
    assert search["kind"] == "search" and search["status"] == "complete" and search["agent"] == "random"
    assert search["tasks"] == [TASK] and search["evaluations"] == 6 and search["failures"] == 0
    assert search["command"].startswith(f"nasdb search --agent random --task {TASK} --budget 6 --evaluator lookup")
    fit = runs[pid]
    assert fit["kind"] == "fit" and fit["tasks"] == list(TRAIN_TASKS) and fit["rows"] == 36
    assert fit["command"].startswith(f"nasdb fit --loss {PredictorConfig().loss}")  # the tiny store's fit: the default
    imported = next(r for r in runs.values() if r["kind"] == "import-benchmark")
    assert imported["tasks"] == [TASK] and imported["rows"] == imported_rows > 0 and imported["status"] == "ok"
    tiny = runs["tiny-store"]
    assert tiny["rows"] == 36 and tiny["tasks"] == sorted(TRAIN_TASKS) and tiny["agent"] == "random"
    assert tiny["start"] <= tiny["end"]
    text = _cli(st, "list").output
    assert result.run_id in text and "import-benchmark" in text and pid in text
    only = json.loads(_cli(st, "list", "--kind", "fit", "--json").output)
    assert [r["run_id"] for r in only] == [pid]


def test_show_one_run_and_unknown_runs(store):
    st, pid, result, _ = store
    shown = json.loads(_cli(st, "show", result.run_id, "--json").output)
    assert shown["best_val"] is not None and shown["wall_seconds"] >= 0
    assert "command" in _cli(st, "show", pid).output
    bad = _cli(st, "show", "nope", ok=False)
    assert bad.output == "error: no run 'nope' in the store; see nasdb runs list\n"
    bad = _cli(st, "list", "--kind", "nope", ok=False)
    assert bad.output.startswith("error: Invalid value for '--kind'") and bad.output.count("\n") == 1


def test_collecting_runs_and_predictors_imports_neither_torch_nor_ray(store):
    """The predictor metadata, aliases and search run ids come through nasdb.records (issue 20: the
    first /runs and /predictors of the dashboard do not pay torch's import)."""
    st, pid, result, _ = store
    code = ("import sys\nfrom nasdb.cli.dashboard import _data\nfrom nasdb.store import ExperimentStore\n"
            f"store = ExperimentStore({st.root!r})\n"
            "print(sorted(r['run_id'] for r in _data.runs(store) if r['kind'] in ('fit', 'search')))\n"
            "print([p['predictor_id'] for p in _data.predictors(store)])\n"
            "print('HEAVY', [m for m in ('torch', 'ray') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines() == [str(sorted([pid, result.run_id])), str([pid]), "HEAVY []"], \
        out.stdout + out.stderr
