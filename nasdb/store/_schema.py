"""The experiment row: its Arrow schema, its deterministic id, and record/table conversion.

One row is one trained child model: an entry of the "database of model training experiments"
(task-aware-performance-prediction.md Sec. 3.2). The schema is versioned; files written before a
column existed still read (the column reads as null). To add a column: append a nullable field
to EXPERIMENT_SCHEMA (before ``schema_version``), the same-named field with a default to
ExperimentRecord, its name to DEFAULTED_COLUMNS / NULLABLE_COLUMNS, and bump SCHEMA_VERSION.
Never remove or retype a column (readers rely on ``_check.CORE_COLUMNS`` being in every file).

v3 (issue 14): ``task_fingerprint`` and ``bank_fingerprint`` record the data a row was trained on
(``Task.fingerprint()``, or an imported benchmark's provenance; the embedding bank's
``fingerprint()``) and are part of the experiment id, so rows trained on other data under the
same task name never collide or deduplicate into each other. Rows written before v3 read with
null fingerprints ("unverified"); their ids, computed without fingerprints, still check out.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nasdb.checks import RESERVED_NAME, reserved_message
from nasdb.errors import SchemaError

SCHEMA_VERSION = 3
SCHEMA_VERSION_KEY = b"nasdb.schema_version"
STATUSES = ("ok", "failed")

#: Column order of every experiments file (the contract of the store's readers and writers).
EXPERIMENT_SCHEMA = pa.schema(
    [
        ("experiment_id", pa.string()),
        ("task", pa.string()),
        ("space_id", pa.string()),
        ("architecture", pa.list_(pa.int32())),
        ("relaxed_weights", pa.list_(pa.float32())),
        ("seed", pa.int64()),
        ("recipe", pa.string()),
        ("agent", pa.string()),
        ("run_id", pa.string()),
        ("val_accuracy", pa.float64()),
        ("test_accuracy", pa.float64()),
        ("val_curve", pa.list_(pa.float64())),
        ("epochs", pa.int32()),
        ("stopped_early", pa.bool_()),
        ("train_seconds", pa.float64()),
        ("num_params", pa.int64()),
        ("device", pa.string()),
        ("worker", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("status", pa.string()),
        ("error", pa.string()),
        ("predicted_final", pa.float64()),
        ("task_fingerprint", pa.string()),
        ("bank_fingerprint", pa.string()),
        ("schema_version", pa.int32()),
    ],
    metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode()},
)
COLUMNS = tuple(EXPERIMENT_SCHEMA.names)
#: Columns a writer fills in when a columnar append leaves them out.
DEFAULTED_COLUMNS = ("experiment_id", "relaxed_weights", "stopped_early", "created_at", "status", "error",
                     "schema_version", "worker", "predicted_final", "task_fingerprint", "bank_fingerprint")
#: Columns that may hold null (everything else is checked non-null on write).
#: v2: ``test_accuracy`` and ``num_params`` are null where a row has no such measurement (an
#: imported tabular benchmark has no test split); ``predicted_final`` is the learning-curve
#: predictor's final accuracy of a child stopped early (null for complete runs). v3: the fingerprints
#: are null in rows written before v3 (and ``bank_fingerprint`` where no embedding bank was used).
NULLABLE_COLUMNS = ("relaxed_weights", "error", "test_accuracy", "num_params", "predicted_final",
                    "task_fingerprint", "bank_fingerprint")
#: The columns of the data a row was trained on (v3), in the order the experiment id frames them.
FINGERPRINT_COLUMNS = ("task_fingerprint", "bank_fingerprint")

_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_ID_DOMAIN = b"nasdb-experiment-id/1"


def check_task_name(name: Any) -> str:
    """Task names become path components (``task=<name>``): letters, digits and ``_.+-``, no reserved name."""
    if not isinstance(name, str) or not _TASK_NAME.match(name):
        raise SchemaError(
            f"task name {name!r} is not valid: use 1-128 letters, digits or '_.-', starting with a letter or digit"
        )
    if RESERVED_NAME.match(name):
        raise SchemaError(reserved_message(name))
    return name


def canonical_recipe(recipe: Mapping[str, Any] | str) -> str:
    """The recipe as canonical JSON (sorted keys, no spaces): part of the experiment id."""
    if isinstance(recipe, str):
        try:
            recipe = json.loads(recipe)
        except json.JSONDecodeError as e:
            raise SchemaError(f"recipe is not valid JSON: {e}") from None
    if not isinstance(recipe, Mapping):
        raise SchemaError(f"recipe must be a dict (or its JSON), got {type(recipe).__name__}")

    def plain(v: Any) -> Any:
        if isinstance(v, np.generic):
            return v.item()
        raise TypeError(f"recipe value {v!r} of type {type(v).__name__} is not JSON serializable")

    try:
        return json.dumps(recipe, sort_keys=True, separators=(",", ":"), allow_nan=False, default=plain)
    except (TypeError, ValueError) as e:
        raise SchemaError(f"recipe cannot be stored: {e}") from None


def _frame(b: bytes) -> bytes:
    return len(b).to_bytes(8, "little") + b


def _id_prefix(task: str, space_id: str) -> "hashlib._Hash":
    h = hashlib.sha256(_frame(_ID_DOMAIN))
    h.update(_frame(task.encode()) + _frame(space_id.encode()))
    return h


def _seed_bytes(seed: int) -> bytes:
    try:
        return int(seed).to_bytes(8, "little", signed=True)
    except OverflowError:
        raise SchemaError(f"seed {seed} does not fit in int64") from None


def _relaxed_frame(weights: np.ndarray | None) -> bytes:
    return _frame(b"none") if weights is None else _frame(b"f4" + np.asarray(weights, "<f4").tobytes())


def _fingerprint_frame(task_fingerprint: str | None, bank_fingerprint: str | None) -> bytes:
    """The data's part of the id: nothing when both are null (ids of rows written before v3)."""
    if task_fingerprint is None and bank_fingerprint is None:
        return b""
    return _frame(b"data") + _frame((task_fingerprint or "").encode()) + _frame((bank_fingerprint or "").encode())


