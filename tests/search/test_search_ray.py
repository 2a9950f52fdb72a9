"""Search agents on a real local Ray cluster with real child training (1 epoch, a small built-in task).

Checks the rows each agent leaves in the store (agent, run id, count), that a trainer actor lost
mid-trial is replaced and its trial retried, and that a search whose agent actor is killed
resumes from its stored children and checkpoint.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

ray = pytest.importorskip("ray")

from nasdb.space import default_space  # noqa: E402
from nasdb.store import ExperimentRecord, ExperimentStore, experiment_id  # noqa: E402
from search import SearchDriver, plan_search, run_search, seed_base  # noqa: E402
from search.evaluators import LookupEvaluator, TrainingEvaluator, Trial, shared_objects  # noqa: E402
from search.run import execute  # noqa: E402

from nasdb.tasks import builtin_task_names  # noqa: E402

# Two built-in tasks of sklearn digits (a child trains in well under a second per epoch): the
# searched one, and another whose offline rows T-NAML pre-trains on.
TASK, OTHER = [n for n in builtin_task_names() if n.startswith("digits")][1:3]
RECIPE_EPOCHS = 1


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The session's shared Ray cluster (tests/conftest.py)."""
    return ray_cluster


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A store with a few offline rows of another task, for T-NAML to pre-train on."""
    root = str(tmp_path_factory.mktemp("store"))
    store = ExperimentStore(root)
    store.init()
    space = default_space()
    store.save_space(space)
    rng = np.random.default_rng(0)
    with store.writer("offline") as w:
        for i, arch in enumerate(space.sample(24, rng)):
            v = float(0.6 + 0.3 * (arch[0] == 0) + 0.01 * rng.random())
            w.append(ExperimentRecord(
                task=OTHER, space_id=space.space_id, architecture=arch.tolist(), seed=0,
                recipe={"epochs": 20}, agent="random", run_id="populate-test", val_accuracy=v, test_accuracy=v,
                val_curve=[v], epochs=20, train_seconds=1.0, num_params=100, device="cpu", worker="offline"))
    return root


def run_rows(store: ExperimentStore, task: str, run_id: str) -> list[dict]:
    rows = store.experiments_arrow(task, status=None).to_pylist()
    return [r for r in rows if r["run_id"] == run_id]


@pytest.mark.parametrize("agent", ["random", "rl", "tnaml"])
def test_agent_trains_real_children_and_tags_its_rows(cluster, root, agent):
    # random's loop runs in this process, the others' in their own actor: both drive trainer actors
    r = run_search(root, agent, TASK, 4, epochs=RECIPE_EPOCHS, parallel=2, seed=3, as_actor=agent != "random")
    assert r.num_evaluations == 4 and r.evaluator["name"] == "train"
    rows = run_rows(ExperimentStore(root), TASK, r.run_id)
    assert len(rows) == 4
    assert {row["agent"] for row in rows} == {agent}
    assert {row["status"] for row in rows} == {"ok"}
    assert all(row["epochs"] == RECIPE_EPOCHS and '"epochs":1' in row["recipe"] for row in rows)
    by_id = {row["experiment_id"]: row for row in rows}
    for e in r.evaluations:  # the result is exactly what the store holds
        row = by_id[e.experiment_id]
        assert row["val_accuracy"] == pytest.approx(e.val_accuracy) and row["test_accuracy"] == pytest.approx(
            e.test_accuracy)
        assert row["architecture"] == list(e.architecture) and row["seed"] == seed_base(r.run_id) + e.index
    assert len({row["worker"] for row in rows}) >= 1
    if agent == "tnaml":
        assert r.agent["args"]["pretrain_tasks"] == [OTHER] and r.pretrain_children == 24


def test_predictor_agent_trains_real_children_in_its_actor(cluster, root, tmp_path):
    """The plan ships the predictor to the agent's actor as store root and id (SurrogateFactory)."""
    import shutil

    from predictor.surrogate import SurrogateFactory
    from predictor.testing import fit_tiny_predictor

    mine = str(tmp_path / "store")  # a copy with offline rows of a third task: a predictor fits on two
    shutil.copytree(root, mine)
    store, space = ExperimentStore(mine), default_space()
    third = [n for n in builtin_task_names() if n.startswith("digits") and n not in (TASK, OTHER)][0]
    with store.writer("offline-third") as w:
        for i, arch in enumerate(space.sample(12, 1)):
            w.append(ExperimentRecord(
                task=third, space_id=space.space_id, architecture=arch.tolist(), seed=0, recipe={"epochs": 20},
                agent="random", run_id="populate-test", val_accuracy=0.5 + 0.02 * i, test_accuracy=0.5,
                val_curve=[0.5], epochs=20, train_seconds=1.0, num_params=100, device="cpu", worker="offline"))
    pid = fit_tiny_predictor(store, [OTHER, third], num_steps=30, use_meta_features=False, ensemble_size=2)
    factory = SurrogateFactory(mine, pid)
    r = run_search(mine, "predictor", TASK, 3, epochs=RECIPE_EPOCHS, parallel=1, as_actor=True, surrogate=factory)
    rows = run_rows(store, TASK, r.run_id)
    assert len(rows) == 3 and {row["agent"] for row in rows} == {"predictor"}
    assert {row["status"] for row in rows} == {"ok"} and r.agent["args"]["predictor"] == pid
    assert list(r.evaluations[0].architecture) == factory(TASK).candidates()[0].tolist()  # zero-shot first


