"""Search with learning-curve early stopping (issue 8, Baker et al. Sec. 3).

Without Ray: the reward of a stopped child (its predicted final accuracy), that "best" and the
test statistics count complete children only, T-NAML's reward for stored stopped rows, the
plan's run id and the refusals. On a real local Ray cluster: an RL-NAS search with early
stopping stores the flags, feeds the agent the predicted final accuracy, and resumes with its
curve predictor seeded from its own complete children.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from click.testing import CliRunner

from nasdb.space import default_space
from nasdb.store import ExperimentRecord, ExperimentStore
from search import plan_search, run_search
from search.cli import search_command
from search.evaluators import Evaluation, Trial
from search.result import SearchResult

TASK = "digits10_small"
EPOCHS = 4


def ev(index: int, val: float, test: float, *, stopped: bool = False, predicted: float | None = None,
       status: str = "ok", epochs: int = EPOCHS) -> Evaluation:
    trial = Trial(TASK, index, (0,) * 15, index, f"id{index}")
    return Evaluation.of(trial, val, test, status=status, stopped_early=stopped, predicted_final=predicted,
                         epochs=epochs)


# -- rewards and the result (no Ray) -------------------------------------------------------
def test_reward_of_a_stopped_child_is_its_predicted_final_accuracy():
    assert ev(0, 0.7, 0.6).reward == 0.7
    assert ev(0, 0.3, 0.2, stopped=True, predicted=0.45, epochs=2).reward == 0.45
    assert ev(0, 0.3, 0.2, stopped=True, predicted=1.3, epochs=2).reward == 1.0  # clipped to [0, 1]
    assert ev(0, 0.3, 0.2, stopped=True, predicted=-0.1, epochs=2).reward == 0.0
    assert ev(0, 0.3, 0.2, stopped=True, predicted=None, epochs=2).reward == 0.3  # no prediction: partial val
    assert ev(0, 0.3, 0.2, stopped=True, predicted=math.nan, epochs=2).predicted_final is None
    assert ev(0, math.nan, math.nan, status="failed", stopped=True, predicted=0.5).reward == 0.0
    e = ev(3, 0.3, 0.2, stopped=True, predicted=0.45, epochs=2)
    assert Evaluation.from_dict(e.to_dict()) == e
    old = {k: v for k, v in ev(1, 0.5, 0.4).to_dict().items() if k not in ("stopped_early", "predicted_final",
                                                                            "epochs")}
    assert Evaluation.from_dict(old).complete  # checkpoints written before early stopping still load


def test_best_and_test_statistics_count_complete_children_only():
    evals = [ev(0, 0.80, 0.78), ev(1, 0.85, 0.70, stopped=True, predicted=0.86, epochs=2), ev(2, 0.82, 0.81),
             ev(3, math.nan, math.nan, status="failed")]
    r = SearchResult("run", TASK, {"name": "rl", "args": {}}, {"name": "train", "args": {}}, 4, evals)
    assert r.best.index == 2 and r.best_position == 3  # the stopped child's higher partial val never wins
    assert r.num_stopped == 1 and r.num_failed == 1
    assert r.epochs_trained == 4 + 2 + 4 + 4
    assert r.first(3) == {"n": 2, "mean": pytest.approx(0.795), "std": pytest.approx(0.015)}
    assert np.allclose(r.best_so_far(1), [0.78, 0.78, 0.81, 0.81])
    d = SearchResult.from_dict(r.to_dict())
    assert d.best.index == 2 and d.num_stopped == 1
    assert "1 stopped early" in r.summary()


def test_tnaml_pretrains_on_the_predicted_final_accuracy_of_stored_stopped_rows(tmp_path):
    store = ExperimentStore(str(tmp_path))
    store.init()
    space = default_space()
    store.save_space(space)
    archs = space.sample(3, 0)
    stops = [(False, None), (True, 0.55), (True, None)]  # complete; stopped with a prediction; without one
    with store.writer("w") as w:
        for i, (a, (stopped, predicted)) in enumerate(zip(archs, stops)):
            w.append(ExperimentRecord(task="digits_mod3", space_id=space.space_id, architecture=a.tolist(), seed=i,
                                      recipe={"epochs": EPOCHS}, agent="random", run_id="offline", val_accuracy=0.4,
                                      test_accuracy=0.4, val_curve=[0.4], epochs=1 if stopped else EPOCHS,
                                      train_seconds=0.1, num_params=10, device="cpu", worker="w",
                                      stopped_early=stopped, predicted_final=predicted))
    plan = plan_search(store, "tnaml", TASK, 3, epochs=EPOCHS, pretrain_tasks="digits_mod3")
    got_archs, rewards = plan.pretrain_rows(store, space)["digits_mod3"]
    got = {tuple(a): r for a, r in zip(got_archs.tolist(), rewards)}
    assert got == {tuple(archs[0]): 0.4, tuple(archs[1]): 0.55, tuple(archs[2]): 0.4}


# -- the plan (no Ray) -----------------------------------------------------------------------
def test_plan_with_early_stopping_is_another_run_and_refusals(tmp_path):
    root = str(tmp_path)
    off = plan_search(root, "rl", TASK, 3, epochs=EPOCHS)
    on = plan_search(root, "rl", TASK, 3, epochs=EPOCHS, early_stop={"burn_in": 5})
    assert off.early_stop is None and "early_stop" not in off.evaluator_description()["args"]
    assert on.early_stop["burn_in"] == 5 and on.early_stop["num_epochs"] == EPOCHS
    assert on.run_id != off.run_id and on.run_id.startswith(f"rl-{TASK}-")
    assert plan_search(root, "rl", TASK, 3, epochs=EPOCHS, early_stop=False).run_id == off.run_id
    assert plan_search(root, "rl", TASK, 3, epochs=EPOCHS, early_stop=True).early_stop["burn_in"] == 100
    for kwargs, match in [(dict(early_stop={"burn_in": 2}), "`burn_in` must be an integer >= 5, but got burn_in=2"),
                          (dict(early_stop={"min_tau": 4}), "min_tau=4 leaves no epoch to stop at"),
                          (dict(early_stop={"bogus": 1}), r"unknown early-stop settings \['bogus'\]"),
                          (dict(early_stop=True, epochs=1), "needs children of >= 2 epochs"),
                          (dict(early_stop=True, evaluator="lookup"), "train evaluator only")]:
        with pytest.raises(ValueError, match=match):
            plan_search(root, "rl", TASK, 3, **{"epochs": EPOCHS, **kwargs})


@pytest.mark.parametrize("config, match", [
    ('{"confidence": 1.5}', r"confidence \(Delta\) must be in \(0, 1\), got 1.5"),
    ('{"burn_in": 5', "--early-stop-config is not JSON"),
    ("[5]", "--early-stop-config must be a JSON object"),
    ('{"delta": "big"}', "hold a value of the wrong type"),
])
def test_cli_bad_early_stop_config_is_one_line(tmp_path, config, match):
    res = CliRunner().invoke(search_command, ["--store", str(tmp_path), "--agent", "rl", "--task", TASK,
                                              "--budget", "3", "--epochs", "4", "--early-stop-config", config])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and res.output.count("\n") == 1, res.output
    assert re.search(match, res.output), res.output


# -- a real search on Ray --------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The session's shared Ray cluster (tests/conftest.py)."""
    return ray_cluster


