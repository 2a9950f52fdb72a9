"""Batched search (issue 19): ``batch_size`` children proposed, trained and told at once.

Lookup runs (no Ray) on the small tabulated benchmark of test_search_run.py check that batch size
1 reproduces the one-at-a-time search exactly, one REINFORCE update per batch, resume after an
interruption mid-batch (one batch or two in flight), and the refusals. One Ray run trains real
children in batches on 2 trainer actors, a batch per actor, and resumes with the rows of one
batch lost.
"""

from __future__ import annotations

import glob
import os

import pytest
import torch
from click.testing import CliRunner

from nasdb.space import default_space
from nasdb.store import ExperimentStore
from search import compare, plan_search, run_search
from search.cli import search_command
from test_search_run import T1, T2, tabulate

# Architectures the search evaluated before batching existed (commit 7432924): lookup, parallel 2,
# seed 2, 12 children (controller learning rate 1e-2).
TODAY = {
    "rl": [[1, 1, 1], [1, 0, 0], [2, 1, 0], [0, 3, 0], [2, 1, 0], [0, 0, 0], [1, 3, 1], [1, 3, 0], [0, 2, 0],
           [0, 2, 0], [1, 1, 0], [2, 1, 0]],
    "tnaml": [[2, 3, 1], [2, 3, 0], [1, 0, 0], [2, 3, 0], [2, 3, 0], [2, 3, 0], [2, 3, 0], [2, 3, 0], [2, 3, 0],
              [2, 3, 0], [2, 3, 0], [2, 3, 0]],
    "random": [[0, 1, 1], [0, 2, 1], [0, 0, 0], [1, 2, 0], [1, 2, 0], [1, 3, 1], [1, 0, 0], [1, 3, 1], [0, 3, 0],
               [2, 0, 0], [0, 3, 1], [2, 2, 0]],
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("bench"))
    tabulate(root)
    return root


def _lr(agent: str) -> dict:
    return {} if agent == "random" else {"learning_rate": 1e-2}


@pytest.mark.parametrize("agent", sorted(TODAY))
def test_batch_size_one_gives_todays_search(bench, agent):
    r = run_search(bench, agent, T1, 12, evaluator="lookup", parallel=2, seed=2, agent_args=_lr(agent),
                   batch_size=1)
    assert [list(e.architecture) for e in r.evaluations] == TODAY[agent]
    plain = plan_search(bench, agent, T1, 12, evaluator="lookup", parallel=2, seed=2, agent_args=_lr(agent))
    assert r.run_id == plain.run_id and "batch_size" not in r.evaluator["args"]  # same run as before batching


def _updates(root: str, run_id: str) -> int:
    ckpt = torch.load(ExperimentStore(root).path("search", run_id, "checkpoint.pt"), weights_only=False)
    return ckpt["agent"]["reinforce"]["num_updates"]


@pytest.mark.parametrize("agent", ["rl", "tnaml"])
def test_one_reinforce_update_per_batch(bench, agent):
    r = run_search(bench, agent, T2, 10, evaluator="lookup", seed=1, agent_args=_lr(agent), batch_size=4)
    assert [e.index for e in r.evaluations] == list(range(10)) and r.evaluator["args"]["batch_size"] == 4
    pretrain = 0 if agent == "rl" else 2 * 48  # T-NAML's replay of the stored rows, one update each
    assert _updates(bench, r.run_id) == pretrain + 3  # batches of 4, 4 and 2
    one = plan_search(bench, agent, T2, 10, evaluator="lookup", seed=1, agent_args=_lr(agent))
    assert one.run_id != r.run_id  # a batched search is another run


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("parallel, in_flight, old_format", [
    (1, [[4, 5, 6, 7]], False), (2, [[4, 5, 6, 7], [8, 9, 10]], False),
    (1, [[4, 5, 6, 7]], True)])  # the checkpoint of one batch at a time, before batches in flight