def experiment_id(task: str, space_id: str, architecture: Iterable[int], seed: int,
                  recipe: Mapping[str, Any] | str, relaxed_weights: Sequence[float] | None = None, *,
                  task_fingerprint: str | None = None, bank_fingerprint: str | None = None) -> str:
    """Deterministic id of an experiment: sha256 over what defines it, hex[:24].

    Built from length-framed bytes (architecture as int64, relaxed weights as float32: the
    stored precision), so a row read back hashes to its stored id and retries collide. The
    fingerprints of the task's data and of the embedding bank (v3) are framed last; with both
    None the id is the one rows got before v3.
    """
    for name, fp in (("task_fingerprint", task_fingerprint), ("bank_fingerprint", bank_fingerprint)):
        if fp is not None and not isinstance(fp, str):
            raise SchemaError(f"{name} must be a string or None, got {fp!r}")
    arch = np.asarray(list(architecture), dtype=np.int64)
    rw = None if relaxed_weights is None else np.asarray(list(relaxed_weights), dtype=np.float32)
    h = _id_prefix(task, space_id)
    h.update(_frame(arch.astype("<i8").tobytes()) + _seed_bytes(seed) + _frame(canonical_recipe(recipe).encode())
             + _relaxed_frame(rw) + _fingerprint_frame(task_fingerprint, bank_fingerprint))
    return h.hexdigest()[:24]


