"""Learning-curve early stopping (issue 8): features, SRMs, the stopping rule, the shared Ray
actor, and the evaluation over a real store; hand-made curves, synthetic curves and real children."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace

import numpy as np
import pytest
from sklearn.svm import NuSVR

from cluster.early_stop import (CONTEXT_FEATURES, LAYERED_ARCH_FEATURES, CurveSet, EarlyStopConfig, EarlyStopper,
                                EpochObserver, SequentialRegressor, StopRule, SVRParams, architecture_features,
                                comparable_curve_sets, curve_features, evaluate_curves, hparam_features,
                                load_full_curves, model_features, r2_by_tau, simulate_early_stopping,
                                stop_probability, task_context)
from nasdb.space import default_space

T = 12  # epochs of the synthetic curves
FAST = dict(search_trials=0, burn_in=40)  # sklearn-default nu-SVR, no search: keeps fits < 1 s


def saturating_curves(n: int, *, epochs: int = T, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Realistic-ish validation curves ``a - (a - b) exp(-t / k) + noise``; the ceiling ``a`` and the
    speed ``k`` depend on two of four static features. Returns curves (n, T), features (n, 4)."""
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, 4))
    a = np.clip(0.8 + 0.06 * feats[:, 0] + 0.02 * rng.normal(size=n), 0.5, 0.97)  # (n,)
    b = 0.1 + 0.1 * rng.random(n)
    k = (0.8 + 2.5 * rng.random(n)) * np.exp(0.3 * feats[:, 1])
    t = np.arange(1, epochs + 1)
    y = a[:, None] - (a - b)[:, None] * np.exp(-t[None, :] / k[:, None]) + 0.005 * rng.normal(size=(n, epochs))
    return y, feats


@pytest.fixture(scope="module", params=["final", "gain"])
def fitted_stopper(request) -> EarlyStopper:
    curves, feats = saturating_curves(60)
    stopper = EarlyStopper(EarlyStopConfig(**FAST, target=request.param))
    stopper.report_complete(curves, feats)
    assert stopper.ready and stopper.fits == 1
    return stopper


# -- features ------------------------------------------------------------------------------------
def _naive_curve_features(curve, static):
    d1 = [curve[t] - curve[t - 1] for t in range(1, len(curve))]
    d2 = [d1[t] - d1[t - 1] for t in range(1, len(d1))]
    return list(curve) + d1 + d2 + list(static)


def test_curve_features_hand_made_curve():
    got = curve_features([[0.1, 0.3, 0.6, 0.7]], [[1.0, 2.0]], [3.0])
    want = [0.1, 0.3, 0.6, 0.7, 0.2, 0.3, 0.1, 0.1, -0.2, 1.0, 2.0, 3.0]
    np.testing.assert_allclose(got, [want], atol=1e-12)
    assert curve_features([[0.5]], [[7.0]]).tolist() == [[0.5, 7.0]]  # tau = 1: no differences
    rng = np.random.default_rng(1)
    y, s = rng.random((5, 6)), rng.random((5, 3))
    np.testing.assert_allclose(curve_features(y, s), [_naive_curve_features(a, b) for a, b in zip(y, s)])


def test_architecture_and_hparam_features():
    space = default_space()
    names = [d.name for d in space.dimensions]
    arch = np.zeros(space.num_dimensions, dtype=np.int64)
    arch[names.index("embedding")] = 2
    arch[names.index("layer1")] = space.dimensions[names.index("layer1")].choices.index("relu64")
    arch[names.index("layer2")] = space.dimensions[names.index("layer2")].choices.index("tanh8")
    arch[names.index("layer3")] = space.dimensions[names.index("layer3")].choices.index("relu256")  # disabled
    arch[names.index("enable1")] = arch[names.index("enable2")] = 1
    f = architecture_features(space, arch[None, :], [1000])[0]
    want = dict(zip(LAYERED_ARCH_FEATURES, [3.0, 2, math.log2(37), math.log2(65), math.log2(73), 0.5, 2]))
    np.testing.assert_allclose(f, list(want.values()))
    none_on = architecture_features(space, np.zeros((1, space.num_dimensions), dtype=np.int64), [10])[0]
    assert none_on[1:6].tolist() == [0, 0, 0, 0, 0]
    hp = hparam_features({"learning_rate": 1e-3, "batch_size": 64, "epochs": 20, "optimizer": "adam"}, 2)
    np.testing.assert_allclose(hp, [[-3, 6, 20]] * 2)
    assert model_features(space, np.stack([arch, arch]), [1000, 10], {"learning_rate": 0.1, "batch_size": 8,
                                                                        "epochs": 3}).shape == (2, 10)
    with pytest.raises(ValueError, match="lacks 'batch_size'"):
        hparam_features({"learning_rate": 1e-3, "epochs": 3})
    with pytest.raises(ValueError, match="num_params"):
        architecture_features(space, arch[None, :], [0])
    with pytest.raises(ValueError, match="non-finite"):
        curve_features([[0.1, float("nan")]], [[1.0]])


# -- configuration and input validation ----------------------------------------------------------
@pytest.mark.parametrize("bad, match", [
    (dict(burn_in=0), "burn_in"), (dict(burn_in=-3), "burn_in"), (dict(confidence=1.0), "confidence"),
    (dict(delta=-0.1), "delta"), (dict(top_n=0), "top_n"), (dict(target="median"), "target"),
    (dict(num_epochs=5, min_tau=5), "min_tau"), (dict(top_n=200), "top_n"), (dict(retrain_every=True), "retrain_every"),
    (dict(arch_prior="yes"), "arch_prior must be true or false, got 'yes'"),
])
def test_config_rejects_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        EarlyStopConfig(**bad)


