"""Search spaces: ordered categorical dimensions, one-hot encodings and their relaxation.

The default space is the paper's (task-aware-performance-prediction.md Sec. 3.4, 5.1):
an embedding-module choice (gamma), 7 parametrized layers over 12 base layers (alpha)
and 7 enable gates (beta), i.e. 7 + 7*12 + 7*2 = 105 encoding dimensions.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Sequence

import numpy as np

from nasdb.errors import ArgumentError, ConfigError, NotFoundError

LAYER_WIDTHS = (8, 16, 32, 64, 128, 256)
LAYER_ACTIVATIONS = ("relu", "tanh")
#: Embedding modules of the default space, cheapest first; cluster/child/_embeddings.py fits them.
EMBEDDING_MODULES = ("identity", "pca8", "pca16", "pca32", "rff64", "rff128", "rff256")
NUM_LAYERS = 7
GATE_CHOICES = ("off", "on")


@dataclass(frozen=True)
class Dimension:
    """One categorical design choice, e.g. the base layer of parametrized layer 3."""

    name: str
    choices: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("a dimension needs a non-empty name")
        if len(self.choices) < 2:
            raise ConfigError(f"dimension {self.name!r} needs at least 2 choices, got {self.choices!r}")
        if len(set(self.choices)) != len(self.choices):
            raise ConfigError(f"dimension {self.name!r} has repeated choices: {self.choices!r}")

    @property
    def size(self) -> int:
        return len(self.choices)


class SearchSpace:
    """An ordered list of named categorical dimensions.

    An architecture is a vector of choice indices, one per dimension. Its encoding ``u`` is
    the concatenation of one-hot blocks (length ``encoding_size``); a relaxed architecture
    is a softmax per block over real-valued logits, and ``discretize`` takes the argmax.
    """

    def __init__(self, name: str, dimensions: Sequence[Dimension]):
        if not dimensions:
            raise ArgumentError(f"search space {name!r} needs at least one dimension")
        names = [d.name for d in dimensions]
        if len(set(names)) != len(names):
            raise ArgumentError(f"search space {name!r} has repeated dimension names: {names}")
        self.name = name
        self.dimensions = tuple(dimensions)

    # -- shape -------------------------------------------------------------------------
    @property
    def num_dimensions(self) -> int:
        return len(self.dimensions)

    @cached_property
    def sizes(self) -> np.ndarray:
        return np.array([d.size for d in self.dimensions], dtype=np.int64)

    @cached_property
    def offsets(self) -> np.ndarray:
        """Start of each dimension's block in the encoding."""
        return np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    @property
    def encoding_size(self) -> int:
        return int(self.sizes.sum())

    @cached_property
    def blocks(self) -> tuple[slice, ...]:
        return tuple(slice(int(o), int(o + s)) for o, s in zip(self.offsets, self.sizes))

    def index(self, name: str) -> int:
        for i, d in enumerate(self.dimensions):
            if d.name == name:
                return i
        raise NotFoundError(f"search space {self.name!r} has no dimension {name!r}")

    # -- validation --------------------------------------------------------------------
    def validate(self, architecture: Iterable[int]) -> np.ndarray:
        """Return ``architecture`` as an int array, or raise ValueError naming the bad dimension."""
        try:
            arch = np.asarray(list(architecture))
        except TypeError as e:
            raise ArgumentError(f"an architecture must be a sequence of choice indices: {e}") from None
        if arch.ndim != 1 or arch.shape[0] != self.num_dimensions:
            raise ArgumentError(
                f"an architecture of space {self.name!r} has {self.num_dimensions} choice indices, "
                f"got shape {tuple(arch.shape)}"
            )
        if arch.dtype.kind == "f":
            if not np.all(np.isfinite(arch)) or not np.all(arch == np.round(arch)):
                bad = int(np.flatnonzero(~np.isfinite(arch) | (arch != np.round(arch)))[0])
                raise ArgumentError(
                    f"dimension {self.dimensions[bad].name!r}: choice index must be an integer, got {arch[bad]!r}"
                )
        elif arch.dtype.kind not in "iu":
            raise ArgumentError(f"choice indices must be integers, got dtype {arch.dtype}")
        arch = arch.astype(np.int64)
        bad = np.flatnonzero((arch < 0) | (arch >= self.sizes))
        if bad.size:
            d = self.dimensions[int(bad[0])]
            raise ArgumentError(
                f"dimension {d.name!r}: choice index {int(arch[bad[0]])} is out of range [0, {d.size})"
            )
        return arch

    def _check_encoding(self, u: np.ndarray, what: str) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        if u.shape[-1:] != (self.encoding_size,):
            raise ArgumentError(
                f"{what} of space {self.name!r} has {self.encoding_size} entries, got shape {tuple(u.shape)}"
            )
        if not np.all(np.isfinite(u)):
            flat = np.argwhere(~np.isfinite(u))[0]
            position = int(flat[-1])
            dim = int(np.searchsorted(self.offsets, position, side="right") - 1)
            raise ArgumentError(
                f"dimension {self.dimensions[dim].name!r}: {what} holds a non-finite value at position {position}"
            )
        return u

    # -- encodings ---------------------------------------------------------------------
    def encode(self, architecture: Iterable[int]) -> np.ndarray:
        """One-hot encoding ``u`` of a discrete architecture, shape ``(encoding_size,)``."""
        arch = self.validate(architecture)
        u = np.zeros(self.encoding_size, dtype=np.float32)
        u[self.offsets + arch] = 1.0
        return u

    def encode_many(self, architectures: np.ndarray) -> np.ndarray:
        """One-hot encodings of a batch, shape ``(N, encoding_size)``."""
        archs = np.asarray(architectures)
        if archs.ndim != 2:
            raise ArgumentError(f"expected a (N, {self.num_dimensions}) array of architectures, got {archs.shape}")
        for a in archs:
            self.validate(a)
        u = np.zeros((archs.shape[0], self.encoding_size), dtype=np.float32)
        u[np.arange(archs.shape[0])[:, None], self.offsets[None, :] + archs.astype(np.int64)] = 1.0
        return u

    def decode(self, u: np.ndarray) -> np.ndarray:
        """Choice indices of a one-hot encoding; raises if a block is not exactly one-hot."""
        u = self._check_encoding(u, "a one-hot encoding")
        for d, block in zip(self.dimensions, self.blocks):
            b = u[block]
            if not (np.all((b == 0) | (b == 1)) and b.sum() == 1):
                raise ArgumentError(f"dimension {d.name!r}: block is not one-hot: {b.tolist()}")
        return self.discretize(u)

    def relax(self, logits: np.ndarray) -> np.ndarray:
        """Continuous relaxation (Sec. 3.4, Eq. 4): a softmax per block, shape preserved."""
        logits = self._check_encoding(logits, "a logit vector")
        out = np.empty_like(logits)
        for block in self.blocks:
            z = logits[..., block]
            z = np.exp(z - z.max(axis=-1, keepdims=True))
            out[..., block] = z / z.sum(axis=-1, keepdims=True)
        return out

    def discretize(self, u: np.ndarray) -> np.ndarray:
        """Argmax per block of a continuous encoding: the nearest discrete architecture."""
        u = self._check_encoding(u, "a continuous encoding")
        return np.stack([np.argmax(u[..., block], axis=-1) for block in self.blocks], axis=-1).astype(np.int64)

    def sample(self, n: int, seed: int | np.random.Generator) -> np.ndarray:
        """``n`` architectures drawn uniformly at random, shape ``(n, num_dimensions)``."""
        if n < 0:
            raise ArgumentError(f"number of architectures must be >= 0, got {n}")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return (rng.random((n, self.num_dimensions)) * self.sizes).astype(np.int64)

    def describe(self, architecture: Iterable[int]) -> dict[str, str]:
        """Human-readable ``{dimension: choice}`` view of an architecture."""
        arch = self.validate(architecture)
        return {d.name: d.choices[i] for d, i in zip(self.dimensions, arch)}

    # -- serialization -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dimensions": [{"name": d.name, "choices": list(d.choices)} for d in self.dimensions]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "SearchSpace":
        try:
            dims = [Dimension(str(d["name"]), tuple(str(c) for c in d["choices"])) for d in spec["dimensions"]]
            return cls(str(spec["name"]), dims)
        except (KeyError, TypeError) as e:
            raise ArgumentError(f"not a search space spec (missing or malformed {e})") from None

    @classmethod
    def from_json(cls, text: str) -> "SearchSpace":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ArgumentError(f"search space JSON is malformed: {e}") from None

    @cached_property
    def space_id(self) -> str:
        """Stable id: a hash of the canonical JSON spec, so equal specs share one id."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.space_id)

    def __repr__(self) -> str:
        return f"SearchSpace({self.name!r}, {self.num_dimensions} dimensions, {self.encoding_size} encoding dims)"


def layer_choices() -> tuple[str, ...]:
    """The 12 base layers of a parametrized layer, named ``<activation><width>``."""
    return tuple(f"{act}{w}" for w in LAYER_WIDTHS for act in LAYER_ACTIVATIONS)


def parse_layer_choice(choice: str) -> tuple[str, int]:
    """``'relu64' -> ('relu', 64)``."""
    for act in LAYER_ACTIVATIONS:
        if choice.startswith(act):
            return act, int(choice[len(act):])
    raise ArgumentError(f"not a base-layer choice: {choice!r}")


def default_space(num_layers: int = NUM_LAYERS, embeddings: Sequence[str] = EMBEDDING_MODULES) -> SearchSpace:
    """The paper's space: gamma (embedding), alpha_1..alpha_L (base layer), beta_1..beta_L (gate)."""
    dims = [Dimension("embedding", tuple(embeddings))]
    dims += [Dimension(f"layer{j}", layer_choices()) for j in range(1, num_layers + 1)]
    dims += [Dimension(f"enable{j}", GATE_CHOICES) for j in range(1, num_layers + 1)]
    return SearchSpace("ffnn-default", dims)


