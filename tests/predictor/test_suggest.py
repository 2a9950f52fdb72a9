"""Algorithm 2 (predictor/suggest.py, predictor/ascent.py) on a real tiny store, and `nasdb suggest`'s functions.

The batched gradient ascent is checked against a naive per-start loop with torch.autograd;
the engine against a predictor fitted on 3 real tasks and a 4th task left out of training.
"""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from nasdb.errors import UnknownTaskError
from nasdb.space import default_space
from nasdb.store import ExperimentStore
from predictor.ascent import PAD_LOGIT, AutogradAscent, BlockLayout, CompiledAscent, make_ascent, start_logits
from predictor.checkpoint import load_predictor
from predictor.config import PredictorConfig
from predictor.model import PerformancePredictor
from predictor.suggest import (SuggestConfig, SuggestionEngine, check_samples, engine_for, predict_scores,
                               suggest_architecture, suggest_for_task)
from predictor.testing import HELD_OUT_TASK, TRAIN_TASKS, fit_tiny_predictor, shared_tiny_store
from predictor.zero_shot import format_suggestion, suggest_for_cli

SPACE = default_space()


# -- the ascent against a naive reference ------------------------------------------------------
def _random_model(seed: int = 0, **config) -> PerformancePredictor:
    torch.manual_seed(seed)
    model = PerformancePredictor(SPACE, PredictorConfig(**config)).eval()
    with torch.no_grad():
        if model.gate_logits is not None:
            model.gate_logits.normal_()
    return model


def _naive_step(model, z, logits: torch.Tensor, eta: float) -> torch.Tensor:
    """One step of Algorithm 2, one start at a time: u = softmax per block, autograd of v(u, z)."""
    out = []
    for row in logits:  # (D,)
        l = row.clone().requires_grad_(True)
        u = torch.cat([torch.softmax(l[b], dim=0) for b in SPACE.blocks])  # (D,)
        score = model(u.unsqueeze(0), z)[0]
        (g,) = torch.autograd.grad(score, l)
        out.append(row + eta * g)
    return torch.stack(out)  # (S, D)


