"""Algorithm 1 (task-aware-performance-prediction.md Sec. 3.2): the offline training loop.

Repeat: pick a task k at random; for kOuterIters mini-batches of k's experiments, take
kInnerIters optimizer steps, each with a fresh large batch of k's samples for the
meta-features. The loop knows nothing about Ray: ``predictor/train.py`` runs it inside each
Ray Train worker (the module wrapped by DDP, a per-rank random stream so workers draw
different tasks), tests and ``predictor/evaluate.py`` run it in-process.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from scipy import stats
from torch import nn

from predictor.config import PredictorConfig
from predictor.data import TaskData, TrainingData
from predictor.losses import prediction_loss
from predictor.model import PerformancePredictor, TaskScorer

logger = logging.getLogger(__name__)


@dataclass
class FitHistory:
    """What one run of the loop did: steps taken, loss per reporting window, wall time."""

    steps: int = 0
    seconds: float = 0.0
    window_losses: list[float] = field(default_factory=list)  # mean loss of each report window
    task_draws: dict[str, int] = field(default_factory=dict)  # how often each task was picked

    @property
    def final_loss(self) -> float:
        return self.window_losses[-1] if self.window_losses else math.nan


def make_optimizer(config: PredictorConfig, params) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's, Sec. 5.1) or Adam (faster convergence on few steps)."""
    # foreach: one fused call per step for all parameters (the default per-tensor loop is slower on CPU)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.learning_rate, momentum=config.momentum,
                               weight_decay=config.weight_decay, foreach=True)
    return torch.optim.Adam(params, lr=config.learning_rate, weight_decay=config.weight_decay, foreach=True)


class _TaskTensors:
    """A task's arrays as tensors on the training device, converted once."""

    def __init__(self, task: TaskData, device: torch.device, landmarks: bool, gap: float | str):
        self.name = task.name
        self.gap = task.uncertainty_gap(gap)  # the ranking losses' uncertainty gap for this task
        # copies: arrays from Ray's object store are read-only
        self.u = torch.from_numpy(np.array(task.u, dtype=np.float32)).to(device)  # (M, D)
        # the fitted target: the accuracy, or its within-task quantile rank (predictor/data.py TARGETS)
        self.acc = torch.from_numpy(np.array(task.target, dtype=np.float32)).to(device)  # (M,)
        self.x = torch.from_numpy(np.array(task.x, dtype=np.float32)).to(device)  # (N, F)
        self.y = torch.from_numpy(np.array(task.y, dtype=np.int64)).to(device)  # (N,)
        self.mean, self.std = task.mean, task.std
        self.landmarks = torch.from_numpy(task.landmarks()).to(device) if landmarks else None  # (L,) raw


