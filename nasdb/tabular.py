"""Tasks from any table: column checks and the versioned preprocessing fitted on a train split.

A user table (CSV, Parquet, a pandas DataFrame or a pyarrow Table) has numeric, boolean and
categorical (text) columns, may miss values, and may be 1 to 2,000 columns wide. The child
networks and the meta-features read numbers, so every table task carries a
:class:`TableTransform` that turns the raw columns into a float matrix. It is fitted on the
task's TRAIN split only (no statistic of val/test leaks into training) and is stored with the
task as versioned JSON, so the same map applies to any later table with the same columns
(``nasdb suggest --data FILE``).

The encoding (``TRANSFORM_VERSION`` 1):

* numeric and boolean columns (booleans as 0/1): missing values are filled with the train
  median; a 0/1 "was missing" indicator column follows when the train split had any missing
  value in that column; then standardized with the train mean and standard deviation (a
  constant column becomes 0) and clipped to [-10, 10] so that one outlier cannot dominate.
* categorical columns with at most ``ONEHOT_MAX`` (10) distinct train values: one-hot over the
  train values; a missing or unseen value is all zeros.
* categorical columns with more distinct values: the feature-hashing trick (Weinberger et
  al., 2009) into ``HASH_BUCKETS`` (8) one-hot buckets by CRC-32 of the UTF-8 text. It is
  target-free (no label statistic, so nothing leaks) and stateless (no vocabulary to store,
  unseen values still land in a bucket); colliding values share a bucket.

Integer columns count as numeric (a code column with a few values is read as a number).
A text column whose non-missing values are mostly numbers but not all (a stray ``"?"`` in a
numeric column) is refused as mixed rather than silently made categorical.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nasdb.errors import InvalidTaskError

TRANSFORM_VERSION = 1
MIN_ROWS = 50
MAX_FEATURES = 2000
MAX_CLASSES = 100
ONEHOT_MAX = 10
HASH_BUCKETS = 8
CLIP = 10.0
MAX_ENCODED_WIDTH = 8192  # columns after encoding; beyond it a table is refused, not truncated
_NUMBER = r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$"


def _col(name: str) -> str:
    return f"column {name!r}"


def as_arrow(where: str, data: Any) -> pa.Table:
    """A pyarrow Table from a Table, a pandas DataFrame or a mapping of column -> values."""
    if isinstance(data, pa.Table):
        return data
    try:
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            return pa.Table.from_pandas(data, preserve_index=False)
        if isinstance(data, dict):
            return pa.table({str(k): pa.array(v) for k, v in data.items()})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:  # mixed types in an object column
        m = re.search(r"column (\S+)", str(e))
        what = f"column {m.group(1)!r}" if m else "a column"
        raise InvalidTaskError(f"{where}: {what} mixes types ({' '.join(str(e).split())[:160]})") from None
    raise InvalidTaskError(f"{where}: expected a pyarrow Table, a pandas DataFrame or a dict of columns, "
                           f"got {type(data).__name__}")


def _first_row(mask: Any) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def _finite_and_present(col: pa.ChunkedArray) -> bool:
    """Whether a float column has no infinity and a value that is not NaN, in one pass without a
    copy (min/max skip nulls and NaN, and are NaN only when every value is): the common case of
    :func:`column_kind`'s numeric check, whose slow path finds the row to name."""
    if pa.types.is_decimal(col.type) or col.type == pa.float16():
        return False  # the slow path (decimals have no infinity, but their cast is the reference)
    lo, hi = (v.as_py() for v in pc.min_max(col).values())
    return lo is not None and not np.isnan(lo) and not np.isinf(lo) and not np.isinf(hi)