def test_config_round_trip_and_unknown_key():
    cfg = EarlyStopConfig(burn_in=20, delta=0.01, top_n=3)
    assert EarlyStopConfig.from_dict(cfg.to_dict()) == cfg
    assert (EarlyStopConfig().burn_in, EarlyStopConfig().confidence, EarlyStopConfig().delta) == (100, 0.99, 0.0)
    with pytest.raises(ValueError, match="unknown early-stop settings"):
        EarlyStopConfig.from_dict({"burnin": 5})


def test_stopper_input_validation_and_divergence():
    stopper = EarlyStopper(EarlyStopConfig(burn_in=5))
    assert isinstance(stopper, EpochObserver)
    d = stopper.decide_many([[0.2, float("nan")], [0.2, 0.3]], np.zeros((2, 4)))  # before burn-in
    assert d.stop.tolist() == [True, False]  # a NaN accuracy is divergence: stop at once
    assert d.probability[0] == 1.0 and math.isnan(d.probability[1]) and np.isnan(d.predicted_final).all()
    curves, feats = saturating_curves(3)
    stopper.report_complete(curves, feats)
    with pytest.raises(ValueError, match="8 epochs, expected 12"):
        stopper.report_complete(curves[:, :8], feats)
    with pytest.raises(ValueError, match="non-finite"):
        stopper.report_complete(np.where(np.eye(3, T) > 0, np.nan, curves), feats)
    with pytest.raises(ValueError, match="columns"):
        stopper.report_complete(curves, feats[:, :2])
    with pytest.raises(ValueError, match=r"shape \(3, F\)"):
        stopper.report_complete(curves, feats[:2])
    with pytest.raises(ValueError, match="tau=12"):
        stopper.decide_many(curves, feats)
    assert not stopper.ready and stopper.num_complete == 3


# -- the regression models -----------------------------------------------------------------------
def test_loo_sigma_matches_a_naive_leave_one_out_loop():
    curves, feats = saturating_curves(12, epochs=5, seed=3)
    model = SequentialRegressor(search_trials=0, loo_max=100).fit(curves, feats, taus=[2])
    x = curve_features(curves[:, :2], feats)
    scale = x.std(axis=0)  # standardized as the model does; a constant column is left unscaled
    z = (x - x.mean(axis=0)) / np.where(scale > 1e-12, scale, 1.0)
    t = (curves[:, -1] - curves[:, -1].mean()) / curves[:, -1].std()
    resid = [NuSVR(gamma=1.0 / z.shape[1]).fit(np.delete(z, i, 0), np.delete(t, i)).predict(z[i:i + 1])[0] - t[i]
             for i in range(len(t))]
    want = math.sqrt(np.mean(np.square(resid))) * curves[:, -1].std()
    assert model.sigma[2] == pytest.approx(want, rel=1e-9)
    assert model.params[2] == SVRParams()


def test_srm_predicts_held_out_curves_better_with_more_epochs():
    curves, feats = saturating_curves(160, seed=5)
    for target in ("final", "gain"):
        model = SequentialRegressor(search_trials=3, target=target).fit(curves[:100], feats[:100], taus=[2, 6, 11],
                                                                        estimate_sigma=False)
        y = curves[100:, -1]
        r2 = {tau: 1 - np.mean((model.predict(curves[100:, :tau], feats[100:])[0] - y) ** 2) / y.var()
              for tau in (2, 6, 11)}
        assert r2[11] > 0.85 and r2[11] > r2[2], (target, r2)


def test_stop_probability_is_the_normal_cdf():
    for mu, s, thr in [(0.7, 0.05, 0.8), (0.9, 0.02, 0.8), (0.5, 0.1, 0.5)]:
        want = 0.5 * (1 + math.erf((thr - mu) / (s * math.sqrt(2))))
        assert stop_probability([mu], s, thr)[0] == pytest.approx(want, abs=1e-12)


# -- the stopping rule on hand-made curves -------------------------------------------------------
def test_a_clearly_bad_curve_stops_and_the_best_never_does(fitted_stopper):
    stopper = fitted_stopper
    best_so_far = stopper.reference
    t = np.arange(1, T + 1)
    bad = 0.35 - 0.25 * np.exp(-t / 1.5)  # plateaus far below everything seen, average features
    bad_static = np.zeros(4)
    great = best_so_far + 0.03 - 0.75 * np.exp(-t / 1.5)  # ends above the best so far ...
    great_static = np.array([2.0, 0.0, 0.0, 0.0])  # ... with the features of a high ceiling
    stops = [stopper.should_stop(bad[:tau], bad_static) for tau in range(1, T)]
    assert any(stops[:3]), "a curve at 0.35 against a best of ~0.9 must stop within 3 epochs"
    d = stopper.decide_many(np.stack([bad[:3], great[:3]]), np.stack([bad_static, great_static]))
    assert d.stop.tolist() == [True, False] and d.probability[0] >= 0.99
    assert d.predicted_final[0] < best_so_far - 0.05
    for tau in range(1, T):
        assert not stopper.should_stop(great[:tau], great_static), f"the best curve was stopped at tau={tau}"


def test_delta_and_top_n_relax_the_rule(fitted_stopper):
    curves, feats = saturating_curves(60)
    rule = fitted_stopper.snapshot()
    partial = curves[:, :4]
    base = rule.decide_many(partial, feats)
    relaxed = StopRule(EarlyStopConfig(**FAST, delta=0.05), rule.predictor, rule.reference,
                       rule.num_epochs, rule.num_features).decide_many(partial, feats)
    assert np.all(relaxed.probability <= base.probability + 1e-12) and relaxed.stop.sum() <= base.stop.sum()
    top5 = EarlyStopper(EarlyStopConfig(**FAST, top_n=5))
    top5.report_complete(curves, feats)
    assert top5.reference == pytest.approx(np.sort(curves[:, -1])[-5])
    assert top5.decide_many(partial, feats).stop.sum() <= base.stop.sum()


