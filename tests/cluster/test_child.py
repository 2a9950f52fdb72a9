"""The child network (paper Sec. 3.4), its training loop and the batched trainer.

Everything runs on a real built-in task (sklearn's 8x8 digits); the relaxed forward pass and
the batched trainer's hand-written backward pass are checked against naive references.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cluster.child import (BucketAdam, BucketNetwork, ChildNetwork, CostModel, EmbeddingBank, TaskTables, TrainRecipe,
                           child_plan, default_bank, make_buckets, median_bandwidth, parse_module_name, train_child,
                           train_children)
from nasdb.space import EMBEDDING_MODULES, parse_layer_choice

from child_helpers import ONE_BUCKET, arch, poison_one_member

FAST = TrainRecipe(epochs=3)


def diverse(space):
    """Architectures covering depths 0..7, relu/tanh mixes, every width and several embeddings."""
    return np.stack([
        arch(space, "identity", [("relu", 64)]),
        arch(space, "pca16", [("tanh", 8), ("relu", 256), ("tanh", 32)]),
        arch(space, "rff64", []),
        arch(space, "pca8", [("relu", 16), ("relu", 16), ("tanh", 128), ("relu", 8), ("tanh", 64), ("relu", 32),
                             ("tanh", 256)]),
        arch(space, "rff128", [("tanh", 128), ("tanh", 16)]),
        arch(space, "pca32", [("relu", 32), ("tanh", 256), ("relu", 8), ("relu", 64)]),
    ])


# -- embeddings ----------------------------------------------------------------------------
def test_embedding_bank_is_deterministic_and_whitened(task, bank):
    again = EmbeddingBank.fit(task.x_train)
    assert bank.names == EMBEDDING_MODULES and again.fingerprint() == bank.fingerprint()
    assert bank.dims == {"identity": 64, "pca8": 8, "pca16": 16, "pca32": 32, "rff64": 64, "rff128": 128,
                         "rff256": 256}
    z = bank.transform(task.x_train, "pca16")  # (n, 16), whitened on its own fit data
    assert z.dtype == np.float32 and np.allclose(z.std(0, ddof=1), 1.0, atol=1e-3)
    assert np.array_equal(bank.transform(task.x_train, "identity"), task.x_train)
    r = bank.transform(task.x_val, "rff256")
    assert r.shape == (len(task.x_val), 256) and np.all(np.abs(r) <= math.sqrt(2) + 1e-6)
    assert median_bandwidth(task.x_train) > 0


def test_embedding_bank_caches_task_features_and_pickles_small(task, bank):
    f1, f2 = bank.task_features(task, "train"), bank.task_features(task, "train")
    assert f1 is f2 and f1["rff128"].shape == (len(task.x_train), 128)
    clone = pickle.loads(pickle.dumps(bank))
    assert clone.fingerprint() == bank.fingerprint() and not clone._cache
    assert len(pickle.dumps(bank)) < 200_000
    with pytest.raises(ValueError, match="'pca99x'"):
        parse_module_name("pca99x")
    with pytest.raises(KeyError, match="'nope'"):
        bank["nope"]


def test_default_bank_is_fitted_once_on_the_suite():
    b = default_bank()
    assert b is default_bank() and b.names == EMBEDDING_MODULES and b.max_dim == 256


# -- the network ---------------------------------------------------------------------------
def test_parameter_count_matches_a_hand_count(space, task, bank):
    a = arch(space, "identity", [("relu", 32), ("tanh", 8)])
    hand = (64 * 32 + 32) + (32 * 8 + 8) + (8 * 10 + 10)  # two layers and the 10-way classifier
    assert child_plan(space, a, bank).num_params(10) == hand
    assert ChildNetwork(space, 10, bank, architecture=a).num_params() == hand
    relaxed = ChildNetwork(space, 10, bank, relaxed_weights=space.encode(a))  # one-hot u: the same branches,
    assert relaxed.num_params() == (256 * 32 + 32) + (256 * 8 + 8) + (256 * 10 + 10)  # reading padded width 256
    assert train_child(task, space, a, recipe=TrainRecipe(epochs=1), bank=bank).num_params == hand


@pytest.mark.parametrize("i", range(6))
def test_one_hot_and_relaxed_forward_agree(space, task, bank, i):
    a = diverse(space)[i]
    one_hot = ChildNetwork(space, task.num_classes, bank, architecture=a, generator=torch.Generator().manual_seed(i))
    relaxed = ChildNetwork(space, task.num_classes, bank, relaxed_weights=space.encode(a)).load_one_hot_(one_hot)
    feats = bank.task_features(task, "val")
    lo, _ = one_hot(torch.from_numpy(one_hot.select_features(feats)))
    lr, _ = relaxed(torch.from_numpy(relaxed.select_features(feats)))
    assert torch.allclose(lo, lr, atol=1e-5)


def naive_relaxed_logits(net: ChildNetwork, space, feats: dict, u: np.ndarray) -> torch.Tensor:
    """Sec. 3.4 written out: gamma-mix of padded embeddings, then per layer
    p_on * sum_i alpha_i pad(act_i(W_i h + b_i)) + p_off * h, then the classifier."""
    blocks, D = space.blocks, net.width
    x = {m: torch.from_numpy(f) for m, f in feats.items()}
    h = sum(float(g) * F.pad(x[m], (0, D - x[m].shape[1])) for g, m in zip(u[blocks[0]], EMBEDDING_MODULES))
    for j in range(7):
        alpha, (p_off, p_on) = u[blocks[1 + j]], u[blocks[8 + j]]
        mixed = 0
        for i, choice in enumerate(space.dimensions[1 + j].choices):
            act, w = parse_layer_choice(choice)
            o = getattr(torch, act)(h @ net.weights[12 * j + i].T + net.biases[12 * j + i])
            mixed = mixed + float(alpha[i]) * F.pad(o, (0, D - w))
        h = float(p_on) * mixed + float(p_off) * h
    return h @ net.head_w.T + net.head_b


def test_relaxed_forward_matches_a_naive_reference(space, task, bank):
    u = space.relax(np.random.default_rng(0).normal(size=space.encoding_size) * 2)
    net = ChildNetwork(space, task.num_classes, bank, relaxed_weights=u)
    feats = bank.task_features(task, "val")
    with torch.no_grad():
        got, _ = net(torch.from_numpy(net.select_features(feats)))
        assert torch.allclose(got, naive_relaxed_logits(net, space, feats, u), atol=1e-5)


# -- training ------------------------------------------------------------------------------
def test_child_trains_far_better_than_chance(space, task, bank):
    res = train_child(task, space, arch(space, "pca32", [("relu", 64)]), bank=bank)  # default recipe
    assert res.status == "ok" and res.error is None and res.epochs == 20 == len(res.val_curve)
    assert res.val_accuracy == res.val_curve[-1] and res.val_accuracy > 0.75  # chance: 0.1
    assert res.test_accuracy > 0.75 and 0 < res.train_seconds < 30


def test_relaxed_child_trains(space, task, bank):
    u = space.relax(np.random.default_rng(1).normal(size=space.encoding_size))
    res = train_child(task, space, None, relaxed_weights=u, recipe=FAST, bank=bank)
    assert res.status == "ok" and res.val_accuracy > 0.3 and res.num_params > 100_000


def test_seeded_runs_are_reproducible(space, task, bank):
    a = arch(space, "rff64", [("tanh", 32), ("relu", 16)])
    r1, r2 = (train_child(task, space, a, recipe=FAST, seed=7, bank=bank) for _ in range(2))
    assert r1.val_curve == r2.val_curve and r1.test_accuracy == r2.test_accuracy
    b1, b2 = (train_children(task, space, diverse(space), recipe=FAST, seeds=np.arange(6), bank=bank)
              for _ in range(2))
    assert [r.val_curve for r in b1] == [r.val_curve for r in b2]


def test_divergence_and_exceptions_are_failed_results(space, task, bank, monkeypatch):
    a = arch(space, "identity", [("relu", 256), ("relu", 256), ("relu", 256)])
    res = train_child(task, space, a, recipe=TrainRecipe(epochs=2, learning_rate=1e30), bank=bank)
    assert res.status == "failed" and res.error.startswith("diverged: non-finite loss at epoch 1")
    assert math.isnan(res.val_accuracy) and res.epochs == 0 == len(res.val_curve)
    [bres] = train_children(task, space, a[None], recipe=TrainRecipe(epochs=2, learning_rate=1e30), bank=bank)
    assert bres.status == "failed" and bres.error == res.error

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(torch.optim.Adam, "__init__", boom)  # train_child's optimizer
    res = train_child(task, space, a, recipe=FAST, bank=bank)
    assert res.status == "failed" and res.error == "RuntimeError: boom"
    monkeypatch.setattr(BucketAdam, "__init__", boom)  # the batched trainer's, then train_child's in the retry
    out = train_children(task, space, diverse(space), recipe=FAST, seeds=np.arange(6), bank=bank)
    assert all(r.status == "failed" and r.error == "RuntimeError: boom" for r in out)


# -- the batched trainer -------------------------------------------------------------------
def test_a_bucket_that_raises_is_retried_one_at_a_time(space, task, bank, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    archs, seeds = diverse(space)[:3], np.arange(3)
    monkeypatch.setattr(BucketAdam, "__init__", boom)
    out = train_children(task, space, archs, recipe=FAST, seeds=seeds, bank=bank)
    naive = [train_child(task, space, a, recipe=FAST, seed=int(s), bank=bank) for a, s in zip(archs, seeds)]
    assert [r.val_curve for r in out] == [r.val_curve for r in naive] and all(r.status == "ok" for r in out)


def test_batched_equals_one_at_a_time(space, task, bank):
    archs, seeds = diverse(space), np.arange(10, 16)
    naive = [train_child(task, space, a, recipe=FAST, seed=int(s), bank=bank) for a, s in zip(archs, seeds)]
    fast = train_children(task, space, archs, recipe=FAST, seeds=seeds, bank=bank)
    for r, q in zip(naive, fast):
        assert np.allclose(r.val_curve, q.val_curve, atol=1e-6) and abs(r.test_accuracy - q.test_accuracy) < 1e-6
        assert r.num_params == q.num_params and q.status == "ok" and q.epochs == 3


def test_one_padded_bucket_matches_one_at_a_time(space, task, bank):
    """All six architectures in ONE zero-padded bucket (pass-through, mixed activations)."""
    archs, seeds = diverse(space), np.arange(6)
    assert make_buckets([child_plan(space, a, bank) for a in archs], task.num_classes, ONE_BUCKET) == [list(range(6))]
    fast = train_children(task, space, archs, recipe=FAST, seeds=seeds, bank=bank, cost_model=ONE_BUCKET)
    naive = [train_child(task, space, a, recipe=FAST, seed=int(s), bank=bank) for a, s in zip(archs, seeds)]
    diff = np.abs(np.array([r.val_curve for r in naive]) - np.array([r.val_curve for r in fast]))
    assert diff.max() <= 2.0 / len(task.y_val) + 1e-6  # float rounding may flip a sample or two


def test_bucket_backward_matches_autograd_and_padding_stays_zero(space, task, bank):
    archs, seeds, C, b = diverse(space), range(6), task.num_classes, 32
    plans = [child_plan(space, a, bank) for a in archs]
    net = BucketNetwork(plans, [torch.Generator().manual_seed(s) for s in seeds], C, torch.device("cpu"))
    ref = [ChildNetwork(space, C, bank, architecture=a, generator=torch.Generator().manual_seed(s))
           for a, s in zip(archs, seeds)]
    data = TaskTables(task, bank, torch.device("cpu"))
    mod = [bank.names.index(plans[n].embedding) for n in net.order[0]]
    step, y = net.step_buffers(b), data.y["train"][:b]
    opt = BucketAdam(*net.parameters(), 1e-2)
    for it in range(4):  # a few real steps, then compare one more against autograd
        step.x.copy_(data.table("train", net.P[0])[mod, :b])
        with torch.no_grad():
            logp = torch.log_softmax(step.forward(), 1)  # (N, C, b), members in order[-1]
            g = torch.zeros(len(plans), C, b).scatter_(1, y.expand(len(plans), 1, b), -1.0 / b)
            step.backward(torch.ops.aten._log_softmax_backward_data(g, logp, 1, logp.dtype))
        if it < 3:
            opt.step()
            continue
        for n, r in enumerate(ref):
            with torch.no_grad():  # load the member's current weights into its reference network
                for (w, bias), rw, rb in zip(net.member_weights(n), r.weights, r.biases):
                    rw.copy_(w)
                    rb.copy_(bias)
            feats = torch.from_numpy(r.select_features(bank.task_features(task, "train"))[:b])
            logits, loss = r(feats, y)
            loss.backward()
            assert torch.allclose(torch.log_softmax(logits.detach(), 1).T, logp[net.order[-1].index(n)], atol=1e-5)
            for (gw, gb), rw, rb in zip(net.member_weights(n, grads=True), r.weights, r.biases):
                assert torch.allclose(gw, rw.grad, atol=1e-6) and torch.allclose(gb, rb.grad, atol=1e-6)
    for j, (w, gw) in enumerate(zip(net.W, net.gW)):  # padded entries: exactly zero, gradient too
        mask = torch.zeros_like(w, dtype=torch.bool)
        for n in range(len(plans)):
            if n in net.row[j]:
                k = j if j < net.K else len(plans[n].layers)
                ws = plans[n].widths + (C,)
                mask[net.row[j][n], : ws[k], : ws[k + 1]] = True
        assert torch.all(w[~mask] == 0) and torch.all(gw[~mask] == 0)


def test_a_diverging_member_does_not_touch_its_bucket(space, task, bank, monkeypatch):
    archs, seeds = diverse(space), np.arange(6)
    clean = train_children(task, space, archs, recipe=FAST, seeds=seeds, bank=bank)
    poison_one_member(monkeypatch, space, bank, archs[3])
    out = train_children(task, space, archs, recipe=FAST, seeds=seeds, bank=bank, cost_model=ONE_BUCKET)
    assert out[3].status == "failed" and out[3].error == "diverged: non-finite loss at epoch 1"
    for i in (0, 1, 2, 4, 5):
        assert out[i].status == "ok"
        assert np.abs(np.array(out[i].val_curve) - clean[i].val_curve).max() <= 2.0 / len(task.y_val) + 1e-6


def test_buckets_cover_every_architecture_once(space, bank):
    plans = [child_plan(space, a, bank) for a in space.sample(200, 3)]
    for device in ("cpu", "cuda"):
        buckets = make_buckets(plans, 10, CostModel.for_device(torch.device(device), 64))
        assert sorted(i for b in buckets for i in b) == list(range(200))
    gpu = make_buckets(plans, 10, CostModel.for_device(torch.device("cuda"), 64))
    assert len(gpu) < len(make_buckets(plans, 10, CostModel.for_device(torch.device("cpu"), 64)))


def test_written_out_adam_matches_the_fused_kernel():
    """The batched trainer's fallback Adam (no fused kernel) makes torch.optim.Adam's update."""
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 5, 4, generator=gen), torch.randn(3, 1, 4, generator=gen)]
    grads = [torch.zeros_like(p) for p in params]
    fused, written = (BucketAdam([p.clone() for p in params], grads, 1e-2) for _ in range(2))
    written.fused = False
    reference = torch.optim.Adam([p.clone().requires_grad_() for p in params], lr=1e-2)
    for _ in range(5):
        for g in grads:
            g.normal_(generator=gen)
        for p, g in zip(reference.param_groups[0]["params"], grads):
            p.grad = g.clone()
        for opt in (fused, written, reference):
            opt.step()
    for a, b, c in zip(fused.params, written.params, reference.param_groups[0]["params"]):
        assert torch.allclose(a, c, atol=1e-6) and torch.allclose(b, c, atol=1e-6)


# -- arguments -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"epochs": 0}, "epochs.*0"), ({"batch_size": -1}, "batch_size.*-1"), ({"epochs": 2.5}, "epochs.*2.5"),
    ({"learning_rate": float("nan")}, "learning_rate.*nan"), ({"learning_rate": 0}, "learning_rate.*0"),
    ({"optimizer": "sgd"}, "'sgd'"),
])
def test_bad_recipe_raises_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainRecipe(**kwargs)


def test_recipe_round_trip_and_unknown_fields():
    r = TrainRecipe(epochs=5, batch_size=32, learning_rate=1e-3)
    assert TrainRecipe.from_dict(r.to_dict()) == r and TrainRecipe.from_dict({}) == TrainRecipe()
    with pytest.raises(ValueError, match="'momentum'"):
        TrainRecipe.from_dict({"momentum": 0.9})


def test_bad_arguments_raise_naming_the_value(space, task, bank):
    good = arch(space, "identity", [("relu", 8)])
    bad = good.copy()
    bad[space.index("layer1")] = 12
    with pytest.raises(ValueError, match="'layer1'.*12"):
        train_child(task, space, bad, bank=bank)
    with pytest.raises(ValueError, match="-1"):
        train_child(task, space, good, seed=-1, bank=bank)
    with pytest.raises(ValueError, match="'tpu'"):
        train_child(task, space, good, device="tpu", bank=bank)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="'cuda'"):
            train_children(task, space, good[None], device="cuda", bank=bank)
    with pytest.raises(ValueError, match=r"seeds.*\(1,\)"):
        train_children(task, space, good[None], seeds=[1, 2], bank=bank)
    with pytest.raises(ValueError, match=r"\(N, 15\)"):
        train_children(task, space, good, bank=bank)
    u = space.encode(good)
    u[space.blocks[space.index("enable3")]] = [0.5, 0.6]
    with pytest.raises(ValueError, match="'enable3'"):
        train_child(task, space, None, relaxed_weights=u, bank=bank)
    with pytest.raises(ValueError, match="recipe"):
        train_child(task, space, good, recipe={"epochs": 1}, bank=bank)

