"""Algorithm 2 (task-aware-performance-prediction.md Sec. 3.3, 5.3): suggest an architecture for a new task.

Compute the new task's meta-features z; find the training tasks closest to it in embedding
space; start from their top architectures in the store (top 5 of the 2 closest: 10 starts);
run gradient ascent on the relaxed encodings of all starts at once (predictor/ascent.py);
discretize every result (argmax per block), re-score it as a one-hot with the predictor and
return the best, the runner-ups, the nearest tasks and whether the task lies far from all of
them. ``SuggestionEngine`` holds everything per checkpoint that does not depend on the
request (training-task embeddings, their top architectures, the compiled ascent) so a
request costs one embedding and one ascent.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.compute as pc
import torch

from nasdb.errors import ArgumentError, TaskHasNoSamplesError
from nasdb.ranks import quantile_rank
from nasdb.space import unique_rows
from predictor.ascent import make_ascent, start_logits
from predictor.baselines import shared_best
from predictor.checkpoint import PredictorCheckpoint
from predictor.config import SuggestConfig
from predictor.data import TrainingData, architecture_matrix, fold_labels, meta_rows, sample_width

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

logger = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One candidate architecture, scored by the predictor as a one-hot."""

    architecture: list[int]
    description: dict[str, str]
    score: float  # the ensemble's mean score of the discrete (one-hot) architecture
    continuous_score: float  # score of the relaxed encoding the ascent ended at (a start's or portfolio's: its score)
    start_task: str | None  # the training task whose top architecture was the start (None: global top)
    start_architecture: list[int]
    start_score: float  # predictor score of the start architecture (one-hot)
    std: float | None = None  # the members' spread of ``score`` (None: a single predictor)
    lcb: float = 0.0  # score - kappa * (spread of its gap to the portfolio pick): the ranking key
    source: str = "ascent"  # "ascent" (Algorithm 2's result), "start" (a starting point) or "portfolio"


@dataclass
class Suggestion:
    """Algorithm 2's answer: the best candidate first, plus where the task sits among training tasks."""

    predictor_id: str
    architecture: list[int]  # the best candidate, discretized
    description: dict[str, str]
    score: float  # the ensemble's mean score of ``architecture`` as a one-hot
    continuous_score: float  # predictor score of ``encoding``
    encoding: list[float]  # the relaxed encoding the ascent found for the best candidate (D,)
    candidates: list[Candidate]  # distinct discretized results, best first (candidates[0] is the best)
    nearest_tasks: list[dict[str, Any]]  # [{"task", "distance"}], closest first; [] without meta-features
    far_from_training: bool | None  # None when it cannot be told (no meta-features, < 2 training tasks)
    far_threshold: float | None
    iterations: int
    converged: bool
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    std: float | None = None  # the members' spread of ``score`` (None: a single predictor)
    lcb: float | None = None  # score - kappa * (spread of its gap to the portfolio pick): what the pick maximized
    pick_source: str = "ascent"  # where the pick came from (Candidate.source)
    portfolio: list[int] | None = None  # the portfolio pick, the floor the suggestion is held to

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _TaskTop:
    """A training task's distinct architectures, best first (mean validation accuracy over seeds)."""

    architectures: np.ndarray  # (M, num_dimensions) int64
    accuracy: np.ndarray  # (M,) float64
    normalized: np.ndarray  # (M,) (acc - mu_k) / sigma_k over the task's population (Sec. 5.1), or the rank
    #                         of the mean in [0, 1] for a task the predictor was fitted on ranks of (task_top)


