"""cluster/populate on a real local Ray cluster: plan, resume, killed actors, failures, refusals."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import click
import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from click.testing import CliRunner

from cluster.child import ChildTrainer, GuardedObserver, TrainRecipe
from cluster.populate import (Chunk, InsufficientResourcesError, PopulateConfig, PopulateSummary, Progress, TaskSummary,
                              check_ray_address, make_chunks, plan_resources, plan_task, populate,
                              sample_task_architectures, split_chunk)
from cluster.populate.cli import populate_command
from nasdb.errors import StoreError, UnknownTaskError
from nasdb.space import default_space
from nasdb.store import ExperimentStore
from nasdb.tasks import load_builtin_task

TASKS = ["digits_0to5", "digits_mod3", "digits_confusable4"]  # small built-in tasks (180-358 training images)
ONE, NEW = "digits_0to5", "digits_loops"
RECIPE = TrainRecipe(epochs=2)


def planned_items(task: str, n: int, seed: int = 0):
    """What populate plans for ``task``: ids include the task data's and the embedding bank's fingerprints."""
    from cluster.child import default_bank

    return plan_task(default_space(), task, n, seed=seed, recipe=RECIPE.to_dict(),
                     task_fingerprint=load_builtin_task(task).fingerprint(),
                     bank_fingerprint=default_bank().fingerprint())


def _raw_rows(root: Path, task: str | None = None) -> list[dict]:
    """Every row of every published experiments file, NOT deduplicated."""
    base = root / "experiments" / (f"task={task}" if task else "")
    rows = []
    for f in sorted(base.rglob("part-*.parquet")):
        rows += pq.read_table(f, columns=["experiment_id", "status", "val_accuracy", "test_accuracy"]).to_pylist()
    return rows


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


# -- the plan (no Ray) ---------------------------------------------------------------------
def test_plan_is_deterministic_per_task_and_extends_as_a_prefix():
    space, recipe = default_space(), RECIPE.to_dict()
    a5 = sample_task_architectures(space, ONE, 5, seed=3)
    a9 = sample_task_architectures(space, ONE, 9, seed=3)
    assert a9.shape == (9, space.num_dimensions)
    np.testing.assert_array_equal(a9[:5], a5)  # raising N extends the same sequence
    assert len({tuple(a) for a in a9}) == 9  # distinct architectures
    other = sample_task_architectures(space, "digits_parity", 5, seed=3)
    assert not np.array_equal(other, a5)  # per-task streams
    assert not np.array_equal(sample_task_architectures(space, ONE, 5, seed=4), a5)
    items = plan_task(space, ONE, 9, seed=3, recipe=recipe)
    assert [i.index for i in items] == list(range(9))
    assert len({i.experiment_id for i in items}) == 9
    assert [i.experiment_id for i in plan_task(space, ONE, 5, seed=3, recipe=recipe)] == \
        [i.experiment_id for i in items[:5]]


def test_chunks_never_mix_tasks_and_split_in_halves():
    space, recipe = default_space(), RECIPE.to_dict()
    items = plan_task(space, ONE, 5, seed=0, recipe=recipe) + plan_task(space, "digits_parity", 3, seed=0,
                                                                                recipe=recipe)
    chunks = make_chunks(items, 2)
    assert [(c.task, len(c)) for c in chunks] == [(ONE, 2), (ONE, 2), (ONE, 1),
                                                  ("digits_parity", 2), ("digits_parity", 1)]
    assert [c.chunk_id for c in chunks] == list(range(5))
    halves = split_chunk(Chunk(7, ONE, items[:5], failures=2), next_id=10)
    assert [len(h) for h in halves] == [2, 3] and [h.failures for h in halves] == [2, 2]
    assert [i for h in halves for i in h.items] == items[:5]
    with pytest.raises(ValueError, match="chunk size"):
        make_chunks(items, 0)


def test_plan_resources_fits_or_refuses():
    cpu = plan_resources({"CPU": 8.0})
    assert (cpu.workers, cpu.num_cpus, cpu.num_gpus, cpu.device) == (8, 1.0, 0.0, "cpu")
    gpu = plan_resources({"CPU": 16.0, "GPU": 2.0})
    assert (gpu.workers, gpu.num_gpus, gpu.num_cpus) == (8, 0.25, 1.0)  # fractional GPUs: 4 actors per GPU
    assert plan_resources({"CPU": 16.0, "GPU": 1.0}, workers=3).num_gpus == pytest.approx(0.3333)
    assert plan_resources({"CPU": 16.0, "GPU": 2.0}, workers=3).num_gpus == 0.5  # 2 + 1 per device, not 2 x 0.67
    assert plan_resources({"CPU": 16.0, "GPU": 2.0}, workers=2).num_gpus == 1.0
    assert plan_resources({"CPU": 4.0, "GPU": 1.0}, gpus_per_worker=0).device == "cpu"
    with pytest.raises(InsufficientResourcesError, match=r"64 workers .* the Ray cluster has 2 CPUs and 0 GPUs"):
        plan_resources({"CPU": 2.0}, workers=64)
    with pytest.raises(InsufficientResourcesError, match=r"0.5 GPUs per worker, but the Ray cluster has 2 CPUs and 0"):
        plan_resources({"CPU": 2.0}, gpus_per_worker=0.5)
    with pytest.raises(InsufficientResourcesError, match=r"4 workers x 0.5 GPUs, .* 1 GPUs and holds at most 2"):
        plan_resources({"CPU": 8.0, "GPU": 1.0}, workers=4, gpus_per_worker=0.5)
    with pytest.raises(InsufficientResourcesError, match=r"holds at most 2 such workers"):
        plan_resources({"CPU": 8.0, "GPU": 2.0}, workers=3, gpus_per_worker=0.6)
    with pytest.raises(ValueError, match="gpus per worker"):
        plan_resources({"CPU": 8.0, "GPU": 4.0}, gpus_per_worker=1.5)


def test_progress_lines_and_summary_table():
    out = io.StringIO()
    tasks = [TaskSummary("a", planned=4, skipped=1), TaskSummary("b", planned=2)]
    p = Progress(tasks, stream=out, interval_s=0.0)
    p.add("a", ok=2, best_val=0.5)
    p.tick()
    p.add("a", failed=1)
    p.add("b", ok=2, best_val=0.75)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("populate: 2/5 rows (40%)") and "rows/s, ETA" in lines[0] and "a 3/4" in lines[0]
    assert lines[-1].startswith("populate: 5/5 rows (100%)")
    bar_out = io.StringIO()
    bar = Progress([TaskSummary("c", planned=3)], stream=bar_out, bar=True)  # what a terminal gets
    bar.add("c", ok=3)
    bar.note("trainer lost")
    bar.close()
    assert "3/3" in bar_out.getvalue() and "populate: trainer lost" in bar_out.getvalue()
    summary = PopulateSummary("run1", tasks, wall_seconds=2.0, workers=2, device="cpu")
    table = summary.format_table()
    assert summary.complete and summary.rows_trained == 5 and summary.rows_per_second == 2.5
    assert "total" in table and "0.7500" in table and "2.50 rows/s" in table


def test_summary_with_early_stopping_counts_stopped_children_and_epochs_saved():
    out = io.StringIO()
    tasks = [TaskSummary("a", planned=6), TaskSummary("b", planned=2)]
    p = Progress(tasks, stream=out, interval_s=0.0)
    p.add("a", ok=4, best_val=0.8, stopped=2, epochs_saved=5)
    p.add("b", ok=2, best_val=0.9)
    p.tick()
    assert "2 stopped early" in out.getvalue()
    summary = PopulateSummary("run1", tasks, wall_seconds=2.0, workers=2, device="cpu",
                              early_stop={"num_epochs": 4, "burn_in": 5},
                              early_stop_status={"a": {"num_complete": 2, "ready": False}})
    table = summary.format_table()
    assert table.splitlines()[0].split() == ["task", "planned", "skipped", "ok", "failed", "stopped", "best", "val"]
    assert "early stopping: 2 of 6 children stopped early, 5 epochs saved of 24 (21%)" in table
    assert "a 2 complete curves (still in burn-in)" in table
    assert summary.to_dict()["rows_stopped"] == 2 and summary.to_dict()["epochs_saved"] == 5
    assert "stopped" not in PopulateSummary("run2", tasks, 1.0, 1, "cpu").format_table().splitlines()[0]


def test_a_broken_curve_predictor_turns_early_stopping_off_instead_of_failing_children():
    from cluster.child import stop_fields
    from cluster.early_stop import EarlyStopper

    class Dead:
        def decide_many(self, curves, features):
            raise ConnectionError("curve predictor actor died")

        def report_complete(self, curves, features):
            raise AssertionError("not called once off")

    guard = GuardedObserver(Dead())
    d = guard.decide_many(np.zeros((3, 2)), np.zeros((3, 4)))
    assert d.stop.tolist() == [False] * 3 and np.isnan(d.predicted_final).all() and d.tau == 2
    assert "early stopping turned off on this trainer: ConnectionError: curve predictor actor died" == guard.error
    guard.report_complete(np.zeros((1, 4)), np.zeros((1, 4)))
    guard.flush()
    live = GuardedObserver(EarlyStopper())
    assert live.decide_many(np.full((1, 2), np.nan), np.zeros((1, 4))).stop.tolist() == [True]  # diverged
    assert live.error is None

    class R:
        stopped_early, predicted_final = True, float("nan")

    assert stop_fields(R()) == (True, None)
    R.predicted_final = 0.25
    assert stop_fields(R()) == (True, 0.25)


@pytest.mark.parametrize("args, match", [
    (["--early-stop-config", '{"burn_in": 3}'], "`burn_in` must be an integer >= 5, but got burn_in=3"),
    (["--early-stop-config", '{"nope": 1}'], "unknown early-stop settings ['nope']"),
    (["--early-stop-config", "{"], "--early-stop-config is not JSON"),
    (["--early-stop", "--epochs", "1"], "early stopping needs children of >= 2 epochs"),
    (["--early-stop-config", '{"min_tau": 2}', "--epochs", "2"], "min_tau=2 leaves no epoch to stop at"),
])
def test_bad_early_stop_settings_are_one_line_errors(tmp_path, args, match):
    res = CliRunner().invoke(populate_command, ["--store", str(tmp_path / "s"), "--tasks", ONE, "--per-task", "2",
                                                *args])
    assert res.exit_code == 1, res.output
    assert res.output.startswith("Error: ") and match in res.output and res.output.count("\n") == 1, res.output
    assert not (tmp_path / "s").exists()  # refused before the store was touched


# -- bad input: refused before any work starts ---------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(per_task=0), ValueError, r"`per-task` must be a positive integer, but got 0"),
    (dict(workers=0), ValueError, r"`workers` must be a positive integer, but got workers=0"),
    (dict(tasks=[ONE, "no_such_task"]), UnknownTaskError, r"unknown task 'no_such_task'"),
    (dict(tasks=None, suite="imagenet"), ValueError, r"unknown task suite 'imagenet'"),
    (dict(workers=64), InsufficientResourcesError, r"asked for 64 workers .* has 2 CPUs and 0 GPUs"),
    (dict(gpus_per_worker=0.5), InsufficientResourcesError, r"0.5 GPUs per worker, but the Ray cluster has 2 CPUs"),
])
def test_bad_input_is_refused_before_any_work(ray_cluster, tmp_path, kwargs, error, match):
    settings = dict(tasks=[ONE], per_task=2, recipe=RECIPE) | kwargs
    with pytest.raises(error, match=match):
        populate(tmp_path / "store", PopulateConfig(**settings), progress=False)
    assert _raw_rows(tmp_path / "store") == []
    assert not [a for a in ray.util.list_named_actors() if a.startswith("nasdb-trainer")]


def test_an_unreachable_ray_address_is_refused_at_once():
    with pytest.raises(ConnectionError, match=r"cannot reach the Ray cluster at '127.0.0.1:1'"):
        check_ray_address("127.0.0.1:1")
    with pytest.raises(ValueError, match="host:port"):
        check_ray_address("ray://no-port")
    check_ray_address(None)  # no address: a new local cluster


def test_unwritable_store_and_bad_epochs_are_refused(ray_cluster, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for root in (blocker / "store", "nosuchproto://bucket/store", "memory://store"):
        with pytest.raises(StoreError, match="not writable|Ray actors cannot reach it"):
            populate(root, PopulateConfig(per_task=2, tasks=[ONE], recipe=RECIPE), progress=False)
    runner = CliRunner()
    ExperimentStore(str(tmp_path / "s")).init()  # the CLI refuses a store that does not exist (issue 15)
    for args, match in [(["--epochs", "0"], "--epochs must be > 0, got 0"),
                        (["--per-task", "-3"], "`per-task` must be a positive integer, but got -3"),
                        (["--tasks", "nope"], "unknown task 'nope'")]:
        res = runner.invoke(populate_command, ["--store", str(tmp_path / "s"), "--tasks", ONE,
                                               "--per-task", "2", *args])
        assert res.exit_code == 1, res.output
        assert res.output.startswith("Error: ") and match in res.output and res.output.count("\n") == 1


# -- the "done when" ---------------------------------------------------------------
class _CrashingTrainer(ChildTrainer):
    """The real trainer, slowed so the other actor is mid-chunk when the test kills one, and
    SIGKILL-ing its own process right after chunk 8's rows reached the store (first attempt):
    the actor dies although the chunk ran, as Ray warns can happen."""

    def train_chunk(self, task_name, items, chunk_id, check_store):
        import time

        time.sleep(0.5)
        ack = super().train_chunk(task_name, items, chunk_id, check_store)
        if chunk_id == 8 and not check_store:
            os.kill(os.getpid(), signal.SIGKILL)
        return ack


def _actors_from_this_module():
    import sys

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actor classes defined in this test module


def test_populate_survives_killed_actors_and_resumes_to_nothing(ray_cluster, tmp_path):
    """3 tasks x 10 architectures on 2 actors; the test ray.kills one mid-chunk, and one is
    SIGKILLed after its chunk's rows were written but before its ack.

    Then: the same command adds nothing, and a fourth task touches only its own partition."""
    _actors_from_this_module()
    root = tmp_path / "store"
    kills: list[str] = []
    recovered: list[str] = []

    def kill_busy_actor(ack, pool):
        recovered.extend(ack.recovered_ok_ids + ack.recovered_failed_ids)
        busy = [s for s in pool.busy_actors() if s.chunk.chunk_id != 8]
        if busy and not kills:  # after the first chunk: ray.kill an actor that is mid-chunk
            ray.kill(busy[0].handle)
            kills.append(f"ray.kill {busy[0].name} during chunk {busy[0].chunk.chunk_id}")

    config = PopulateConfig(per_task=10, tasks=TASKS, recipe=RECIPE, workers=2, seed=0, batch_size_models=2)
    summary = populate(root, config, on_chunk_done=kill_busy_actor, trainer_cls=_CrashingTrainer, progress=False)
    assert len(kills) == 1, kills
    assert summary.actors_lost == 2 and summary.complete, summary.format_table()
    items = [i for t in TASKS for i in planned_items(t, 10)]
    chunk8 = {i.experiment_id for i in make_chunks(items, 2)[8].items}
    assert chunk8 <= set(recovered)  # chunk 8's retry found its rows already stored and skipped them
    assert [(t.planned, t.skipped, t.ok + t.failed, t.missing) for t in summary.tasks] == [(10, 0, 10, 0)] * 3

    store = ExperimentStore(root)
    for task in TASKS:
        planned = {i.experiment_id for i in planned_items(task, 10)}
        assert store.done_ids(task) == planned  # exactly the planned experiments (their ids: the rows' data)
        prints = store.experiments_arrow(task, status=None, columns=["task_fingerprint", "bank_fingerprint"])
        assert set(prints.column("task_fingerprint").to_pylist()) == {load_builtin_task(task).fingerprint()}
        raw = _raw_rows(root, task)
        assert len(raw) == 10 and len({r["experiment_id"] for r in raw}) == 10  # no duplicate row, even raw
        ok = [r for r in raw if r["status"] == "ok"]
        assert len(ok) >= 8
        acc = np.array([[r["val_accuracy"], r["test_accuracy"]] for r in ok])
        assert np.all((acc >= 0) & (acc <= 1))
        chance = 1.0 / load_builtin_task(task).num_classes
        assert acc.mean(axis=0).min() > chance + 0.1, (task, acc.mean(axis=0), chance)
    assert store.count() == 30

    # The same arguments again add nothing: the rerun is a resume. Through the CLI, plugged into
    # a group that passes the store as `nasdb --store ROOT populate` does.
    @click.group()
    @click.option("--store", "store_root")
    @click.pass_context
    def nasdb_like(ctx, store_root):
        ctx.obj = {"store_root": store_root}

    nasdb_like.add_command(populate_command)
    before = _files(root)
    out = tmp_path / "summary.json"
    res = CliRunner().invoke(nasdb_like, ["--store", str(root), "populate", "--tasks", ",".join(TASKS), "--per-task",
                                          "10", "--epochs", "2", "--workers", "2", "--seed", "0", "--no-progress",
                                          "--summary-json", str(out)])
    assert res.exit_code == 0, res.output
    again = json.loads(out.read_text())
    assert again["rows_trained"] == 0 and [t["skipped"] for t in again["tasks"]] == [10, 10, 10]
    assert "digits_confusable4" in res.output and "nothing to train" in res.output
    assert _files(root) == before and store.count() == 30

    # Per-task ingestion: populating only a new task adds files under its partition alone.
    summary = populate(root, PopulateConfig(per_task=2, tasks=[NEW], recipe=RECIPE, workers=1), progress=False)
    assert summary.task(NEW).ok == 2 and store.count() == 32
    after = _files(root)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing existing rewritten
    assert set(after) - set(before) and all(k.startswith(f"experiments/task={NEW}/")
                                            for k in set(after) - set(before))


def test_diverging_children_are_recorded_failed_and_the_job_goes_on(ray_cluster, tmp_path):
    absurd = TrainRecipe(epochs=1, learning_rate=1e30)
    summary = populate(tmp_path / "store", PopulateConfig(per_task=6, tasks=[ONE], recipe=absurd, workers=2,
                                                          batch_size_models=3), progress=False)
    t = summary.task(ONE)
    assert summary.complete and t.ok + t.failed == 6 and t.failed >= 1
    store = ExperimentStore(tmp_path / "store")
    failed = store.experiments_arrow(ONE, status="failed").to_pylist()
    assert len(failed) == t.failed
    assert all(r["error"].startswith("diverged") and np.isnan(r["val_accuracy"]) for r in failed)


class _PoisonTrainer(ChildTrainer):
    """Raises whenever its chunk holds the poison experiment (set as a class attribute)."""

    poison = ""

    def train_chunk(self, task_name, items, chunk_id, check_store):
        if any(i.experiment_id == self.poison for i in items):
            raise RuntimeError(f"poisoned chunk {chunk_id}")
        return super().train_chunk(task_name, items, chunk_id, check_store)


def test_a_chunk_that_keeps_failing_is_isolated_and_given_up(ray_cluster, tmp_path):
    _actors_from_this_module()
    items = planned_items(ONE, 6)
    poison_cls = type("Poison", (_PoisonTrainer,), {"poison": items[1].experiment_id})
    config = PopulateConfig(per_task=6, tasks=[ONE], recipe=RECIPE, workers=2, batch_size_models=3, max_attempts=3)
    summary = populate(tmp_path / "store", config, trainer_cls=poison_cls, progress=False)
    t = summary.task(ONE)
    assert (t.ok, t.failed, t.missing) == (5, 1, 0) and summary.complete
    assert len(summary.gave_up) == 1 and items[1].experiment_id in summary.gave_up[0]
    row = ExperimentStore(tmp_path / "store").experiment(items[1].experiment_id)
    assert row["status"] == "failed" and "gave up after" in row["error"] and "poisoned chunk" in row["error"]


class _BrokenTrainer(ChildTrainer):
    def __init__(self, *args, **kwargs):
        raise OSError("store not mounted on this node")


def test_actors_that_cannot_start_abort_the_run_instead_of_looping(ray_cluster, tmp_path):
    _actors_from_this_module()
    summary = populate(tmp_path / "store", PopulateConfig(per_task=2, tasks=[ONE], recipe=RECIPE, workers=1),
                       trainer_cls=_BrokenTrainer, progress=False)
    assert not summary.complete and "store not mounted on this node" in summary.aborted
    assert summary.task(ONE).missing == 2
    assert "ABORTED" in summary.format_table()


class _HangingTrainer(ChildTrainer):
    def train_chunk(self, task_name, items, chunk_id, check_store):
        if chunk_id == 0 and not check_store:
            import time

            time.sleep(600)  # hung: the pool's chunk timeout must replace this actor
        return super().train_chunk(task_name, items, chunk_id, check_store)


def test_a_hung_chunk_is_timed_out_and_retried(ray_cluster, tmp_path):
    _actors_from_this_module()
    config = PopulateConfig(per_task=2, tasks=[ONE], recipe=RECIPE, workers=1, batch_size_models=1,
                            chunk_timeout_s=10.0)
    summary = populate(tmp_path / "store", config, trainer_cls=_HangingTrainer, progress=False)
    assert summary.complete and summary.actors_lost == 1 and summary.task(ONE).ok == 2
