"""Early stopping inside child training (Seam 1): an EpochObserver stops children after an epoch.

Real children on a real built-in task: a scripted observer stops a chosen subset at a chosen
epoch, a real EarlyStopper is burned in on real curves. Stopped members must leave their
bucket without disturbing the others, and train_child and train_children must agree.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cluster.child import (BucketAdam, BucketNetwork, ChildResult, TrainRecipe, child_plan, make_buckets, train_child,
                           train_children)
from cluster.early_stop import EarlyStopConfig, EarlyStopper, EpochObserver, StopDecision, model_features
from nasdb.errors import ObserverError

from child_helpers import ONE_BUCKET, arch, poison_one_member

RECIPE = TrainRecipe(epochs=4)


@pytest.fixture(scope="module")
def archs(space):
    """Depths 0..4, relu/tanh, narrow and wide (index 1 holds the widest slot-1 layer)."""
    return np.stack([
        arch(space, "identity", [("relu", 64)]),
        arch(space, "pca16", [("tanh", 8), ("relu", 256), ("tanh", 32)]),
        arch(space, "rff64", []),
        arch(space, "rff128", [("tanh", 128), ("tanh", 16)]),
        arch(space, "pca32", [("relu", 32), ("tanh", 64), ("relu", 8), ("relu", 64)]),
        arch(space, "identity", [("relu", 16)]),
    ])


@pytest.fixture(scope="module")
def seeds():
    return np.arange(20, 26)


@pytest.fixture(scope="module")
def plain(space, task, bank, archs, seeds):
    """The same children trained without an observer."""
    return train_children(task, space, archs, recipe=RECIPE, seeds=seeds, bank=bank)


class ChosenStop:
    """Stops the models whose feature row is one of ``chosen`` once they have that row's tau
    epochs, predicting their log10 parameter count (feature 0); records every call."""

    def __init__(self, chosen: np.ndarray, taus: list[int]):
        self.chosen, self.taus = np.asarray(chosen), list(taus)
        self.decided: list[tuple[np.ndarray, np.ndarray]] = []
        self.completed: list[tuple[np.ndarray, np.ndarray]] = []

    def decide_many(self, curves, features) -> StopDecision:
        curves, features = np.asarray(curves), np.asarray(features)
        self.decided.append((curves.copy(), features.copy()))
        tau = curves.shape[1]
        hit = (features[:, None, :] == self.chosen[None]).all(-1)  # (N, chosen)
        stop = (hit & (np.array(self.taus) == tau)[None]).any(1)  # (N,)
        return StopDecision(tau, stop, np.where(stop, features[:, 0], np.nan), np.full(len(stop), np.nan))

    def report_complete(self, curves, features) -> None:
        self.completed.append((np.asarray(curves).copy(), np.asarray(features).copy()))


def features_of(space, task, bank, archs) -> np.ndarray:
    params = [child_plan(space, a, bank).num_params(task.num_classes) for a in archs]
    return model_features(space, archs, params, RECIPE.to_dict())  # (N, F)


STOPS = {1: 2, 3: 1, 5: 3}  # architecture index -> the epoch it is stopped after


@pytest.fixture(params=["cost-model buckets", "one bucket"])
def bucketing(request, space, bank, archs):
    """The cost model for ``train_children``: the default buckets, or all six children in ONE
    padded bucket (members must leave it)."""
    if request.param == "cost-model buckets":
        return None
    assert make_buckets([child_plan(space, a, bank) for a in archs], 10, ONE_BUCKET) == [list(range(len(archs)))]
    return ONE_BUCKET


def test_observer_protocol_is_met_by_the_test_observer():
    assert isinstance(ChosenStop(np.zeros((0, 10)), []), EpochObserver)


def test_chosen_children_stop_and_the_others_are_untouched(space, task, bank, archs, seeds, plain, bucketing):
    feats = features_of(space, task, bank, archs)
    obs = ChosenStop(feats[list(STOPS)], list(STOPS.values()))
    out = train_children(task, space, archs, recipe=RECIPE, seeds=seeds, bank=bank, observer=obs, cost_model=bucketing)
    tol = 2.0 / len(task.y_val) + 1e-6  # float rounding may flip a validation sample or two
    for i, (r, p) in enumerate(zip(out, plain)):
        assert r.status == "ok" and r.error is None
        if i in STOPS:
            tau = STOPS[i]
            assert r.stopped_early and r.epochs == tau == len(r.val_curve) and r.val_accuracy == r.val_curve[-1]
            assert np.abs(np.array(r.val_curve) - p.val_curve[:tau]).max() <= tol
            assert 0.0 <= r.test_accuracy <= 1.0 and r.predicted_final == pytest.approx(math.log10(r.num_params))
        else:
            assert not r.stopped_early and r.predicted_final is None and r.epochs == RECIPE.epochs
            assert np.allclose(r.val_curve, p.val_curve, atol=1e-6), (i, r.val_curve, p.val_curve)
            assert abs(r.test_accuracy - p.test_accuracy) < 1e-6
        assert r.num_params == p.num_params and r.train_seconds > 0
    for curves, f in obs.decided:  # asked only about children still training, before the last epoch
        tau = curves.shape[1]
        assert 1 <= tau < RECIPE.epochs and f.shape == (len(curves), feats.shape[1])
        assert not any((f == feats[i]).all(1).any() for i, t in STOPS.items() if t < tau)


def test_report_complete_gets_exactly_the_complete_curves(space, task, bank, archs, seeds, bucketing):
    feats = features_of(space, task, bank, archs)
    obs = ChosenStop(feats[list(STOPS)], list(STOPS.values()))
    out = train_children(task, space, archs, recipe=RECIPE, seeds=seeds, bank=bank, observer=obs, cost_model=bucketing)
    curves = np.concatenate([c for c, _ in obs.completed])  # (N, T)
    got = np.concatenate([f for _, f in obs.completed])  # (N, F)
    complete = [i for i in range(len(archs)) if i not in STOPS]
    assert curves.shape == (len(complete), RECIPE.epochs) and got.shape == (len(complete), feats.shape[1])
    for i in complete:  # each complete child once, its curve with its own feature row
        [row] = np.flatnonzero((got == feats[i]).all(1))
        assert np.array_equal(curves[row], out[i].val_curve)


def test_train_child_and_train_children_agree_on_who_stops_and_when(space, task, bank, archs, seeds):
    feats = features_of(space, task, bank, archs)
    one, many = (ChosenStop(feats[list(STOPS)], list(STOPS.values())) for _ in range(2))
    singles = [train_child(task, space, a, recipe=RECIPE, seed=int(s), bank=bank, observer=one)
               for a, s in zip(archs, seeds)]
    batch = train_children(task, space, archs, recipe=RECIPE, seeds=seeds, bank=bank, observer=many)
    for r, q in zip(singles, batch):
        assert (r.stopped_early, r.epochs, r.predicted_final) == (q.stopped_early, q.epochs, q.predicted_final)
        assert np.allclose(r.val_curve, q.val_curve, atol=1e-6) and abs(r.test_accuracy - q.test_accuracy) < 1e-6
    assert len(one.completed) == len(archs) - len(STOPS) and all(c.shape == (1, RECIPE.epochs)
                                                                for c, _ in one.completed)


def test_a_real_early_stopper_stops_weak_children(space, task, bank):
    """Burned in on 24 real 4-epoch curves; then weak children (pca8, stacked tanh8) stop early."""
    burn = space.sample(24, 11)
    res = train_children(task, space, burn, recipe=RECIPE, seeds=np.arange(24), bank=bank)
    stopper = EarlyStopper(EarlyStopConfig(burn_in=24, search_trials=2, retrain_every=1000))
    stopper.report_complete([r.val_curve for r in res], features_of(space, task, bank, burn))
    assert stopper.ready
    weak = np.stack([arch(space, "pca8", [("tanh", 8)] * k) for k in (5, 6, 7)])
    strong = np.stack([burn[int(np.argmax([r.val_accuracy for r in res]))]])
    archs, seeds = np.concatenate([weak, strong]), np.arange(4)
    plain = train_children(task, space, archs, recipe=RECIPE, seeds=seeds, bank=bank)
    out = train_children(task, space, archs, recipe=RECIPE, seeds=seeds, bank=bank, observer=stopper)
    assert any(r.stopped_early for r in out[:3]) and not out[3].stopped_early
    for r, p in zip(out, plain):
        if r.stopped_early:
            assert r.epochs < RECIPE.epochs and r.predicted_final is not None and r.predicted_final < stopper.reference
            assert np.allclose(r.val_curve, p.val_curve[: r.epochs], atol=1e-6)
        else:
            assert np.allclose(r.val_curve, p.val_curve, atol=1e-6) and abs(r.test_accuracy - p.test_accuracy) < 1e-6
    assert stopper.num_complete == 24 + sum(not r.stopped_early for r in out)


def test_a_diverging_member_still_fails_with_an_observer(space, task, bank, archs, seeds, plain, monkeypatch):
    feats = features_of(space, task, bank, archs)
    obs = ChosenStop(feats[[1]], [2])
    poison_one_member(monkeypatch, space, bank, archs[4])
    out = train_children(task, space, archs, recipe=RECIPE, seeds=seeds, bank=bank, observer=obs, cost_model=ONE_BUCKET)
    assert out[4].status == "failed" and out[4].error == "diverged: non-finite loss at epoch 1"
    assert out[4].val_curve == [] and not out[4].stopped_early and math.isnan(out[4].val_accuracy)
    assert out[1].stopped_early and out[1].epochs == 2
    for i in (0, 2, 3, 5):
        assert out[i].status == "ok" and np.allclose(out[i].val_curve, plain[i].val_curve, atol=1e-6)
    assert all(not (f == feats[4]).all(1).any() for _, f in obs.decided + obs.completed)


class Broken:
    def __init__(self, where: str):
        self.where = where

    def decide_many(self, curves, features):
        if self.where == "decide":
            raise RuntimeError("stopper down")
        if self.where == "shape":
            return StopDecision(1, np.zeros(len(curves) + 1, dtype=bool), np.zeros(len(curves) + 1), np.zeros(1))
        return StopDecision(1, np.zeros(len(curves), dtype=bool), np.full(len(curves), np.nan), np.zeros(1))

    def report_complete(self, curves, features):
        raise ValueError("no room")


@pytest.mark.parametrize("where, match", [("decide", "decide_many failed: RuntimeError: stopper down"),
                                          ("shape", r"answered stop \((\d),\) .* for (\d) curves"),
                                          ("report", "report_complete failed: ValueError: no room")])
def test_observer_errors_raise_instead_of_failing_children(space, task, bank, archs, where, match):
    recipe = TrainRecipe(epochs=2)
    with pytest.raises(ObserverError, match=match):
        train_children(task, space, archs[:3], recipe=recipe, bank=bank, observer=Broken(where))
    with pytest.raises(ObserverError, match=match) as err:
        train_child(task, space, archs[0], recipe=recipe, bank=bank, observer=Broken(where))
    assert where != "shape" or "stop (2,)" in str(err.value)


def test_a_relaxed_child_without_architecture_cannot_be_observed(space, task, bank):
    u = space.relax(np.zeros(space.encoding_size))
    with pytest.raises(ValueError, match="architecture=None"):
        train_child(task, space, None, relaxed_weights=u, bank=bank, observer=Broken("none"))


def test_stopped_result_without_a_prediction_has_none():
    r = ChildResult.stopped([0.2, 0.4], 0.39, 1234, float("nan"))
    assert r.stopped_early and r.predicted_final is None and r.epochs == 2 and r.val_accuracy == 0.4


def test_keep_slices_members_weights_and_adam_state_exactly(space, task, bank, archs):
    """Members leave a trained bucket: the rest keep their weights and moments, padding shrinks."""
    plans = [child_plan(space, a, bank) for a in archs]
    net = BucketNetwork(plans, [torch.Generator().manual_seed(s) for s in range(6)], 10, torch.device("cpu"))
    opt = BucketAdam(*net.parameters(), 1e-2)
    for p, g in zip(*net.parameters()):  # fake gradients: every real weight moves
        g.copy_(torch.randn_like(g)).mul_(p != 0)
    opt.step()
    before = {n: [(w.clone(), b.clone()) for w, b in net.member_weights(n)] for n in range(6)}
    moments = [t.clone() for t in opt.m]  # the first moments, in the old layout
    keep = [0, 2, 3, 5]  # member 1 (the 256-wide slot 1) and the 4-layer member 4 leave
    regroup = net.keep_(keep)
    opt.regroup_(*net.parameters(), regroup)
    assert net.N == 4 and net.K == 2 and net.P[1] == 128 and len(opt.m) == len(net.W) + len(net.B)
    for new, old in enumerate(keep):
        for (w, b), (w0, b0) in zip(net.member_weights(new), before[old]):
            assert torch.equal(w, w0) and torch.equal(b, b0)
    old_net = BucketNetwork(plans, [torch.Generator().manual_seed(s) for s in range(6)], 10, torch.device("cpu"))
    old_net.W, old_net.B = moments[: old_net.K + 1], moments[old_net.K + 1:]  # moments, read as weights
    net.W, net.B = opt.m[: net.K + 1], opt.m[net.K + 1:]
    for new, old in enumerate(keep):
        for (w, b), (w0, b0) in zip(net.member_weights(new), old_net.member_weights(old)):
            assert torch.equal(w, w0) and torch.equal(b, b0)
    assert all(tuple(w.shape) == s for w, s in zip(net.W, net.shapes))