def test_interrupted_mid_batch_resumes_without_losing_or_repeating_a_child(tmp_path, parallel, in_flight, old_format):
    ref_root, cut_root = str(tmp_path / "ref"), str(tmp_path / "cut")
    tabulate(ref_root)
    tabulate(cut_root)
    kw = dict(evaluator="lookup", run_id="b1", batch_size=4, parallel=parallel, agent_args={"learning_rate": 1e-2})
    ref = run_search(ref_root, "rl", T1, 11, **kw)

    def stop(ev, n):
        if n == 6:  # the 2nd batch was evaluated, not yet told nor checkpointed
            raise Interrupt

    with pytest.raises(Interrupt):
        run_search(cut_root, "rl", T1, 11, on_evaluation=stop, **kw)
    path = ExperimentStore(cut_root).path("search", "b1", "checkpoint.pt")
    ckpt = torch.load(path, weights_only=False)
    assert len(ckpt["evaluations"]) == 4
    assert [[t["index"] for t in b] for b in ckpt["pending"]["batches"]] == in_flight  # the batches in flight
    if old_format:  # as written before several batches could be in flight
        ckpt["pending"] = {"run_id": "b1", "trials": ckpt["pending"]["batches"][0]}
        torch.save(ckpt, path)
    resumed = run_search(cut_root, "rl", T1, 11, **kw)
    assert resumed.sessions == 2
    assert [e.to_dict() for e in resumed.evaluations] == [e.to_dict() for e in ref.evaluations]


@pytest.mark.parametrize("batch_size, match", [(0, "`batch size` must be an integer >= 1, but got 0"),
                                               (13, "batch size 13 is larger than the budget 12"),
                                               ("4", "`batch size` must be an integer >= 1, but got '4'")])
def test_bad_batch_sizes_are_refused(bench, batch_size, match):
    with pytest.raises(ValueError, match=match):
        plan_search(bench, "rl", T1, 12, evaluator="lookup", batch_size=batch_size)


def test_cli_batch_size(bench):
    runner = CliRunner()
    out = runner.invoke(search_command, ["--store", bench, "--agent", "rl", "--task", T1, "--budget", "5",
                                         "--evaluator", "lookup", "--batch-size", "6"])
    assert out.exit_code == 1 and out.output.strip().splitlines() == [
        "Error: batch size 6 is larger than the budget 5"]
    out = runner.invoke(search_command, ["--store", bench, "--agent", "random", "--task", T1, "--budget", "5",
                                         "--evaluator", "lookup", "--json", "--quiet"])  # default: capped at 5
    assert out.exit_code == 0, out.output
    assert '"batch_size": 5' in out.output
    c = compare(bench, [T1], 6, agents=["random"], evaluator="lookup", batch_size=3, first_n=2)
    assert c.results[T1]["random"].evaluator["args"]["batch_size"] == 3


# -- real children on Ray -------------------------------------------------------------------------
def test_batched_training_search_resumes_its_batches_in_flight(tmp_path, ray_cluster):
    ray = ray_cluster  # the session's shared local cluster (tests/conftest.py)
    from search import SearchDriver
    from search.evaluators import shared_objects
    from search.run import execute
    from test_search_ray import TASK

    root = str(tmp_path / "store")
    store = ExperimentStore(root)
    store.init()
    store.save_space(default_space())
    plan = plan_search(root, "rl", TASK, 8, epochs=1, parallel=2, run_id="batched", batch_size=4)

    def crash(evaluation, n):  # pickled by value into the agent's actor
        if n == 6:  # the 2nd batch is stored and evaluated, not yet told
            os._exit(1)

    actor = ray.remote(num_cpus=0)(SearchDriver).remote(plan, crash, shared_objects(store, [TASK]))
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.run.remote())
    rows = [r for r in store.experiments_arrow(TASK, status=None).to_pylist() if r["run_id"] == "batched"]
    assert len(rows) == 8 and len({r["worker"] for r in rows}) == 2  # 2 batches in flight, one per actor
    files = glob.glob(os.path.join(root, "experiments", f"task={TASK}", "*.parquet"))
    assert sorted(len(_ids(f)) for f in files) == [4, 4]  # one flush per batch
    # as if one actor had died before its flush: drop the file of one batch
    lost = _ids(files[0])
    kept = {r["experiment_id"]: r for r in rows if r["experiment_id"] not in lost}
    os.remove(files[0])
    result = execute(plan)
    after = [r for r in store.experiments_arrow(TASK, status=None).to_pylist() if r["run_id"] == "batched"]
    assert result.num_evaluations == 8 and sorted(e.index for e in result.evaluations) == list(range(8))
    assert len(after) == len({r["experiment_id"] for r in after}) == 8  # none lost, none twice
    by_id = {r["experiment_id"]: r for r in after}
    for eid in kept:  # read back, not retrained: same writer as before the crash
        assert by_id[eid]["worker"] == kept[eid]["worker"]
    assert not {by_id[eid]["worker"] for eid in lost} & {r["worker"] for r in rows}  # retrained by new actors
    for e in result.evaluations:
        assert e.val_accuracy == pytest.approx(by_id[e.experiment_id]["val_accuracy"])


def _ids(path: str) -> set[str]:
    import pyarrow.parquet as pq

    return set(pq.read_table(path, columns=["experiment_id"]).column(0).to_pylist())
