"""The suggestion service behind the HTTP API: the loaded predictor, its hot swap, and the endpoints' logic.

Plain Python, no Ray: ``predictor/serve.py`` wraps it in a Ray Serve deployment and ``predictor/api.py``
in a FastAPI app. A request reads the current ``SuggestionEngine`` once and uses it to the end, so
swapping in a newly fitted predictor (``reconfigure`` from Serve's user_config, or the opt-in
background refresh that follows the store's latest predictor) is one attribute assignment:
in-flight requests finish on the old engine, new ones get the new one, and nobody waits.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nasdb.checks import positive_int
from nasdb.errors import ArgumentError, ConfigError, PayloadTooLargeError
from predictor._api_schema import PredictRequest, SuggestRequest, TaskInput
from predictor.checkpoint import load_predictor
from predictor.registry import Selection, select
from predictor.suggest import SuggestConfig, SuggestionEngine, check_samples
from predictor.tables import request_samples, table_from_rows

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

logger = logging.getLogger(__name__)

USER_CONFIG_KEYS = ("predictor_id", "refresh_seconds")
#: How often a replica that follows an alias checks it when ``refresh_seconds`` is 0 (one small JSON read).
ALIAS_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class ServeLimits:
    """What one request may ask for, and how much of a replica one client may hold.

    Requests above them are refused with a 4xx naming the field. ``body_timeout_s`` is the
    deadline for a request's whole body once its headers are in (408 after it), and
    ``max_requests_per_client`` caps one client address's concurrent requests on a replica
    (429 above it; /v1/health is exempt), so slow uploads cannot occupy the replica's slots.
    ``max_concurrent_requests`` is those slots: the requests one replica works on at once (503
    above it), /v1/health and the API description not counted, so they answer when all are held.
    """

    max_samples: int = 10_000
    max_architectures: int = 1_000
    max_k_max_iters: int = 10_000
    max_requests_per_client: int = 64
    body_timeout_s: float = 30.0
    max_table_rows: int = 100_000  # rows of a sent table (JSON or CSV)
    max_csv_bytes: int = 256 << 20  # a CSV upload's body (text/csv); JSON bodies keep max_body_bytes
    max_concurrent_requests: int = 512  # a request waiting for its body costs a coroutine, not a thread

    def __post_init__(self) -> None:
        for name in ("max_samples", "max_architectures", "max_k_max_iters", "max_requests_per_client",
                     "max_table_rows", "max_csv_bytes", "max_concurrent_requests"):
            positive_int(name, getattr(self, name), error=ConfigError)
        v = self.body_timeout_s
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ConfigError(f"`body_timeout_s` must be a finite number of seconds > 0, but got body_timeout_s={v!r}.")

    @property
    def max_body_bytes(self) -> int:
        """Room for ``max_samples`` rows of 64 floats printed at full precision, plus 1 MiB."""
        return self.max_samples * 64 * 26 + (1 << 20)

    def to_dict(self) -> dict[str, int | float]:
        return {**asdict(self), "max_body_bytes": self.max_body_bytes}


def _check_refresh(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ArgumentError(f"`refresh_seconds` must be a finite number >= 0 (0 = off), but got {value!r}.")
    return float(value)


class SuggestionService:
    """One replica's state: the store, the current engine, and how it follows new predictors.

    ``predictor_id`` is an id (pinned: never changes by itself, only by ``reconfigure``), an
    alias such as ``champion`` (followed: checked every ``refresh_seconds``, or every
    ALIAS_POLL_SECONDS when that is 0, so a promotion goes live by itself), ``latest`` (the
    newest checkpoint of any kind, checked every ``refresh_seconds``, 0 = off), or None (the
    ``champion`` alias when there is one, else the newest checkpoint, pinned): see
    predictor.registry.select.
    """

    def __init__(self, store: ExperimentStore, *, predictor_id: str | None = None, refresh_seconds: float = 0.0,
                 limits: ServeLimits | None = None, suggest_defaults: dict[str, Any] | None = None):
        self.store = store
        self.limits = limits or ServeLimits()
        self.defaults = SuggestConfig(**(suggest_defaults or {}))
        if self.defaults.k_max_iters > self.limits.max_k_max_iters:
            raise ArgumentError(f"default k_max_iters={self.defaults.k_max_iters} exceeds max_k_max_iters="
                                f"{self.limits.max_k_max_iters}")
        self.replica: str | None = None  # set by the Serve deployment: which replica answered
        self._selection: Selection = select(store, predictor_id)
        self._load_lock = threading.Lock()
        self._engine: SuggestionEngine = self._load(self._selection.target(store))
        self.last_refresh_error: str | None = None
        self.refresh_seconds = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.set_refresh(refresh_seconds)

    # -- the predictor and its hot swap ------------------------------------------------------
    @property
    def engine(self) -> SuggestionEngine:
        return self._engine

    def _load(self, predictor_id: str) -> SuggestionEngine:
        checkpoint = load_predictor(self.store, predictor_id)  # KeyError naming the id
        return SuggestionEngine(checkpoint, self.store)

    def _swap_to(self, selection: Selection) -> bool:
        """Load what ``selection`` designates now unless it is the current one; swap atomically."""
        with self._load_lock:
            target = selection.target(self.store)
            if target == self._engine.predictor_id:
                return False
            engine = self._load(target)
            previous, self._engine = self._engine.predictor_id, engine  # the swap: one assignment
        logger.info("suggestion service: predictor %s -> %s", previous, engine.predictor_id)
        return True

    def refresh_now(self) -> bool:
        """Pick up the alias's or the store's latest predictor when following one; True when it changed."""
        return self._selection.follows and self._swap_to(self._selection)

    def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Serve's user_config: ``{"predictor_id": ID | ALIAS | "latest" | None, "refresh_seconds": S}``."""
        user_config = dict(user_config or {})
        unknown = sorted(set(user_config) - set(USER_CONFIG_KEYS))
        if unknown:
            raise ArgumentError(f"unknown user_config keys {unknown}; known: {list(USER_CONFIG_KEYS)}")
        if "predictor_id" in user_config:
            pid = user_config["predictor_id"]
            if pid is not None and not isinstance(pid, str):
                raise ArgumentError(f"user_config predictor_id must be a string or null, got {pid!r}")
            selection = select(self.store, pid or None)
            self._swap_to(selection)  # raises (and keeps the current predictor) when it cannot be loaded
            self._selection = selection
        self.set_refresh(user_config.get("refresh_seconds", self.refresh_seconds))

    def _poll_seconds(self) -> float:
        """How often the background thread checks for a new predictor (0: no thread)."""
        if not self._selection.follows:
            return 0.0
        if self.refresh_seconds > 0:
            return self.refresh_seconds
        return ALIAS_POLL_SECONDS if self._selection.alias else 0.0

    def set_refresh(self, seconds: Any) -> None:
        """Start, change or stop (0) the background check for a newer predictor (an alias is always checked)."""
        self.refresh_seconds = _check_refresh(seconds)
        if self._poll_seconds() > 0 and (self._thread is None or not self._thread.is_alive()):
            self._stop.clear()
            self._thread = threading.Thread(target=self._refresh_loop, name="nasdb-predictor-refresh", daemon=True)
            self._thread.start()

    def _refresh_loop(self) -> None:
        while (interval := self._poll_seconds()) > 0 and not self._stop.wait(interval):
            try:
                self.refresh_now()
                self.last_refresh_error = None
            except Exception as e:  # keep serving the current predictor; report on /v1/health
                self.last_refresh_error = f"{type(e).__name__}: {e}".splitlines()[0]
                logger.warning("predictor refresh failed, keeping %s: %s", self._engine.predictor_id,
                               self.last_refresh_error)

    def close(self) -> None:
        self._stop.set()

    def check_health(self) -> None:
        if self._engine is None:
            raise RuntimeError("no predictor loaded")

    # -- endpoints ----------------------------------------------------------------------------
    def _task_z(self, engine: SuggestionEngine, body: TaskInput):
        if body.task is not None:
            return engine.task_z_or_embed(self.store, body.task)
        if body.columns is not None:
            if len(body.rows) > self.limits.max_table_rows:
                raise PayloadTooLargeError(f"rows: {len(body.rows)} rows exceed the server's maximum of "
                                           f"{self.limits.max_table_rows}")
            return self._table_z(engine, table_from_rows(body.columns, body.rows, where="rows"), body.label)
        if len(body.x) > self.limits.max_samples:
            raise PayloadTooLargeError(f"x: {len(body.x)} samples exceed the server's maximum of "
                                       f"{self.limits.max_samples}")
        cfg = engine.config
        for i, row in enumerate(body.x):
            if len(row) != cfg.feature_dim:
                raise ArgumentError(f"x[{i}]: expected {cfg.feature_dim} features, got {len(row)}")
        x, y = check_samples(np.asarray(body.x, dtype=np.float32), np.asarray(body.y, dtype=np.int64),
                             feature_dim=cfg.feature_dim, max_classes=cfg.max_classes)
        return engine.embed(x, y)

    def _table_z(self, engine: SuggestionEngine, table: Any, label: str):
        """z of a sent table: checked and encoded as ``nasdb tasks add`` does (predictor/tables.py)."""
        if table.num_rows > self.limits.max_table_rows:
            raise PayloadTooLargeError(f"rows: {table.num_rows} rows exceed the server's maximum of "
                                       f"{self.limits.max_table_rows}")
        x, y = request_samples(table, label, engine.config, where="table")  # checked and refused as a task would be
        return engine.embed(x, y, where="table") if engine.use_meta_features else None

    def check_csv(self, label: str | None, size: int) -> str:
        """A CSV upload's label and body size (bytes), checked once the body is in; ValueError naming what is wrong."""
        if not label:
            raise ArgumentError("label: a CSV upload needs the query parameter ?label=COLUMN")
        if size > self.limits.max_csv_bytes:
            raise PayloadTooLargeError(f"body: {size} bytes exceed the limit of {self.limits.max_csv_bytes}")
        return label

    def suggest_table(self, table: Any, label: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/suggest with a CSV upload: the table's suggestion (``overrides`` as SuggestRequest's)."""
        engine = self._engine
        config = self._config(overrides)
        return {**engine.suggest_z(self._table_z(engine, table, label), config).to_dict(), "task": None}

    def predict_table(self, table: Any, label: str, architectures: Any) -> dict[str, Any]:
        """POST /v1/predict with a CSV upload: scores of ``architectures`` on the table."""
        engine = self._engine
        archs = self._architectures(engine, architectures)
        return self._scores(engine, self._table_z(engine, table, label), archs, None)

    def _config(self, overrides: dict[str, Any]) -> SuggestConfig:
        if overrides.get("k_max_iters", 0) > self.limits.max_k_max_iters:
            raise ArgumentError(f"k_max_iters: {overrides['k_max_iters']} exceeds the server's maximum of "
                                f"{self.limits.max_k_max_iters}")
        return self.defaults.replace(**overrides)

    def _architectures(self, engine: SuggestionEngine, architectures: Any) -> np.ndarray:
        if len(architectures) > self.limits.max_architectures:
            raise PayloadTooLargeError(f"architectures: {len(architectures)} exceed the server's maximum of "
                                       f"{self.limits.max_architectures}")
        for i, arch in enumerate(architectures):
            try:
                engine.space.validate(arch)
            except ValueError as e:
                raise ArgumentError(f"architectures[{i}]: {e}") from None
        return np.asarray(architectures, dtype=np.int64)

    @staticmethod
    def _scores(engine: SuggestionEngine, z: Any, archs: np.ndarray, task: str | None) -> dict[str, Any]:
        scores, std = engine.score_with_std(archs, z)
        ranking = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return {"predictor_id": engine.predictor_id, "task": task, "scores": [float(s) for s in scores],
                "stds": None if std is None else [float(v) for v in std], "ranking": ranking}

    def suggest(self, body: SuggestRequest) -> dict[str, Any]:
        engine = self._engine  # one predictor for the whole request, even if a swap happens meanwhile
        config = self._config(body.overrides())
        z = self._task_z(engine, body)
        return {**engine.suggest_z(z, config).to_dict(), "task": body.task}

    def predict(self, body: PredictRequest) -> dict[str, Any]:
        engine = self._engine
        archs = self._architectures(engine, body.architectures)
        return self._scores(engine, self._task_z(engine, body), archs, body.task)

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "predictor_id": self._engine.predictor_id, "replica": self.replica}

    def model_info(self) -> dict[str, Any]:
        engine = self._engine
        meta = engine.checkpoint.metadata
        return {
            "predictor_id": engine.predictor_id,
            "created_at": meta.get("created_at"),
            "loss": meta.get("loss"),
            "use_meta_features": engine.use_meta_features,
            "tasks": engine.checkpoint.tasks,
            "space_id": engine.space.space_id,
            "metrics": _finite(meta.get("metrics") or {}),
            "data_snapshot": _finite(meta.get("data_snapshot") or {}),
            "alias": self._selection.alias,
            "following": self._selection.kind,
            "refresh_seconds": self.refresh_seconds,
            "suggest_defaults": self.defaults.to_dict(),
            "limits": self.limits.to_dict(),
        }


def _finite(value: Any) -> Any:
    """JSON has no NaN: metrics such as an undefined correlation become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