def test_lost_trainer_actor_is_replaced_and_its_trial_retried(cluster, root):
    store = ExperimentStore(root)
    space = default_space()
    plan = plan_search(root, "random", TASK, 1, epochs=RECIPE_EPOCHS)
    recipe = plan.recipe
    arch = (0, 1, 2, 3, 4, 5, 6, 7, 1, 1, 0, 0, 0, 0, 0)
    trial = Trial(TASK, 0, arch, 11, experiment_id(TASK, space.space_id, list(arch), 11, recipe,
                                                   **plan.trial_fingerprints(TASK)))  # the data's part of the id
    with TrainingEvaluator(store, space, recipe=recipe, agent="test", run_id="retry-run", parallel=1,
                           shared=shared_objects(store, [TASK])) as ev:
        ev.submit(trial)
        ray.kill(ev._slots[0].handle)  # lost before (or while) training
        out = ev.results()
        assert ev._slots[0].generation == 1  # a replacement actor ran the retry
    assert len(out) == 1 and out[0].ok and out[0].experiment_id == trial.experiment_id
    rows = run_rows(store, TASK, "retry-run")
    assert [r["experiment_id"] for r in rows] == [trial.experiment_id]


def test_crashed_search_resumes_from_stored_children_and_checkpoint(cluster, root):
    store = ExperimentStore(root)
    plan = plan_search(root, "rl", TASK, 5, epochs=RECIPE_EPOCHS, parallel=1, run_id="crash-me", checkpoint_every=2)

    def crash(evaluation, n):  # pickled by value into the agent's actor
        if n == 3:  # the 3rd row is stored, the last checkpoint holds 2 children
            os._exit(1)

    actor = ray.remote(num_cpus=0)(SearchDriver).remote(plan, crash, shared_objects(store, [TASK]))
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.run.remote())  # the agent's actor died; its trainer actors died with it
    before = run_rows(store, TASK, "crash-me")
    assert len(before) == 3
    ckpt = torch.load(store.path("search", "crash-me", "checkpoint.pt"), weights_only=False)
    assert len(ckpt["evaluations"]) == 2
    result = execute(plan)
    after = run_rows(store, TASK, "crash-me")
    assert result.sessions == 2 and result.num_evaluations == 5
    assert {r["experiment_id"] for r in before} <= {e.experiment_id for e in result.evaluations}  # not retrained
    assert len(after) == len({r["experiment_id"] for r in after}) == 5
    assert sorted(e.index for e in result.evaluations) == [0, 1, 2, 3, 4]


@pytest.fixture(params=["lookup", "train"])
def evaluator(request, cluster, root):
    """Each evaluator over the same two trials; the lookup table holds exactly those two rows."""
    store, space = ExperimentStore(root), default_space()
    plan = plan_search(root, "random", TASK, 1, epochs=RECIPE_EPOCHS)
    recipe = plan.recipe
    archs = [(1, 0, 2, 4, 6, 8, 10, 11, 1, 0, 1, 0, 1, 0, 1), (6, 11, 10, 9, 8, 7, 6, 5, 1, 1, 1, 1, 1, 1, 1)]
    trials = [Trial(TASK, i, a, 100 + i, experiment_id(TASK, space.space_id, list(a), 100 + i, recipe,
                                                       **plan.trial_fingerprints(TASK)))
              for i, a in enumerate(archs)]
    if request.param == "lookup":
        with store.writer("contract-table") as w:
            for t in trials:
                w.append(ExperimentRecord(
                    task=TASK, space_id=space.space_id, architecture=list(t.architecture), seed=t.seed,
                    recipe=recipe, agent="random", run_id="contract-table", val_accuracy=0.5 + t.index / 10,
                    test_accuracy=0.5, val_curve=[0.5], epochs=1, train_seconds=0.1, num_params=1, device="cpu",
                    worker="t"))
        ev = LookupEvaluator(store, space, recipe=recipe, parallel=2, tasks=[TASK])
    else:
        ev = TrainingEvaluator(store, space, recipe=recipe, agent="test", run_id="contract-run", parallel=2,
                               shared=shared_objects(store, [TASK]))
    with ev:
        yield ev, trials


def test_evaluator_contract(evaluator):
    ev, trials = evaluator
    ev.submit(trials[0])
    ev.submit(trials[1])
    with pytest.raises(RuntimeError, match="in flight"):
        ev.submit(trials[0])
    seen = []
    while ev.num_pending:
        got = ev.results()
        assert got, "results() returned nothing while trials were pending"
        seen += got
    assert ev.results() == []
    assert sorted(e.index for e in seen) == [0, 1]  # every trial comes back exactly once
    assert all(e.ok and 0.0 <= e.val_accuracy <= 1.0 for e in seen)
    again = ev.evaluate(list(reversed(trials)))  # in the order asked for
    assert [e.index for e in again] == [1, 0]
