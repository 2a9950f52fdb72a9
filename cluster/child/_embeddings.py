"""Frozen embedding modules of the child network, fitted once on the suite's training data.

The paper's child models start with an embedding module soft-selected among pre-trained
ones (task-aware-performance-prediction.md Sec. 3.4, "it speeds up the training time for the
child models and improves their quality especially when the training set is small"). Ours
are fitted on the 8x8 digits suite: ``identity`` (64), ``pca{k}`` (whitened PCA) and
``rff{D}`` (random Fourier features of a Gaussian kernel, bandwidth by the median heuristic).

Modules are frozen, so a task's embedded features are computed once per (task, module)
(:meth:`EmbeddingBank.task_features`) and the child networks train on those.

Table tasks (issue 17) have any number of features, so one search space serves every task by
fitting the same modules PER TASK on its training split (:meth:`EmbeddingBank.for_task`):
each module keeps its name and output width, so the child network, its parameter count and
the batched trainer are the same for every task. For a table, ``identity`` means "the
encoded columns at width 64": a table with at most 64 encoded columns is zero-padded to 64
(the columns themselves, unchanged); a wider one goes through a fixed Gaussian random
projection to 64 (entries N(0, 1/F), seeded; Johnson-Lindenstrauss keeps distances). ``pca<k>``
keeps the top components that exist (at most F, and fitted on at most 5,000 training rows)
and zero-pads the rest; ``rff<D>`` is unchanged (bandwidth by the task's median heuristic).
Image tasks keep the suite-wide modules, so their rows are unchanged.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from nasdb.errors import ArgumentError, NotFoundError
from nasdb.space import EMBEDDING_MODULES

_NAME_RE = re.compile(r"^(identity|pca(\d+)|rff(\d+))$")
_TASK_CACHE_SIZE = 32  # tasks whose embedded features a bank keeps (a few MB each)
_TASK_FIT_ROWS = 5000  # a table task's PCA is fitted on at most this many training rows


@dataclass(frozen=True, eq=False)
class EmbeddingModule:
    """One frozen map from the 64 input features to ``out_dim`` features: ``kind`` in
    identity | pca | rff. pca: ``(x - mean) @ weight``; rff: ``sqrt(2) cos(x @ weight + bias)``."""

    name: str
    kind: str
    out_dim: int
    weight: np.ndarray | None = None  # (F, out_dim) float32; identity of a table: pad or projection
    bias: np.ndarray | None = None  # pca: mean (F,); rff: phase (out_dim,)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)  # (N, F)
        if self.kind == "identity":
            return np.ascontiguousarray(x if self.weight is None else x @ self.weight)  # (N, out_dim)
        if self.kind == "pca":
            return ((x - self.bias) @ self.weight).astype(np.float32)  # (N, k)
        return (np.sqrt(2.0) * np.cos(x @ self.weight + self.bias)).astype(np.float32)  # (N, D)


def parse_module_name(name: str, input_dim: int = 64) -> tuple[str, int]:
    """``'pca16' -> ('pca', 16)``; ValueError for names that are not identity/pca<k>/rff<D>."""
    m = _NAME_RE.match(str(name))
    if not m:
        raise ArgumentError(f"unknown embedding module {name!r}: expected 'identity', 'pca<k>' or 'rff<D>'")
    if m.group(1) == "identity":
        return "identity", input_dim
    kind, size = ("pca", int(m.group(2))) if m.group(2) else ("rff", int(m.group(3)))
    if size < 1 or (kind == "pca" and size > input_dim):
        raise ArgumentError(f"embedding module {name!r}: size must be in [1, {input_dim}] for pca, >= 1 for rff")
    return kind, size


def median_bandwidth(x: np.ndarray, *, max_points: int = 1000, seed: int = 0) -> float:
    """Median pairwise Euclidean distance of (a fixed subsample of) ``x``: the kernel width."""
    rng = np.random.default_rng(seed)
    if len(x) > max_points:
        x = x[np.sort(rng.choice(len(x), max_points, replace=False))]
    x = x.astype(np.float64)
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0)  # (n, n)
    d = np.sqrt(d2[np.triu_indices(len(x), k=1)])
    bw = float(np.median(d))
    return bw if bw > 0 else 1.0


class EmbeddingBank:
    """The named frozen embedding modules of a search space, in the space's order.

    Small numpy arrays only (< 200 KB), so a bank pickles cheaply to Ray actors; the per-task
    feature cache is process-local and not pickled.
    """

    def __init__(self, modules: Sequence[EmbeddingModule], *, task: str | None = None):
        if not modules:
            raise ArgumentError("an embedding bank needs at least one module")
        names = [m.name for m in modules]
        if len(set(names)) != len(names):
            raise ArgumentError(f"repeated embedding module names: {names}")
        self.modules = tuple(modules)
        self._index = {m.name: i for i, m in enumerate(self.modules)}
        self._cache: OrderedDict[tuple[str, str], dict[str, np.ndarray]] = OrderedDict()
        self._task_banks: OrderedDict[str, EmbeddingBank] = OrderedDict()
        self.task = task  # fingerprint of the table task this bank was fitted on, else None

    @classmethod
    def fit(cls, x: np.ndarray, names: Sequence[str] = EMBEDDING_MODULES, *, seed: int = 0) -> "EmbeddingBank":
        """Fit every module on ``x`` (N, F): one PCA shared by all ``pca<k>``, one draw per ``rff<D>``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2 or not np.all(np.isfinite(x)):
            raise ArgumentError(f"embedding fit data must be a finite (N >= 2, F) array, got shape {x.shape}")
        parsed = [(str(n), *parse_module_name(n, x.shape[1])) for n in names]
        mean = x.mean(0)
        _, s, vt = np.linalg.svd(x - mean, full_matrices=False)  # vt: (F, F)
        std = s / np.sqrt(len(x) - 1)  # per-component standard deviation
        std = np.where(std > 1e-6 * max(std[0], 1e-12), std, 1.0)  # leave null directions unscaled
        bandwidth = median_bandwidth(x, seed=seed) if any(k == "rff" for _, k, _ in parsed) else 1.0
        modules = []
        for i, (name, kind, size) in enumerate(parsed):
            if kind == "identity":
                modules.append(EmbeddingModule(name, kind, size))
            elif kind == "pca":  # whitened: every embedding feature has unit variance on the fit set
                w = (vt[:size].T / std[:size]).astype(np.float32)  # (F, k)
                modules.append(EmbeddingModule(name, kind, size, w, mean.astype(np.float32)))
            else:
                rng = np.random.default_rng([seed, i])  # one fixed stream per module
                w = (rng.standard_normal((x.shape[1], size)) / bandwidth).astype(np.float32)  # (F, D)
                b = rng.uniform(0.0, 2.0 * np.pi, size).astype(np.float32)  # (D,)
                modules.append(EmbeddingModule(name, kind, size, w, b))
        return cls(modules)

    @classmethod
    def fit_task(cls, x: np.ndarray, dims: dict[str, int], *, seed: int = 0, task: str | None = None
                 ) -> "EmbeddingBank":
        """Modules of the given names and output widths fitted on one table task's training
        samples ``x`` (N, F), any F (see the module docstring for what each means)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2 or not np.all(np.isfinite(x)):
            raise ArgumentError(f"embedding fit data must be a finite (N >= 2, F) array, got shape {x.shape}")
        n, f = x.shape
        rng = np.random.default_rng([seed, 17])
        fit = x if n <= _TASK_FIT_ROWS else x[np.sort(rng.choice(n, _TASK_FIT_ROWS, replace=False))]
        kinds = {name: parse_module_name(name, max(dims.values()))[0] for name in dims}
        mean = fit.mean(0)
        _, s, vt = np.linalg.svd(fit - mean, full_matrices=False)  # vt: (min(n, F), F)
        std = s / np.sqrt(len(fit) - 1)
        keep = std > 1e-6 * max(std[0] if len(std) else 0.0, 1e-12)  # real components only
        bandwidth = median_bandwidth(x, seed=seed) if "rff" in kinds.values() else 1.0
        modules = []
        for i, (name, size) in enumerate(dims.items()):
            kind = kinds[name]
            if kind == "identity":
                if f <= size:
                    w = np.eye(f, size, dtype=np.float32)  # (F, size): zero-pad
                else:
                    w = (np.random.default_rng([seed, i]).standard_normal((f, size)) / np.sqrt(f)).astype(np.float32)
                modules.append(EmbeddingModule(name, kind, size, w))
            elif kind == "pca":
                k = int(min(size, keep.sum()))
                w = np.zeros((f, size), dtype=np.float32)
                w[:, :k] = vt[:k].T / std[:k]
                modules.append(EmbeddingModule(name, kind, size, w, mean.astype(np.float32)))
            else:
                r = np.random.default_rng([seed, i])
                w = (r.standard_normal((f, size)) / bandwidth).astype(np.float32)
                b = r.uniform(0.0, 2.0 * np.pi, size).astype(np.float32)
                modules.append(EmbeddingModule(name, kind, size, w, b))
        return cls(modules, task=task)

    def for_task(self, task: Any) -> "EmbeddingBank":
        """The bank that embeds ``task``: this one for an image task, else this bank's modules
        fitted on the table task's training split (once per task and process)."""
        if getattr(task, "transform", None) is None:
            return self
        key = task.fingerprint()
        if self.task is not None:
            if self.task != key:
                raise ArgumentError(f"this embedding bank was fitted on task {self.task}, not on {key}")
            return self
        bank = self._task_banks.get(key)
        if bank is None:
            bank = EmbeddingBank.fit_task(task.samples("train")[0], self.dims, task=key)
            self._task_banks[key] = bank
            while len(self._task_banks) > _TASK_CACHE_SIZE:
                self._task_banks.popitem(last=False)
        return bank

    # -- lookup ----------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.modules)

    @property
    def dims(self) -> dict[str, int]:
        return {m.name: m.out_dim for m in self.modules}

    @property
    def max_dim(self) -> int:
        return max(m.out_dim for m in self.modules)

    def __getitem__(self, name: str) -> EmbeddingModule:
        try:
            return self.modules[self._index[name]]
        except KeyError:
            raise NotFoundError(f"embedding bank has no module {name!r}; it has {list(self.names)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def transform(self, x: np.ndarray, name: str) -> np.ndarray:
        """Module ``name`` applied to ``x`` (N, 64) -> (N, out_dim) float32."""
        return self[name](x)

    def fingerprint(self) -> str:
        """Stable hash of every module's parameters (16 hex chars)."""
        h = hashlib.sha256(b"nasdb-embeddings-v1")
        for m in self.modules:
            h.update(f"{m.name}:{m.kind}:{m.out_dim}".encode())
            for a in (m.weight, m.bias):
                if a is not None:
                    h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    # -- per-task features -----------------------------------------------------------------
    def task_features(self, task: Any, split: str) -> dict[str, np.ndarray]:
        """``{module: (n_split, out_dim) float32}`` for one split of a task, computed once."""
        bank = self.for_task(task)
        if bank is not self:
            return bank.task_features(task, split)
        key = (task.fingerprint(), split)
        feats = self._cache.get(key)
        if feats is None:
            x, _ = task.samples(split)
            feats = {m.name: m(x) for m in self.modules}
            self._cache[key] = feats
            while len(self._cache) > _TASK_CACHE_SIZE * 3:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return feats

    def task_table(self, task: Any, split: str, width: int) -> np.ndarray:
        """Every module's features of a split, zero-padded (or cut) to ``width``: (M, n, width)."""
        feats = self.task_features(task, split)
        out = np.zeros((len(self.modules), len(feats[self.names[0]]), width), dtype=np.float32)
        for m, name in enumerate(self.names):
            d = min(width, feats[name].shape[1])
            out[m, :, :d] = feats[name][:, :d]
        return out

    def __getstate__(self) -> dict:
        return {"modules": self.modules, "task": self.task}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["modules"], task=state.get("task"))

    def __repr__(self) -> str:
        return f"EmbeddingBank({', '.join(f'{m.name}:{m.out_dim}' for m in self.modules)})"


def suite_fit_data(suite: str = "digits") -> np.ndarray:
    """The distinct training images of a built-in suite (tasks share images; each counts once)."""
    from nasdb.tasks import builtin_task_names, load_builtin_task

    x = np.concatenate([load_builtin_task(n).x_train for n in builtin_task_names(suite)])  # (N, 64)
    return np.unique(x, axis=0)  # sorted rows: independent of task order


@lru_cache(maxsize=4)
def default_bank(suite: str = "digits", names: tuple[str, ...] = EMBEDDING_MODULES, seed: int = 0) -> EmbeddingBank:
    """The bank of the default space, fitted on a suite's training data once per process."""
    return EmbeddingBank.fit(suite_fit_data(suite), tuple(names), seed=seed)