def test_burn_in_and_retraining_schedule():
    curves, feats = saturating_curves(70, seed=2)
    stopper = EarlyStopper(EarlyStopConfig(search_trials=0, burn_in=40, retrain_every=15))
    stopper.report_complete(curves[:39], feats[:39])
    assert not stopper.ready and stopper.fits == 0
    assert not stopper.decide_many(curves[:5, :3], feats[:5]).stop.any()  # never stops before burn-in
    stopper.report_complete(curves[39:40], feats[39:40])
    assert stopper.ready and stopper.fits == 1 and stopper.predictor.num_train == 40
    stopper.report_complete(curves[40:54], feats[40:54])
    assert stopper.fits == 1
    stopper.report_complete(curves[54:55], feats[54:55])
    assert stopper.fits == 2 and stopper.predictor.num_train == 55
    assert stopper.reference == pytest.approx(curves[:55, -1].max())
    assert stopper.describe()["predictor"]["num_train"] == 55


# -- real child models ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_curves():
    """28 real children (5 epochs, a small built-in task), four of them deliberately weak."""
    from cluster.child import TrainRecipe, train_children
    from nasdb.tasks import builtin_task_names, load_builtin_task

    space, recipe = default_space(), TrainRecipe(epochs=5)
    archs = space.sample(24, 7)
    weak = np.zeros((4, space.num_dimensions), dtype=np.int64)  # pca8 + up to 7 tanh8 layers
    weak[:, 0] = space.dimensions[0].choices.index("pca8")
    weak[:, 1:8] = space.dimensions[1].choices.index("tanh8")
    weak[:, 8:15] = [[1] * 7, [1] * 7, [1, 1, 1, 0, 0, 0, 0], [1] * 7]
    archs = np.concatenate([archs, weak])
    names = builtin_task_names()
    task = load_builtin_task("digits_confusable4" if "digits_confusable4" in names else names[0])
    res = train_children(task, space, archs, recipe=recipe, seeds=np.arange(len(archs)))
    assert all(r.status == "ok" for r in res)
    curves = np.array([r.val_curve for r in res])  # (28, 5)
    feats = model_features(space, archs, [r.num_params for r in res], recipe)
    return curves, feats


def test_stopper_on_real_children_stops_the_worst_and_keeps_the_best(real_curves):
    curves, feats = real_curves
    order = np.argsort(curves[:, -1])
    best, worst = int(order[-1]), int(order[0])
    held_out = {best, worst}
    train = [i for i in range(len(curves)) if i not in held_out]
    stopper = EarlyStopper(EarlyStopConfig(burn_in=len(train), search_trials=4))
    stopper.report_complete(curves[train], feats[train])
    assert stopper.ready
    T_real = curves.shape[1]
    worst_stops = [stopper.should_stop(curves[worst, :tau], feats[worst]) for tau in range(1, T_real)]
    best_stops = [stopper.should_stop(curves[best, :tau], feats[best]) for tau in range(1, T_real)]
    assert any(worst_stops), (curves[worst], stopper.reference)
    assert not any(best_stops), (curves[best], stopper.reference)


# -- the shared Ray actor ------------------------------------------------------------------------
def test_shared_actor_two_callers_burn_in_and_query(ray_cluster):
    from cluster.early_stop import ActorEarlyStopper, curve_predictor_actor

    ray = ray_cluster
    curves, feats = saturating_curves(30, seed=4)
    actor = curve_predictor_actor(EarlyStopConfig(burn_in=20, search_trials=0, retrain_every=5), num_cpus=0)

    @ray.remote(num_cpus=0)
    def caller(handle, c, f):
        client = ActorEarlyStopper(handle, "curves_demo")
        for i in range(len(c)):  # one complete curve at a time, as trainers finish them
            client.report_complete(c[i:i + 1], f[i:i + 1])
        client.flush(timeout=120)
        return len(c)

    assert ray.get([caller.remote(actor, curves[:12], feats[:12]),
                    caller.remote(actor, curves[12:24], feats[12:24])], timeout=180) == [12, 12]
    status = ray.get(actor.status.remote())["curves_demo"]
    assert status["num_complete"] == 24 and status["ready"] and status["fits"] >= 1
    t = np.arange(1, T + 1)
    bad = (0.35 - 0.25 * np.exp(-t / 1.5))[None, :3]
    remote = ray.get(actor.decide_many.remote("curves_demo", bad, np.zeros((1, 4))))
    assert remote.stop.tolist() == [True]
    client = ActorEarlyStopper(actor, "curves_demo")
    assert client.refresh(block=True, timeout=60).ready
    local = client.decide_many(bad, np.zeros((1, 4)))
    assert local.stop.tolist() == [True]
    assert local.predicted_final[0] == pytest.approx(remote.predicted_final[0])
    assert not client.decide_many(curves[:1, :5], feats[:1]).stop[0] or curves[0, -1] < status["reference"]
    with pytest.raises(ray.exceptions.RayTaskError, match="non-finite"):
        ray.get(actor.report_complete.remote("curves_demo", np.full((1, T), np.nan), np.zeros((1, 4))))
    ray.kill(actor)


