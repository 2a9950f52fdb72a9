"""Training triplets (z, u, v) of Eq. 3 read from the experiment store, one block per task.

For every task: the architectures of its ok experiments as encodings u (space.encode_many),
their validation accuracies v, the population statistics (mu_k, sigma_k) used to normalize v
(task-aware-performance-prediction.md Sec. 5.1), and the task's training samples (x, y) from
which the meta-features z are learned (Sec. 3.1). Bad input is refused here, before any
training starts, with an error that names the task.

Tasks of any width (table tasks, nasdb/tabular.py) are read when the predictor's meta encoder
reads any width (``meta_encoder="cells"``); the paper's ``"samples"`` encoder reads exactly
``feature_dim`` (64) features and refuses another width with a one-line error naming the task
(:func:`check_width`). A task's samples are its training split, cut to a seeded random subset
of ``task_sample_budget`` rows when larger (:func:`sample_budget`; every digits task has at
most 3,000 rows, so the budget of 4,096 leaves them whole). :func:`choose_meta_encoder` is the
rule ``nasdb fit`` and ``nasdb evaluate`` follow when no encoder is asked for.

Tasks without samples (imported tabular benchmarks, ``nasdb import-benchmark``) train a
predictor without meta-features only: their block has empty samples ``(0, feature_dim)``.
Their "accuracy" is the benchmark's performance (e.g. HPOLib's -val_loss), which can be
heavy-tailed (slice_localization: val_loss from 2e-4 to 4e7); ``target="auto"`` therefore fits
them on the within-task quantile rank of the performance (see ``TARGETS``).
Rows of children stopped early (``stopped_early``) are left out by default: their validation
accuracy is that of a partly trained model, not the final one the predictor is meant to rank.
So are stale rows (nasdb/fingerprints.py): their task or embedding-bank fingerprint differs from
the data the task holds now, so they describe other data; rows without fingerprints (written
before schema v3) are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nasdb.errors import ArgumentError, TaskHasNoSamplesError, UnknownTaskError
from predictor.config import PAPER_GAP, TARGETS
from predictor.landmarks import task_landmarks
from nasdb.ranks import quantile_rank
from nasdb.space import SearchSpace

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

logger = logging.getLogger(__name__)

#: What Algorithm 1 fits per task: ``raw`` the stored validation accuracy (the paper's, normalized
#: by mu_k and sigma_k in the L2 loss); ``rank`` its quantile rank within the task, in [0, 1]
#: (robust to heavy tails: a few diverged configurations no longer set sigma_k); ``auto``:
#: ``rank`` for imported benchmark tasks (no samples), ``raw`` otherwise.
#: The meta-feature encoders (predictor.config.META_ENCODERS) and ``auto``: see choose_meta_encoder.
ENCODER_CHOICES = ("auto", "samples", "cells")
# A task enters a fit from its second usable experiment (a ranking loss needs a pair); with fewer
# rows than a mini-batch, its mini-batch is all of them (predictor/fit.py).
MIN_EXPERIMENTS = 2
#: The seed of the row subset of a task above its sample budget (the same rows on every read).
BUDGET_SEED = 0
_COLUMNS = ("space_id", "architecture", "val_accuracy", "seed", "stopped_early", "task_fingerprint",
            "bank_fingerprint")


@dataclass
class TaskData:
    """One task's experiments and samples. Arrays are aligned row by row over its M experiments."""

    name: str
    architectures: np.ndarray  # (M, num_dimensions) int64 choice indices
    u: np.ndarray  # (M, encoding_size) float32 one-hot encodings
    accuracy: np.ndarray  # (M,) float32 validation accuracy (a benchmark's performance: higher is better)
    seeds: np.ndarray  # (M,) int64 training seed of each experiment
    x: np.ndarray  # (N, feature_dim) float32 training-split samples; N = 0 for a task without samples
    y: np.ndarray  # (N,) int64 training-split labels
    num_classes: int  # 0 for a task without samples
    val_size: int = 0  # rows of the validation split the accuracies were measured on; 0 when unknown
    skipped_nonfinite: int = 0  # rows dropped for a NaN/inf validation accuracy
    skipped_other_space: int = 0  # rows of another search space
    skipped_stopped: int = 0  # rows of children stopped early (partial validation accuracy)
    skipped_stale: int = 0  # rows trained on other data than the task (or bank) holds now
    failed: int = 0  # rows with status "failed" (never read as training data)
    target_kind: str = "raw"  # "raw" or "rank" (TARGETS)
    target: np.ndarray | None = None  # (M,) float32 what Algorithm 1 fits; None: the accuracy
    _landmarks: np.ndarray | None = field(default=None, repr=False)  # computed once, on first use

    def __post_init__(self) -> None:
        if self.target is None:
            self.target = self.accuracy

    def landmarks(self) -> np.ndarray:
        """The task's landmarking descriptors from its samples (predictor/landmarks.py): (L,) float32."""
        if self._landmarks is None:
            if not self.has_samples:
                raise ArgumentError(f"task {self.name!r} has no samples to compute landmarking descriptors from")
            self._landmarks = task_landmarks(self.x, self.y)
        return self._landmarks

    def uncertainty_gap(self, setting: float | str) -> float:
        """The gap below which two of the task's fitted targets count as indistinguishable (ranking
        paper Sec. 3, App. A.3): ``setting`` if a number; for ``"validation"``, the noise of an
        accuracy measured on the task's validation rows, the binomial standard error
        sqrt(p (1 - p) / n_val) at its mean accuracy p, at least the paper's 0.01 (its measured
        training noise). The paper's 0.01 where n_val is unknown (an imported benchmark) or the
        target is a rank (its units are not accuracy)."""
        if not isinstance(setting, str):
            return float(setting)
        if self.val_size <= 0 or self.target_kind != "raw":
            return PAPER_GAP
        p = float(np.clip(self.accuracy.mean(), 0.0, 1.0))
        return max(PAPER_GAP, float(np.sqrt(p * (1.0 - p) / self.val_size)))

    def landmarks_for(self, model: Any) -> np.ndarray | None:
        """The cached descriptors if ``model`` (a PerformancePredictor) reads them, else None
        (computing nothing): what its ``task_embedding`` and ``predict`` take as ``landmarks``."""
        return self.landmarks() if getattr(model, "num_landmarks", 0) else None

    @property
    def mean(self) -> float:
        """mu_k of the fitted target over the task's population (Sec. 5.1)."""
        return float(self.target.mean())

    @property
    def std(self) -> float:
        """sigma_k of the fitted target (0 when all are equal)."""
        return float(self.target.std())

    @property
    def num_experiments(self) -> int:
        return int(self.accuracy.shape[0])

    @property
    def has_samples(self) -> bool:
        return int(self.x.shape[0]) > 0

    def snapshot(self) -> dict[str, Any]:
        return {"ok": self.num_experiments, "failed": self.failed, "nonfinite": self.skipped_nonfinite,
                "other_space": self.skipped_other_space, "stopped_early": self.skipped_stopped,
                "stale": self.skipped_stale,
                "samples": int(self.x.shape[0]), "features": int(self.x.shape[1]), "target": self.target_kind}