def task_top(architectures: np.ndarray, accuracy: np.ndarray, target: str = "raw") -> _TaskTop | None:
    """A task's distinct architectures, best mean (over seeds) first, from its rows (M, D) and (M,).

    ``normalized`` puts tasks on one scale for the global order of starting points: the
    task-normalized accuracy (Sec. 5.1) for a predictor fitted on raw accuracies, the
    quantile rank of the mean among the task's architectures for one fitted on ranks
    (predictor/data.py TARGETS: heavy-tailed benchmark performances).
    """
    keep = np.isfinite(accuracy)
    if not keep.any():
        return None
    archs, acc = np.asarray(architectures, dtype=np.int64)[keep], np.asarray(accuracy, dtype=np.float64)[keep]
    uniq, inverse = unique_rows(archs, return_inverse=True)
    inverse = inverse.reshape(-1)
    mean = np.bincount(inverse, weights=acc) / np.bincount(inverse)  # (A,) mean over seeds
    order = np.lexsort((np.arange(len(mean)), -mean))  # best first; ties by architecture order
    if target == "rank":
        normalized = quantile_rank(mean[order])
    else:
        normalized = (mean[order] - float(acc.mean())) / (float(acc.std()) or 1.0)
    return _TaskTop(uniq[order], mean[order], normalized)


def _top_architectures(store: ExperimentStore, task: str, space: Any, target: str = "raw") -> _TaskTop | None:
    """The task's top architectures from the store (rows of children stopped early left out, as in training)."""
    table = store.experiments_arrow(task, status="ok", columns=["space_id", "stopped_early", "architecture",
                                                                "val_accuracy"])
    if table.num_rows == 0:
        return None
    mine = pc.and_(pc.equal(table.column("space_id"), space.space_id),
                   pc.invert(table.column("stopped_early").fill_null(False)))
    table = table.select(["architecture", "val_accuracy"]).filter(mine)
    if table.num_rows == 0:
        return None
    archs = architecture_matrix(table.column("architecture"), space.num_dimensions, f"task {task!r}")
    return task_top(archs, table.column("val_accuracy").to_numpy(zero_copy_only=False).astype(np.float64), target)


