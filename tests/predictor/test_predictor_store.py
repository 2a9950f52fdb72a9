"""The predictor on a real small store: training data and its refusals, Ray Train fit (2 workers),
checkpoints, warm start, leave-one-task-out report and the embedding plot.

The store is built once per module with the real writer from real child trainings
(cluster.child.train_children): 3 built-in tasks x 12 architectures x 2 epochs, and a second
seed for half of the architectures (the noise ceiling needs two seeds of the same architecture).
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from cluster.child import TrainRecipe, train_children
from nasdb.errors import UnknownTaskError
from nasdb.space import default_space
from nasdb.store import ExperimentRecord, ExperimentStore
from predictor.checkpoint import latest_predictor, list_predictors, load_predictor, predictor_ids, save_predictor
from predictor.config import PredictorConfig
from predictor.data import load_training_data
from predictor.evaluate import evaluate_loto, noise_ceiling
from predictor.fit import fit_in_process, rank_correlations, task_correlations

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

TASKS = ("digits_0to5", "digits_mod3", "digits_confusable4")
N_ARCH, N_TWICE = 12, 6
SMALL = PredictorConfig(batch_size=8, sample_batch_size=64, num_steps=60, loss="linear")


def _record(task: str, space, arch, seed: int, recipe: TrainRecipe, result=None, **overrides) -> ExperimentRecord:
    fields = dict(task=task, space_id=space.space_id, architecture=list(arch), seed=seed, recipe=recipe.to_dict(),
                  agent="random", run_id="test", val_accuracy=math.nan, test_accuracy=math.nan, val_curve=[],
                  epochs=0, train_seconds=0.0, num_params=0, device="cpu", worker="test")
    if result is not None:
        fields.update(val_accuracy=result.val_accuracy, test_accuracy=result.test_accuracy,
                      val_curve=result.val_curve, epochs=result.epochs, train_seconds=result.train_seconds,
                      num_params=result.num_params, status=result.status, error=result.error)
    fields.update(overrides)
    return ExperimentRecord(**fields)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("predictor") / "store"
    store = ExperimentStore(str(root))
    store.init()
    space = default_space()
    store.save_space(space)
    recipe = TrainRecipe(epochs=2)
    archs = space.sample(N_ARCH, seed=0)
    archs = np.concatenate([archs, archs[:N_TWICE]])  # (18, 15)
    seeds = np.array([0] * N_ARCH + [1] * N_TWICE)
    with store.writer("test") as w:
        for name in TASKS:
            results = train_children(store.task(name), space, archs, recipe=recipe, seeds=seeds)
            w.extend(_record(name, space, a, int(s), recipe, r) for a, s, r in zip(archs, seeds, results))
    return str(root)


def test_training_data_does_not_depend_on_the_order_rows_were_trained_in(store_root, tmp_path):
    """Two populate runs of one plan store the same rows, trained (created_at) in another order."""
    table = ExperimentStore(store_root).experiments_arrow(status=None)
    created = table.column("created_at")
    flipped = table.take(np.arange(table.num_rows)[::-1]).set_column(  # the same rows, the last trained first
        table.schema.get_field_index("created_at"), "created_at", created)
    other = ExperimentStore(str(tmp_path / "other"))
    other.init()
    other.save_space(default_space())
    with other.writer("other") as w:
        w.append_table(flipped)
    first, second = (load_training_data(s, min_experiments=8) for s in (ExperimentStore(store_root), other))
    assert list(first.tasks) == list(second.tasks) == sorted(TASKS)
    for name in TASKS:
        a, b = first.tasks[name], second.tasks[name]
        assert not np.array_equal(a.architectures, a.architectures[::-1])  # the orders can differ at all
        for field in ("architectures", "accuracy", "seeds", "target"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (name, field)


@pytest.fixture
def store_copy(store_root, tmp_path):
    """A private copy of the module store, for tests that add bad rows."""
    shutil.copytree(store_root, tmp_path / "store")
    return ExperimentStore(str(tmp_path / "store"))


# -- training data -------------------------------------------------------------------------------
def test_training_data_from_the_store(store_root):
    data = load_training_data(ExperimentStore(store_root), min_experiments=8)
    assert data.task_names == sorted(TASKS)
    for name, t in data.tasks.items():
        assert t.u.shape == (N_ARCH + N_TWICE, 105) and t.accuracy.shape == (N_ARCH + N_TWICE,)
        assert np.all(t.u.sum(axis=1) == 15)  # one-hot, one 1 per dimension
        assert t.x.shape[1] == 64 and t.y.max() < t.num_classes
        assert 0 < t.std and 0 < t.mean < 1
        ceiling, pairs = noise_ceiling(t)
        assert pairs == N_TWICE and -1 <= ceiling <= 1
        # the rows the accuracies were measured on: what the "validation" uncertainty gap reads
        assert t.val_size == ExperimentStore(store_root).task(name).sizes()["val"] > 0
        p = float(t.accuracy.mean())
        assert t.uncertainty_gap("validation") == pytest.approx(max(0.01, math.sqrt(p * (1 - p) / t.val_size)))
    assert data.snapshot()["digits_0to5"]["ok"] == N_ARCH + N_TWICE


def test_the_fit_ranks_only_pairs_farther_apart_than_each_tasks_gap(store_root):
    data = load_training_data(ExperimentStore(store_root), min_experiments=8)
    config = SMALL.replace(num_steps=4)
    assert fit_in_process(data, config)[1].final_loss > 0  # "validation": each task's noise, ~0.01-0.05 here
    # a gap wider than any accuracy difference leaves no pair to rank: the loss is 0 at every step
    assert fit_in_process(data, config.replace(uncertainty_gap=1.0))[1].window_losses == [0.0]


def test_nonfinite_metrics_are_skipped_and_counted(store_copy, caplog):
    space = default_space()
    arch = space.sample(1, seed=99)[0]
    with store_copy.writer("bad") as w:
        w.append(_record("digits_0to5", space, arch, 0, TrainRecipe(epochs=2), val_accuracy=float("nan")))
        w.append(_record("digits_0to5", space, arch, 1, TrainRecipe(epochs=2), val_accuracy=float("inf")))
    data = load_training_data(store_copy, min_experiments=8)
    t = data.tasks["digits_0to5"]
    assert t.skipped_nonfinite == 2 and t.num_experiments == N_ARCH + N_TWICE
    assert np.all(np.isfinite(t.accuracy))
    assert "skipped 2 experiment(s) with a non-finite validation accuracy" in caplog.text


def test_refuses_fewer_than_two_tasks(store_root):
    with pytest.raises(ValueError, match=r"at least 2 tasks.*digits_0to5.*excluded: digits_confusable4, digits_mod3"):
        load_training_data(ExperimentStore(store_root), exclude_tasks=["digits_confusable4", "digits_mod3"])


def test_refuses_a_task_with_fewer_experiments_than_asked(store_root):
    with pytest.raises(ValueError, match=r"task 'digits_0to5' has 18 usable experiments, fewer than the 32 a fit "
                                         r"needs \(skipped: 0 non-finite"):
        load_training_data(ExperimentStore(store_root), min_experiments=32)


def test_a_task_smaller_than_a_minibatch_is_fitted_on_all_its_rows(store_copy):
    """A new task's first children count from its second row (MIN_EXPERIMENTS), each of its
    mini-batches being all of them, not from a full mini-batch on."""
    space = default_space()
    with store_copy.writer("new") as w:
        for i, arch in enumerate(space.sample(3, seed=11)):
            w.append(_record("mnist_479", space, arch, 0, TrainRecipe(epochs=2), val_accuracy=0.6 + i / 10,
                             test_accuracy=0.6))
    data = load_training_data(store_copy)
    assert data.tasks["mnist_479"].num_experiments == 3 and data.tasks["digits_0to5"].num_experiments == N_ARCH + N_TWICE
    model, history = fit_in_process(data, SMALL.replace(batch_size=32, num_steps=60))
    assert history.task_draws["mnist_479"] > 0 and np.isfinite(history.final_loss)
    with pytest.raises(ValueError, match=r"task 'mnist_479' has 3 usable experiments, fewer than the 4 a fit"):
        load_training_data(store_copy, min_experiments=4)


def test_refuses_a_task_with_only_failed_rows(store_copy):
    space = default_space()
    with store_copy.writer("bad") as w:
        for i, arch in enumerate(space.sample(3, seed=5)):
            w.append(_record("mnist_479", space, arch, i, TrainRecipe(epochs=2), status="failed", error="diverged"))
    with pytest.raises(ValueError, match=r"task 'mnist_479' has only failed experiments \(3 failed, 0 ok\)"):
        load_training_data(store_copy, min_experiments=8)


def test_refuses_a_space_mismatch(store_copy):
    other = default_space(num_layers=3)
    store_copy.save_space(other)
    with store_copy.writer("other") as w:
        for i, arch in enumerate(other.sample(10, seed=1)):
            w.append(_record("mnist_479", other, arch, 0, TrainRecipe(epochs=2), val_accuracy=0.5 + i / 100,
                             test_accuracy=0.5))
    with pytest.raises(ValueError, match="2 search spaces.*pass space_id"):
        load_training_data(store_copy, min_experiments=8)
    with pytest.raises(ValueError, match=rf"task 'mnist_479'.*{other.space_id}.*not the requested "
                                         rf"{default_space().space_id}"):
        load_training_data(store_copy, space=default_space().space_id, min_experiments=8)
    # asking for the tasks of one space works
    data = load_training_data(store_copy, space=default_space().space_id, tasks=list(TASKS), min_experiments=8)
    assert data.task_names == list(TASKS)


def test_refuses_unknown_tasks(store_copy):
    with pytest.raises(UnknownTaskError, match="'nope' is not in the store"):
        load_training_data(store_copy, exclude_tasks=["nope"])
    space = default_space()  # rows of a task whose samples are gone (e.g. a retired built-in task)
    with store_copy.writer("gone") as w:
        w.append(_record("retired_task", space, space.sample(1, seed=3)[0], 0, TrainRecipe(epochs=2),
                         val_accuracy=0.5, test_accuracy=0.5))
    with pytest.raises(UnknownTaskError, match="'retired_task' has experiments in the store but its samples are "
                                               "gone.*--exclude-task retired_task"):
        load_training_data(store_copy, min_experiments=1)
    assert "retired_task" not in load_training_data(store_copy, exclude_tasks=["retired_task"]).tasks


# -- checkpoints --------------------------------------------------------------------------------
def test_checkpoint_round_trip(store_copy):
    data = load_training_data(store_copy, min_experiments=8)
    model, history = fit_in_process(data, SMALL)
    assert history.steps == SMALL.num_steps and sum(history.task_draws.values()) == SMALL.num_steps // 2
    assert predictor_ids(store_copy) == [] and latest_predictor(store_copy) is None
    with pytest.raises(KeyError, match="no predictor yet"):
        load_predictor(store_copy)
    metrics = {"final_train_loss": history.final_loss, "train_correlations": task_correlations(model, data)}
    pid = save_predictor(store_copy, model, data.space, tasks=data.task_names, data_snapshot=data.snapshot(),
                         metrics=metrics)
    # an interrupted write (no metadata.json, the commit marker) is invisible
    store_copy.fs.makedirs(store_copy.path("predictors", "99999999T000000000000Z-deadbeef"), exist_ok=True)
    assert latest_predictor(store_copy) == pid
    loaded = load_predictor(ExperimentStore(store_copy.root))
    assert loaded.predictor_id == pid and loaded.config == SMALL and loaded.space == data.space
    assert loaded.tasks == sorted(TASKS) and loaded.metadata["loss"] == "linear"
    assert loaded.metadata["space"]["id"] == data.space.space_id
    assert loaded.metadata["data_snapshot"]["digits_mod3"]["ok"] == N_ARCH + N_TWICE
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.model.state_dict()[k]), k
    t = data.tasks["digits_mod3"]
    assert np.allclose(model.predict(t.u, t.x, t.y), loaded.model.predict(t.u, t.x, t.y))
    [summary] = list_predictors(store_copy)
    assert summary["predictor_id"] == pid and summary["space_id"] == data.space.space_id
    with pytest.raises(KeyError, match="no predictor 'x1'"):
        load_predictor(store_copy, "x1")
    with pytest.raises(ValueError, match="already exists"):
        save_predictor(store_copy, model, data.space, predictor_id=pid, tasks=[], data_snapshot={}, metrics={})


# -- Ray Train ------------------------------------------------------------------------------------
def test_fit_through_ray_train_with_two_workers_then_warm_start(store_root, ray_cluster, capsys):
    from predictor.cli import fit_main as main
    from predictor.train import fit_predictor

    store = ExperimentStore(store_root)
    # the CLI entry point of `python -m predictor.train`, on the running Ray
    assert main(["--store", store_root, "--workers", "2", "--steps", "40", "--loss", "quadratic",
                 "--batch-size", "8", "--exclude-task", "digits_confusable4"]) == 0
    out = capsys.readouterr().out
    pid = latest_predictor(store)
    assert out.startswith(f"predictor {pid}: loss=quadratic tasks=2")
    ckpt = load_predictor(store, pid)
    m = ckpt.metadata
    assert ckpt.tasks == ["digits_0to5", "digits_mod3"] and m["excluded_tasks"] == ["digits_confusable4"]
    assert m["metrics"]["workers"] == 2 and m["metrics"]["steps_per_worker"] == 40
    assert m["warm_start_parent"] is None and set(m["task_embeddings"]) == set(ckpt.tasks)
    # the stored metrics were computed with the weights that were saved
    data = load_training_data(store, tasks=ckpt.tasks, min_experiments=8)
    for name, t in data.tasks.items():
        rho, _ = rank_correlations(ckpt.model.predict(t.u, t.x, t.y), t.accuracy)
        assert rho == pytest.approx(m["metrics"]["train_correlations"][name]["spearman"])

    # warm start on all three tasks: a vanishing learning rate keeps the parent's weights.
    # workers=0 is Ray Train's local mode (same TorchTrainer path, in this process: faster)
    config = ckpt.config.replace(optimizer="sgd", learning_rate=1e-12, num_steps=4)
    child_id = fit_predictor(store, config, workers=0, warm_start=pid)
    child = load_predictor(store, child_id)
    assert child.metadata["warm_start_parent"] == pid and child.tasks == sorted(TASKS)
    for k, v in ckpt.model.state_dict().items():
        assert torch.allclose(v, child.model.state_dict()[k], atol=1e-6), k
    assert [p["predictor_id"] for p in list_predictors(store)] == [pid, child_id]
    # a warm start must keep the network's shape; refused before any worker starts
    with pytest.raises(ValueError, match=r"network shape differs \(phi_hidden=\(50, 50\) vs \(20,\)\)"):
        fit_predictor(store, config.replace(phi_hidden=(20,)), workers=2, warm_start=pid)
    assert main(["--store", store_root, "--warm-start", "nope"]) == 1
    assert "no predictor 'nope'" in capsys.readouterr().err


# -- evaluation and pictures ------------------------------------------------------------------
def test_leave_one_task_out_report(store_root, tmp_path):
    rows = evaluate_loto(store_root, losses=("l2", "linear"), repeats=2, meta_features=(True, False),
                         out_dir=tmp_path, config=SMALL.replace(num_steps=40))
    assert len(rows) == len(TASKS) * 2 * 2
    for r in rows:
        assert r["repeats"] == 2 and r["architectures"] == N_ARCH and r["noise_pairs"] == N_TWICE
        assert -1 <= r["spearman_mean"] <= 1 and r["spearman_std"] >= 0 and r["noise_ceiling"] is not None
    runs = (tmp_path / "loto_runs.csv").read_text().splitlines()
    assert len(runs) == 1 + len(rows) * 2
    md = (tmp_path / "loto.md").read_text()
    assert "| digits_0to5 | 12 |" in md and "linear +meta" in md and "l2 no-meta" in md and "**mean**" in md
    assert (tmp_path / "loto.csv").read_text().startswith("task,loss,meta_features,spearman_mean")
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        evaluate_loto(store_root, losses=("hinge",))


def test_evaluate_command(store_root, tmp_path, capsys):
    from predictor.cli import evaluate_main as main

    assert main(["--store", store_root, "--loss", "quadratic", "--meta", "with", "--repeats", "1", "--steps", "20",
                 "--batch-size", "8", "--out", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["task"], r["loss"], r["meta_features"]) for r in rows] == [(t, "quadratic", True) for t in sorted(TASKS)]
    assert (tmp_path / "loto.md").exists()
    assert main(["--store", store_root, "--batch-size", "1", "--out", str(tmp_path)]) == 1
    assert "`batch_size >= 2` must hold" in capsys.readouterr().err


def test_embedding_plots(store_copy, tmp_path):
    from predictor.embeddings_plot import plot_predictor_embeddings

    data = load_training_data(store_copy, min_experiments=8, exclude_tasks=["digits_0to5"])
    model, _ = fit_in_process(data, SMALL)
    save_predictor(store_copy, model, data.space, tasks=data.task_names, data_snapshot={}, metrics={})
    paths = plot_predictor_embeddings(store_copy, tmp_path, extra_tasks=["digits_0to5"], n_batches=4)
    assert [p.name for p in paths] == ["task_embeddings_pca.png", "task_embeddings_tsne.png"]
    assert all(p.stat().st_size > 10_000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    assert json.loads(json.dumps(list_predictors(store_copy)))  # summaries are plain JSON