def _mostly_numbers(col: pa.ChunkedArray) -> bool:
    """Whether a text column is refused as mixed: some but not all of its values are numbers, and
    at least half are (counted with repeats). Each distinct value is matched once
    (``value_counts``), not each row: the same decision as matching every row, for far less work."""
    counts = pc.value_counts(col)
    values, n = counts.field("values"), counts.field("counts").to_numpy(zero_copy_only=False)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    numeric = pc.match_substring_regex(values, _NUMBER).fill_null(False).to_numpy(zero_copy_only=False)
    total, numbers = int(n[valid].sum()), int(n[numeric].sum())
    return 0 < numbers < total and numbers / total >= 0.5


def column_kind(where: str, table: pa.Table, name: str) -> str:
    """``numeric`` | ``boolean`` | ``categorical`` of one raw column; InvalidTaskError naming it
    for an all-missing column, infinite values, mixed types, non-UTF-8 text or another type."""
    col = table.column(name)
    t = col.type
    if pa.types.is_dictionary(t):
        col, t = col.cast(t.value_type), t.value_type
    if pa.types.is_null(t) or col.null_count == len(col):
        raise InvalidTaskError(f"{where}: {_col(name)} is all missing")
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):  # no infinities, no NaN, and not all missing (checked above)
        return "numeric"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        if _finite_and_present(col):
            return "numeric"
        x = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        inf = np.isinf(x)
        if inf.any():
            r = _first_row(inf)
            raise InvalidTaskError(f"{where}: {_col(name)} has an infinite value ({x[r]}) at row {r}")
        if np.isnan(x).all():
            raise InvalidTaskError(f"{where}: {_col(name)} is all missing")
        return "numeric"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        for r, v in enumerate(col.to_pylist()):
            if v is not None:
                try:
                    v.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidTaskError(f"{where}: {_col(name)} has non-UTF-8 text at row {r}") from None
        raise InvalidTaskError(f"{where}: {_col(name)} holds binary data, not text")
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        if not _mostly_numbers(col):
            return "categorical"
        valid = col.drop_null()  # a mixed column: its first text value in row order, for the message
        numeric = pc.match_substring_regex(valid, _NUMBER).to_numpy(zero_copy_only=False)
        if numeric.any() and not numeric.all() and numeric.mean() >= 0.5:
            text = valid[int(np.argmin(numeric))].as_py()
            raise InvalidTaskError(f"{where}: {_col(name)} mixes numbers and text (e.g. {text!r}); "
                                   f"fix or blank the text values")
        return "categorical"
    raise InvalidTaskError(f"{where}: {_col(name)} has unsupported type {t} (use numbers, booleans or text)")


def check_table(where: str, table: pa.Table, label: str) -> dict[str, str]:
    """Check a raw table against the rules of a table task; ``{feature column: kind}`` in order."""
    cols = table.column_names
    if label not in cols:
        shown = ", ".join(map(repr, cols[:12])) + (f", ... ({len(cols)} in all)" if len(cols) > 12 else "")
        raise InvalidTaskError(f"{where}: label column {label!r} not found; available columns: {shown}")
    dup = sorted({c for c in cols if cols.count(c) > 1})
    if dup:
        raise InvalidTaskError(f"{where}: column {dup[0]!r} appears more than once")
    if table.num_rows < MIN_ROWS:
        raise InvalidTaskError(f"{where}: {table.num_rows} rows; a table task needs at least {MIN_ROWS}")
    features = [c for c in cols if c != label]
    if not 1 <= len(features) <= MAX_FEATURES:
        raise InvalidTaskError(f"{where}: {len(features)} feature columns besides label {label!r}; "
                               f"a table task takes 1 to {MAX_FEATURES}")
    y = table.column(label)
    if y.null_count == len(y):
        raise InvalidTaskError(f"{where}: label column {label!r} is all missing")
    n_classes = len(pc.unique(y.drop_null()))
    if n_classes < 2:
        raise InvalidTaskError(f"{where}: label column {label!r} is constant ({y.drop_null()[0].as_py()!r}); "
                               f"a task needs at least 2 classes")
    if n_classes > MAX_CLASSES:
        raise InvalidTaskError(f"{where}: label column {label!r} has {n_classes} distinct values; "
                               f"a task takes at most {MAX_CLASSES} classes")
    return {c: column_kind(where, table, c) for c in features}


