"""run_search, the lookup evaluator, resume, the comparison report and every bad-input refusal (no Ray).

A small fully tabulated benchmark (a 3 x 4 x 2 space, every architecture with two seeds on
three tasks) lives in a real store in a temp directory.
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from nasdb.errors import StoreError, UnknownTaskError
from nasdb.space import Dimension, SearchSpace, default_space
from nasdb.store import ExperimentRecord, ExperimentStore
from nasdb.tasks import builtin_task_names
from search import compare, plan_search, run_search
from search.cli import search_command
from search.evaluators import LookupEvaluator, NotTabulatedError, Trial

# Built-in tasks of sklearn digits (looked up, so renames in the suite do not break these tests):
# three tabulated ones, T1 the usual target, and U, a real task with no rows.
TASKS = tuple(sorted(n for n in builtin_task_names() if n.startswith("digits"))[:3])
T1, T2, T3 = TASKS
U = sorted(n for n in builtin_task_names() if n.startswith("digits"))[3]
TOY = SearchSpace("toy", [Dimension("a", ("x", "y", "z")), Dimension("b", ("p", "q", "r", "s")),
                          Dimension("c", ("off", "on"))])


def reward_of(task_index: int, arch, seed: int) -> float:
    return 0.5 + 0.1 * (arch[0] == task_index % 3) + 0.05 * arch[1] / 3 + 0.01 * seed


def tabulate(root: str, *, skip: set[tuple[int, ...]] = frozenset(), tasks=TASKS) -> ExperimentStore:
    store = ExperimentStore(root)
    store.init()
    store.save_space(TOY)
    with store.writer("tabulate") as w:
        for ti, task in enumerate(tasks):
            for arch in itertools.product(*(range(s) for s in TOY.sizes)):
                if arch in skip:
                    continue
                for seed in (0, 1):
                    v = reward_of(ti, arch, seed)
                    w.append(ExperimentRecord(
                        task=task, space_id=TOY.space_id, architecture=list(arch), seed=seed, recipe={"epochs": 1},
                        agent="random", run_id="populate-toy", val_accuracy=v, test_accuracy=v - 0.02,
                        val_curve=[v], epochs=1, train_seconds=0.1, num_params=10, device="cpu", worker="tab"))
    return store


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bench"))
    tabulate(root)
    return root


# -- the lookup evaluator ------------------------------------------------------------------
def test_lookup_evaluator_contract(bench):
    store = ExperimentStore(bench)
    ev = LookupEvaluator(store, TOY, parallel=2, tasks=[T1])
    trials = [Trial(T1, i, (i % 3, 1, 0), seed=i, experiment_id=f"t{i}") for i in range(3)]
    ev.submit(trials[0])
    ev.submit(trials[1])
    with pytest.raises(RuntimeError, match="already has 2 trials in flight"):
        ev.submit(trials[2])
    got = ev.results()
    assert [e.index for e in got] == [0]  # oldest first, one at a time: parallel-2 staleness
    assert ev.num_pending == 1
    with pytest.raises(RuntimeError, match="needs an idle evaluator"):
        ev.evaluate([trials[2]])
    assert ev.results()[0].index == 1 and ev.results() == []
    e = ev.evaluate([trials[2]])[0]
    assert e.val_accuracy == pytest.approx(reward_of(0, (2, 1, 0), 2 % 2))
    assert e.test_accuracy == pytest.approx(e.val_accuracy - 0.02)
    row = store.experiment(e.experiment_id)  # the evaluation points at the stored row it used
    assert row["architecture"] == [2, 1, 0] and row["seed"] == 0


def test_lookup_refuses_untabulated_architectures_and_tasks(tmp_path):
    store = tabulate(str(tmp_path), skip={(0, 0, 0)})
    ev = LookupEvaluator(store, TOY, tasks=[T1])
    with pytest.raises(NotTabulatedError, match=rf"architecture \[0, 0, 0\] of task '{T1}' is not tabulated"):
        ev.submit(Trial(T1, 0, (0, 0, 0), 0, "x"))
    with pytest.raises(NotTabulatedError, match=f"task '{U}' has no stored rows of space"):
        LookupEvaluator(store, TOY, tasks=[U])
    with pytest.raises(NotTabulatedError, match="with recipe"):
        LookupEvaluator(store, TOY, recipe={"epochs": 5}, tasks=[T1])


def test_search_on_a_partial_table_stops_with_a_clear_error(tmp_path):
    skip = set(itertools.product(range(3), range(4), range(2))) - {(1, 1, 1)}
    tabulate(str(tmp_path), skip=skip)
    with pytest.raises(NotTabulatedError, match="is not tabulated"):
        run_search(str(tmp_path), "random", T1, 20, evaluator="lookup")


# -- run_search with lookup ------------------------------------------------------------------
@pytest.mark.parametrize("agent", ["random", "rl", "tnaml"])
def test_each_agent_runs_against_the_table(bench, agent):
    r = run_search(bench, agent, T1, 8, evaluator="lookup", parallel=2, seed=1)
    assert r.num_evaluations == 8 and r.num_failed == 0
    assert [e.index for e in r.evaluations] == list(range(8))
    assert r.agent["name"] == agent and r.evaluator["name"] == "lookup"
    assert r.best.val_accuracy == max(e.val_accuracy for e in r.evaluations)
    assert 1 <= r.best_position <= 8
    curve = r.best_so_far()
    assert curve.shape == (8,) and curve[-1] == pytest.approx(r.best.test_accuracy)
    if agent == "tnaml":  # pre-trained on the other tasks' offline rows (leave-one-task-out)
        assert r.agent["args"]["pretrain_tasks"] == [T2, T3]
        assert r.pretrain_children == 2 * 48
    run_dir = ExperimentStore(bench).path("search", r.run_id)
    meta = json.loads(open(os.path.join(run_dir, "run.json")).read())
    assert meta["agent"] == r.agent  # the agent's description is stored with its run
    assert os.path.exists(os.path.join(run_dir, "checkpoint.pt"))


def test_rerun_of_a_finished_search_returns_it(bench):
    first = run_search(bench, "rl", T2, 5, evaluator="lookup")
    again = run_search(bench, "rl", T2, 5, evaluator="lookup")
    assert again.run_id == first.run_id and again.sessions == 2
    assert [e.to_dict() for e in again.evaluations] == [e.to_dict() for e in first.evaluations]


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("agent", ["rl", "tnaml"])
def test_resume_after_interruption_continues_the_same_search(tmp_path, agent):
    """An interrupted run, resumed, sees exactly what an uninterrupted run sees."""
    ref_root, cut_root = str(tmp_path / "ref"), str(tmp_path / "cut")
    tabulate(ref_root)
    tabulate(cut_root)
    kw = dict(evaluator="lookup", run_id="r1", checkpoint_every=2, agent_args={"learning_rate": 1e-2})
    ref = run_search(ref_root, agent, T1, 9, **kw)

    def stop(ev, n):
        if n == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_search(cut_root, agent, T1, 9, on_evaluation=stop, **kw)
    ckpt = torch.load(ExperimentStore(cut_root).path("search", "r1", "checkpoint.pt"), weights_only=False)
    assert len(ckpt["evaluations"]) == 4  # checkpoints every 2 children: the 5th was not saved
    resumed = run_search(cut_root, agent, T1, 9, **kw)
    assert resumed.sessions == 2
    assert [e.to_dict() for e in resumed.evaluations] == [e.to_dict() for e in ref.evaluations]


# -- the comparison ----------------------------------------------------------------------------
def test_compare_builds_tables_report_and_plot(bench, tmp_path):
    out = str(tmp_path / "report")
    c = compare(bench, [T1, T2], 12, evaluator="lookup", first_n=5, out_dir=out,
                zero_shot=lambda t: [0.61, 0.63] if t == T1 else [])
    t3 = {r["task"]: r for r in c.table3()}
    rl = c.results[T1]["rl"]
    assert t3[T1]["rl_best_test"] == pytest.approx(rl.best.test_accuracy)
    assert t3[T1]["rl_child_models"] == rl.best_position
    assert t3[T1]["rl_first5_mean"] == pytest.approx(np.mean([e.test_accuracy for e in rl.evaluations[:5]]))
    assert t3[T1]["zero_shot_mean"] == pytest.approx(0.62) and t3[T1]["zero_shot_n"] == 2
    assert np.isnan(t3[T2]["zero_shot_mean"])
    t4 = {r["task"]: r for r in c.table4()}
    tn = c.results[T2]["tnaml"]
    assert t4[T2]["tnaml_first5_mean"] == pytest.approx(tn.first(5)["mean"])
    assert tn.agent["args"]["pretrain_tasks"] == [T1, T3]  # the other tasks
    cost = [r for r in c.cost() if r["method"] != "zero-shot"]
    assert len(cost) == 6 and all(r["children_evaluated"] == 12 and r["children_trained"] == 0 for r in cost)
    for name in ("report.md", "table3.csv", "table4.csv", "cost.csv", "comparison.json", "curves.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with open(os.path.join(out, "curves.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    md = c.to_markdown()
    assert "Table 3" in md and "Table 4" in md and f"| {T1} |" in md and "0.6200 ± 0.0100" in md


def test_compare_reads_stored_zero_shot_rows(tmp_path):
    store = tabulate(str(tmp_path), tasks=(T1, T2))
    with store.writer("predictor") as w:
        for seed, acc in enumerate((0.7, 0.8)):  # relaxed suggestions: never used as lookup rows
            w.append(ExperimentRecord(
                task=T1, space_id=TOY.space_id, architecture=[0, 0, 0], seed=seed, recipe={"epochs": 1},
                agent="zero-shot", run_id="zs", val_accuracy=acc, test_accuracy=acc, val_curve=[acc], epochs=1,
                train_seconds=0.1, num_params=10, device="cpu", worker="p", relaxed_weights=[0.1] * 9))
    c = compare(str(tmp_path), T1, 4, agents=["random"], evaluator="lookup")
    assert c.zero_shot[T1] == [0.7, 0.8]
    assert all(e.val_accuracy < 0.7 for e in c.results[T1]["random"].evaluations)


# -- bad input: one clear line, before any work -------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(agent="bogus"), ValueError, r"unknown search agent 'bogus'; known: \['predictor', 'random', 'rl', 'tnaml'\]"),
    (dict(task="no_such_task"), UnknownTaskError, "no_such_task"),
    (dict(budget=0), ValueError, "`budget` must be an integer >= 1, but got budget=0"),
    (dict(budget=-3), ValueError, "`budget` must be an integer >= 1, but got budget=-3"),
    (dict(agent="tnaml", pretrain_tasks=f"{T2},{T1}"), ValueError,
     rf"pre-training tasks \['{T2}', '{T1}'\] include the target task '{T1}'"),
    (dict(agent="rl", pretrain_tasks=T2), ValueError, "apply to the 'tnaml' agent only"),
    (dict(agent="tnaml", pretrain_tasks=U), ValueError,
     rf"pre-training tasks \['{U}'\] have no offline"),
    (dict(evaluator="magic"), ValueError, "unknown evaluator 'magic'"),
    (dict(parallel=0), ValueError, "`parallel` must be an integer >= 1"),
    (dict(task=U), NotTabulatedError, f"task '{U}' has no stored rows"),
])
def test_bad_input_is_refused_before_any_work(bench, kwargs, error, match):
    args = dict(agent="rl", task=T1, budget=5, evaluator="lookup")
    args.update(kwargs)
    before = sorted(os.listdir(ExperimentStore(bench).path("search"))) if os.path.exists(
        ExperimentStore(bench).path("search")) else []
    with pytest.raises(error, match=match):
        run_search(bench, **args)
    after = sorted(os.listdir(ExperimentStore(bench).path("search"))) if os.path.exists(
        ExperimentStore(bench).path("search")) else []
    assert after == before  # nothing started


def test_tnaml_on_an_empty_store_is_refused(tmp_path):
    with pytest.raises(ValueError, match=f"has no offline children of tasks other than '{T1}'.*populate it first"):
        plan_search(str(tmp_path), "tnaml", T1, 5)
    with pytest.raises(StoreError, match="no nasdb store"):
        plan_search(str(tmp_path / "missing"), "rl", T1, 5, evaluator="lookup")


def test_search_rows_do_not_count_as_pretraining_data(bench):
    """Only offline rows pre-train T-NAML: a task searched by another agent is not 'stored data'."""
    plan = plan_search(bench, "tnaml", T1, 5, evaluator="lookup")
    assert plan.pretrain["tasks"] == [T2, T3]
    rows = plan.pretrain_rows(ExperimentStore(bench), TOY)
    assert {t: len(r) for t, (_, r) in rows.items()} == {T2: 48, T3: 48}


def test_cli_bad_agent_exits_1_with_one_line(bench):
    res = CliRunner().invoke(search_command, ["--store", bench, "--agent", "nope", "--task", T1,
                                              "--budget", "3", "--evaluator", "lookup"])
    assert res.exit_code == 2  # a click choice: a usage error naming the value and the choices
    assert "Invalid value for '--agent': 'nope' is not one of 'predictor', 'random', 'rl', 'tnaml'" in res.output


def test_cli_runs_a_lookup_search(bench):
    res = CliRunner().invoke(search_command, ["--store", bench, "--agent", "random", "--task", T3,
                                              "--budget", "3", "--evaluator", "lookup", "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["num_evaluations"] == 3 and out["agent"]["name"] == "random"


def test_default_space_is_used_for_training_runs(tmp_path):
    plan = plan_search(str(tmp_path), "rl", T1, 3, epochs=1)
    assert plan.space_id == default_space().space_id and plan.recipe["epochs"] == 1
    assert plan.run_id.startswith(f"rl-{T1}-")
    assert plan_search(str(tmp_path), "rl", T1, 3, epochs=1).run_id == plan.run_id  # a rerun resumes
    assert plan_search(str(tmp_path), "rl", T1, 3, epochs=1, seed=2).run_id != plan.run_id


def test_tnaml_live_pretraining_then_transfer(bench):
    r = run_search(bench, "tnaml", T1, 4, evaluator="lookup", pretrain_source="live",
                   pretrain_tasks=f"{T2},{T3}", pretrain_budget=3)
    assert r.pretrain_children == 6 and r.num_evaluations == 4
    ckpt = torch.load(ExperimentStore(bench).path("search", r.run_id, "checkpoint.pt"), weights_only=False)
    assert {e["task"] for e in ckpt["pretrain_evaluations"]} <= {T2, T3}
    assert ckpt["agent"]["controller"]["task_names"] == [T2, T3, T1]
    with pytest.raises(ValueError, match="live T-NAML pre-training needs explicit pre-training tasks"):
        plan_search(bench, "tnaml", T1, 4, evaluator="lookup", pretrain_source="live")


def test_module_entry_point_for_ray_job_submit(bench):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "search.run", "--store", bench, "--agent", "random", "--task",
                          T1, "--budget", "2", "--evaluator", "lookup", "--quiet"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"random on {T1} [random-{T1}-") and "2/2 children" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "search.run", "--store", bench, "--agent", "rl", "--task",
                          T1, "--budget", "0", "--evaluator", "lookup"], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and bad.stderr.strip() == "Error: `budget` must be an integer >= 1, but got budget=0."
