"""Task-agnostic baselines (predictor/baselines.py) and the reports that show them (issue 16):
``nasdb evaluate --loto`` with gbm/ridge columns and ``nasdb evaluate --zero-shot``.

The baselines are checked on synthetic tasks whose answer is known (accuracy a fixed function
of the architecture, so the best architecture and the true ranking are known); the reports on a
small real store (3 built-in tasks x 30 architectures x 2 epochs, real child trainings).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from nasdb.space import default_space
from predictor.baselines import BASELINES, RANKERS, parse_baselines, rank_rows
from nasdb.ranks import quantile_rank
from predictor.data import TaskData, TrainingData

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SPACE = default_space()
WEIGHTS = np.random.default_rng(7).normal(size=SPACE.encoding_size)  # the known truth: accuracy ~ w . u


def _task(name: str, archs: np.ndarray, *, scale: float = 1.0, offset: float = 0.0, noise: float = 0.0,
          samples: np.ndarray | None = None) -> TaskData:
    u = SPACE.encode_many(archs)
    acc = (offset + scale * (u @ WEIGHTS) + noise * np.random.default_rng(sum(map(ord, name))).normal(size=len(u)))
    x = np.zeros((0, 64), np.float32) if samples is None else samples
    y = np.zeros(len(x), np.int64)
    return TaskData(name, archs, u, acc.astype(np.float32), np.zeros(len(u), np.int64), x, y,
                    0 if samples is None else 2)


def _suite(shared: bool, n: int = 80) -> TrainingData:
    """Four tasks on different scales; each its own random architectures, or all the same ones."""
    tasks = {}
    for i in range(4):
        archs = SPACE.sample(n, seed=0 if shared else i)
        tasks[f"t{i}"] = _task(f"t{i}", archs, scale=[1.0, 0.1, 5.0, 0.5][i], offset=[0.0, 0.5, -3.0, 10.0][i],
                               noise=0.3)
    return TrainingData(SPACE, tasks)


@pytest.mark.parametrize("name", RANKERS)
def test_rankers_fitted_on_other_tasks_rank_a_held_out_task(name):
    data = _suite(shared=False)
    ranker = BASELINES[name].fit(data.without("t3"))
    held = data.tasks["t3"]
    truth = held.u @ WEIGHTS
    rho = stats.spearmanr(ranker.scores(held.u), truth)[0]
    assert rho > 0.7, rho  # linear truth, scale and offset differ per task: within-task ranks remove them
    pick = ranker.pick(held)
    assert quantile_rank(truth)[(held.architectures == pick).all(axis=1)][0] > 0.8
    again = BASELINES[name].fit(data.without("t3")).scores(held.u)
    assert np.array_equal(again, ranker.scores(held.u))  # deterministic: fitted once per held-out task
    assert BASELINES[name].describe()["name"] == name


def test_rank_rows_are_within_task_quantiles_of_the_mean_over_seeds():
    archs = SPACE.sample(5, seed=1)
    t = _task("a", np.concatenate([archs, archs[:2]]))  # two architectures twice
    t.accuracy[5:] += 1.0  # their second seed is better: the mean counts
    u, ranks = rank_rows(TrainingData(SPACE, {"a": t}))
    assert u.shape == (5, SPACE.encoding_size) and sorted(ranks) == [0, 0.25, 0.5, 0.75, 1.0]


def test_portfolio_on_shared_architectures_takes_the_best_mean_rank():
    data = _suite(shared=True)
    pick = BASELINES["portfolio"].pick(data.without("t0"))
    t0 = data.tasks["t0"]
    assert pick["rule"] == "shared" and pick["source_task"] is None
    assert pick["candidates"][0] == pick["architecture"] and len(pick["candidates"]) == 10
    truth = quantile_rank(t0.u @ WEIGHTS)  # the noise-free order of the 80 shared architectures
    assert truth[(t0.architectures == pick["architecture"]).all(axis=1)][0] >= 0.95


def test_portfolio_without_shared_architectures_uses_the_nearest_task_or_the_best_quantile():
    data = _suite(shared=False)
    train = data.without("t0")
    z = {"t1": np.array([0.0, 0.0]), "t2": np.array([5.0, 5.0]), "t3": np.array([1.0, 0.0])}
    near = BASELINES["portfolio"].pick(train, z=np.array([4.0, 4.5]), task_z=z)
    t2 = train.tasks["t2"]
    assert near["rule"] == "nearest-task" and near["source_task"] == "t2"
    assert near["architecture"] == [int(v) for v in t2.architectures[np.argmax(t2.accuracy)]]
    flat = BASELINES["portfolio"].pick(train)  # no meta-features: best within-task quantile, ties by z-score
    assert flat["rule"] == "best-quantile"
    scores = {n: (t.accuracy.max() - t.accuracy.mean()) / t.accuracy.std() for n, t in train.tasks.items()}
    assert flat["source_task"] == max(scores, key=scores.get)


def test_parse_baselines_refuses_unknown_and_misplaced_names():
    assert parse_baselines("gbm, ridge", zero_shot=False) == ("gbm", "ridge")
    assert parse_baselines("none", zero_shot=False) == () and parse_baselines("", zero_shot=True) == ()
    assert parse_baselines(["portfolio", "gbm", "gbm"], zero_shot=True) == ("portfolio", "gbm")
    with pytest.raises(ValueError, match="unknown baseline 'xgb'; known: gbm, ridge, portfolio"):
        parse_baselines("gbm,xgb", zero_shot=False)
    with pytest.raises(ValueError, match="'portfolio' is zero-shot only"):
        parse_baselines("portfolio", zero_shot=False)


# -- the reports on a small real store ---------------------------------------------------------------
TASKS = ("digits_loops", "digits_parity", "digits_mod3")
FAST = ("--steps", "30", "--batch-size", "8")


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    from predictor.testing import build_tiny_store

    root = str(tmp_path_factory.mktemp("baselines") / "store")
    build_tiny_store(root, TASKS, num_architectures=30, epochs=2)
    return root


def _finite(*values) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) for v in values)


def test_loto_report_has_finite_baseline_columns(store_root, cli, tmp_path):
    out = cli("--store", store_root, "evaluate", "--loto", "--loss", "linear", "--meta", "with", "--repeats", "1",
              *FAST, "--out", str(tmp_path), "--json").stdout
    rows = json.loads(out)
    assert [r["task"] for r in rows] == sorted(TASKS)
    for r in rows:
        assert _finite(r["gbm_spearman"], r["gbm_pearson"], r["ridge_spearman"], r["ridge_pearson"])
    header = (tmp_path / "loto.csv").read_text().splitlines()[0].split(",")
    assert header[-4:] == ["gbm_spearman", "gbm_pearson", "ridge_spearman", "ridge_pearson"]
    md = (tmp_path / "loto.md").read_text()
    assert "| gbm | ridge |" in md and "linear +meta beats gbm on" in md and "/3 tasks" in md
    plain = cli("--store", store_root, "evaluate", "--loss", "linear", "--meta", "with", "--repeats", "1", *FAST,
                "--baselines", "none", "--out", str(tmp_path / "none"), "--json").stdout
    assert "gbm_spearman" not in json.loads(plain)[0]


def test_unknown_baseline_is_one_line(store_root, cli):
    result = cli("--store", store_root, "evaluate", "--baselines", "gbm,forest", code=1)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "unknown baseline 'forest'" in err
    result = cli("--store", store_root, "evaluate", "--zero-shot", "--loss", "l2", "--loss", "linear", code=2)
    assert "at most one --loss" in result.output
    err = cli("--store", store_root, "evaluate", "--zero-shot", "--held-out", "nope", *FAST, code=1).stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "held-out task(s) ['nope'] not among" in err


def test_zero_shot_report_percentiles(store_root, cli, tmp_path):
    held = sorted(TASKS)[:2]  # each fit still trains on every other task
    out = cli("--store", store_root, "evaluate", "--zero-shot", "--loss", "linear", *FAST, "--seeds", "1",
              "--baselines", "portfolio,gbm", "--held-out", ",".join(held), "--out", str(tmp_path), "--json").stdout
    rows = json.loads(out)
    assert [r["task"] for r in rows] == held
    for r in rows:
        assert r["architectures"] == 30 and r["portfolio_rule"] == "nearest-task"
        assert r["portfolio_source_task"] in TASKS and r["portfolio_source_task"] != r["task"]
        for m in ("suggestion", "portfolio", "gbm"):
            assert _finite(r[f"{m}_val_accuracy"], r[f"{m}_test_accuracy"])
            assert 0 < r[f"{m}_val_percentile"] <= 100 and 0 < r[f"{m}_test_percentile"] <= 100
        assert r["gbm_source"] == "stored" and r["gbm_seeds"] == 0  # argmax over stored architectures
        assert r["portfolio_source"] == "trained" and r["portfolio_seeds"] == 1  # another task's architecture
    csv_head = (tmp_path / "zero_shot.csv").read_text().splitlines()[0]
    assert "suggestion_val_percentile" in csv_head and "portfolio_val_percentile" in csv_head
    md = (tmp_path / "zero_shot.md").read_text()
    assert "median val percentile: suggestion" in md and "suggestion >= portfolio on" in md
    printed = cli("--store", store_root, "evaluate", "--zero-shot", "--loss", "linear", *FAST, "--seeds", "1",
                  "--baselines", "portfolio", "--held-out", held[0], "--out", str(tmp_path / "md")).stdout
    assert printed == (tmp_path / "md" / "zero_shot.md").read_text() and f"| {held[0]} |" in printed


def test_benchmark_report_judges_the_portfolio_and_gbm_picks(tmp_path, cli):
    """NAS-Bench-201 (3 datasets x 15,625 cells, the same cells everywhere): the portfolio is the cell with the best
    mean within-dataset rank over the two other datasets, checked by hand from the stored rows."""
    from nasdb.benchmarks import import_benchmark
    from nasdb.store import ExperimentStore

    root = str(tmp_path / "nb201")
    store = ExperimentStore(root)
    store.init()
    import_benchmark(store, "nasbench201")
    held = "nasbench201.cifar100"
    out = tmp_path / "report"
    cli("--store", root, "benchmark-report", "--benchmark", "nasbench201", "--tasks", held, "--repeats", "1",
        "--steps", "20", "--max-iters", "20", "--budgets", "3", "--agents", "random", "--out", str(out))
    report = json.loads((out / "report.json").read_text())
    row = report["rows"][0]
    for b in ("portfolio", "gbm"):
        assert _finite(row[f"{b}_regret"], row[f"{b}_percentile"]) and 0 < row[f"{b}_percentile"] <= 100
        assert report["baselines"][held][b]["candidate"] == 0  # a full table holds the pick itself
    assert report["baselines"][held]["portfolio"]["rule"] == "shared"
    assert set(report["settings"]["baselines"]) == {"portfolio", "gbm"}
    means = {}  # (task, cell) -> mean value over seeds, by hand
    for t in ("nasbench201.cifar10", "nasbench201.imagenet"):
        for r in store.experiments_arrow(t).select(["architecture", "val_accuracy"]).to_pylist():
            means.setdefault(t, {}).setdefault(tuple(r["architecture"]), []).append(r["val_accuracy"])
    ranks = {}
    for t, cells in means.items():
        keys = sorted(cells)
        q = quantile_rank(np.array([np.mean(cells[k]) for k in keys]))
        for k, v in zip(keys, q):
            ranks.setdefault(k, []).append(v)
    best = max(np.mean(v) for v in ranks.values() if len(v) == 2)
    assert np.mean(ranks[tuple(report["baselines"][held]["portfolio"]["architecture"])]) == pytest.approx(best)
    md = (out / "report.md").read_text()
    assert "| zero-shot | portfolio | gbm |" in md and "portfolio: " in md
    result = cli("--store", root, "benchmark-report", "--benchmark", "nasbench201", "--baselines", "oracle", code=1)
    assert "unknown baseline 'oracle'" in result.stderr and "\n" not in result.stderr.strip()