def _utc(ts: datetime) -> datetime:
    if not isinstance(ts, datetime):
        raise SchemaError(f"created_at must be a datetime, got {ts!r}")
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class ExperimentRecord:
    """One trained child model: what was trained (task, space, architecture, seed, recipe), by whom, and how it did."""

    task: str
    space_id: str
    architecture: list[int]
    seed: int
    recipe: dict
    agent: str
    run_id: str
    val_accuracy: float
    test_accuracy: float | None
    val_curve: list[float]
    epochs: int
    train_seconds: float
    num_params: int | None
    device: str
    worker: str
    status: str = "ok"
    error: str | None = None
    stopped_early: bool = False
    predicted_final: float | None = None
    relaxed_weights: list[float] | None = None
    task_fingerprint: str | None = None  # the task's data (None: unknown, a row written before v3)
    bank_fingerprint: str | None = None  # the embedding bank's parameters (None: none used, or unknown)
    created_at: datetime = field(default_factory=_now)
    experiment_id: str = ""

    def __post_init__(self) -> None:
        check_task_name(self.task)
        for name in ("space_id", "agent", "run_id", "device", "worker"):
            if not isinstance(getattr(self, name), str):
                raise SchemaError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.status not in STATUSES:
            raise SchemaError(f"status must be one of {STATUSES}, got {self.status!r}")
        try:
            self.architecture = [int(a) for a in np.asarray(self.architecture).reshape(-1)]
            self.val_curve = [float(v) for v in np.asarray(self.val_curve, dtype=np.float64).reshape(-1)]
            self.val_accuracy = float(self.val_accuracy)
            self.test_accuracy = None if self.test_accuracy is None else float(self.test_accuracy)
            self.predicted_final = None if self.predicted_final is None else float(self.predicted_final)
            self.train_seconds = float(self.train_seconds)
            self.seed, self.epochs = int(self.seed), int(self.epochs)
            self.num_params = None if self.num_params is None else int(self.num_params)
        except (TypeError, ValueError) as e:
            raise SchemaError(f"experiment of task {self.task!r} has a malformed field: {e}") from None
        if self.relaxed_weights is not None:
            rw = np.asarray(self.relaxed_weights, dtype=np.float32).reshape(-1)
            if not np.all(np.isfinite(rw)):
                raise SchemaError(f"relaxed_weights of an experiment of task {self.task!r} hold a non-finite value")
            self.relaxed_weights = [float(v) for v in rw]
        if isinstance(self.recipe, str):
            self.recipe = json.loads(canonical_recipe(self.recipe))
        self.stopped_early = bool(self.stopped_early)
        self.created_at = _utc(self.created_at)
        computed = experiment_id(self.task, self.space_id, self.architecture, self.seed, self.recipe,
                                 self.relaxed_weights, task_fingerprint=self.task_fingerprint,
                                 bank_fingerprint=self.bank_fingerprint)
        if self.experiment_id and self.experiment_id != computed:
            raise SchemaError(f"experiment_id {self.experiment_id!r} does not match its fields (expected {computed!r})")
        self.experiment_id = computed

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "ExperimentRecord":
        """Rebuild a record from a stored row (a dict as ``pa.Table.to_pylist`` gives)."""
        kwargs = {k: row[k] for k in cls.__dataclass_fields__ if k in row and row[k] is not None}
        kwargs["recipe"] = json.loads(row["recipe"])
        return cls(**kwargs)


def records_to_table(records: Sequence[ExperimentRecord]) -> pa.Table:
    """Arrow table (EXPERIMENT_SCHEMA) of validated records."""
    cols: dict[str, list] = {name: [] for name in COLUMNS}
    fields = [c for c in COLUMNS if c != "schema_version"]
    for r in records:
        if not isinstance(r, ExperimentRecord):
            raise SchemaError(f"expected an ExperimentRecord, got {type(r).__name__}")
        for name in fields:
            cols[name].append(getattr(r, name))
        cols["schema_version"].append(SCHEMA_VERSION)
    cols["recipe"] = [canonical_recipe(r) for r in cols["recipe"]]
    return pa.table(cols, schema=EXPERIMENT_SCHEMA)


def conform(table: pa.Table) -> pa.Table:
    """A table read from any file version, as EXPERIMENT_SCHEMA: missing columns become null.

    Columns unknown to this version (written by a newer one) are kept after the known ones.
    """
    n = table.num_rows
    arrays, fields = [], []
    for f in EXPERIMENT_SCHEMA:
        if f.name in table.column_names:
            col = table.column(f.name)
            arrays.append(col if col.type == f.type else col.cast(f.type))
        else:
            arrays.append(pa.nulls(n, f.type))
        fields.append(f)
    for name in table.column_names:
        if name not in EXPERIMENT_SCHEMA.names:
            arrays.append(table.column(name))
            fields.append(table.schema.field(name))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=EXPERIMENT_SCHEMA.metadata))


