"""Landmarking descriptors (predictor/landmarks.py) and how the predictor reads them: what they
measure, their invariances, the task vector [z, landmarks], and checkpoints from before them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from nasdb.space import default_space
from predictor.config import PredictorConfig
from predictor.landmarks import LANDMARK_ROWS, LANDMARKS, silverman_bandwidth, task_landmarks
from predictor.model import PerformancePredictor

SPACE = default_space()


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


def test_descriptors_say_how_easy_a_task_is(digits):
    x, y = digits
    d = task_landmarks(x, y)
    assert d.shape == (len(LANDMARKS),) and d.dtype == np.float32
    assert d[0] == pytest.approx(np.log(64)) and d[1] == pytest.approx(np.log(10))
    linear, nn1, stump = d[2:]
    assert linear > 0.6 and nn1 > 0.6 and 0 < stump < linear  # digits: easy for a linear model and 1-NN
    shuffled = task_landmarks(x, np.random.default_rng(0).permutation(y))
    assert np.all(np.abs(shuffled[2:]) < 0.15)  # labels unrelated to x: no learner beats the majority by much


def test_descriptors_ignore_the_order_of_samples_and_features_and_read_at_most_landmark_rows(digits):
    x, y = digits
    d = task_landmarks(x, y)
    rows, cols = np.random.default_rng(1).permutation(len(y)), np.random.default_rng(2).permutation(64)
    assert np.array_equal(task_landmarks(x[rows], y[rows]), d)
    assert np.allclose(task_landmarks(x[:, cols], y), d, atol=1e-6)
    assert len(y) > LANDMARK_ROWS  # so the subset is drawn, and drawn the same from any order


def test_tiny_tasks_and_one_class_folds_give_finite_descriptors():
    x = np.random.default_rng(0).random((5, 3))
    for y in ([0, 0, 0, 0, 1], [0, 1, 0, 1, 0]):
        d = task_landmarks(x, np.array(y))
        assert np.isfinite(d).all() and d[1] == pytest.approx(np.log(2))
    assert np.isfinite(task_landmarks(np.array([[np.nan, np.inf]] * 4), np.array([0, 1, 0, 1]))).all()


def test_the_task_vector_ends_with_the_standardized_landmarks(digits):
    x, y = digits
    torch.manual_seed(0)
    model = PerformancePredictor(SPACE, PredictorConfig(ensemble_size=2, landmarks="on")).eval()
    assert model.num_landmarks == len(LANDMARKS) and model.z_dim == 2 * 50 + len(LANDMARKS)
    tasks = np.stack([task_landmarks(x, y), task_landmarks(x[:, :16], y % 2)])
    model.set_landmark_scale(tasks)
    with torch.no_grad():
        z = model.task_embedding(torch.from_numpy(x), torch.from_numpy(y))
    expected = (tasks[0] - tasks.mean(0)) / np.maximum(tasks.std(0), 1e-3)
    assert torch.allclose(z[-len(LANDMARKS):], torch.from_numpy(expected).float(), atol=1e-5)
    u = torch.eye(SPACE.encoding_size)[:6]
    other = z.clone()
    other[-len(LANDMARKS):] = -other[-len(LANDMARKS):]  # the same learned z, another task's descriptors
    assert not torch.allclose(model(u, z), model(u, other))  # rho reads them
    # every member reads the shared descriptors; the batch form (B, z_dim) scores as the single z
    assert torch.allclose(model.member_scores(u, z.expand(6, -1)), model.member_scores(u, z), atol=1e-6)
    assert model.member_scores(u[:0], z.expand(0, -1)).shape == (2, 0)  # an empty batch scores to nothing
    with torch.no_grad():  # the raw descriptors, when known (TaskData caches them), give the same vector
        assert torch.equal(model.task_embedding(torch.from_numpy(x), torch.from_numpy(y), landmarks=tasks[0]), z)
    without = PerformancePredictor(SPACE, PredictorConfig(ensemble_size=2, landmarks=False))
    assert without.num_landmarks == 0 and without.z_dim == 2 * 50
    assert "landmark_center" not in without.state_dict()
    with pytest.raises(ValueError, match="landmarks"):
        PredictorConfig(landmarks="yes")


def test_task_data_hands_its_cached_descriptors_only_to_a_model_that_reads_them(digits):
    from predictor.data import TaskData

    x, y = digits
    task = TaskData(name="d", architectures=np.zeros((2, SPACE.num_dimensions), np.int64),
                    u=np.zeros((2, SPACE.encoding_size), np.float32), accuracy=np.zeros(2, np.float32),
                    seeds=np.zeros(2, np.int64), x=x, y=y, num_classes=10)
    off = PerformancePredictor(SPACE, PredictorConfig(ensemble_size=1, landmarks="off"))
    assert task.landmarks_for(off) is None and task._landmarks is None  # nothing computed
    on = PerformancePredictor(SPACE, PredictorConfig(ensemble_size=1, landmarks="on"))
    assert np.array_equal(task.landmarks_for(on), task_landmarks(x, y)) and task.landmarks_for(on) is task._landmarks


def test_silverman_bandwidth_narrows_as_tasks_are_added():
    assert silverman_bandwidth(59, 5) == pytest.approx((4 / (7 * 59)) ** (1 / 9))
    assert silverman_bandwidth(59, 5) == pytest.approx(0.597, abs=1e-3)
    assert silverman_bandwidth(23, 5) > silverman_bandwidth(59, 5) > silverman_bandwidth(1000, 5) > 0


def test_landmark_noise_perturbs_each_member_in_training_only(digits):
    """Training draws a shift of the standardized descriptors per member and step; eval reads them as they are."""
    x, y = digits
    tasks = np.stack([task_landmarks(x, y), task_landmarks(x[:, :16], y % 2), task_landmarks(x[:, 8:], y % 3)])
    u = torch.eye(SPACE.encoding_size)[:6].expand(3, -1, -1)  # (K, B, D)
    xs, ys = torch.from_numpy(x[:64]).expand(3, -1, -1), torch.from_numpy(y[:64]).expand(3, -1)
    raw = torch.from_numpy(tasks[0])
    scores = {}
    for noise in (0.0, 0.5, "silverman"):
        torch.manual_seed(0)
        model = PerformancePredictor(SPACE, PredictorConfig(ensemble_size=3, landmarks="on", landmark_noise=noise))
        model.set_landmark_scale(tasks)
        with torch.no_grad():
            model.train()
            first, second = model.score_task(u, xs, ys, raw), model.score_task(u, xs, ys, raw)
            model.eval()
            scores[noise] = (first, second, model.score_task(u, xs, ys, raw), model)
    first, second, clean, _ = scores[0.0]
    assert torch.equal(first, second) and torch.allclose(first, clean)  # no noise: training reads them as eval does
    for noise in (0.5, "silverman"):
        first, second, evaluated, model = scores[noise]
        assert not torch.allclose(first, second)  # a fresh draw each step
        assert torch.allclose(evaluated, clean)  # the same weights score without noise in eval mode
    assert scores["silverman"][3].landmark_noise == pytest.approx(silverman_bandwidth(3, len(LANDMARKS)))
    assert scores[0.5][3].landmark_noise == 0.5


@pytest.mark.parametrize("bad", [-0.1, float("inf"), float("nan"), "scott", True, None])
def test_landmark_noise_refuses_what_is_not_a_std_or_a_rule(bad):
    with pytest.raises(ValueError, match="landmark_noise"):
        PredictorConfig(landmark_noise=bad)


def test_auto_reads_landmarks_with_the_cells_encoder_only():
    """auto: with the cells encoder (tables), not with the paper's samples encoder (the digits)."""
    assert PredictorConfig(meta_encoder="cells").uses_landmarks
    assert not PredictorConfig(meta_encoder="samples").uses_landmarks
    assert PredictorConfig(meta_encoder="samples", landmarks="on").uses_landmarks
    assert not PredictorConfig(meta_encoder="cells", landmarks="off").uses_landmarks
    assert not PredictorConfig(meta_encoder="cells", use_meta_features=False).uses_landmarks
    assert PredictorConfig(landmarks=True).landmarks == "on" and PredictorConfig(landmarks=False).landmarks == "off"
    assert PerformancePredictor(SPACE, PredictorConfig(meta_encoder="cells")).num_landmarks == len(LANDMARKS)


def test_a_checkpoint_stored_before_landmarks_loads_without_them(tmp_path):
    """A format-2 config.json without the ``landmarks`` key describes a predictor without them."""
    from nasdb.records import CONFIG_FILE, PREDICTORS_DIR
    from nasdb.store import ExperimentStore
    from predictor.checkpoint import load_predictor, save_predictor

    store = ExperimentStore(str(tmp_path / "store"))
    store.init()
    model = PerformancePredictor(SPACE, PredictorConfig(ensemble_size=1, landmarks=False))
    pid = save_predictor(store, model, SPACE, tasks=["a", "b"], data_snapshot={}, metrics={})
    path = store.path(PREDICTORS_DIR, pid, CONFIG_FILE)
    old = {k: v for k, v in model.config.to_dict().items() if k != "landmarks"}
    with store.fs.open(path, "w") as f:
        f.write(json.dumps(old, sort_keys=True))
    assert "landmarks" not in store.fs.cat(path).decode()
    loaded = load_predictor(store, pid)
    assert loaded.config.landmarks == "off" and loaded.model.num_landmarks == 0