@pytest.mark.parametrize("impl", [CompiledAscent, AutogradAscent])
@pytest.mark.parametrize("meta, landmarks", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("members, features", [(5, True), (1, False)])
def test_one_batched_step_equals_naive_per_start_loop(impl, meta, landmarks, members, features):
    """Both ascents equal a naive per-start autograd loop: for the ensemble with structured
    features (the hand-written gradient through vec(g) and the block-diagonal members) and for a
    single predictor on u alone (an old checkpoint's shape); with the task vector [z, landmarks],
    z alone, or none."""
    model = _random_model(use_meta_features=meta, ensemble_size=members, architecture_features=features,
                          landmarks=landmarks)
    z = torch.randn(model.z_dim) if meta else None
    logits = start_logits(SPACE, SPACE.sample(6, seed=1), 0.5) + 0.3 * torch.randn(6, SPACE.encoding_size)
    ascent = impl(model, SPACE)
    grid = ascent.layout.to_grid(logits, fill=PAD_LOGIT)
    batched = ascent.layout.to_flat(ascent.step(grid, z, 0.7))
    assert torch.allclose(batched, _naive_step(model, z, logits, 0.7), atol=1e-5)
    # and the multi-step loop (in-place updates, z folded into the bias) matches repeated single steps
    ref = logits
    for _ in range(5):
        ref = _naive_step(model, z, ref, 0.7)
    looped = ascent.layout.to_flat(ascent._steps(grid, z, 0.7, 5))
    assert torch.allclose(looped, ref, atol=1e-4)


def test_gradient_ascent_increases_the_predicted_score():
    model = _random_model(3)
    z = torch.randn(model.z_dim)
    archs = SPACE.sample(10, seed=2)
    logits0 = start_logits(SPACE, archs, 0.5)
    ascent = make_ascent(model, SPACE)
    assert isinstance(ascent, CompiledAscent)
    u0 = ascent.layout.to_flat(ascent.relax(ascent.layout.to_grid(logits0, PAD_LOGIT)))
    before = model(u0, z)
    result = ascent.run(logits0, z, step_size=1.0, max_iters=200, tolerance=0.0, check_every=50)
    assert result.iterations == 200 and not result.converged
    assert torch.all(result.scores > before + 1e-4)
    assert torch.allclose(result.u.view(10, -1).sum(1), torch.full((10,), float(SPACE.num_dimensions)), atol=1e-4)
    for block in SPACE.blocks:  # every block stays on its simplex
        assert torch.allclose(result.u[:, block].sum(1), torch.ones(10), atol=1e-5)
    assert torch.all(result.u >= 0)


def test_start_logits_argmax_to_the_start_and_layout_round_trips():
    archs = SPACE.sample(4, seed=5)
    logits = start_logits(SPACE, archs, 0.5)
    assert np.array_equal(SPACE.discretize(logits.numpy()), archs)
    layout = BlockLayout.of(SPACE)
    assert torch.equal(layout.to_flat(layout.to_grid(logits)), logits)
    assert int((~layout.pad_mask).sum()) == SPACE.encoding_size


def test_ascent_stops_once_converged():
    model = _random_model(4)
    result = make_ascent(model, SPACE).run(start_logits(SPACE, SPACE.sample(3, seed=0), 0.5), torch.randn(model.z_dim),
                                           step_size=1e-6, max_iters=1000, tolerance=1e-3, check_every=20)
    assert result.converged and result.iterations == 20


# -- the config -------------------------------------------------------------------------------------
def test_suggest_config_paper_defaults_and_refusals():
    cfg = SuggestConfig()
    assert (cfg.top_per_task, cfg.closest_tasks, cfg.k_num_starting_points, cfg.k_max_iters) == (5, 2, 10, 1000)
    assert SuggestConfig.from_dict(cfg.to_dict()) == cfg
    for bad in ({"k_max_iters": 0}, {"top_per_task": 1.5}, {"step_size": -1.0}, {"step_size": math.nan},
                {"start_smoothing": 1.0}, {"far_factor": 0}, {"tolerance": -1e-3}, {"closest_tasks": True},
                {"kappa": -0.5}, {"kappa": math.inf}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SuggestConfig(**bad)
    with pytest.raises(ValueError, match="unknown"):
        SuggestConfig.from_dict({"k_max_iter": 10})


def test_check_samples_refusals_name_the_field():
    x, y = np.zeros((4, 64)), np.array([0, 1, 0, 1])
    check_samples(x, y, feature_dim=64, max_classes=10)
    bad_x = x.copy()
    bad_x[2, 7] = np.nan
    cases = [((np.zeros((4, 63)), y), r"x: .*\(n, 64\)"), ((bad_x, y), "x: non-finite value nan at row 2, column 7"),
             ((np.zeros((0, 64)), np.zeros(0, int)), "x: at least one"), ((x, y[:3]), "y: expected 4 labels"),
             ((x, y + 0.5), "y: labels must be integers"), ((x, np.array([0, 1, 10, 1])), r"y: label 10 at index 2"),
             ((x, np.array([0, -1, 0, 1])), "y: label -1")]
    for (xx, yy), msg in cases:
        with pytest.raises(ValueError, match=msg):
            check_samples(xx, yy, feature_dim=64, max_classes=10)


# -- the engine on a real tiny store ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root, pid = shared_tiny_store(str(tmp_path_factory.getbasetemp()))
    store = ExperimentStore(root)
    return store, load_predictor(store, pid)


class _CountingStore:
    """Forwards to a store and counts task loads (to see that training tasks are embedded once)."""

    def __init__(self, store):
        self._store, self.task_loads = store, 0
        self.root = f"counting:{store.root}"

    def task(self, name):
        self.task_loads += 1
        return self._store.task(name)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_suggestion_for_a_held_out_task(tiny):
    store, ck = tiny
    assert HELD_OUT_TASK not in ck.tasks
    x, y = store.task(HELD_OUT_TASK).samples("train")
    s = suggest_architecture(ck, store, x, y)
    assert s.predictor_id == ck.predictor_id
    assert len(s.architecture) == SPACE.num_dimensions and SPACE.validate(s.architecture) is not None
    assert s.description == SPACE.describe(s.architecture)
    # re-scored as a one-hot by the predictor
    one_hot = predict_scores(ck, x, y, [s.architecture])[0]
    assert s.score == pytest.approx(one_hot, abs=1e-5)
    assert s.candidates[0].architecture == s.architecture
    archs = [tuple(c.architecture) for c in s.candidates]
    assert len(set(archs)) == len(archs) and 1 <= len(archs) <= 21  # ascent results, starts, the portfolio
    # the pick maximizes mean - kappa * std over every candidate, the portfolio included, std the members' spread
    # of the candidate's gap to the portfolio pick (so the portfolio's bound is its mean)
    engine = engine_for(ck, store)
    members = engine.member_scores(np.asarray([c.architecture for c in s.candidates]), engine.embed(x, y))
    gaps = members - members[:, [c.architecture for c in s.candidates].index(list(s.portfolio))][:, None]
    kappa = s.config["kappa"]
    assert kappa == SuggestConfig().kappa > 0
    tol = 1e-6  # float32 scores: the engine scores the candidates in another batch than here
    for c, m, g in zip(s.candidates, members.T, gaps.T):
        assert c.score == pytest.approx(m.mean(), abs=tol) and c.std == pytest.approx(m.std(), abs=tol)
        assert c.lcb == pytest.approx(m.mean() - kappa * g.std(), abs=tol)
    assert s.std is not None and s.std >= 0 and s.lcb == s.candidates[0].lcb
    assert [c.lcb for c in s.candidates] == sorted((c.lcb for c in s.candidates), reverse=True)
    assert tuple(s.portfolio) in archs and {c.source for c in s.candidates} <= {"ascent", "start", "portfolio"}
    assert tuple(s.portfolio) == tuple(engine_for(ck, store).tops[s.nearest_tasks[0]["task"]].architectures[0])
    # the continuous encoding: on the simplex, discretizing to the suggestion
    u = np.asarray(s.encoding)
    assert u.shape == (SPACE.encoding_size,) and np.array_equal(SPACE.discretize(u), s.architecture)
    # nearest tasks: every training task, closest first; starts come from the two closest
    names = [n["task"] for n in s.nearest_tasks]
    assert sorted(names) == sorted(ck.tasks)
    dists = [n["distance"] for n in s.nearest_tasks]
    assert dists == sorted(dists) and dists[0] > 0
    assert {c.start_task for c in s.candidates} <= set(names[:2])
    assert s.far_from_training is False and s.far_threshold > 0
    assert 0 < s.iterations <= 1000
    # never below a starting point or the portfolio by the bound the pick maximizes
    assert s.lcb >= max(c.lcb for c in s.candidates if c.source != "ascent") - 1e-9
    # the same task by name gives the same answer
    by_name = suggest_for_task(ck, store, HELD_OUT_TASK)
    assert by_name.architecture == s.architecture and by_name.score == pytest.approx(s.score, abs=1e-6)


def test_training_tasks_are_embedded_once_per_checkpoint(tiny):
    store, ck = tiny
    counting = _CountingStore(store)
    engine = engine_for(ck, counting)
    assert counting.task_loads == len(ck.tasks)
    assert engine_for(ck, counting) is engine
    x, y = store.task(HELD_OUT_TASK).samples("train")
    for _ in range(2):
        suggest_architecture(ck, counting, x, y, SuggestConfig(k_max_iters=20))
    suggest_for_task(ck, counting, TRAIN_TASKS[0], SuggestConfig(k_max_iters=20))  # cached z, no load
    assert counting.task_loads == len(ck.tasks)


def test_far_task_is_flagged_and_overrides_apply(tiny):
    store, ck = tiny
    engine = engine_for(ck, store)
    far = engine.suggest_z(engine.task_z[0] + 10.0 * (engine.nn_distance + 1.0), SuggestConfig(k_max_iters=10))
    assert far.far_from_training is True
    assert far.nearest_tasks[0]["distance"] > far.far_threshold
    near = engine.suggest_z(engine.task_z[1], SuggestConfig(k_max_iters=10, top_per_task=2, closest_tasks=1))
    assert near.far_from_training is False and near.nearest_tasks[0]["task"] == engine.task_names[1]
    # 2 starts from the one closest task: at most 2 ascent results, 2 starts and the portfolio pick
    assert near.iterations == 10 and len([c for c in near.candidates if c.source == "start"]) <= 2
    assert len(near.candidates) <= 5
    assert {c.start_task for c in near.candidates} == {engine.task_names[1]}


def test_unknown_task_and_bad_samples_are_refused(tiny):
    store, ck = tiny
    with pytest.raises(UnknownTaskError, match="no_such_task"):
        suggest_for_task(ck, store, "no_such_task")
    with pytest.raises(ValueError, match="x: non-finite"):
        suggest_architecture(ck, store, np.full((3, 64), np.inf), np.zeros(3, int))
    with pytest.raises(ValueError, match="dimension 'layer1'"):
        predict_scores(ck, np.zeros((3, 64)), np.zeros(3, int), [[0, 12] + [0] * 13])


def test_predict_scores_match_the_model(tiny):
    store, ck = tiny
    x, y = store.task(HELD_OUT_TASK).samples("train")
    archs = SPACE.sample(5, seed=9)
    expected = ck.model.predict(SPACE.encode_many(archs), x, y)
    assert np.allclose(predict_scores(ck, x, y, archs), expected, atol=1e-6)


def test_predictor_without_meta_features_starts_from_the_global_top(tiny, tmp_path):
    store, _ = tiny
    shutil.copytree(store.root, tmp_path / "store")
    copy = ExperimentStore(str(tmp_path / "store"))
    pid = fit_tiny_predictor(copy, TRAIN_TASKS, num_steps=50, use_meta_features=False)
    ck = load_predictor(copy, pid)
    s = suggest_for_task(ck, copy, HELD_OUT_TASK, SuggestConfig(k_max_iters=50))
    assert s.nearest_tasks == [] and s.far_from_training is None and s.far_threshold is None
    assert all(c.start_task is None for c in s.candidates)
    engine = engine_for(ck, copy)
    starts, _ = engine.starting_points([], SuggestConfig())
    best_task, best_row = engine._global_order[0]
    assert tuple(starts[0]) == tuple(engine.tops[best_task].architectures[best_row])


def test_cli_suggest_with_training_writes_a_zero_shot_row(tiny, tmp_path):
    store, ck = tiny
    shutil.copytree(store.root, tmp_path / "store")
    copy = ExperimentStore(str(tmp_path / "store"))
    before = copy.count(HELD_OUT_TASK)
    out = suggest_for_cli(copy, task=HELD_OUT_TASK, predictor_id=ck.predictor_id, train=True,
                          config=SuggestConfig(k_max_iters=100))
    trained = out["trained"]
    assert out["task"] == HELD_OUT_TASK and out["in_training_set"] is False
    assert trained["status"] == "ok" and 0 <= trained["test_accuracy"] <= 1 and 0 <= trained["val_accuracy"] <= 1
    rows = copy.experiments_arrow(HELD_OUT_TASK).to_pylist()
    assert copy.count(HELD_OUT_TASK) == before + 1
    (row,) = [r for r in rows if r["experiment_id"] == trained["experiment_id"]]
    assert row["agent"] == "zero-shot" and list(row["architecture"]) == out["architecture"]
    assert row["test_accuracy"] == pytest.approx(trained["test_accuracy"])
    text = format_suggestion(out)
    assert "test accuracy" in text and HELD_OUT_TASK in text
    assert '"architecture"' in format_suggestion(out, as_json=True)


def test_cli_suggest_from_a_data_file(tiny, tmp_path):
    store, ck = tiny
    x, y = store.task(HELD_OUT_TASK).samples("train")
    path = tmp_path / "my data.csv"
    header = ",".join(f"f{i}" for i in range(64)) + ",label"
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header=header, comments="", fmt="%.6g")
    out = suggest_for_cli(store, data=str(path), label="label", config=SuggestConfig(k_max_iters=30))
    assert out["task"] == "user_my_data" and out["source"] == str(path)
    assert len(out["architecture"]) == SPACE.num_dimensions and "trained" not in out
    with pytest.raises(ValueError, match="exactly one"):
        suggest_for_cli(store, task=HELD_OUT_TASK, data=str(path), label="label")
    with pytest.raises(ValueError, match="--label"):
        suggest_for_cli(store, data=str(path))


def test_the_floor_bound_lets_a_candidate_displace_the_portfolio_only_when_the_members_agree():
    # 3 members with very different offsets (a ranking loss leaves them free); the portfolio pick is the last column
    offsets = np.array([[0.0], [5.0], [-3.0]])
    agreed = np.array([[1.0], [1.1], [0.9]])  # every member: ~1 above the portfolio
    disputed = np.array([[4.0], [-1.5], [-1.0]])  # a higher mean gap (0.5), but the members disagree
    members = offsets + np.hstack([agreed, disputed, np.zeros((3, 1))])  # (K, 3)
    scores, std, lcb = SuggestionEngine._floor_bounds(members, kappa=2.0)
    assert np.allclose(scores, members.mean(axis=0)) and np.allclose(std, members.std(axis=0))
    assert lcb[2] == pytest.approx(scores[2])  # the portfolio's bound is its mean: its gap to itself is 0
    assert lcb[0] > lcb[2] > lcb[1]  # the agreed gain displaces it; the disputed one does not
    # kappa 0 ranks by the mean; one member has no spread and ranks by its score
    assert np.allclose(SuggestionEngine._floor_bounds(members, kappa=0.0)[2], scores)
    one = SuggestionEngine._floor_bounds(members[:1], kappa=2.0)
    assert one[1] is None and np.allclose(one[2], members[0])