def test_rl_search_with_early_stopping_rewards_the_prediction_and_resumes(cluster, tmp_path, monkeypatch):
    from search import SearchAgent

    told: list[tuple[tuple[int, ...], float]] = []
    tell = SearchAgent.tell

    def spy(self, architectures, rewards, task=None):
        told.extend((tuple(int(v) for v in a), float(r)) for a, r in zip(architectures, rewards))
        return tell(self, architectures, rewards, task)

    monkeypatch.setattr(SearchAgent, "tell", spy)
    root, budget = str(tmp_path / "store"), 24
    es = {"burn_in": 6, "confidence": 0.9, "search_trials": 0, "retrain_every": 3}
    first = run_search(root, "rl", TASK, 16, epochs=EPOCHS, seed=1, early_stop=es, as_actor=False,
                       run_id="es-run", checkpoint_every=4)
    r = run_search(root, "rl", TASK, budget, epochs=EPOCHS, seed=1, early_stop=es, as_actor=False,
                   run_id="es-run")  # a larger budget resumes the same run
    assert first.num_evaluations == 16 and r.num_evaluations == budget and r.sessions == 2

    rows = {row["experiment_id"]: row for row in ExperimentStore(root).experiments_arrow(TASK, status=None).to_pylist()
            if row["run_id"] == "es-run"}
    assert len(rows) == budget
    for e in r.evaluations:
        row = rows[e.experiment_id]
        assert (row["stopped_early"], row["epochs"], row["predicted_final"]) == (
            e.stopped_early, e.epochs, e.predicted_final)
        assert len(row["val_curve"]) == row["epochs"]
        if e.ok and e.stopped_early:
            assert 1 <= e.epochs < EPOCHS and e.predicted_final is not None
        elif e.ok:
            assert e.epochs == EPOCHS and e.predicted_final is None
    assert all(not e.stopped_early for e in r.evaluations[:6]), "nothing stops during the burn-in"
    stopped = [e for e in r.evaluations if e.ok and e.stopped_early]
    assert stopped, "24 RL-NAS children at Delta=0.9: the weakest of the initial random policy must stop"
    # parallel=1: the agent was told in trial order, a stopped child's predicted final accuracy as its reward
    assert [a for a, _ in told] == [e.architecture for e in r.evaluations]
    assert [t for _, t in told] == pytest.approx([e.reward for e in r.evaluations])
    assert all(e.reward == pytest.approx(min(1.0, max(0.0, e.predicted_final))) for e in stopped)
    assert not r.best.stopped_early and r.best.epochs == EPOCHS

    # the resumed session seeded its curve predictor with the run's own complete children
    from search import SearchDriver

    plan = plan_search(root, "rl", TASK, budget, epochs=EPOCHS, seed=1, early_stop=es, run_id="es-run")
    curves, features = SearchDriver(plan).complete_curves("es-run", TASK)
    assert curves.shape == (sum(e.complete for e in r.evaluations), EPOCHS) and len(features) == len(curves)
    # read as the trainers read them when the stopper pools with an architecture prior: one more column
    from cluster.early_stop import ArchitecturePrior

    space = default_space()
    flat = ArchitecturePrior(space, np.zeros(space.encoding_size), 0.5, num_tasks=2, num_curves=10)
    _, with_prior = SearchDriver(plan).complete_curves("es-run", TASK, flat)
    np.testing.assert_array_equal(with_prior, np.hstack([features, np.full((len(features), 1), 0.5)]))