# -- evaluation over a real store ----------------------------------------------------------------
def test_simulation_matches_a_naive_replay():
    curves, feats = saturating_curves(90, seed=6)
    cs = CurveSet("synthetic", curves, feats, [str(i) for i in range(90)], ("f",) * 4, {})
    config = EarlyStopConfig(**FAST, retrain_every=25)
    sim = simulate_early_stopping(cs, config, orders=2, seed=1)
    rng = np.random.default_rng(1)
    for run in sim["runs"]:
        order = rng.permutation(90)  # the orders simulate_early_stopping drew
        stopper, epochs = EarlyStopper(config), {}
        for i in order:  # train one model at a time: query after every epoch, report if it finished
            epochs[i] = T
            for tau in range(1, T):
                if stopper.ready and stopper.should_stop(curves[i, :tau], feats[i]):
                    epochs[i] = tau
                    break
            if epochs[i] == T:
                stopper.report_complete(curves[i:i + 1], feats[i:i + 1])
        total = sum(epochs.values())
        assert run["total_epochs"] == total and run["speedup"] == pytest.approx(90 * T / total)
        assert run["best_kept"] == (epochs[int(np.argmax(curves[:, -1]))] == T)
        assert run["stopped"] == sum(e < T for e in epochs.values()) > 0
        assert all(epochs[i] == T for i in order[:40]), "the burn-in models train to the end"
    assert sim["speedup_mean"] > 1.5


RECIPE8 = {"epochs": 8, "batch_size": 64, "learning_rate": 3e-3, "optimizer": "adam"}


def _store_with_curves(root, tasks: dict[str, np.ndarray]):
    """A real store holding each task's complete curves (N, 8) as rows of random architectures."""
    from nasdb.store import ExperimentRecord, ExperimentStore

    space = default_space()
    store = ExperimentStore(str(root))
    store.init()
    store.save_space(space)
    with store.writer("test") as w:
        for name, curves in tasks.items():
            for i, (a, c) in enumerate(zip(space.sample(len(curves), 3), curves)):
                w.append(ExperimentRecord(task=name, space_id=space.space_id, architecture=list(a), seed=i,
                                          recipe=RECIPE8, agent="random", run_id="t", val_accuracy=c[-1],
                                          test_accuracy=c[-1], val_curve=list(c), epochs=8, train_seconds=1.0,
                                          num_params=1000 + 10 * i, device="cpu", worker="w"))
    return store, space


def test_evaluate_curves_over_a_store(tmp_path):
    from nasdb.store import ExperimentRecord

    curves, _ = saturating_curves(70, epochs=8, seed=7)
    store, space = _store_with_curves(tmp_path / "store", {"curves_demo": curves})
    archs, recipe = space.sample(70, 3), RECIPE8
    with store.writer("test") as w:
        stopped = curves[0, :3]
        w.append(ExperimentRecord(task="curves_demo", space_id=space.space_id, architecture=list(archs[0]),
                                  seed=999, recipe=recipe, agent="random", run_id="t", val_accuracy=stopped[-1],
                                  test_accuracy=stopped[-1], val_curve=list(stopped), epochs=3, train_seconds=1.0,
                                  num_params=1000, device="cpu", worker="w", stopped_early=True))
    cs = load_full_curves(store, "curves_demo")
    assert cs.curves.shape == (70, 8) and cs.skipped == {"stopped_early": 1}
    np.testing.assert_allclose(np.sort(cs.finals), np.sort(curves[:, -1]))
    report = evaluate_curves(store, None, tmp_path / "out", config=EarlyStopConfig(burn_in=30, search_trials=0),
                             repeats=1, orders=1, search_trials=0)
    t = report["tasks"]["curves_demo"]
    assert t["tau_25pct"] == 2 and len(t["r2"]["r2_mean"]) == 7 and t["simulation"]["orders"] == 1
    assert set(report["summary"]) == {"r2_10pct_mean", "r2_25pct_mean", "r2_50pct_mean", "speedup_mean",
                                      "best_kept_orders"}
    assert t["r2"]["pooled_tasks"] == [] and "own_r2_25pct" not in t
    assert json.loads((tmp_path / "out" / "report.json").read_text())["tasks"]["curves_demo"]["num_curves"] == 70
    assert "| curves_demo | 70 | 8 |" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "r2_vs_tau.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no complete learning curves"):
        evaluate_curves(store, "digits10")

    from click.testing import CliRunner

    from cluster.early_stop.cli import curves_group

    args = ["evaluate", "--task", "curves_demo", "--out", str(tmp_path / "cli"), "--burn-in", "30", "--orders", "1",
            "--repeats", "1", "--retrain-every", "50"]
    result = CliRunner().invoke(curves_group, args, obj={"store_root": str(tmp_path / "store")})
    assert result.exit_code == 0, result.output
    assert "| curves_demo | 70 | 8 |" in result.output and (tmp_path / "cli" / "r2_vs_tau.png").exists()


