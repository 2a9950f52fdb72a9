"""Searches never hang (issue 14, item 5): trainer actors that cannot start within --start-timeout
fail the search with one line naming the shortfall; comparisons show progress unless --quiet.

The Ray tests share the session's 2-CPU cluster (tests/conftest.py) and hold 1.5 of its CPUs
with a placeholder actor, as a Serve replica or another job would.
"""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from cluster.populate import InsufficientResourcesError, plan_resources, shortfall
from nasdb.space import default_space
from nasdb.store import ExperimentStore
from search import compare, plan_search
from search.cli import compare_command, search_command
from test_search_run import T1, T2, tabulate

TASK = "digits_0to5"


def test_shortfall_names_what_is_missing():
    res = plan_resources({"CPU": 2.0}, 2)
    assert shortfall(res, {"CPU": 2.0}) is None
    assert shortfall(res, {"CPU": 1.5}) == "needs 2 CPUs for 2 trainers, 1.5 available"
    assert shortfall(res, {}, workers=1) == "needs 1 CPUs for 1 trainer, 0 available"
    gpu = plan_resources({"CPU": 4.0, "GPU": 1.0}, 4)  # 4 trainers x 0.25 GPU
    assert shortfall(gpu, {"CPU": 4.0, "GPU": 0.5}) == "needs 1 GPUs for 4 trainers, 0.5 available"


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), "10", True])
def test_bad_start_timeout_is_refused_before_any_work(tmp_path, value):
    with pytest.raises(ValueError, match=r"start timeout must be a positive number of seconds, got"):
        plan_search(str(tmp_path), "random", TASK, 2, start_timeout=value)
    res = CliRunner().invoke(search_command, ["--store", str(tmp_path), "--agent", "random", "--task", TASK,
                                              "--budget", "2", "--start-timeout", "0"])
    assert res.exit_code == 1 and res.output.count("\n") == 1, res.output
    assert "start timeout must be a positive number of seconds, got 0.0" in res.output


@pytest.fixture
def busy_cpus(ray_cluster):
    """A placeholder actor holding 1.5 of the shared cluster's 2 CPUs for the test."""
    ray = ray_cluster

    @ray.remote(num_cpus=1.5)
    class Placeholder:
        def ready(self) -> bool:
            return True

    holder = Placeholder.remote()
    assert ray.get(holder.ready.remote(), timeout=120)
    yield ray
    ray.kill(holder)
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # the next test finds the whole cluster free


def test_search_fails_fast_naming_the_shortfall(busy_cpus, tmp_path):
    t0 = time.monotonic()
    res = CliRunner().invoke(search_command, ["--store", str(tmp_path / "store"), "--agent", "random", "--task",
                                              TASK, "--budget", "2", "--epochs", "1", "--parallel", "2",
                                              "--start-timeout", "2", "--quiet"])
    waited = time.monotonic() - t0
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: needs 2 CPUs for 2 trainers, 0.5 available: "), lines
    assert "2s start timeout" in lines[0] and "--start-timeout" in lines[0]
    assert 2 <= waited < 60, waited  # waited the timeout, not forever
    assert not list((tmp_path / "store").rglob("*.parquet"))  # nothing trained, nothing written


def test_trainer_actors_that_cannot_start_stop_the_evaluator(busy_cpus, tmp_path):
    """The evaluator's own guard (its placement group cannot be placed: the search's first check
    was passed, then the resources were taken): no hang, and nothing left reserved."""
    from search.evaluators import TrainingEvaluator

    ray = busy_cpus
    store = ExperimentStore(str(tmp_path / "store"))
    store.init()
    with pytest.raises(InsufficientResourcesError,
                       match=r"^needs 2 CPUs for 2 trainers, 0.5 available: the trainer actors could not be placed "
                             r"within the 3s start timeout"):
        TrainingEvaluator(store, default_space(), recipe={"epochs": 1}, agent="random", run_id="stuck",
                          parallel=2, start_timeout_s=3)
    deadline = time.monotonic() + 30  # the reservation was given back: only the placeholder holds CPUs
    while ray.available_resources().get("CPU", 0) < 0.5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == pytest.approx(0.5)
    assert not [pg for pg in ray.util.placement_group_table().values() if pg["state"] != "REMOVED"]


def test_compare_shows_progress_by_default_and_quiet_silences_it(tmp_path, capsys):
    root = str(tmp_path / "bench")
    tabulate(root)
    compare(root, [T1, T2], 4, agents=["random"], evaluator="lookup")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"compare: search 1/2: random on {T1} (budget 4)"
    assert any(line.startswith(f"[random {T1}] 4/4 children, best val ") for line in err), err
    assert f"compare: search 2/2: random on {T2} (budget 4)" in err

    res = CliRunner().invoke(compare_command, ["--store", root, "--tasks", T1, "--agents", "random", "--budget", "4",
                                               "--evaluator", "lookup", "--json", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "compare:" not in res.output and "children, best val" not in res.output
