"""PerformancePredictor and PredictorConfig: shapes, order invariance, gating, the no-meta ablation, the
ensemble (members independent, stacked = one at a time), structured features, legacy checkpoints, validation."""

from __future__ import annotations

import pytest
import torch

from nasdb.space import default_space
from predictor.config import PredictorConfig
from predictor.features import ArchitectureFeatures
from predictor.landmarks import task_landmarks
from predictor.model import PerformancePredictor, TaskScorer, legacy_state_dict

D = 105
SPACE = default_space()


def _samples(n=64, seed=0, classes=10, width=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, width, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
@pytest.mark.parametrize("encoder", ["samples", "cells"])
def test_output_invariant_to_sample_order(aggregate, encoder):
    torch.manual_seed(0)
    model = PerformancePredictor(SPACE, PredictorConfig(aggregate=aggregate, meta_encoder=encoder))
    x, y = _samples()
    u = torch.eye(D)[:7]  # (7, D)
    perm = torch.randperm(x.shape[0])
    z1, z2 = model.task_embedding(x, y), model.task_embedding(x[perm], y[perm])
    assert z1.shape == (5 * 50 + (5 if encoder == "cells" else 0),)  # K members x Z, then the landmarks (auto: cells)
    assert torch.allclose(z1, z2, atol=1e-5)
    assert torch.allclose(model(u, z1), model(u, z2), atol=1e-5)
    assert model(u, z1).shape == (7,)
    assert model.member_scores(u, z1).shape == (5, 7)


def test_cell_encoder_reads_any_width_and_ignores_feature_order():
    torch.manual_seed(0)
    model = PerformancePredictor(SPACE, PredictorConfig(meta_encoder="cells"))
    for width in (3, 64, 300):
        x, y = _samples(width=width)
        perm = torch.randperm(width)
        assert torch.allclose(model.embed_task(x, y), model.embed_task(x[:, perm], y), atol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        PerformancePredictor(SPACE).embed_task(*_samples(width=3))


def test_phi_sees_the_labels():
    torch.manual_seed(0)
    for encoder in ("samples", "cells"):
        model = PerformancePredictor(SPACE, PredictorConfig(meta_encoder=encoder))
        x, y = _samples()
        assert not torch.allclose(model.embed_task(x, y), model.embed_task(x, (y + 1) % 10))


def test_task_embedding_matches_batch_scale():
    torch.manual_seed(0)
    for aggregate in ("sum", "mean"):
        cfg = PredictorConfig(aggregate=aggregate, sample_batch_size=32)
        model = PerformancePredictor(SPACE, cfg)
        x, y = _samples(n=96)
        full = model.learned_embedding(x, y, chunk=40)  # chunking does not change the result
        batch_means = torch.stack([model.embed_task(x[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)]).mean(0)
        assert torch.allclose(full, batch_means, atol=1e-4), aggregate


def _cells_loop(model, x, y, chunk):
    """The reference: learned_embedding's chunk loop over embed_task, one f per cell."""
    n, total = x.shape[0], 0.0
    for i in range(0, n, chunk):
        z = model.embed_task(x[i:i + chunk], y[i:i + chunk])
        total = total + (z * min(chunk, n - i) if model.config.aggregate == "mean" else z)
    return total / n * (1.0 if model.config.aggregate == "mean" else min(n, model.config.sample_batch_size))


@pytest.mark.parametrize("aggregate", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(256, 660), (300, 1000), (7, 3)])  # 3 chunks; 2 passes of chunks; 1 short chunk
def test_cells_embedding_runs_f_once_per_distinct_cell_and_equals_the_loop(aggregate, shape):
    """learned_embedding of the cells encoder (f once per distinct (value, class), the chunks' means as
    weighted sums, g in one batch) equals the chunk loop over embed_task up to float32 rounding, on
    columns that repeat values (0/1, a filled-in median, -0.0 next to 0.0) and columns that do not."""
    torch.manual_seed(0)
    model = PerformancePredictor(SPACE, PredictorConfig(meta_encoder="cells", aggregate=aggregate,
                                                        sample_batch_size=64)).eval()
    n, w = shape
    x, y = _samples(n=n, width=w, classes=7)
    x[:, ::3] = (x[:, ::3] > 0.5).float()  # one-hot and missing-value indicators
    x[:, 1::3] = torch.where(x[:, 1::3] < 0.3, torch.tensor(0.25), x[:, 1::3])  # a median filled in
    x[::2, 0] = -0.0
    chunk = min(8192, max(1, 65536 // w))
    with torch.no_grad():
        fast, slow = model.learned_embedding(x, y), _cells_loop(model, x, y, chunk)
    assert fast.shape == slow.shape == (model.z_dim - model.num_landmarks,)
    assert torch.allclose(fast, slow, rtol=1e-5, atol=1e-6), float((fast - slow).abs().max())
    with pytest.raises(ValueError, match=r"labels must lie in \[0, max_classes=10\)"):
        model.task_embedding(x, torch.full_like(y, 10))


def test_members_are_independent_networks():
    """Member k of the stacked ensemble scores exactly as a one-member predictor holding k's weights."""
    torch.manual_seed(0)
    ens = PerformancePredictor(SPACE, PredictorConfig(ensemble_size=3))
    x, y = _samples()
    u = torch.eye(D)[:9]
    scores = ens.member_scores(u, ens.task_embedding(x, y))  # (3, 9)
    assert scores.shape == (3, 9) and not torch.allclose(scores[0], scores[1])
    for k in range(3):
        one = PerformancePredictor(SPACE, PredictorConfig(ensemble_size=1))
        one.load_state_dict({name: value[k:k + 1] for name, value in ens.state_dict().items()
                             if name not in ("features.layer_index", "features.on_index", "features.p_u",
                                             "features.p_g", "landmark_center", "landmark_scale")}, strict=False)
        assert torch.allclose(one.member_scores(u, one.task_embedding(x, y))[0], scores[k], atol=1e-5)
    mean, std = ens.predict_with_std(u.numpy(), x.numpy(), y.numpy())
    assert torch.allclose(torch.as_tensor(mean), scores.mean(0), atol=1e-5)
    assert torch.allclose(torch.as_tensor(std), scores.std(0, unbiased=False), atol=1e-5)
    assert PerformancePredictor(SPACE, PredictorConfig(ensemble_size=1)).predict_with_std(
        u.numpy(), x.numpy(), y.numpy())[1] is None


def test_architecture_features_follow_the_gates():
    feats = ArchitectureFeatures(SPACE)
    assert feats.structured and feats.out_size == D + 7 * 12 + 12 + 2
    arch = [0] + [5] * 7 + [1, 0, 0, 0, 0, 0, 0]  # layer1 on (choice 5 = tanh32), the rest off
    f = feats(torch.as_tensor(SPACE.encode_many([arch])[0]))
    gated = f[D:D + 84].view(7, 12)
    assert gated[0, 5] == 1 and gated.sum() == 1  # only the enabled layer contributes
    assert torch.isclose(f[-2], torch.tensor(1 / 7)) and torch.isclose(f[-1], torch.tensor(5 / 8 / 7))  # depth, width
    # a layer choice behind a closed gate changes u but no structured feature
    other = list(arch)
    other[2] = 11
    g = feats(torch.as_tensor(SPACE.encode_many([other])[0]))
    assert torch.equal(f[D:], g[D:]) and not torch.equal(f[:D], g[:D])
    assert not ArchitectureFeatures(SPACE, structured=False).structured


def test_gating_and_no_meta_ablation():
    model = PerformancePredictor(D, PredictorConfig(use_meta_features=False))
    assert model.phi is None and model.z_dim == 0
    u = torch.rand(5, D)
    assert model(u).shape == (5,)
    with pytest.raises(ValueError, match="without meta-features"):
        model.embed_task(*_samples())
    gated = PerformancePredictor(D, PredictorConfig(landmarks="on"))
    assert torch.allclose(gated.gate(u), u * 0.5)  # sigmoid(0) at init, every member
    assert torch.equal(PerformancePredictor(D, PredictorConfig(gating=False)).gate(u)[0], u)
    # DDP-friendly wrapper: every parameter takes part in one forward call
    scorer = TaskScorer(gated)
    x, y = _samples()
    k = gated.members
    with pytest.raises(ValueError, match="pass the task's landmarks"):
        scorer(u.expand(k, -1, -1), x.expand(k, -1, -1), y.expand(k, -1))
    landmarks = torch.from_numpy(task_landmarks(x.numpy(), y.numpy()))
    scorer(u.expand(k, -1, -1), x.expand(k, -1, -1), y.expand(k, -1), landmarks).sum().backward()
    assert all(p.grad is not None for p in scorer.parameters())


def test_legacy_single_predictor_state_loads():
    """A format-1 checkpoint (nn.Linear stacks) loads into the stacked layout with the same scores."""
    from torch import nn

    torch.manual_seed(0)
    phi = nn.Sequential(nn.Linear(74, 50), nn.ReLU(), nn.Linear(50, 50), nn.ReLU())
    rho = nn.Sequential(nn.Linear(D + 50, 50), nn.ReLU(), nn.Linear(50, 10), nn.ReLU(), nn.Linear(10, 1))
    gate = torch.randn(D)
    old = {"gate_logits": gate, **{f"phi.{k}": v for k, v in phi.state_dict().items()},
           **{f"rho.{k}": v for k, v in rho.state_dict().items()}}
    new_fields = ("ensemble_size", "architecture_features", "meta_encoder", "dropout", "landmarks")
    old_config = {k: v for k, v in PredictorConfig().to_dict().items() if k not in new_fields}  # a format-1 config.json
    model = PerformancePredictor(SPACE, PredictorConfig.legacy(old_config))
    model.load_state_dict(legacy_state_dict(old))
    x, y = _samples()
    u = torch.eye(D)[:4]
    z = phi(torch.cat([x, torch.nn.functional.one_hot(y, 10).float()], -1)).mean(0)
    expected = rho(torch.cat([u * torch.sigmoid(gate), z.expand(4, -1)], -1)).squeeze(-1)
    assert torch.allclose(model(u, model.embed_task(x, y)), expected, atol=1e-5)


def test_input_validation():
    model = PerformancePredictor(SPACE)
    x, y = _samples()
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        model.embed_task(torch.rand(4, 63), y[:4])
    with pytest.raises(ValueError, match="max_classes=10"):
        model.embed_task(x, y + 10)
    with pytest.raises(ValueError, match="pass z"):
        model(torch.rand(3, D))
    with pytest.raises(ValueError, match=r"\(B, 105\)"):
        model(torch.rand(3, 104), model.embed_task(x, y))
    with pytest.raises(ValueError, match="encoding size"):
        PerformancePredictor(0)


@pytest.mark.parametrize("bad, match", [
    ({"aggregate": "max"}, "aggregate"), ({"loss": "hinge"}, "loss"), ({"optimizer": "rmsprop"}, "optimizer"),
    ({"phi_hidden": ()}, "phi_hidden"), ({"rho_hidden": (50, 0)}, "rho_hidden"), ({"margin": 0.0}, "margin"),
    ({"uncertainty_gap": -0.1}, "uncertainty_gap"), ({"batch_size": 1}, "batch_size"),
    ({"max_classes": 1}, "max_classes"), ({"num_steps": 0}, "num_steps"), ({"momentum": 1.0}, "momentum"),
    ({"learning_rate": -1.0}, "learning_rate"), ({"seed": -1}, "seed"), ({"ensemble_size": 0}, "ensemble_size"),
    ({"meta_encoder": "rows"}, "meta_encoder"), ({"dropout": 1.0}, "dropout"),
])
def test_config_refuses_bad_values(bad, match):
    with pytest.raises(ValueError, match=match):
        PredictorConfig(**bad)


def test_config_round_trip_and_description():
    cfg = PredictorConfig(loss="quadratic", phi_hidden=[20, 30])
    assert cfg.phi_hidden == (20, 30)
    assert PredictorConfig.from_json(cfg.to_json()) == cfg
    assert cfg.describe() == {"name": "task-aware-predictor/quadratic", "args": cfg.to_dict()}
    paper = PredictorConfig.paper()
    assert (paper.optimizer, paper.learning_rate, paper.momentum, paper.aggregate) == ("sgd", 1e-4, 0.5, "sum")
    assert (paper.phi_hidden, paper.rho_hidden, paper.k_outer_iters, paper.k_inner_iters) == ((50, 50), (50, 10), 1, 2)
    with pytest.raises(ValueError, match="unknown predictor config keys"):
        PredictorConfig.from_dict({"depth": 3})