@dataclass
class TrainingData:
    """The training set T of Algorithm 1: a search space and the data of each training task."""

    space: SearchSpace
    tasks: dict[str, TaskData] = field(default_factory=dict)

    @property
    def task_names(self) -> list[str]:
        return list(self.tasks)

    def without(self, name: str) -> "TrainingData":
        """The same data minus one task (leave-one-task-out), sharing the arrays."""
        return TrainingData(space=self.space, tasks={n: t for n, t in self.tasks.items() if n != name})

    def held_out(self, wanted: Iterable[str] | None) -> list[str]:
        """The tasks a leave-one-task-out run holds out in turn: every task, or only ``wanted``
        (each fit still trains on all the others); ArgumentError naming any that is not loaded."""
        if wanted is None:
            return self.task_names
        wanted = list(dict.fromkeys(wanted))
        missing = [t for t in wanted if t not in self.tasks]
        if missing or not wanted:
            raise ArgumentError(f"held-out task(s) {missing or wanted} not among the loaded tasks "
                                f"({len(self.tasks)}: {', '.join(self.task_names[:5])}, ...)")
        return [t for t in self.task_names if t in wanted]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Row counts per task: what the predictor was trained on (stored with the checkpoint)."""
        return {name: t.snapshot() for name, t in self.tasks.items()}


def architecture_matrix(column: pa.ChunkedArray | pa.Array, num_dimensions: int, what: str) -> np.ndarray:
    """An arrow list<int> column of architectures as an (M, num_dimensions) int64 array, without Python lists."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(column) == 0:
        return np.zeros((0, num_dimensions), dtype=np.int64)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != num_dimensions)
    if bad.size:
        raise ArgumentError(f"{what}: a stored architecture has {int(lengths[bad[0]])} entries, "
                            f"the space has {num_dimensions} dimensions")
    flat = pc.list_flatten(column).to_numpy(zero_copy_only=False)
    return flat.astype(np.int64).reshape(-1, num_dimensions)


