"""Tables sent for a suggestion (``nasdb suggest --data``, POST /v1/suggest and /v1/predict), read
and checked like ``nasdb tasks add`` and encoded into the samples the predictor's meta-features read.

A table is CSV text or JSON ``{"columns": [...], "rows": [[...], ...], "label": COL}``. The
whole table is checked by the rules of a table task (nasdb/tabular.py ``check_table``: label
missing, constant or above 100 classes, fewer than 50 rows, an all-missing column, mixed types,
infinite values, non-UTF-8 text: an InvalidTaskError naming the column). Only then are the
rows cut to ``max_rows`` (a seeded subset, stratified by label, every class kept with at least 3
rows) before the task's TableTransform is fitted on its train split and applied: the predictor
reads at most a few thousand rows of a task (predictor/data.py ``meta_rows``), so encoding
50,000 rows would only cost time. A table of exactly 64 numeric columns in [0, 1] is an image
task, as for ``tasks add``.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from nasdb.errors import InvalidTaskError
from predictor.data import fold_labels

#: Rows of a sent table that are encoded (their train split, 60 %, covers the default sample budget).
MAX_ENCODED_ROWS = 8192
REQUEST_TASK = "request_table"


#: Bytes of CSV text parsed at a time. Arrow's default (1 MiB) cuts a 145 MB upload into 146 chunks
#: per column, and every later step pays per chunk; the table's types and values are the same for
#: any block size (a column's type is re-inferred when a later block needs it).
CSV_BLOCK_BYTES = 4 << 20
#: Bytes of a streamed body kept to name the columns of a parse error (the header row).
HEAD_BYTES = 1 << 20


class BodyStream:
    """A request body as a file that the CSV reader reads in one thread while the event loop still
    feeds it the body's chunks (``feed``, then ``end``): parsing overlaps the upload, and the body
    is never joined into one copy. ``read(n)`` blocks until ``n`` bytes or the end are in."""

    closed = False

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._cond = threading.Condition()
        self._ended, self._error = False, None
        self.size, self.blank, self.head = 0, True, b""  # bytes in; only whitespace so far; the first line

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        with self._cond:
            self._chunks.append(chunk)
            self.size += len(chunk)
            self.blank = self.blank and chunk.isspace()
            if b"\n" not in self.head and len(self.head) < HEAD_BYTES:
                self.head += chunk
            self._cond.notify()

    def end(self, error: BaseException | None = None) -> None:
        """No more chunks; with ``error``, the reader's next read raises it (stops the parse)."""
        with self._cond:
            self._ended, self._error = True, error
            self._cond.notify()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, n: int = -1) -> bytes:
        out, have = [], 0
        with self._cond:
            while n < 0 or have < n:
                while not self._chunks and not self._ended:
                    self._cond.wait()
                if self._error is not None:
                    raise OSError(f"the body was not read: {self._error}")
                if not self._chunks:
                    break
                chunk = self._chunks.popleft()
                if n >= 0 and have + len(chunk) > n:
                    self._chunks.appendleft(chunk[n - have:])
                    chunk = chunk[:n - have]
                out.append(chunk)
                have += len(chunk)
        return b"".join(out)


