"""PerformancePredictor and PredictorConfig: shapes, order invariance, gating, the no-meta ablation, validation."""

from __future__ import annotations

import pytest
import torch

from predictor.config import PredictorConfig
from predictor.model import PerformancePredictor, TaskScorer

D = 105


def _samples(n=64, seed=0, classes=10):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 64, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("aggregate", ["sum", "mean"])
def test_output_invariant_to_sample_order(aggregate):
    torch.manual_seed(0)
    model = PerformancePredictor(D, PredictorConfig(aggregate=aggregate))
    x, y = _samples()
    u = torch.eye(D)[:7]  # (7, D)
    perm = torch.randperm(x.shape[0])
    z1, z2 = model.embed_task(x, y), model.embed_task(x[perm], y[perm])
    assert z1.shape == (50,)
    assert torch.allclose(z1, z2, atol=1e-5)
    assert torch.allclose(model(u, z1), model(u, z2), atol=1e-5)
    assert model(u, z1).shape == (7,)


def test_phi_sees_the_labels():
    torch.manual_seed(0)
    model = PerformancePredictor(D)
    x, y = _samples()
    assert not torch.allclose(model.embed_task(x, y), model.embed_task(x, (y + 1) % 10))


def test_task_embedding_matches_batch_scale():
    torch.manual_seed(0)
    for aggregate in ("sum", "mean"):
        cfg = PredictorConfig(aggregate=aggregate, sample_batch_size=32)
        model = PerformancePredictor(D, cfg)
        x, y = _samples(n=96)
        full = model.task_embedding(x, y, chunk=40)  # chunking does not change the result
        batch_means = torch.stack([model.embed_task(x[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)]).mean(0)
        assert torch.allclose(full, batch_means, atol=1e-4), aggregate


def test_gating_and_no_meta_ablation():
    model = PerformancePredictor(D, PredictorConfig(use_meta_features=False))
    assert model.phi is None and model.z_dim == 0
    u = torch.rand(5, D)
    assert model(u).shape == (5,)
    with pytest.raises(ValueError, match="without meta-features"):
        model.embed_task(*_samples())
    gated = PerformancePredictor(D)
    assert torch.allclose(gated.gate(u), u * 0.5)  # sigmoid(0) at init
    assert torch.equal(PerformancePredictor(D, PredictorConfig(gating=False)).gate(u), u)
    # DDP-friendly wrapper: every parameter takes part in one forward call
    scorer = TaskScorer(gated)
    x, y = _samples()
    scorer(u, x, y).sum().backward()
    assert all(p.grad is not None for p in scorer.parameters())


def test_input_validation():
    model = PerformancePredictor(D)
    x, y = _samples()
    with pytest.raises(ValueError, match=r"\(N, 64\)"):
        model.embed_task(torch.rand(4, 63), y[:4])
    with pytest.raises(ValueError, match="max_classes=10"):
        model.embed_task(x, y + 10)
    with pytest.raises(ValueError, match="pass z"):
        model(torch.rand(3, D))
    with pytest.raises(ValueError, match=r"\(B, 105\)"):
        model(torch.rand(3, 104), model.embed_task(x, y))
    with pytest.raises(ValueError, match="encoding_size"):
        PerformancePredictor(0)


@pytest.mark.parametrize("bad, match", [
    ({"aggregate": "max"}, "aggregate"), ({"loss": "hinge"}, "loss"), ({"optimizer": "rmsprop"}, "optimizer"),
    ({"phi_hidden": ()}, "phi_hidden"), ({"rho_hidden": (50, 0)}, "rho_hidden"), ({"margin": 0.0}, "margin"),
    ({"uncertainty_gap": -0.1}, "uncertainty_gap"), ({"batch_size": 1}, "batch_size"),
    ({"max_classes": 1}, "max_classes"), ({"num_steps": 0}, "num_steps"), ({"momentum": 1.0}, "momentum"),
    ({"learning_rate": -1.0}, "learning_rate"), ({"seed": -1}, "seed"),
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