def _store_task_names(store: ExperimentStore) -> list[str]:
    """Tasks with experiments in the store, and registered tasks (which may have none yet)."""
    return sorted(set(store.task_stats().column("task").to_pylist()) | set(store.registered_tasks()))


def _resolve_space(store: ExperimentStore, space: SearchSpace | str | None, rows: dict[str, Any]) -> SearchSpace:
    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, str):
        return store.space(space)
    ids: dict[str, list[str]] = {}
    for name, table in rows.items():
        for sid in sorted(set(pc.unique(table.column("space_id")).to_pylist())):
            ids.setdefault(sid, []).append(name)
    if len(ids) > 1:
        detail = "; ".join(f"{sid}: {', '.join(names)}" for sid, names in sorted(ids.items()))
        raise ArgumentError(f"the store holds experiments of {len(ids)} search spaces ({detail}); pass space_id")
    if not ids:
        raise ArgumentError("the store holds no ok experiments to train on")
    return store.space(next(iter(ids)))


def sample_budget(x: np.ndarray, y: np.ndarray, budget: int | None) -> tuple[np.ndarray, np.ndarray]:
    """At most ``budget`` rows of ``(x (N, F), y (N,))``: a seeded random subset, in the original order."""
    rows = budget_rows(int(x.shape[0]), budget)
    return (x, y) if rows is None else (x[rows], y[rows])


def budget_rows(n: int, budget: int | None) -> np.ndarray | None:
    """The sorted row indices :func:`sample_budget` keeps of ``n`` rows (None: all of them); they
    depend on ``n`` and ``budget`` only, so a caller may pick the rows before encoding them."""
    if budget is None or n <= budget:
        return None
    return np.sort(np.random.default_rng(BUDGET_SEED).choice(n, size=budget, replace=False))


def check_width(where: str, width: int, *, meta_encoder: str, feature_dim: int) -> None:
    """Refuse a sample width the meta encoder cannot read: the ``samples`` encoder reads exactly
    ``feature_dim`` features, ``cells`` any width >= 1. ``where`` names the task (or the request)."""
    if meta_encoder == "samples" and width != feature_dim:
        raise ArgumentError(f"{where} has {width} features, but this predictor's meta encoder ('samples') reads exactly "
                            f"{feature_dim} (the 8x8 digits); fit with --meta-encoder cells to read tables of any width")
    if width < 1:
        raise ArgumentError(f"{where} has no features")


#: Cells (rows x features) a ``cells`` meta encoder reads for one task's z at inference: its cost
#: grows with rows x width (0.8 s for 512 x 660 on one core), so a wide table is read on fewer rows,
#: never fewer than one training batch (sample_batch_size). The mean over rows keeps z's scale.
META_CELLS = 1 << 17


def meta_rows(x: np.ndarray, y: np.ndarray, config: Any) -> tuple[np.ndarray, np.ndarray]:
    """The rows of a task's samples its meta-features are computed from: at most the config's
    ``task_sample_budget`` (the rows the fit read), and for the ``cells`` encoder at most
    max(sample_batch_size, META_CELLS / width) (a seeded subset, predictor/data.py sample_budget)."""
    return sample_budget(x, y, meta_budget(config, int(x.shape[1]) if x.ndim == 2 else 0))


