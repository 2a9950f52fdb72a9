"""The predictor's losses against naive double-loop references and hand-made pairs, and each task's
uncertainty gap (ranking paper Sec. 3, App. A.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from predictor.config import PAPER_GAP, PredictorConfig
from predictor.data import TaskData
from predictor.losses import (
    l2_loss,
    linear_ranking_loss,
    normalize_performance,
    prediction_loss,
    quadratic_ranking_loss,
)


def naive_ranking(scores, perf, margin, gap, quadratic):
    """The paper's formula, one ordered pair at a time; mean over the pairs that count."""
    total, counted = 0.0, 0
    for i in range(len(perf)):
        for j in range(len(perf)):
            if perf[i] - perf[j] > gap:
                hinge = max(0.0, margin - (scores[i] - scores[j]))
                total += hinge**2 / margin if quadratic else hinge
                counted += 1
    return total / counted if counted else 0.0


@pytest.mark.parametrize("quadratic", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_ranking_losses_match_naive_reference(quadratic, seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(17, generator=g, dtype=torch.float64)
    perf = torch.rand(17, generator=g, dtype=torch.float64) * 0.1  # many pairs fall inside the gap
    fn = quadratic_ranking_loss if quadratic else linear_ranking_loss
    got = fn(scores, perf, margin=0.3, gap=0.01)
    want = naive_ranking(scores.tolist(), perf.tolist(), 0.3, 0.01, quadratic)
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64))


def test_l2_matches_naive_reference():
    scores = torch.tensor([0.5, -1.0, 2.0])
    perf = torch.tensor([0.8, 0.6, 0.9])
    mean, std = 0.7, 0.1
    want = sum((s - (p - mean) / std) ** 2 for s, p in zip(scores.tolist(), perf.tolist())) / 3
    assert math.isclose(float(l2_loss(scores, perf, mean=mean, std=std)), want, rel_tol=1e-5)
    assert torch.equal(normalize_performance(perf, 0.7, 0.0), perf - 0.7)  # sigma_k = 0: no division


def test_gap_excludes_close_pairs():
    # p = 0.80 vs 0.805: within the 0.01 gap, does not count; vs 0.70 it counts.
    scores = torch.tensor([0.0, 0.0, 0.0], requires_grad=True)
    perf = torch.tensor([0.80, 0.805, 0.70])
    # counted pairs: (0, 2) and (1, 2), both with v_i - v_j = 0 -> hinge = m
    assert math.isclose(float(linear_ranking_loss(scores, perf, margin=0.3, gap=0.01).detach()), 0.3, rel_tol=1e-6)
    only_close = torch.tensor([0.80, 0.805, 0.809])
    loss = linear_ranking_loss(scores, only_close, margin=0.3, gap=0.01)
    assert float(loss.detach()) == 0.0
    loss.backward()  # no pair counts: zero loss with a graph (DDP needs every rank to backward)
    assert scores.grad is not None and torch.all(scores.grad == 0)
    # with gap 0 the close pair counts too
    assert float(linear_ranking_loss(scores.detach(), only_close, margin=0.3, gap=0.0)) > 0


def _task(accuracy: list[float], val_size: int, target_kind: str = "raw") -> TaskData:
    m = len(accuracy)
    acc = np.asarray(accuracy, dtype=np.float32)
    return TaskData("t", np.zeros((m, 2), np.int64), np.zeros((m, 4), np.float32), acc, np.zeros(m, np.int64),
                    np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 0, val_size=val_size, target_kind=target_kind,
                    target=acc if target_kind == "raw" else np.linspace(0, 1, m, dtype=np.float32))


def test_validation_gap_is_each_tasks_measurement_noise():
    # 120 validation rows at a mean accuracy of 0.8: an accuracy is known to sqrt(0.8 * 0.2 / 120) = 0.0365
    small = _task([0.7, 0.8, 0.9], val_size=120)
    assert small.uncertainty_gap("validation") == pytest.approx(math.sqrt(0.8 * 0.2 / 120), rel=1e-5)
    # 10,000 rows measure to 0.004, below the paper's 0.01, which stays the floor (the training noise it measured)
    assert _task([0.7, 0.8, 0.9], val_size=10_000).uncertainty_gap("validation") == PAPER_GAP
    # unknown validation size (an imported benchmark) or a rank target: the paper's gap
    assert _task([0.7, 0.8, 0.9], val_size=0).uncertainty_gap("validation") == PAPER_GAP
    assert _task([0.7, 0.8, 0.9], val_size=120, target_kind="rank").uncertainty_gap("validation") == PAPER_GAP
    # a number is every task's gap, as in the paper
    assert small.uncertainty_gap(0.05) == 0.05 and small.uncertainty_gap(0) == 0.0
    assert PredictorConfig().uncertainty_gap == "validation" and PredictorConfig.paper().uncertainty_gap == PAPER_GAP
    for bad in (-0.1, "binomial", float("inf"), True):
        with pytest.raises(ValueError, match="uncertainty_gap"):
            PredictorConfig(uncertainty_gap=bad)