def table_from_csv(data: bytes | BodyStream, where: str = "body") -> pa.Table:
    """A pyarrow Table from CSV bytes (header row first), or from a body still arriving;
    InvalidTaskError naming the column when unreadable."""
    import pyarrow.csv as pacsv

    stream = isinstance(data, BodyStream)
    if not stream and (not data or data.isspace()):  # not data.strip(): no copy of the body
        raise InvalidTaskError(f"{where}: the CSV is empty")
    try:
        table = pacsv.read_csv(pa.PythonFile(data, mode="r") if stream else pa.BufferReader(data),
                               read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                               convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    except (pa.ArrowException, OSError) as e:
        if stream and data.blank and not data.failed:
            raise InvalidTaskError(f"{where}: the CSV is empty") from None
        msg = " ".join(str(e).split())
        m = re.search(r"CSV column #(\d+)", msg)
        if m:
            first = data.head if stream else data
            header = first.split(b"\n", 1)[0].decode("utf-8", "replace").rstrip("\r").split(",")
            i = int(m.group(1))
            name = header[i].strip().strip('"') if i < len(header) else f"#{i}"
            utf8 = "UTF8" in msg or "UTF-8" in msg
            raise InvalidTaskError(f"{where}: column {name!r} " + ("has non-UTF-8 text" if utf8 else
                                                                    f"cannot be read ({msg[:160]})")) from None
        raise InvalidTaskError(f"{where}: cannot read the CSV: {msg[:200]}") from None
    if stream and data.blank:
        raise InvalidTaskError(f"{where}: the CSV is empty")
    return table


def table_from_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]], where: str = "body") -> pa.Table:
    """A pyarrow Table from column names and row lists (JSON values); InvalidTaskError naming the column."""
    width = len(columns)
    dup = sorted({c for c in columns if list(columns).count(c) > 1})
    if dup:
        raise InvalidTaskError(f"{where}: column {dup[0]!r} appears more than once in `columns`")
    for r, row in enumerate(rows):
        if len(row) != width:
            raise InvalidTaskError(f"{where}: rows[{r}] has {len(row)} values for {width} columns")
    out = {}
    for c, name in enumerate(columns):
        values = [row[c] for row in rows]
        if any(isinstance(v, float) and not np.isfinite(v) for v in values):
            r = next(i for i, v in enumerate(values) if isinstance(v, float) and not np.isfinite(v))
            raise InvalidTaskError(f"{where}: column {name!r} has a non-finite value ({values[r]}) at row {r}")
        kinds = {type(v) for v in values if v is not None}
        if kinds & {str} and kinds - {str}:
            text = next(v for v in values if isinstance(v, str))
            raise InvalidTaskError(f"{where}: column {name!r} mixes numbers and text (e.g. {text!r})")
        try:
            out[name] = pa.array(values, type=pa.float64() if kinds <= {int, float} and kinds else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as e:
            msg = " ".join(str(e).split())[:120]
            raise InvalidTaskError(f"{where}: column {name!r} cannot be read ({msg})") from None
    return pa.table(out)


def _stratified_rows(labels: pa.ChunkedArray, max_rows: int, seed: int = 0) -> np.ndarray | None:
    """Row indices of a seeded, label-stratified subset of about ``max_rows`` rows (None: keep them all)."""
    n = len(labels)
    if n <= max_rows:
        return None
    import pyarrow.compute as pc

    codes = pc.dictionary_encode(labels).combine_chunks().indices.to_numpy(zero_copy_only=False)
    codes = np.where(labels.is_null().to_numpy(zero_copy_only=False), -1, codes)
    rng, frac, keep = np.random.default_rng(seed), max_rows / n, []
    for k in np.unique(codes):
        idx = np.flatnonzero(codes == k)
        take = min(len(idx), max(3, int(round(len(idx) * frac))))
        keep.append(rng.choice(idx, size=take, replace=False))
    return np.sort(np.concatenate(keep))


def task_from_request(table: pa.Table, label: str, *, where: str = "body", max_rows: int = MAX_ENCODED_ROWS,
                      name: str = REQUEST_TASK) -> Any:
    """The task of a sent table: checked whole, cut to ``max_rows`` rows, then encoded (nasdb.tasks)."""
    from nasdb import tabular

    tabular.check_table(where, table, label)  # every row: the column named on a bad one
    return _task(_kept_rows(table, label, max_rows), label, where, name)


def request_samples(table: pa.Table, label: str, config: Any, *, where: str = "body",
                    max_rows: int = MAX_ENCODED_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """The samples of a sent table that a predictor's meta-features read: the same arrays as
    ``meta_rows(*meta_samples(task_from_request(table, label), config), config)``, with the same
    refusals, but only those rows are encoded (a few hundred of a wide table's train split; the
    transform is still fitted on the whole train split, and every row is still checked)."""
    from nasdb import tabular
    from nasdb.tasks import fit_table
    from predictor.data import budget_rows, meta_budget, meta_rows

    tabular.check_table(where, table, label)  # every row: the column named on a bad one
    table = _kept_rows(table, label, max_rows)
    if not _image_shaped(table, label):
        fitted = fit_table(REQUEST_TASK, table, label, where=where)
        if _encodes_finite(fitted.transform):  # else a row may encode to NaN: the Task below names it
            pick = budget_rows(len(fitted.splits["train"]), meta_budget(config, fitted.transform.width))
            x, y = fitted.encode("train", pick)
            return x, fold_labels(y, config.max_classes)
    task = _task(table, label, where, REQUEST_TASK)  # an image task (64 columns) is cheap to build whole
    return meta_rows(*meta_samples(task, config), config)


def _encodes_finite(transform: Any) -> bool:
    """Whether every checked row encodes to finite numbers, so that a Task of them is never refused
    for a non-finite value: (x - mean) / scale of a finite x is finite or infinite (then clipped)
    when mean and scale are finite; NaN needs an infinite mean or scale (sums of values near 1e308)."""
    return all(np.isfinite([c.fill, c.mean, c.scale]).all() for c in transform.columns if c.kind == "numeric")


def _kept_rows(table: pa.Table, label: str, max_rows: int) -> pa.Table:
    """``table`` cut to a seeded, label-stratified subset of about ``max_rows`` rows."""
    rows = _stratified_rows(table.column(label), max_rows)
    return table if rows is None else table.take(pa.array(rows))


def _task(table: pa.Table, label: str, where: str, name: str) -> Any:
    """The task of a checked table's kept rows: an image task if it is 64 numeric columns in [0, 1]."""
    from nasdb.tasks import task_from_arrays, task_from_table

    if _image_shaped(table, label):
        feats = [c for c in table.column_names if c != label]
        x = np.column_stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in feats])
        return task_from_arrays(name, x, table.column(label).to_pylist())
    return task_from_table(name, table, label, where=where)


def _image_shaped(table: pa.Table, label: str) -> bool:
    from nasdb.tasks import _image_shaped as image_shaped

    return image_shaped(table, [c for c in table.column_names if c != label])


def meta_samples(task: Any, config: Any) -> tuple[np.ndarray, np.ndarray]:
    """The train split of ``task`` as the predictor's meta-features read it: a task with more classes
    than the predictor's ``max_classes`` has its labels folded into them (predictor/data.py fold_labels)."""
    x, y = task.samples("train")
    return x, fold_labels(y, config.max_classes)


__all__ = ["MAX_ENCODED_ROWS", "BodyStream", "meta_samples", "request_samples", "table_from_csv", "table_from_rows",
           "task_from_request"]