def unique_rows(rows: Any, *, return_index: bool = False, return_inverse: bool = False,
                return_counts: bool = False):
    """``np.unique(rows, axis=0, ...)`` of an integer (N, D) array (architectures, with seeds or not):
    the same outputs, in the same order, ~15x faster.

    numpy sorts rows as opaque byte records; here each row becomes one int64 in mixed radix
    (most significant column first, so the order is the rows' lexicographic order) and the keys
    are sorted instead. An imported benchmark task has ~250k rows. Rows whose key would not fit
    in an int64 fall back to numpy.
    """
    a = np.asarray(rows)
    fits = a.ndim == 2 and a.dtype.kind in "iub" and a.dtype != np.uint64 and len(a) > 0  # uint64 may not fit
    if fits:
        a = a.astype(np.int64, copy=False)
        low = a.min(axis=0)
        span = (a.max(axis=0) - low + 1).astype(object)  # Python ints: the product cannot overflow
        fits = np.prod(span) < 2 ** 63
    if not fits:
        return np.unique(a, axis=0, return_index=return_index, return_inverse=return_inverse,
                         return_counts=return_counts)
    key = np.zeros(len(a), dtype=np.int64)
    for j in range(a.shape[1]):
        key = key * int(span[j]) + (a[:, j] - low[j])
    _, first, inverse, counts = np.unique(key, return_index=True, return_inverse=True, return_counts=True)
    out = (a[first],) + ((first,) if return_index else ()) + ((inverse.reshape(-1),) if return_inverse else ()) \
        + ((counts,) if return_counts else ())
    return out[0] if len(out) == 1 else out
