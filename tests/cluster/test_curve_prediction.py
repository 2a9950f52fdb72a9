"""Better learning-curve prediction (issue 19): trend features, gradient-boosted trees next to the
paper's nu-SVR, and the refusals of unknown models and feature sets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import r2_score

from cluster.early_stop import TREND_FEATURES, EarlyStopConfig, SequentialRegressor, curve_features, trend_features
from test_early_stop import saturating_curves


def test_trend_features_of_hand_made_curves():
    t = np.arange(1, 5)
    log_curve = 0.3 + 0.1 * np.log(t)  # exactly y = a + b log t: the fit extrapolates it exactly
    inv_curve = 0.9 - 0.4 / t
    got = trend_features(np.stack([log_curve, inv_curve]), num_epochs=20)
    assert got.shape == (2, len(TREND_FEATURES))
    row = dict(zip(TREND_FEATURES, got[0]))
    assert row["best_so_far"] == pytest.approx(log_curve.max())
    assert row["mean_last3"] == pytest.approx(log_curve[-3:].mean())
    assert row["gain_so_far"] == pytest.approx(log_curve[-1] - log_curve[0])
    assert row["log_fit_at_T"] == pytest.approx(0.3 + 0.1 * math.log(20))
    assert row["log_fit_slope"] == pytest.approx(0.1)
    assert row["log_error"] == pytest.approx(math.log(1 - log_curve[-1]))
    assert dict(zip(TREND_FEATURES, got[1]))["inverse_fit_at_T"] == pytest.approx(0.9 - 0.4 / 20)
    one = trend_features([[0.4]], num_epochs=10)  # one epoch: no slope, the value is the extrapolation
    assert one[0, TREND_FEATURES.index("log_fit_at_T")] == pytest.approx(0.4)


def test_curve_features_append_the_trend_only_when_asked():
    y, s = [[0.1, 0.3, 0.6, 0.7]], [[1.0, 2.0]]
    paper = curve_features(y, s)
    trend = curve_features(y, s, num_epochs=12)
    assert trend.shape[1] == paper.shape[1] + len(TREND_FEATURES)
    np.testing.assert_array_equal(trend[:, :paper.shape[1]], paper)


@pytest.mark.parametrize("model, features", [("gbt", "trend"), ("svr", "trend"), ("gbt", "paper")])
def test_each_model_and_feature_set_predicts_held_out_curves(model, features):
    curves, feats = saturating_curves(160, seed=3)
    srm = SequentialRegressor(search_trials=0, model=model, features=features).fit(
        curves[:120], feats[:120], taus=[3, 6])
    for tau in (3, 6):
        pred, sigma = srm.predict(curves[120:, :tau], feats[120:])
        assert r2_score(curves[120:, -1], pred) > 0.5 and 0 < sigma < 0.1
    assert srm.describe()["args"]["model"] == model and srm.describe()["args"]["features"] == features


def test_unknown_models_and_feature_sets_are_refused():
    with pytest.raises(ValueError, match="unknown curve regression model 'forest'"):
        SequentialRegressor(model="forest")
    with pytest.raises(ValueError, match="unknown curve feature set 'fancy'"):
        SequentialRegressor(features="fancy")
    with pytest.raises(ValueError, match="early-stop model must be one of .* got 'forest'"):
        EarlyStopConfig(model="forest")
    with pytest.raises(ValueError, match="early-stop features must be one of .* got 'fancy'"):
        EarlyStopConfig(features="fancy")