def meta_budget(config: Any, width: int) -> int:
    """The most rows :func:`meta_rows` keeps of a task ``width`` features wide."""
    budget = config.task_sample_budget
    if config.meta_encoder == "cells" and width:
        budget = min(budget, max(config.sample_batch_size, META_CELLS // width))
    return budget


def sample_width(config: Any, x: Any, where: str = "x", predictor_id: str | None = None) -> int | None:
    """The width ``check_samples`` requires of ``x`` for a predictor: ``feature_dim`` for the
    ``samples`` encoder (another width is refused, naming the fix), None (any) for ``cells``."""
    if config.meta_encoder == "cells":
        return None
    shape = np.shape(x)
    if len(shape) == 2 and shape[1] != config.feature_dim and shape[0]:
        who = f"predictor {predictor_id!r}" if predictor_id else "this predictor"
        raise ArgumentError(f"{where}: the task has {shape[1]} features, but {who} was fitted with the 'samples' meta "
                            f"encoder, which reads exactly {config.feature_dim} (the 8x8 digits); fit a predictor with "
                            f"--meta-encoder cells to read tables of any width")
    return config.feature_dim


def _task_samples(store: ExperimentStore, name: str, *, use_meta_features: bool, feature_dim: int,
                  meta_encoder: str = "samples",
                  budget: int | None = None) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The task's training split ``(x (N, F), y (N,), num_classes, validation rows)``, at most ``budget``
    rows; empty (and 0, 0) for a task without samples. F is ``feature_dim`` for the ``samples`` encoder,
    any width for ``cells``."""
    try:
        task = store.task(name)
    except TaskHasNoSamplesError:
        if use_meta_features:
            raise ArgumentError(f"task {name!r} has no raw samples (an imported tabular benchmark), so its "
                                f"meta-features cannot be learned; fit with --no-meta-features") from None
        return np.zeros((0, feature_dim), dtype=np.float32), np.zeros(0, dtype=np.int64), 0, 0
    except UnknownTaskError:
        raise UnknownTaskError(f"task {name!r} has experiments in the store but its samples are gone (neither "
                               f"registered nor built in); leave it out with --exclude-task {name}") from None
    x, y = task.samples("train")
    if use_meta_features:  # without meta-features the samples are never read: any width trains
        check_width(f"task {name!r}", int(x.shape[1]), meta_encoder=meta_encoder, feature_dim=feature_dim)
    x, y = sample_budget(x, y, budget)
    return (np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64), int(task.num_classes),
            task.sizes()["val"])


def choose_meta_encoder(data: "TrainingData", requested: str, *, current: str = "samples",
                        feature_dim: int = 64) -> tuple[str, str]:
    """The meta encoder a fit uses, and why: ``(encoder, reason)``.

    ``requested`` is ``samples`` or ``cells`` (used as asked; ``samples`` refuses a task of
    another width than ``feature_dim``) or ``auto``: ``cells`` when a training task with samples
    has another width than ``feature_dim`` (a table task), else ``current`` (the config's,
    ``samples`` by default), so a digits-only store fits the same predictor as before.
    """
    if requested not in ENCODER_CHOICES:
        raise ArgumentError(f"`meta_encoder` must be one of {ENCODER_CHOICES}, but got meta_encoder={requested!r}.")
    wide = {n: int(t.x.shape[1]) for n, t in data.tasks.items() if t.has_samples and t.x.shape[1] != feature_dim}
    if requested == "samples":
        for n, w in wide.items():
            check_width(f"task {n!r}", w, meta_encoder="samples", feature_dim=feature_dim)
    if requested != "auto":
        return requested, "asked for"
    if wide:
        n, w = next(iter(wide.items()))
        return "cells", f"auto: {len(wide)} task(s) not {feature_dim} features wide, e.g. {n!r} with {w}"
    return current, f"auto: every task has {feature_dim} features"


def load_task_data(store: ExperimentStore, name: str, space: SearchSpace, table: Any, *, failed: int, feature_dim: int,
                   use_meta_features: bool = True, include_stopped: bool = False,
                   target: str = "auto", include_stale: bool = False, meta_encoder: str = "samples",
                   budget: int | None = None) -> TaskData:
    """Build one task's block from its ok rows (a pyarrow table) and its stored samples; stale rows
    (fingerprints of other data than the task holds now) are skipped unless ``include_stale``."""
    if target not in TARGETS:
        raise ArgumentError(f"`target` must be one of {TARGETS}, but got target={target!r}.")
    mine = pc.equal(table.column("space_id"), space.space_id).to_numpy(zero_copy_only=False).astype(bool)
    other = int((~mine).sum())
    if not mine.any() and len(mine):
        found = sorted(pc.unique(table.column("space_id")).to_pylist())
        raise ArgumentError(f"task {name!r}: its experiments are in search space(s) {found}, "
                            f"not the requested {space.space_id}")
    stopped = np.zeros(len(mine), dtype=bool)
    if not include_stopped and "stopped_early" in table.column_names:
        stopped = table.column("stopped_early").fill_null(False).to_numpy(zero_copy_only=False).astype(bool) & mine
    stale = np.zeros(len(mine), dtype=bool)
    if not include_stale and "task_fingerprint" in table.column_names:
        stale = _stale(store, name, table) & mine & ~stopped
        if stale.any():
            logger.warning("task %r: skipped %d experiment(s) trained on other data than the task holds now "
                           "(stale fingerprints, see `nasdb verify`)", name, int(stale.sum()))
    stopped |= stale  # left out like stopped rows below, counted apart
    acc = table.column("val_accuracy").to_numpy(zero_copy_only=False).astype(np.float64)
    finite = np.isfinite(acc) & mine & ~stopped
    nonfinite = int((~np.isfinite(acc) & mine & ~stopped).sum())
    if nonfinite:
        logger.warning("task %r: skipped %d experiment(s) with a non-finite validation accuracy", name, nonfinite)
    if other:
        logger.warning("task %r: skipped %d experiment(s) of another search space", name, other)
    if (stopped & ~stale).any():
        logger.info("task %r: skipped %d experiment(s) stopped early (partial validation accuracy)", name,
                    int((stopped & ~stale).sum()))
    try:
        archs = architecture_matrix(table.column("architecture").filter(pa.array(finite)), space.num_dimensions,
                                    f"task {name!r}")
        u = space.encode_many(archs)  # (M, D)
    except ValueError as e:
        raise ArgumentError(f"task {name!r}: a stored architecture does not fit space {space.name!r}: {e}") from None
    x, y, num_classes, val_size = _task_samples(store, name, use_meta_features=use_meta_features,
                                                feature_dim=feature_dim, meta_encoder=meta_encoder, budget=budget)
    kind = ("rank" if num_classes == 0 else "raw") if target == "auto" else target
    values = acc[finite]
    fitted = quantile_rank(values) if kind == "rank" else values
    return TaskData(name=name, architectures=archs, u=u, accuracy=values.astype(np.float32),
                    seeds=table.column("seed").to_numpy(zero_copy_only=False).astype(np.int64)[finite],
                    x=x, y=y, num_classes=num_classes, val_size=val_size, skipped_nonfinite=nonfinite,
                    skipped_other_space=other,
                    skipped_stopped=int((stopped & ~stale).sum()), skipped_stale=int(stale.sum()), failed=failed,
                    target_kind=kind,
                    target=fitted.astype(np.float32))


def _stale(store: ExperimentStore, name: str, table: pa.Table) -> np.ndarray:
    """(M,) bool: rows whose fingerprints differ from the task's data and the embedding bank now."""
    from nasdb.fingerprints import stale_mask

    tfp, bfp = table.column("task_fingerprint"), table.column("bank_fingerprint")
    if tfp.null_count == len(tfp) and bfp.null_count == len(bfp):
        return np.zeros(len(tfp), dtype=bool)  # every row written before schema v3: unverified, kept

    def bank_now() -> str:
        from cluster.child import default_bank

        return default_bank().fingerprint()

    return stale_mask(tfp, bfp, store.task_fingerprint(name), bank_now)


def _ok_rows(store: ExperimentStore, name: str) -> pa.Table:
    """The task's ok rows, only the columns read here (a benchmark task holds ~250k rows), in
    experiment-id order: the store lists rows by when they were trained, which differs from one
    populate run to the next, and the fit must see the same rows in the same order every time."""
    table = store.experiments_arrow(name, status="ok", columns=(*_COLUMNS, "experiment_id"))
    return table.sort_by("experiment_id").select(list(_COLUMNS))


def load_training_data(store: ExperimentStore, *, space: SearchSpace | str | None = None,
                       tasks: Iterable[str] | None = None, exclude_tasks: Iterable[str] = (),
                       min_experiments: int = MIN_EXPERIMENTS,
                       min_tasks: int = 2, feature_dim: int = 64, use_meta_features: bool = True,
                       include_stopped: bool = False, target: str = "auto", include_stale: bool = False,
                       meta_encoder: str = "samples", budget: int | None = None) -> TrainingData:
    """Read the training set from ``store``: every task with experiments (or ``tasks``), minus ``exclude_tasks``.

    ``use_meta_features=False`` admits tasks without samples (imported benchmarks);
    ``include_stopped=True`` keeps rows of children stopped early; ``include_stale=True`` keeps rows
    trained on other data than the task holds now; ``target``: see ``TARGETS``; ``meta_encoder``:
    ``samples`` reads tasks of exactly ``feature_dim`` features, ``cells`` any width (check_width);
    ``budget``: rows kept per task (sample_budget).
    Raises ValueError naming the task for: fewer than ``min_tasks`` tasks, a task with only failed
    rows, a task with fewer usable experiments than ``min_experiments`` (MIN_EXPERIMENTS), a
    space mismatch, a task without samples when meta-features are asked for; UnknownTaskError
    for an excluded or requested task the store does not know.
    """
    if target not in TARGETS:
        raise ArgumentError(f"`target` must be one of {TARGETS}, but got target={target!r}.")
    known = _store_task_names(store)
    exclude = list(exclude_tasks)
    for name in exclude + list(tasks or []):
        if name not in known:
            raise UnknownTaskError(f"task {name!r} is not in the store (known: {', '.join(known) or 'none'})")
    names = [n for n in (list(tasks) if tasks is not None else known) if n not in set(exclude)]
    ok_rows = {n: _ok_rows(store, n) for n in names}
    failed = {n: store.count(n, status="failed") for n in names}
    for n in names:
        if ok_rows[n].num_rows == 0 and failed[n] > 0:
            raise ArgumentError(f"task {n!r} has only failed experiments ({failed[n]} failed, 0 ok)")
    names = [n for n in names if ok_rows[n].num_rows > 0]
    if len(names) < min_tasks:
        raise ArgumentError(f"fitting a predictor needs at least {min_tasks} tasks with experiments, got "
                            f"{len(names)} ({', '.join(names) or 'none'}"
                            f"{'; excluded: ' + ', '.join(exclude) if exclude else ''})")
    resolved = _resolve_space(store, space, {n: ok_rows[n] for n in names})
    data = TrainingData(space=resolved)
    for n in names:
        td = load_task_data(store, n, resolved, ok_rows.pop(n), failed=failed[n], feature_dim=feature_dim,
                            use_meta_features=use_meta_features,
                            include_stopped=include_stopped, target=target, include_stale=include_stale,
                            meta_encoder=meta_encoder, budget=budget)
        if td.num_experiments < min_experiments:
            raise ArgumentError(f"task {n!r} has {td.num_experiments} usable experiments, fewer than the "
                                f"{min_experiments} a fit needs (skipped: {td.skipped_nonfinite} non-finite, "
                                f"{td.skipped_other_space} other space, {td.skipped_stopped} stopped early, "
                                f"{td.skipped_stale} stale, {td.failed} failed)")
        data.tasks[n] = td
    return data


def load_for_config(store: ExperimentStore, config: Any, *, meta_encoder: str | None = None, **kwargs: Any
                    ) -> tuple[TrainingData, Any, str]:
    """``load_training_data`` for a PredictorConfig, with the meta encoder chosen by ``choose_meta_encoder``.

    ``meta_encoder``: ``auto``, ``samples``, ``cells``, or None for the config's own. Returns the
    data, the config with the encoder it uses, and why (for the fit's output). ``kwargs`` go to
    load_training_data (space, tasks, exclude_tasks, min_experiments, min_tasks, ...); the target and
    whether stopped children count come from the config (``target``, ``include_stopped``).
    """
    requested = meta_encoder or config.meta_encoder
    if requested not in ENCODER_CHOICES:
        raise ArgumentError(f"`meta_encoder` must be one of {ENCODER_CHOICES}, but got meta_encoder={requested!r}.")
    use_meta = kwargs.pop("use_meta_features", config.use_meta_features)
    data = load_training_data(store, feature_dim=config.feature_dim,
                              use_meta_features=use_meta, meta_encoder="cells" if requested == "auto" else requested,
                              budget=config.task_sample_budget, target=config.target,
                              include_stopped=config.include_stopped, **kwargs)
    if not use_meta:
        return data, config, "no meta-features"
    encoder, reason = choose_meta_encoder(data, requested, current=config.meta_encoder,
                                          feature_dim=config.feature_dim)
    if encoder != config.meta_encoder:
        logger.info("meta encoder %r (%s)", encoder, reason)
    return data, config.replace(meta_encoder=encoder, max_classes=label_slots(data, config.max_classes)), reason


def label_slots(data: TrainingData, max_classes: int) -> int:
    """The one-hot label width a fit needs: ``max_classes``, widened to the training task with the
    most classes (a table task has up to nasdb.tabular.MAX_CLASSES), so no task is refused."""
    return max([max_classes] + [t.num_classes for t in data.tasks.values()])


def fold_labels(y: np.ndarray, max_classes: int) -> np.ndarray:
    """Labels of a task with more classes than a fitted predictor has label slots, folded into them
    (class c reads as c mod max_classes): phi never saw more classes, and folding keeps every sample
    (its feature values) in the task's meta-features instead of refusing the task."""
    y = np.asarray(y, dtype=np.int64)
    return y % max_classes if y.size and int(y.max()) >= max_classes else y