def run_algorithm1(scorer: nn.Module, data: TrainingData, config: PredictorConfig, *,
                   optimizer: torch.optim.Optimizer | None = None, rank: int = 0,
                   device: str | torch.device = "cpu", report_every: int = 100,
                   on_report: Callable[[int, dict], None] | None = None) -> FitHistory:
    """Fit ``scorer`` (a TaskScorer, possibly DDP-wrapped) for ``config.num_steps`` optimizer steps.

    Every rank takes the same number of steps (DDP all-reduces each one); ``rank`` only
    seeds the random stream, so data-parallel workers draw different tasks and batches.
    ``on_report(step, metrics)`` is called every ``report_every`` steps and at the end.
    The loop runs on one torch thread (restored afterwards): the networks are tiny, and with
    two threads on a busy 2-core machine a step took 20x longer (135 ms vs 6 ms, measured).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _algorithm1(scorer, data, config, optimizer, rank, torch.device(device), report_every, on_report)
    finally:
        torch.set_num_threads(threads)


def _algorithm1(scorer, data, config, optimizer, rank, device, report_every, on_report) -> FitHistory:
    opt = optimizer or make_optimizer(config, scorer.parameters())
    rng = np.random.default_rng([config.seed, rank])
    tensors = [_TaskTensors(t, device, config.uses_landmarks, config.uncertainty_gap) for t in data.tasks.values()]
    use_samples = config.use_meta_features
    history = FitHistory(task_draws={t.name: 0 for t in tensors})
    window: list[float] = []
    scorer.train()
    start = time.perf_counter()
    k = config.ensemble_size
    while history.steps < config.num_steps:
        task = tensors[int(rng.integers(len(tensors)))]  # Sample randomly a task k.
        history.task_draws[task.name] += 1
        for _ in range(config.k_outer_iters):
            # each member its own mini-batch of the task's experiments (a deep ensemble's bagging); a task
            # with fewer rows than a mini-batch (a new task's first children) gives all of them
            n_rows = task.u.shape[0]
            rows = torch.as_tensor(np.stack([rng.choice(n_rows, min(config.batch_size, n_rows), replace=False)
                                             for _ in range(k)]), device=device)  # (K, B)
            u, acc = task.u[rows], task.acc[rows]  # (K, B, D), (K, B)
            for _ in range(config.k_inner_iters):
                x = y = None
                if use_samples:  # a fresh large batch of the task's samples per member (data.py refuses tasks
                    # without samples)
                    n = task.x.shape[0]
                    s = config.sample_batch_size
                    idx = torch.as_tensor(np.tile(np.arange(n), (k, 1)) if n <= s
                                          else rng.integers(n, size=(k, s)), device=device)  # (K, S)
                    x, y = task.x[idx], task.y[idx]  # (K, S, F), (K, S)
                scores = scorer(u, x, y, task.landmarks)  # (K, B)
                loss = prediction_loss(config.loss, scores, acc, margin=config.margin, gap=task.gap,
                                       mean=task.mean, std=task.std)  # the K members' losses, summed
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                history.steps += 1
                window.append(float(loss.detach()) / k)
                last = history.steps >= config.num_steps
                if history.steps % report_every == 0 or last:
                    history.window_losses.append(float(np.mean(window)))
                    window = []
                    if on_report is not None:
                        on_report(history.steps, {"step": history.steps, "loss": history.window_losses[-1]})
                if last:
                    break
            if history.steps >= config.num_steps:
                break
    history.seconds = time.perf_counter() - start
    return history


def rank_correlations(predicted: np.ndarray, actual: np.ndarray) -> tuple[float, float]:
    """(Spearman, Pearson) between predictions and accuracies; NaN when either side is constant."""
    predicted, actual = np.asarray(predicted, np.float64), np.asarray(actual, np.float64)
    if len(actual) < 3 or np.ptp(actual) == 0 or np.ptp(predicted) == 0:
        return math.nan, math.nan
    return float(stats.spearmanr(predicted, actual)[0]), float(stats.pearsonr(predicted, actual)[0])


def task_correlations(model: PerformancePredictor, data: TrainingData) -> dict[str, dict[str, float]]:
    """Spearman and Pearson of the predictor on every task of ``data`` (its training tasks)."""
    out = {}
    for name, task in data.tasks.items():
        rho, r = rank_correlations(model.predict(task.u, task.x, task.y, task.landmarks_for(model)), task.accuracy)
        out[name] = {"spearman": rho, "pearson": r}
    return out


def new_predictor(data: TrainingData, config: PredictorConfig) -> PerformancePredictor:
    """A freshly initialized predictor (seed ``config.seed``) for ``data``: its landmarking
    descriptors standardized over ``data``'s tasks."""
    torch.manual_seed(config.seed)
    model = PerformancePredictor(data.space, config)
    if model.num_landmarks:
        model.set_landmark_scale(np.stack([t.landmarks() for t in data.tasks.values()]))
    return model


def fit_in_process(data: TrainingData, config: PredictorConfig, *, init_state: dict | None = None,
                   report_every: int = 100) -> tuple[PerformancePredictor, FitHistory]:
    """Fit a fresh predictor on ``data`` in this process (one worker, no Ray): tests and LOTO."""
    model = new_predictor(data, config)
    if init_state is not None:
        model.load_state_dict(init_state)
    history = run_algorithm1(TaskScorer(model), data, config, report_every=report_every)
    logger.info("fitted %s in %.1fs, %d steps, final loss %.4f", config.describe()["name"], history.seconds,
                history.steps, history.final_loss)
    return model, history