def _shifted_task(n: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Curves of one task: saturating curves whose ceilings all move by ``shift`` over the epochs
    after the second, so how far a curve still climbs depends on its task."""
    curves, feats = saturating_curves(n, epochs=8, seed=seed)
    curves[:, 2:] += shift * np.linspace(0, 1, 6)[None, :]
    return curves, feats


def test_task_context_and_which_tasks_are_comparable():
    curves, feats = _shifted_task(30, 0.0, seed=1)
    ctx = task_context(curves, 2)
    assert ctx.shape == (len(CONTEXT_FEATURES),)
    np.testing.assert_allclose(ctx[:5], [curves[:, -1].mean(), curves[:, -1].std(), curves[:, 1].mean(),
                                         curves[:, 1].std(), (curves[:, -1] - curves[:, 1]).mean()])
    assert -1 <= ctx[5] <= 1
    assert task_context(np.ones((5, 8)), 3)[5] == 0.0  # constant curves: no correlation to read
    names = ("f",) * 4
    cs = CurveSet("a", curves, feats, [str(i) for i in range(30)], names, {})
    same = CurveSet("b", curves, feats, cs.experiment_ids, names, {})
    longer = CurveSet("c", np.hstack([curves, curves[:, -1:]]), feats, cs.experiment_ids, names, {})
    other_space = CurveSet("d", curves, feats, cs.experiment_ids, ("g",) * 4, {})
    assert [o.task for o in comparable_curve_sets(cs, [cs, same, longer, other_space])] == ["b"]


def test_pooling_other_tasks_curves_predicts_a_small_task_better():
    """12 training curves of a task against the same 12 plus 3 x 150 of other tasks, each read with
    its task's context: on the same held-out curves, the pooled model's R^2 is higher."""
    names = ("f",) * 4
    sets = []
    for k, shift in enumerate((0.10, -0.05, 0.02, 0.06)):
        curves, feats = _shifted_task(24 if k == 0 else 150, shift, seed=10 + k)
        sets.append(CurveSet(f"t{k}", curves, feats, [str(i) for i in range(len(curves))], names, {}))
    common = dict(repeats=3, taus=[2, 3], search_trials=0, target="gain", model="gbt")
    own = r2_by_tau(sets[0], **common)
    pooled = r2_by_tau(sets[0], pool=sets, **common)
    assert pooled["pooled_tasks"] == ["t1", "t2", "t3"] and own["pooled_tasks"] == []
    assert own["last_seen_r2_mean"] == pooled["last_seen_r2_mean"]  # the same splits
    assert min(np.subtract(pooled["r2_mean"], own["r2_mean"])) > 0.05, (own["r2_mean"], pooled["r2_mean"])


def _prior_sets(n: int = 150) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three other tasks whose shifts bracket the own task's (0.03): RBF models pooled over task
    contexts interpolate between tasks, they do not extrapolate."""
    return [_shifted_task(n, shift, seed=20 + k) for k, shift in enumerate((0.0, 0.02, 0.05))]


def test_recalibration_is_ridge_least_squares_with_exact_leave_one_out_residuals():
    from cluster.early_stop import recalibrate

    rng = np.random.default_rng(3)
    raw = rng.random(12)
    final = 0.2 + 1.5 * raw + 0.01 * rng.normal(size=12)
    (a, c, m), sigma = recalibrate(raw, final)
    lam = np.sum((final - final.mean()) ** 2)

    def fit(r, f):  # the same ridge, written out: minimize sum(f - r - a - c (r - mean r))^2 + lam c^2
        x = np.column_stack([np.ones_like(r), r - r.mean()])
        return np.linalg.solve(x.T @ x + np.diag([0, lam]), x.T @ (f - r)), r.mean()

    (a2, c2), m2 = fit(raw, final)
    np.testing.assert_allclose([a, c, m], [a2, c2, m2], atol=1e-9)
    assert 0 < c < 0.5  # a slope of 1.5 is corrected only part of the way
    loo = []
    for i in range(12):
        (ai, ci), mi = fit(np.delete(raw, i), np.delete(final, i))
        loo.append(final[i] - (raw[i] + ai + ci * (raw[i] - mi)))
    assert sigma == pytest.approx(math.sqrt(np.mean(np.square(loo))), rel=0.05)  # lam moves a little per fold
    (a, c, _), _ = recalibrate(np.full(10, 0.7) + 1e-9 * rng.random(10), np.linspace(0.6, 0.9, 10))
    assert abs(c) < 1e-3 and a == pytest.approx(0.75 - 0.7, abs=1e-6)  # flat pooled predictions: a shift only


def test_subsample_tasks_caps_the_pool_with_an_equal_share_per_task():
    from cluster.early_stop import subsample_tasks

    tasks = [(np.arange(n * 8.0).reshape(n, 8), np.zeros((n, 4))) for n in (100, 50, 10)]
    assert subsample_tasks(tasks, None) == tasks and subsample_tasks(tasks, 160) == tasks
    sub = subsample_tasks(tasks, 60, seed=1)
    assert [len(c) for c, _ in sub] == [20, 20, 10] and [len(f) for _, f in sub] == [20, 20, 10]
    assert all(set(map(tuple, c)) <= set(map(tuple, full)) for (c, _), (full, _) in zip(sub, tasks))


def test_a_stopper_with_a_prior_starts_after_pool_burn_in_and_pools_the_other_tasks():
    """Three other tasks' curves: the stopper is ready after pool_burn_in = 10 of its own (not the
    burn-in of 100), reads the pooled model recalibrated on its own curves, stops the task's worst
    curve before its end and never the best; pool_curves=0 ignores the prior."""
    from cluster.early_stop import PooledRegressor, TaskCurveModel, pooled_prior

    config = EarlyStopConfig(burn_in=100, pool_burn_in=10, search_trials=0, retrain_every=5, num_epochs=8)
    prior = _prior_sets()
    own, feats = _shifted_task(30, 0.03, seed=9)
    stopper = EarlyStopper(config, prior)
    stopper.report_complete(own[:9], feats[:9])
    assert not stopper.ready and stopper.burn_in == 10
    stopper.report_complete(own[9:30], feats[9:30])
    assert stopper.ready and isinstance(stopper.predictor, TaskCurveModel)
    d = stopper.describe()
    assert d["pooled_curves"] == 450 and d["predictor"]["context_curves"] == 10
    assert d["predictor"]["recalibration_curves"] == 30 and all(s > 0 for s in d["predictor"]["sigma"].values())
    worst, best = int(np.argmin(own[:, -1])), int(np.argmax(own[:, -1]))
    assert any(stopper.should_stop(own[worst, :tau], feats[worst]) for tau in range(1, 8))
    assert not any(stopper.should_stop(own[best, :tau], feats[best]) for tau in range(1, 8))

    shared = pooled_prior(config, prior)
    assert isinstance(shared, PooledRegressor) and shared.num_curves == 450 and not shared.models
    EarlyStopper(config, shared)  # starts fitting every tau in the background, before any own curve
    deadline = time.monotonic() + 120
    while len(shared.models) < 7 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(shared.models) == list(range(1, 8))
    assert pooled_prior(replace(config, pool_curves=300), prior).num_curves == 300
    assert pooled_prior(replace(config, pool_curves=0), prior) is None and pooled_prior(config, []) is None
    off = EarlyStopper(replace(config, pool_curves=0), prior)
    off.report_complete(own, feats)
    assert not off.ready and off.burn_in == 100 and off.describe()["pooled_curves"] == 0


def test_from_burn_in_on_each_tau_reads_the_model_with_the_smaller_out_of_sample_sigma():
    from cluster.early_stop import PerTauChoice, pooled_prior

    config = EarlyStopConfig(burn_in=20, pool_burn_in=10, search_trials=0, retrain_every=100, num_epochs=8)
    own, feats = _shifted_task(30, 0.03, seed=9)
    stopper = EarlyStopper(config, _prior_sets())
    stopper.report_complete(own[:19], feats[:19])
    assert not isinstance(stopper.predictor, PerTauChoice)  # 19 < burn_in: the pooled model alone
    stopper.report_complete(own[19:], feats[19:])
    assert stopper.num_complete == 30 and isinstance(stopper.predictor, PerTauChoice)
    pooled = pooled_prior(config, _prior_sets()).for_task(own[:10], own, feats)  # refit at once at burn_in
    mine = SequentialRegressor(search_trials=0).fit(own, feats)
    choice = stopper.predictor
    assert choice.sigma == {t: min(pooled.sigma[t], mine.sigma[t]) for t in range(1, 8)}
    d = choice.describe()
    assert sorted(d["pooled_taus"] + d["own_taus"]) == list(range(1, 8))
    for t in range(1, 8):
        src = pooled if t in d["pooled_taus"] else mine
        np.testing.assert_allclose(choice.predict(own[:5, :t], feats[:5])[0], src.predict(own[:5, :t], feats[:5])[0])


def test_a_prior_that_does_not_fit_the_task_is_refused():
    config = EarlyStopConfig(pool_burn_in=10, search_trials=0, num_epochs=8)
    with pytest.raises(ValueError, match="prior's curves have 9 epochs, the stopper's 8"):
        EarlyStopper(config, [(np.hstack([c, c[:, -1:]]), f) for c, f in _prior_sets()])
    stopper = EarlyStopper(replace(config, num_epochs=None), _prior_sets())
    own, feats = _shifted_task(12, 0.0, seed=2)
    with pytest.raises(ValueError, match=r"do not match the prior's \(8 epochs, 4 features\)"):
        stopper.report_complete(own, feats[:, :3])
    with pytest.raises(ValueError, match="one length and feature count"):
        EarlyStopper(config, [_prior_sets()[0], (np.zeros((5, 9)), np.zeros((5, 4)))])
    for bad, match in [(dict(pool_burn_in=3), "pool_burn_in"), (dict(pool_curves=-1), "pool_curves"),
                       (dict(top_n=12, burn_in=20, pool_burn_in=10), "top_n=12 exceeds pool_burn_in=10")]:
        with pytest.raises(ValueError, match=match):
            EarlyStopConfig(**bad)
    assert EarlyStopConfig(top_n=12, burn_in=20, pool_burn_in=10, pool_curves=0).top_n == 12


def test_simulation_with_a_prior_stops_from_the_pooled_burn_in_on():
    own, feats = _shifted_task(80, 0.03, seed=9)
    cs = CurveSet("own", own, feats, [str(i) for i in range(80)], ("f",) * 4, {})
    others = [CurveSet(f"o{k}", c, f, [str(i) for i in range(len(c))], ("f",) * 4, {})
              for k, (c, f) in enumerate(_prior_sets())]
    config = EarlyStopConfig(burn_in=100, pool_burn_in=10, search_trials=0, retrain_every=10)
    with pytest.raises(ValueError, match="burn-in of 100"):
        simulate_early_stopping(cs, config, orders=1)
    sim = simulate_early_stopping(cs, config, orders=2, seed=1, prior=others + [cs])  # cs itself is never pooled
    assert sim["pooled_curves"] == 450 and all(r["stopped"] > 0 for r in sim["runs"])


def test_load_other_curves_reads_every_comparable_task_in_one_query(tmp_path):
    from cluster.early_stop import load_other_curves

    store, space = _store_with_curves(tmp_path / "store", {"curves_a": _shifted_task(12, 0.1, seed=1)[0],
                                                          "curves_b": _shifted_task(15, 0.0, seed=2)[0]})
    sets = load_other_curves(store, recipe=RECIPE8, space_id=space.space_id)
    assert {t: cs.curves.shape for t, cs in sets.items()} == {"curves_a": (12, 8), "curves_b": (15, 8)}
    assert sets["curves_b"].feature_names == load_full_curves(store, "curves_b").feature_names
    np.testing.assert_array_equal(sets["curves_a"].features, load_full_curves(store, "curves_a").features)
    assert list(load_other_curves(store, recipe=RECIPE8, space_id=space.space_id, exclude=["curves_a"])) == ["curves_b"]
    assert load_other_curves(store, recipe={**RECIPE8, "epochs": 9}, space_id=space.space_id) == {}
    assert load_other_curves(store, recipe=RECIPE8, space_id="0" * 16) == {}


def _ranked_sets(n_tasks: int, n: int = 60, *, flip: int | None = None) -> list[CurveSet]:
    """Curve sets of random architectures whose final accuracy rises with the first layer's choice
    (falls on task ``flip``), each with its architectures and space, as stores give them."""
    space = default_space()
    sets = []
    for k in range(n_tasks):
        archs = space.sample(n, 10 + k)
        curves, feats = saturating_curves(n, epochs=8, seed=k)
        sign = -1.0 if k == flip else 1.0
        curves[:, -1] += sign * 0.03 * archs[:, 1]  # layer1 choice index: the architecture that trains well
        sets.append(CurveSet(f"t{k}", curves, feats, [str(i) for i in range(n)], ("f",) * 4, {}, archs, space))
    return sets


def test_architecture_prior_is_a_ridge_on_the_one_hot_encoding_cross_fitted_across_tasks():
    from scipy.stats import spearmanr
    from sklearn.linear_model import Ridge

    from cluster.early_stop import ARCH_PRIOR_FEATURE, architecture_prior, with_prior
    from nasdb.ranks import quantile_rank

    sets = _ranked_sets(4, flip=3)
    space = sets[0].space
    prior, pooled = architecture_prior(sets, space)
    assert prior.num_tasks == 4 and prior.num_curves == 240
    u = np.vstack([space.encode_many(cs.architectures) for cs in sets])
    y = np.concatenate([quantile_rank(cs.finals) for cs in sets])
    new = space.sample(50, 99)
    np.testing.assert_allclose(prior(new), Ridge(alpha=1.0).fit(u, y).predict(space.encode_many(new)), atol=1e-5)
    assert spearmanr(prior(new), new[:, 1])[0] > 0.5  # three of four tasks like a high layer1 choice
    # each pooled task's column is out of task: a prior fitted on the other three alone
    assert [cs.feature_names[-1] for cs in pooled] == [ARCH_PRIOR_FEATURE] * 4
    held_3, _ = architecture_prior(sets[:3], space)
    np.testing.assert_allclose(pooled[3].features[:, -1], held_3(sets[3].architectures))
    np.testing.assert_array_equal(pooled[3].features[:, :-1], sets[3].features)
    assert spearmanr(pooled[3].features[:, -1], pooled[3].finals)[0] < 0  # the flipped task is not told its own
    np.testing.assert_allclose(with_prior(sets[0], prior).features[:, -1], prior(sets[0].architectures))
    # nothing to fit on: fewer than two sets of the space, or sets without architectures
    assert architecture_prior(sets[:1], space) == (None, sets[:1])
    bare = [replace(cs, architectures=None) for cs in sets]
    assert architecture_prior(bare, space) == (None, bare) and architecture_prior(sets, None)[0] is None
    with pytest.raises(ValueError, match="task 't0'.*no architectures"):
        with_prior(bare[0], prior)


def test_a_stopper_pooling_with_an_architecture_prior_reads_it_in_its_static_features():
    from cluster.child import GuardedObserver, observer_features
    from cluster.early_stop import CurvePredictorService

    sets = _ranked_sets(3)
    space, recipe = sets[0].space, dict(RECIPE8)
    archs, params = space.sample(4, 5), [1000, 2000, 3000, 4000]
    plain = model_features(space, archs, params, recipe)
    service = CurvePredictorService(EarlyStopConfig(burn_in=30, pool_burn_in=10, search_trials=0), prior=sets)
    arch = service.arch_prior("new_task")  # pools over all three, as a new task would
    assert arch is not None and arch.num_tasks == 3 and service.arch_prior("t0").num_tasks == 2
    stopper = service._stopper("new_task")
    f = observer_features(stopper, space, archs, params, recipe)
    np.testing.assert_array_equal(f, np.hstack([plain, arch(archs)[:, None]]))
    assert stopper.describe()["arch_prior"]["tasks"] == 3
    own = np.hstack([sets[0].features, arch(sets[0].architectures)[:, None]])[:12]
    assert service.report_complete("new_task", sets[0].curves[:12], own) == 12 and stopper.ready
    off = CurvePredictorService(EarlyStopConfig(burn_in=30, pool_burn_in=10, search_trials=0, arch_prior=False),
                                prior=sets)
    assert off.arch_prior("new_task") is None
    np.testing.assert_array_equal(observer_features(off._stopper("new_task"), space, archs, params, recipe), plain)
    np.testing.assert_array_equal(observer_features(EarlyStopper(), space, archs, params, recipe), plain)

    class Broken(EarlyStopper):
        def static_features(self, *args):
            raise RuntimeError("actor died")

    guarded = GuardedObserver(Broken())
    np.testing.assert_array_equal(guarded.static_features(space, archs, params, recipe), plain)
    assert "actor died" in guarded.error  # early stopping is off on this trainer, children train on


def test_evaluate_curves_pooled_reports_both_models(tmp_path):
    store, _ = _store_with_curves(tmp_path / "store", {"curves_a": _shifted_task(40, 0.1, seed=1)[0],
                                                      "curves_b": _shifted_task(60, -0.05, seed=2)[0],
                                                      "curves_c": _shifted_task(30, 0.0, seed=3)[0]})
    report = evaluate_curves(store, "curves_a", tmp_path / "out", config=EarlyStopConfig(burn_in=30, search_trials=0),
                             repeats=1, orders=1, search_trials=0, pool=True)
    t = report["tasks"]["curves_a"]
    assert list(report["tasks"]) == ["curves_a"] and t["r2"]["pooled_tasks"] == ["curves_b", "curves_c"]
    assert t["arch_prior"] == {"name": "ridge-on-one-hot", "alpha": 1.0, "tasks": 2, "curves": 90}
    assert t["r2"]["taus"] == [1, 2, 4] and {t["tau_10pct"], t["tau_25pct"], t["tau_50pct"]} == {1, 2, 4}
    assert all(math.isfinite(t[f"{k}_{p}pct"]) for k in ("r2", "own_r2") for p in (10, 25, 50))
    assert "own_r2_25pct_mean" in report["summary"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "own R^2 at 25%" in text and "(own models: " in text

    from click.testing import CliRunner

    from cluster.early_stop.cli import curves_group

    args = ["evaluate", "--task", "curves_a", "--out", "-", "--burn-in", "30", "--orders", "0", "--repeats", "1",
            "--search-trials", "0", "--pool"]
    result = CliRunner().invoke(curves_group, args + ["--json"], obj={"store_root": store.root})
    assert result.exit_code == 0, result.output
    cli_report = json.loads(result.output[result.output.index("{"):])
    assert cli_report["pooled"] and cli_report["tasks"]["curves_a"]["r2"]["pooled_tasks"] == ["curves_b", "curves_c"]
    result = CliRunner().invoke(curves_group, args + ["--json", "--no-arch-prior"], obj={"store_root": store.root})
    assert "arch_prior" not in json.loads(result.output[result.output.index("{"):])["tasks"]["curves_a"]
    assert cli_report["tasks"]["curves_a"]["simulation"] is None and "speedup_mean" not in cli_report["summary"]
    text = CliRunner().invoke(curves_group, args, obj={"store_root": store.root}).output
    assert "Early stopping not simulated." in text and "speedup" not in text, text


# -- populate with early stopping on a real local Ray cluster -----------------------------------
def test_populate_with_early_stopping_stores_consistent_rows(tmp_path, ray_cluster):
    """36 children of digits10_small (4 epochs), 2 actors, chunks of 4, burn-in 8: stopped rows are
    consistent, a rerun adds nothing, and extending the plan seeds the predictor from the store."""
    from cluster.child import TrainRecipe, default_bank
    from cluster.populate import PopulateConfig, plan_task, populate
    from nasdb.store import ExperimentStore
    from nasdb.tasks import load_builtin_task

    task, epochs, n = "digits10_small", 4, 36
    store = ExperimentStore(str(tmp_path / "store"))
    store.init()
    config = EarlyStopConfig(burn_in=8, confidence=0.9, search_trials=0, retrain_every=4)
    recipe = TrainRecipe(epochs=epochs)
    summary = populate(store, PopulateConfig(per_task=n, tasks=[task], recipe=recipe, workers=2, batch_size_models=4,
                                             early_stop=config), progress=False)
    rows = store.experiments_arrow(task, status=None).to_pylist()
    assert len(rows) == n and summary.complete
    planned = {i.experiment_id for i in plan_task(default_space(), task, n, seed=0, recipe=recipe.to_dict(),
                                                  task_fingerprint=load_builtin_task(task).fingerprint(),
                                                  bank_fingerprint=default_bank().fingerprint())}
    assert {r["experiment_id"] for r in rows} == planned  # early stopping leaves the ids alone
    ok = [r for r in rows if r["status"] == "ok"]
    for r in ok:
        assert len(r["val_curve"]) == r["epochs"] and r["val_accuracy"] == r["val_curve"][-1]
        if r["stopped_early"]:
            assert 1 <= r["epochs"] < epochs and math.isfinite(r["predicted_final"]), r
        else:
            assert r["epochs"] == epochs and r["predicted_final"] is None, r
    full = [r for r in ok if not r["stopped_early"]]
    stopped = [r for r in ok if r["stopped_early"]]
    assert len(full) >= config.burn_in, "the burn-in curves are always trained to the end"
    assert stopped, "36 random children at Delta=0.9: some are clearly bad and must stop"
    t = summary.task(task)
    assert t.stopped == len(stopped) and t.epochs_saved == sum(epochs - r["epochs"] for r in stopped)
    assert summary.early_stop["burn_in"] == 8 and summary.early_stop["num_epochs"] == epochs
    status = summary.early_stop_status[task]
    assert status["ready"] and status["num_complete"] == len(full)
    # Delta > 0.5 stops only below the best so far, which only grows
    assert all(r["predicted_final"] < status["reference"] for r in stopped)
    assert status["reference"] == max(r["val_accuracy"] for r in full)
    assert "stopped" in summary.format_table() and f"{len(stopped)} of {len(ok)} children stopped early" in \
        summary.format_table()

    again = populate(store, PopulateConfig(per_task=n, tasks=[task], recipe=recipe, workers=2, early_stop=config),
                     progress=False)
    assert again.rows_trained == 0 and again.task(task).skipped == n  # a stopped row is done
    assert store.count(task) == n

    more = populate(store, PopulateConfig(per_task=n + 4, tasks=[task], recipe=recipe, workers=1, early_stop=config),
                    progress=False)
    assert more.rows_trained == 4 and store.count(task) == n + 4
    grown = more.early_stop_status[task]
    assert grown["num_complete"] >= len(full) and grown["ready"]  # seeded: no second burn-in
    assert grown["pooled_curves"] == 0  # no other task in the store to pool over

    other = populate(store, PopulateConfig(per_task=12, tasks=["digits_mod3"], recipe=recipe, workers=2,
                                           early_stop=replace(config, pool_burn_in=5)), progress=False)
    status = other.early_stop_status["digits_mod3"]  # pools over digits10_small's complete curves
    assert status["pooled_curves"] == grown["num_complete"] and status["ready"]
    assert status["arch_prior"] is None  # one other task: no other tasks to rank architectures on
    third = populate(store, PopulateConfig(per_task=12, tasks=["digits_parity"], recipe=recipe, workers=2,
                                           early_stop=replace(config, pool_burn_in=5)), progress=False)
    status = third.early_stop_status["digits_parity"]  # the trainers' features end with the prior's column
    assert status["arch_prior"]["tasks"] == 2 and status["ready"] and third.complete
    assert store.count("digits_parity", status="ok") == 12
    resumed = populate(store, PopulateConfig(per_task=14, tasks=["digits_parity"], recipe=recipe, workers=1,
                                             early_stop=replace(config, pool_burn_in=5)), progress=False)
    status = resumed.early_stop_status["digits_parity"]  # seeded with its own curves, read with the prior
    assert resumed.rows_trained == 2 and status["num_complete"] >= 5 and status["arch_prior"]["tasks"] == 2