class SuggestionEngine:
    """A predictor checkpoint ready for Algorithm 2; everything request-independent computed once.

    Thread-safe for concurrent requests: its state is read-only after construction.
    """

    def __init__(self, checkpoint: PredictorCheckpoint, store: ExperimentStore, data: TrainingData | None = None):
        """``data``: the checkpoint's training data when at hand (an in-process fit, e.g. leave-one-task-out),
        so the training tasks' top architectures come from it instead of a second read of the store."""
        self.checkpoint = checkpoint
        self.space = checkpoint.space
        self.model = checkpoint.model.cpu().eval()
        self.config = checkpoint.config
        self.use_meta_features = bool(self.config.use_meta_features)
        self.ascent = make_ascent(self.model, self.space)
        start = time.perf_counter()
        self.tops: dict[str, _TaskTop] = {}
        z_rows = []
        targets = {name: snap.get("target", "raw") if isinstance(snap, dict) else "raw"
                   for name, snap in (checkpoint.metadata.get("data_snapshot") or {}).items()}
        for name in checkpoint.tasks:
            target = targets.get(name, "raw")
            if data is not None and name in data.tasks:
                top = task_top(data.tasks[name].architectures, data.tasks[name].accuracy, target)
            else:
                top = _top_architectures(store, name, self.space, target)
            if top is None:
                logger.warning("predictor %s: training task %r has no usable experiments in the store; skipped",
                               checkpoint.predictor_id, name)
                continue
            if self.use_meta_features:
                x, y = store.task(name).samples("train")
                z_rows.append(self._embed(*meta_rows(x, y, self.config)))
            self.tops[name] = top
        if not self.tops:
            raise ArgumentError(f"predictor {checkpoint.predictor_id!r}: none of its training tasks "
                                f"({', '.join(checkpoint.tasks) or 'none'}) has experiments in this store")
        self.task_names = list(self.tops)
        self.task_z = torch.stack(z_rows) if z_rows else None  # (T, Z)
        self.nn_distance = None  # max over training tasks of the distance to their nearest other training task
        if self.task_z is not None and len(self.task_names) >= 2:
            d = torch.cdist(self.task_z, self.task_z)  # (T, T)
            d.fill_diagonal_(math.inf)
            self.nn_distance = float(d.min(dim=1).values.max())
        self._global_order = self._rank_global()
        self._shared = shared_best([(top.architectures, top.accuracy) for top in self.tops.values()])
        logger.info("suggestion engine for predictor %s ready in %.2fs (%d training tasks)",
                    checkpoint.predictor_id, time.perf_counter() - start, len(self.task_names))

    @property
    def predictor_id(self) -> str:
        return self.checkpoint.predictor_id

    # -- meta-features -----------------------------------------------------------------------
    @torch.no_grad()
    def _embed(self, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        return self.model.task_embedding(torch.as_tensor(np.asarray(x), dtype=torch.float32),
                                         torch.as_tensor(np.asarray(y), dtype=torch.int64))  # (Z,)

    def embed(self, x: np.ndarray, y: np.ndarray, where: str = "x") -> torch.Tensor | None:
        """Meta-features z of a task from its samples (None for a predictor without them).

        Any width for a predictor whose meta encoder reads cells; exactly ``feature_dim`` for the
        ``samples`` encoder (``where`` names the samples in the error). At most the rows
        ``meta_rows`` keeps are read."""
        if not self.use_meta_features:
            return None
        x, y = check_samples(x, y, feature_dim=sample_width(self.config, x, where, self.predictor_id),
                             max_classes=self.config.max_classes)
        return self._embed(*meta_rows(x, y, self.config))

    # -- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def score_with_std(self, architectures: Any, z: torch.Tensor | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The ensemble's mean score and spread of discrete architectures (N, num_dimensions) -> (N,), (N,).

        The spread is None for a single predictor (an old, format-1 checkpoint)."""
        archs = np.asarray(architectures)
        if archs.ndim != 2:
            raise ArgumentError(f"architectures must be a list of {self.space.num_dimensions}-index lists, "
                                f"got shape {archs.shape}")
        members = self.member_scores(archs, z)  # (K, N)
        return members.mean(axis=0), (members.std(axis=0) if self.model.members > 1 else None)

    @torch.no_grad()
    def member_scores(self, architectures: np.ndarray, z: torch.Tensor | None) -> np.ndarray:
        """Every member's score of discrete architectures (N, num_dimensions) -> (K, N) float64."""
        if not len(architectures):
            return np.zeros((self.model.members, 0))
        u = torch.as_tensor(self.space.encode_many(architectures))
        return self.model.member_scores(u, z).double().numpy()

    def score_architectures(self, architectures: Any, z: torch.Tensor | None) -> np.ndarray:
        """Predictor scores (the ensemble's mean) of discrete architectures (N, num_dimensions) -> (N,)."""
        return self.score_with_std(architectures, z)[0]

    def portfolio(self, nearest: list[tuple[str, float]]) -> np.ndarray:
        """The portfolio pick, what a user would try without a predictor (issue 16): (num_dimensions,).

        Where the training tasks share architectures (imported benchmarks), the best mean
        within-task rank over them; else the best stored architecture of the nearest training
        task by meta-features, or, without them, the best by task-normalized accuracy over all.
        """
        if self._shared is not None:
            return self._shared[0]
        if nearest:
            return self.tops[nearest[0][0]].architectures[0]
        name, row = self._global_order[0]
        return self.tops[name].architectures[row]

    # -- starting points -------------------------------------------------------------------------
    def _rank_global(self) -> list[tuple[str, int]]:
        """(task, row) of every stored top architecture, best normalized accuracy first."""
        entries = [(float(top.normalized[i]), name, i) for name, top in self.tops.items()
                   for i in range(len(top.accuracy))]
        entries.sort(key=lambda e: (-e[0], e[1], e[2]))
        return [(name, i) for _, name, i in entries]

    def nearest_tasks(self, z: torch.Tensor | None) -> list[tuple[str, float]]:
        """Training tasks by Euclidean distance to ``z`` in embedding space, closest first."""
        if z is None or self.task_z is None:
            return []
        d = torch.linalg.vector_norm(self.task_z - z, dim=1)  # (T,)
        order = sorted(range(len(self.task_names)), key=lambda i: (float(d[i]), self.task_names[i]))
        return [(self.task_names[i], float(d[i])) for i in order]

    def starting_points(self, nearest: list[tuple[str, float]],
                        config: SuggestConfig) -> tuple[np.ndarray, list[str | None]]:
        """Top ``top_per_task`` architectures of the ``closest_tasks`` nearest tasks (distinct).

        Without meta-features (or distances) the starts are the global top architectures by
        task-normalized validation accuracy. -> ((S, num_dimensions), start task of each).
        """
        want = config.k_num_starting_points
        seen: set[tuple[int, ...]] = set()
        archs, origin = [], []

        def take(name: str, row: int) -> None:
            key = tuple(int(v) for v in self.tops[name].architectures[row])
            if key not in seen and len(archs) < want:
                seen.add(key)
                archs.append(key)
                origin.append(name if nearest else None)

        if nearest:
            for name, _ in nearest[:config.closest_tasks]:  # the paper's rule
                for row in range(min(config.top_per_task, len(self.tops[name].accuracy))):
                    take(name, row)
            for name, _ in nearest:  # fill up from the next-closest tasks when short
                for row in range(len(self.tops[name].accuracy)):
                    if len(archs) >= want:
                        break
                    take(name, row)
        else:
            for name, row in self._global_order:
                if len(archs) >= want:
                    break
                take(name, row)
        return np.asarray(archs, dtype=np.int64).reshape(-1, self.space.num_dimensions), origin

    # -- Algorithm 2 -----------------------------------------------------------------------------
    @staticmethod
    def _floor_bounds(members: np.ndarray, kappa: float) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Mean, spread and lower bound of each candidate's score from the members' scores (K, N), the portfolio
        pick last (issue 16's floor).

        The bound is ``mean - kappa * std`` where std is the members' spread of the candidate's *gap to the
        portfolio pick*, member by member: a ranking loss leaves each member's offset free, and the offsets,
        not the members' disagreement, dominate the spread of raw scores; in a gap they cancel. So a
        candidate displaces the portfolio pick (bound = its mean) only when the members agree it is better.
        """
        scores = members.mean(axis=0)
        if len(members) < 2:  # a single predictor has no spread: rank by its score
            return scores, None, scores
        gap = members - members[:, -1:]
        return scores, members.std(axis=0), scores - kappa * gap.std(axis=0)

    def suggest_z(self, z: torch.Tensor | None, config: SuggestConfig | None = None) -> Suggestion:
        """Algorithm 2 for a task with meta-features ``z`` (None for a predictor without them)."""
        config = config or SuggestConfig()
        start = time.perf_counter()
        nearest = self.nearest_tasks(z)
        archs, origin = self.starting_points(nearest, config)
        logits0 = start_logits(self.space, archs, config.start_smoothing)  # (S, D)
        result = self.ascent.run(logits0, z, step_size=config.step_size, max_iters=config.k_max_iters,
                                 tolerance=config.tolerance, check_every=config.check_every)
        u = result.u.numpy()  # (S, D)
        found = self.space.discretize(u)  # (S, num_dimensions)
        start_scores = self.score_architectures(archs, z)  # (S,)
        continuous = result.scores.numpy().astype(np.float64)  # (S,)
        portfolio = self.portfolio(nearest)
        # every candidate: the ascent's results, its starts, the portfolio pick (one row each, in that order)
        pool = np.concatenate([found, archs, portfolio[None, :]])  # (2S + 1, num_dimensions)
        sources = ["ascent"] * len(found) + ["start"] * len(archs) + ["portfolio"]
        rows = list(range(len(found))) * 2 + [None]
        scores, std, lcb = self._floor_bounds(self.member_scores(pool, z), config.kappa)  # (2S + 1,) each
        order = sorted(range(len(pool)), key=lambda i: (-lcb[i], -scores[i], i))
        seen: set[tuple[int, ...]] = set()
        candidates, best_u = [], None
        for i in order:
            key = tuple(int(v) for v in pool[i])
            if key in seen:
                continue
            seen.add(key)
            r = rows[i]
            if best_u is None:  # the relaxed encoding behind the pick; a start's or the portfolio's own one-hot
                best_u = u[r] if sources[i] == "ascent" else self.space.encode_many(pool[i:i + 1])[0]
            candidates.append(Candidate(
                list(key), self.space.describe(key), float(scores[i]),
                float(continuous[r]) if sources[i] == "ascent" else float(scores[i]),
                origin[r] if r is not None else (nearest[0][0] if nearest else None),
                [int(v) for v in (archs[r] if r is not None else pool[i])],
                float(start_scores[r]) if r is not None else float(scores[i]),
                None if std is None else float(std[i]), float(lcb[i]), sources[i]))
        best = candidates[0]
        far, threshold = None, None
        if nearest and self.nn_distance is not None:
            threshold = config.far_factor * self.nn_distance
            far = bool(nearest[0][1] > threshold)
        return Suggestion(
            predictor_id=self.predictor_id, architecture=best.architecture, description=best.description,
            score=best.score, continuous_score=best.continuous_score, encoding=[float(v) for v in best_u],
            candidates=candidates, nearest_tasks=[{"task": n, "distance": d} for n, d in nearest],
            far_from_training=far, far_threshold=threshold, iterations=result.iterations,
            converged=result.converged, seconds=time.perf_counter() - start, config=config.to_dict(),
            std=best.std, lcb=best.lcb, pick_source=best.source, portfolio=[int(v) for v in portfolio])

    def suggest(self, x: np.ndarray | None, y: np.ndarray | None, config: SuggestConfig | None = None) -> Suggestion:
        """Algorithm 2 for a task given by its samples (ignored by a predictor without meta-features)."""
        return self.suggest_z(self.embed(x, y) if self.use_meta_features else None, config)

    def task_z_or_embed(self, store: ExperimentStore, task: str) -> torch.Tensor | None:
        """z of a task in the store: the cached one for a training task, else from its train split."""
        if not self.use_meta_features:
            try:
                store.task(task)  # still refuse an unknown task
            except TaskHasNoSamplesError:
                pass  # an imported benchmark: known, and no samples are needed without meta-features
            return None
        if task in self.tops and self.task_z is not None:
            return self.task_z[self.task_names.index(task)]
        try:
            x, y = store.task(task).samples("train")
        except TaskHasNoSamplesError:
            raise ArgumentError(f"task {task!r} has no raw samples (an imported tabular benchmark), so predictor "
                                f"{self.predictor_id!r} cannot compute its meta-features; use a predictor fitted "
                                f"with --no-meta-features") from None
        return self.embed(x, fold_labels(y, self.config.max_classes), where=f"task {task!r}")

    def predict(self, architectures: Any, z: torch.Tensor | None) -> np.ndarray:
        return self.score_architectures(architectures, z)


def check_samples(x: Any, y: Any, *, feature_dim: int | None, max_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Task samples as float32 (N, F) and int64 (N,) arrays, or ValueError naming what is wrong.

    ``feature_dim`` None: any width F >= 1 (a ``cells`` meta encoder)."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or (feature_dim is not None and x.shape[1] != feature_dim):
        raise ArgumentError(f"x: samples must have shape (n, {feature_dim or 'features'}), got {x.shape}")
    if x.shape[1] == 0:
        raise ArgumentError("x: at least one feature is needed, got 0")
    if x.shape[0] == 0:
        raise ArgumentError("x: at least one sample is needed, got 0")
    if not (np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)):
        raise ArgumentError(f"x: samples must be numbers, got dtype {x.dtype}")
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        r, c = (int(v) for v in bad[0])
        raise ArgumentError(f"x: non-finite value {x[r, c]} at row {r}, column {c}")
    if y.shape != (x.shape[0],):
        raise ArgumentError(f"y: expected {x.shape[0]} labels (one per row of x), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ArgumentError(f"y: labels must be integers, got dtype {y.dtype}")
    out = np.flatnonzero((y < 0) | (y >= max_classes))
    if out.size:
        raise ArgumentError(f"y: label {int(y[out[0]])} at index {int(out[0])} is outside [0, {max_classes})")
    return np.ascontiguousarray(x, dtype=np.float32), y.astype(np.int64)


# -- per-checkpoint engines, built once ----------------------------------------------------------
_ENGINES: dict[tuple[str, str], SuggestionEngine] = {}
_ENGINES_LOCK = threading.Lock()
_MAX_ENGINES = 4


def _store_key(store: Any) -> str:
    return str(getattr(store, "root", None) or id(store))


def engine_for(checkpoint: PredictorCheckpoint, store: ExperimentStore) -> SuggestionEngine:
    """The cached engine of ``checkpoint`` over ``store`` (training-task embeddings computed once)."""
    key = (_store_key(store), checkpoint.predictor_id)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)  # a predictor id names one immutable checkpoint
        if engine is not None:
            return engine
    engine = SuggestionEngine(checkpoint, store)
    with _ENGINES_LOCK:
        while len(_ENGINES) >= _MAX_ENGINES:
            _ENGINES.pop(next(iter(_ENGINES)))
        _ENGINES[key] = engine
    return engine


def suggest_architecture(checkpoint: PredictorCheckpoint, store: ExperimentStore, x: Any, y: Any,
                         config: SuggestConfig | None = None) -> Suggestion:
    """Algorithm 2 for a new task given by its samples ``x`` (N, 64) and labels ``y`` (N,)."""
    return engine_for(checkpoint, store).suggest(x, y, config)


def suggest_for_task(checkpoint: PredictorCheckpoint, store: ExperimentStore, task: str,
                     config: SuggestConfig | None = None) -> Suggestion:
    """Algorithm 2 for a task of the store (built-in or registered), from its training split."""
    engine = engine_for(checkpoint, store)
    return engine.suggest_z(engine.task_z_or_embed(store, task), config)


def predict_scores(checkpoint: PredictorCheckpoint, x: Any, y: Any, architectures: Any) -> np.ndarray:
    """Predictor scores of discrete ``architectures`` (N, num_dimensions) on the task ``(x, y)``: -> (N,)."""
    model, cfg = checkpoint.model.eval(), checkpoint.config
    z = None
    if cfg.use_meta_features:
        x, y = check_samples(x, y, feature_dim=sample_width(cfg, x, "x", checkpoint.predictor_id),
                             max_classes=cfg.max_classes)
        x, y = meta_rows(x, y, cfg)
        with torch.no_grad():
            z = model.task_embedding(torch.as_tensor(x), torch.as_tensor(y))  # (Z,)
    archs = np.asarray(architectures)
    if archs.ndim != 2 or archs.shape[1] != checkpoint.space.num_dimensions:
        raise ArgumentError(f"architectures must have shape (N, {checkpoint.space.num_dimensions}), got {archs.shape}")
    with torch.no_grad():
        return model(torch.as_tensor(checkpoint.space.encode_many(archs)), z).numpy().astype(np.float64)


__all__ = ["Candidate", "Suggestion", "SuggestConfig", "SuggestionEngine", "check_samples", "engine_for",
           "predict_scores", "suggest_architecture", "suggest_for_task", "task_top"]