# -- the transform ------------------------------------------------------------------------
@dataclass(frozen=True)
class ColumnTransform:
    """How one raw column becomes output columns (see the module docstring)."""

    name: str
    kind: str  # numeric | onehot | hash
    fill: float = 0.0  # numeric: train median
    mean: float = 0.0
    scale: float = 1.0
    indicator: bool = False  # numeric: a "was missing" column follows
    categories: tuple[str, ...] = ()  # onehot: train values in sorted order

    @property
    def width(self) -> int:
        if self.kind == "numeric":
            return 1 + int(self.indicator)
        return len(self.categories) if self.kind == "onehot" else HASH_BUCKETS

    def output_names(self) -> list[str]:
        if self.kind == "numeric":
            return [self.name] + ([f"{self.name}__missing"] if self.indicator else [])
        if self.kind == "onehot":
            return [f"{self.name}={c}" for c in self.categories]
        return [f"{self.name}#hash{b}" for b in range(HASH_BUCKETS)]


def _numbers(col: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN


def _texts(col: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return col if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) else col.cast(pa.string())


def _hash_buckets(col: pa.ChunkedArray) -> np.ndarray:
    """Bucket of each value, -1 for missing: CRC-32 of the UTF-8 text, computed once per distinct value."""
    enc = pc.dictionary_encode(col).combine_chunks()
    lut = np.array([zlib.crc32(v.encode()) % HASH_BUCKETS for v in enc.dictionary.to_pylist()] + [-1],
                   dtype=np.int64)
    idx = enc.indices.fill_null(len(lut) - 1).to_numpy(zero_copy_only=False)
    return lut[idx]


@dataclass(frozen=True)
class TableTransform:
    """The fitted, versioned preprocessing of one table task: raw columns -> float32 matrix."""

    label: str
    columns: tuple[ColumnTransform, ...]
    version: int = TRANSFORM_VERSION

    @classmethod
    def fit(cls, where: str, table: pa.Table, label: str, kinds: dict[str, str], train_rows: np.ndarray
            ) -> "TableTransform":
        """Fit on ``table.take(train_rows)`` only; ``kinds`` from :func:`check_table`."""
        train = table.take(pa.array(train_rows))
        out = []
        for name, kind in kinds.items():
            col = train.column(name)
            if kind in ("numeric", "boolean"):
                x = _numbers(col)
                miss = np.isnan(x)
                if miss.all():
                    raise InvalidTaskError(f"{where}: {_col(name)} is all missing in the train split")
                fill = float(np.median(x[~miss]))
                x = np.where(miss, fill, x)
                std = float(x.std())
                out.append(ColumnTransform(name, "numeric", fill, float(x.mean()), std if std > 1e-12 else 1.0,
                                           bool(miss.any())))
                continue
            values = pc.unique(_texts(col).drop_null()).to_pylist()
            if len(values) <= ONEHOT_MAX:
                out.append(ColumnTransform(name, "onehot", categories=tuple(sorted(values))))
            else:
                out.append(ColumnTransform(name, "hash"))
        t = cls(label, tuple(out))
        if t.width > MAX_ENCODED_WIDTH:
            raise InvalidTaskError(f"{where}: the table encodes to {t.width} columns, more than {MAX_ENCODED_WIDTH}; "
                                   f"drop or merge wide categorical columns")
        return t

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    @property
    def feature_columns(self) -> list[str]:
        return [c.name for c in self.columns]

    def output_names(self) -> list[str]:
        return [n for c in self.columns for n in c.output_names()]

    def apply(self, table: pa.Table, where: str = "table") -> np.ndarray:
        """The encoded features (n, width) float32 of a table with this transform's feature columns
        (the label column and nothing else may be extra; a missing or mistyped column is named)."""
        have = set(table.column_names)
        missing = [c for c in self.feature_columns if c not in have]
        if missing:
            raise InvalidTaskError(f"{where}: column {missing[0]!r} of the task is missing "
                                   f"({len(missing)} missing in all)")
        extra = [c for c in table.column_names if c not in set(self.feature_columns) | {self.label}]
        if extra:
            raise InvalidTaskError(f"{where}: column {extra[0]!r} is not a column of the task")
        out = np.zeros((table.num_rows, self.width), dtype=np.float32)
        j = 0
        for c in self.columns:
            col = table.column(c.name)
            t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
            if c.kind == "numeric":
                if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
                        or pa.types.is_boolean(t) or pa.types.is_null(t)):
                    raise InvalidTaskError(f"{where}: {_col(c.name)} must be numeric for this task, got {t}")
                x = _numbers(col)
                if np.isinf(x).any():
                    r = _first_row(np.isinf(x))
                    raise InvalidTaskError(f"{where}: {_col(c.name)} has an infinite value at row {r}")
                miss = np.isnan(x)
                out[:, j] = np.clip((np.where(miss, c.fill, x) - c.mean) / c.scale, -CLIP, CLIP)
                if c.indicator:
                    out[:, j + 1] = miss
            elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
                raise InvalidTaskError(f"{where}: {_col(c.name)} has non-UTF-8 text")
            elif c.kind == "onehot":
                idx = pc.index_in(_texts(col), value_set=pa.array(list(c.categories), pa.string()))
                idx = idx.fill_null(-1).to_numpy(zero_copy_only=False)
                rows = np.flatnonzero(idx >= 0)
                out[rows, j + idx[rows]] = 1.0
            else:
                b = _hash_buckets(_texts(col))
                rows = np.flatnonzero(b >= 0)
                out[rows, j + b[rows]] = 1.0
            j += c.width
        return out

    # -- serialization ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "label": self.label, "onehot_max": ONEHOT_MAX,
                "hash_buckets": HASH_BUCKETS, "clip": CLIP,
                "columns": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(c).items()}
                            for c in self.columns]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TableTransform":
        if d.get("version") != TRANSFORM_VERSION:
            raise InvalidTaskError(f"table transform version {d.get('version')!r} is not supported "
                                   f"(this nasdb reads version {TRANSFORM_VERSION})")
        cols = tuple(ColumnTransform(**{**c, "categories": tuple(c.get("categories", ()))}) for c in d["columns"])
        return cls(d["label"], cols, d["version"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


def raw_fingerprint(table: pa.Table, columns: Sequence[str]) -> str:
    """Stable 16-hex hash of the raw values of ``columns`` (names, kinds, values, missing cells)."""
    h = hashlib.sha256(b"nasdb-raw-table-v1")
    for name in columns:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        h.update(f"{name}:{table.num_rows}:".encode())
        t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_boolean(t):
            h.update(b"n")
            h.update(np.ascontiguousarray(_numbers(col)).tobytes())
        else:
            h.update(b"s")
            h.update(np.ascontiguousarray(col.is_null().to_numpy(zero_copy_only=False)).tobytes())
            arr = _texts(col).fill_null("").cast(pa.large_string()).combine_chunks()
            offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset: arr.offset + len(arr) + 1]
            h.update((offsets - offsets[0]).tobytes())
            h.update(memoryview(arr.buffers()[2])[offsets[0]: offsets[-1]] if len(arr) else b"")
    return h.hexdigest()[:16]


__all__ = ["CLIP", "HASH_BUCKETS", "MAX_CLASSES", "MAX_FEATURES", "MIN_ROWS", "ONEHOT_MAX", "TRANSFORM_VERSION",
           "ColumnTransform", "TableTransform", "as_arrow", "check_table", "column_kind", "raw_fingerprint"]