def test_search_pools_other_tasks_curves_and_stops_from_the_pooled_burn_in_on(cluster, tmp_path, capsys):
    """The store holds complete children of two other tasks (same recipe and space): the search's
    stopper pools over them and stops children after pool_burn_in = 6 of its own, where its own
    burn-in of 50 would stop none of 24; with pool_curves=0 it stops none."""
    from cluster.child import TrainRecipe
    from cluster.populate import PopulateConfig, populate

    root = str(tmp_path / "store")
    store = ExperimentStore(root)
    store.init()
    populate(store, PopulateConfig(per_task=30, tasks=["digits_mod3", "digits_parity"],
                                   recipe=TrainRecipe(epochs=EPOCHS), workers=2), progress=False)
    es = {"burn_in": 50, "pool_burn_in": 6, "confidence": 0.9, "search_trials": 0, "retrain_every": 3}
    r = run_search(root, "random", TASK, 24, epochs=EPOCHS, seed=2, early_stop=es, as_actor=False, verbose=True)
    assert "early stopping: pooling over 60 complete curves of 2 tasks" in capsys.readouterr().out
    assert all(not e.stopped_early for e in r.evaluations[:6]), "the pooled burn-in trains to the end"
    assert r.num_stopped > 0, "24 random children at Delta=0.9 after a pooled burn-in of 6: the weakest stop"
    assert not r.best.stopped_early
    own = run_search(root, "random", TASK, 24, epochs=EPOCHS, seed=2, early_stop={**es, "pool_curves": 0},
                     as_actor=False)
    assert own.run_id != r.run_id and own.num_stopped == 0  # its own burn-in of 50 is never reached
