"""Frozen embedding modules of the child network, fitted once on the suite's training data.

The paper's child models start with an embedding module soft-selected among pre-trained
ones (task-aware-performance-prediction.md Sec. 3.4, "it speeds up the training time for the
child models and improves their quality especially when the training set is small"). Ours
are fitted on the 8x8 digits suite: ``identity`` (64), ``pca{k}`` (whitened PCA) and
``rff{D}`` (random Fourier features of a Gaussian kernel, bandwidth by the median heuristic).

Modules are frozen, so a task's embedded features are computed once per (task, module)
(:meth:`EmbeddingBank.task_features`) and the child networks train on those.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from nasdb.space import EMBEDDING_MODULES

_NAME_RE = re.compile(r"^(identity|pca(\d+)|rff(\d+))$")
_TASK_CACHE_SIZE = 32  # tasks whose embedded features a bank keeps (a few MB each)


@dataclass(frozen=True, eq=False)
class EmbeddingModule:
    """One frozen map from the 64 input features to ``out_dim`` features: ``kind`` in
    identity | pca | rff. pca: ``(x - mean) @ weight``; rff: ``sqrt(2) cos(x @ weight + bias)``."""

    name: str
    kind: str
    out_dim: int
    weight: np.ndarray | None = None  # (64, out_dim) float32
    bias: np.ndarray | None = None  # pca: mean (64,); rff: phase (out_dim,)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)  # (N, 64)
        if self.kind == "identity":
            return np.ascontiguousarray(x)
        if self.kind == "pca":
            return ((x - self.bias) @ self.weight).astype(np.float32)  # (N, k)
        return (np.sqrt(2.0) * np.cos(x @ self.weight + self.bias)).astype(np.float32)  # (N, D)


def parse_module_name(name: str, input_dim: int = 64) -> tuple[str, int]:
    """``'pca16' -> ('pca', 16)``; ValueError for names that are not identity/pca<k>/rff<D>."""
    m = _NAME_RE.match(str(name))
    if not m:
        raise ValueError(f"unknown embedding module {name!r}: expected 'identity', 'pca<k>' or 'rff<D>'")
    if m.group(1) == "identity":
        return "identity", input_dim
    kind, size = ("pca", int(m.group(2))) if m.group(2) else ("rff", int(m.group(3)))
    if size < 1 or (kind == "pca" and size > input_dim):
        raise ValueError(f"embedding module {name!r}: size must be in [1, {input_dim}] for pca, >= 1 for rff")
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

    def __init__(self, modules: Sequence[EmbeddingModule]):
        if not modules:
            raise ValueError("an embedding bank needs at least one module")
        names = [m.name for m in modules]
        if len(set(names)) != len(names):
            raise ValueError(f"repeated embedding module names: {names}")
        self.modules = tuple(modules)
        self._index = {m.name: i for i, m in enumerate(self.modules)}
        self._cache: OrderedDict[tuple[str, str], dict[str, np.ndarray]] = OrderedDict()

    @classmethod
    def fit(cls, x: np.ndarray, names: Sequence[str] = EMBEDDING_MODULES, *, seed: int = 0) -> "EmbeddingBank":
        """Fit every module on ``x`` (N, F): one PCA shared by all ``pca<k>``, one draw per ``rff<D>``."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2 or not np.all(np.isfinite(x)):
            raise ValueError(f"embedding fit data must be a finite (N >= 2, F) array, got shape {x.shape}")
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
            raise KeyError(f"embedding bank has no module {name!r}; it has {list(self.names)}") from None

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
        return {"modules": self.modules}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["modules"])

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