def _list_parts(col: pa.ChunkedArray, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values as ``dtype``, offsets, null mask) of a list column."""
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if isinstance(arr, pa.ChunkedArray):  # no chunks at all
        arr = pa.array([], col.type)
    values = arr.values.to_numpy(zero_copy_only=False).astype(dtype)
    return values, arr.offsets.to_numpy(), arr.is_null().to_numpy(zero_copy_only=False)


def _codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list[Any]]:
    enc = pc.dictionary_encode(col, null_encoding="encode").combine_chunks()  # a null is a value (None) too
    return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary.to_pylist()


def _prefix_bytes(task: str, space_id: str) -> bytes:
    return _frame(_ID_DOMAIN) + _frame(task.encode()) + _frame(space_id.encode())


def compute_ids(table: pa.Table) -> pa.Array:
    """experiment_id for every row of a schema-typed table: the same bytes as ``experiment_id``, vectorized.

    The common case (one architecture length, no relaxed weights) hashes fixed-width byte rows
    built with numpy, one group per (task, space, recipe, fingerprints); other tables go row by row.
    """
    n = table.num_rows
    if n == 0:
        return pa.array([], pa.string())
    t_idx, t_vals = _codes(table.column("task"))
    s_idx, s_vals = _codes(table.column("space_id"))
    r_idx, r_vals = _codes(table.column("recipe"))
    recipe_frames = [_frame(canonical_recipe(r).encode()) for r in r_vals]
    tf_idx, tf_vals = _codes(table.column("task_fingerprint"))
    bf_idx, bf_vals = _codes(table.column("bank_fingerprint"))
    data_idx = tf_idx * len(bf_vals) + bf_idx  # one code per (task fingerprint, bank fingerprint)
    data_frames = [_fingerprint_frame(tf, bf) for tf in tf_vals for bf in bf_vals]
    seeds = np.ascontiguousarray(table.column("seed").to_numpy(), dtype="<i8")
    arch, ao, _ = _list_parts(table.column("architecture"), "<i8")
    rw, ro, rnull = _list_parts(table.column("relaxed_weights"), "<f4")
    lengths = np.diff(ao)
    none_frame = _frame(b"none")
    sha = hashlib.sha256
    out = np.empty(n, dtype=object)
    if rnull.all() and (lengths == lengths[0]).all():
        width_a = 8 * int(lengths[0])
        body = np.empty((n, 8 + width_a + 8), dtype=np.uint8)  # (n, frame + architecture + seed)
        body[:, :8] = np.frombuffer(width_a.to_bytes(8, "little"), dtype=np.uint8)
        body[:, 8:8 + width_a] = arch[ao[0]:ao[-1]].reshape(n, -1).view(np.uint8)
        body[:, 8 + width_a:] = seeds.view(np.uint8).reshape(n, 8)
        group = ((t_idx * len(s_vals) + s_idx) * len(r_vals) + r_idx) * len(data_frames) + data_idx
        keys, inverse = np.unique(group, return_inverse=True)
        for g, key in enumerate(keys.tolist()):
            rows = np.flatnonzero(inverse == g)
            key, d = divmod(key, len(data_frames))
            t, rest = divmod(key, len(s_vals) * len(r_vals))
            sp, r = divmod(rest, len(r_vals))
            head = np.frombuffer(_prefix_bytes(t_vals[t], s_vals[sp]), dtype=np.uint8)
            tail = np.frombuffer(recipe_frames[r] + none_frame + data_frames[d], dtype=np.uint8)
            msg = np.empty((len(rows), len(head) + body.shape[1] + len(tail)), dtype=np.uint8)
            msg[:, :len(head)] = head
            msg[:, len(head):len(head) + body.shape[1]] = body[rows]
            msg[:, len(head) + body.shape[1]:] = tail
            buf, w = msg.tobytes(), msg.shape[1]
            out[rows] = [sha(buf[j:j + w]).hexdigest()[:24] for j in range(0, len(buf), w)]
        return pa.array(out.tolist(), pa.string())
    ab, rb, sb = arch.tobytes(), rw.tobytes(), seeds.tobytes()
    ao, ro = ao.tolist(), ro.tolist()
    for i in range(n):
        a = ab[ao[i] * 8: ao[i + 1] * 8]
        rwf = none_frame if rnull[i] else _frame(b"f4" + rb[ro[i] * 4: ro[i + 1] * 4])
        msg = (_prefix_bytes(t_vals[t_idx[i]], s_vals[s_idx[i]]) + len(a).to_bytes(8, "little") + a
               + sb[i * 8: i * 8 + 8] + recipe_frames[r_idx[i]] + rwf + data_frames[data_idx[i]])
        out[i] = sha(msg).hexdigest()[:24]
    return pa.array(out.tolist(), pa.string())


def table_from_columns(table: pa.Table, *, worker: str) -> pa.Table:
    """Validate a columnar batch of experiments and fill defaults: the fast path of ``append_table``.

    Required columns must be present and non-null; ``worker``, ``status`` ("ok"),
    ``stopped_early`` (False), ``created_at`` (now), ``relaxed_weights``/``error`` (null) are
    filled when missing. ``experiment_id`` is computed; a given one must match.
    """
    unknown = [c for c in table.column_names if c not in COLUMNS]
    if unknown:
        raise SchemaError(f"unknown experiment column(s) {unknown}; known: {list(COLUMNS)}")
    missing = [c for c in COLUMNS if c not in table.column_names and c not in DEFAULTED_COLUMNS]
    if missing:
        raise SchemaError(f"experiment table lacks required column(s) {missing}")
    n = table.num_rows
    defaults = {
        "relaxed_weights": pa.nulls(n, pa.list_(pa.float32())), "error": pa.nulls(n, pa.string()),
        "predicted_final": pa.nulls(n, pa.float64()),
        "stopped_early": pa.array(np.zeros(n, dtype=bool)), "status": pa.array(["ok"] * n, pa.string()),
        "created_at": pa.array(np.full(n, np.datetime64(_now().replace(tzinfo=None), "us")),
                               pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC")),
        "worker": pa.array([worker] * n, pa.string()),
        "schema_version": pa.array(np.full(n, SCHEMA_VERSION, dtype=np.int32)),
    }
    arrays = []
    for f in EXPERIMENT_SCHEMA:
        if f.name == "experiment_id":
            arrays.append(pa.nulls(n, pa.string()))
            continue
        given = f.name in table.column_names and f.name != "schema_version"  # always this writer's version
        col = table.column(f.name) if given else defaults.get(f.name, pa.nulls(n, f.type))
        try:
            arrays.append(col if col.type == f.type else pc.cast(col, f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise SchemaError(f"column {f.name!r} of type {col.type} cannot be stored as {f.type}: {e}") from None
    out = pa.Table.from_arrays(arrays, schema=EXPERIMENT_SCHEMA)
    for name in COLUMNS:
        if name not in NULLABLE_COLUMNS and name != "experiment_id" and out.column(name).null_count:
            raise SchemaError(f"column {name!r} holds {out.column(name).null_count} null value(s)")
    bad_status = set(pc.unique(out.column("status")).to_pylist()) - set(STATUSES)
    if bad_status:
        raise SchemaError(f"status must be one of {STATUSES}, got {sorted(bad_status)}")
    for t in pc.unique(out.column("task")).to_pylist():
        check_task_name(t)
    rw = out.column("relaxed_weights")
    if rw.null_count < n and pc.all(pc.is_finite(pc.list_flatten(rw))).as_py() is False:
        raise SchemaError("relaxed_weights hold a non-finite value")
    canonical = {r: canonical_recipe(r) for r in pc.unique(out.column("recipe")).to_pylist()}
    if any(k != v for k, v in canonical.items()):
        recipe = pa.array([canonical[r] for r in out.column("recipe").to_pylist()], pa.string())
        out = out.set_column(COLUMNS.index("recipe"), "recipe", recipe)
    ids = compute_ids(out)
    if "experiment_id" in table.column_names:
        given = pc.cast(table.column("experiment_id"), pa.string())
        mismatch = pc.invert(pc.fill_null(pc.equal(given, ids), False))
        if pc.any(mismatch).as_py():
            i = int(np.flatnonzero(mismatch.to_numpy(zero_copy_only=False))[0])
            raise SchemaError(f"experiment_id {given[i].as_py()!r} of row {i} does not match its fields "
                              f"(expected {ids[i].as_py()!r})")
    return out.set_column(0, "experiment_id", ids)