def test_margin_behaves_per_formula():
    perf = torch.tensor([0.9, 0.5])  # architecture 0 is better
    for diff, want_lin in [(1.0, 0.0), (0.3, 0.0), (0.1, 0.2), (0.0, 0.3), (-0.5, 0.8)]:
        scores = torch.tensor([diff, 0.0])  # v_0 - v_1 = diff
        lin = float(linear_ranking_loss(scores, perf, margin=0.3, gap=0.01))
        quad = float(quadratic_ranking_loss(scores, perf, margin=0.3, gap=0.01))
        assert math.isclose(lin, want_lin, abs_tol=1e-6), (diff, lin)
        assert math.isclose(quad, want_lin**2 / 0.3, abs_tol=1e-6), (diff, quad)
    # the order of the pair comes from p, not from the position in the batch
    assert math.isclose(float(linear_ranking_loss(torch.tensor([0.0, 0.1]), torch.tensor([0.5, 0.9]),
                                                  margin=0.3, gap=0.01)), 0.2, abs_tol=1e-6)


def test_ranking_gradients_match_appendix_a4():
    # dL/dv_i = -1 per violating pair with i better; dQ/dv_i = -(2/m)(m - (v_i - v_j)); averaged over pairs
    scores = torch.tensor([0.1, 0.0, 0.5], requires_grad=True)
    perf = torch.tensor([0.9, 0.5, 0.1])
    linear_ranking_loss(scores, perf, margin=0.3, gap=0.01).backward()
    # pairs: (0,1) diff 0.1 violates; (0,2) diff -0.4 violates; (1,2) diff -0.5 violates -> 3 pairs
    assert torch.allclose(scores.grad, torch.tensor([-2.0, 0.0, 2.0]) / 3)
    scores.grad = None
    quadratic_ranking_loss(scores, perf, margin=0.3, gap=0.01).backward()
    h = {(0, 1): 0.2, (0, 2): 0.7, (1, 2): 0.8}
    want = torch.tensor([-(h[0, 1] + h[0, 2]), h[0, 1] - h[1, 2], h[0, 2] + h[1, 2]]) * 2 / 0.3 / 3
    assert torch.allclose(scores.grad, want, atol=1e-6)


def test_dispatch_and_shape_errors():
    s, p = torch.zeros(4), torch.tensor([0.1, 0.2, 0.3, 0.4])
    for name in ("l2", "linear", "quadratic"):
        assert prediction_loss(name, s, p, margin=0.3, gap=0.01, mean=0.25, std=0.1).ndim == 0
    with pytest.raises(ValueError, match="'hinge'"):
        prediction_loss("hinge", s, p, margin=0.3, gap=0.01, mean=0.0, std=1.0)
    with pytest.raises(ValueError, match="matching vectors"):
        linear_ranking_loss(torch.zeros(3), p)
    with pytest.raises(ValueError, match="matching vectors"):
        linear_ranking_loss(torch.zeros(2, 2, 4), torch.zeros(2, 2, 4))


@pytest.mark.parametrize("name", ["l2", "linear", "quadratic"])
def test_members_losses_are_computed_at_once_and_summed(name):
    """(K, B): each member's loss as for (B,), summed; a member with no distinguishable pair adds 0."""
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 8, generator=g, requires_grad=True)
    perf = torch.rand(3, 8, generator=g)
    perf[2] = 0.5  # no pair of member 2 is distinguishable
    kw = dict(margin=0.3, gap=0.01, mean=0.5, std=0.2)
    each = sum(prediction_loss(name, scores[m], perf[m], **kw) for m in range(3))
    together = prediction_loss(name, scores, perf, **kw)
    assert torch.allclose(together, each, rtol=1e-6)
    (grad,) = torch.autograd.grad(together, scores)
    assert grad.shape == scores.shape and torch.isfinite(grad).all()
