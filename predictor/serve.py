"""The suggestion API: a FastAPI app on Ray Serve in front of Algorithm 2 (issue 6).

    POST /v1/suggest   {"task": NAME} or {"x": [[64 floats], ...], "y": [ints]}, optional
                       k_max_iters / step_size / top_per_task / closest_tasks -> a suggestion
    POST /v1/predict   the same task input + {"architectures": [[15 ints], ...]} -> scores
                       both also take a table: {"columns": [...], "rows": [[...]], "label": COL}, or a CSV
                       upload (Content-Type: text/csv, ?label=COL; /v1/predict: &architectures=[[...]])
    GET  /v1/model     which predictor, trained on which tasks, loss, metrics, created
    GET  /v1/health    liveness (no token needed), also /openapi.json and /docs (Swagger UI from bundled files)

Every request but health and the API description carries ``Authorization: Bearer <token>``
(predictor/auth.py). Bad input is a 4xx whose ``detail`` names the field; the replica
keeps serving. Three ways to run it:

- ``start_server(store, port=..., replicas=...)`` (``nasdb serve``) on the embedded Ray;
- ``serve run predictor.serve:app_builder store=ROOT token_file=PATH`` on a cluster;
- ``serve deploy`` of a config like ``predictor/serve_config.example.yaml``; a new predictor is
  then picked up without downtime by promoting it (``nasdb predictors promote ID --alias
  champion``: replicas that follow the alias swap in place, predictor/registry.py), by changing
  the deployment's ``user_config`` (``{"predictor_id": ID}``: Serve calls ``reconfigure`` on the
  live replicas) or, asked for explicitly, by following ``latest`` with ``refresh_seconds`` > 0.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi_offline import FastAPIOffline
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from nasdb.errors import ArgumentError, NasdbError, PayloadTooLargeError, StoreError, UnknownTaskError, UnreachableError
from predictor._api_schema import (HARD_MAX_ITERS, ErrorResponse, HealthResponse, ModelResponse, PredictRequest,
                                   PredictResponse, SuggestRequest, SuggestResponse)
from predictor.auth import RequestGuard, is_csv, is_loopback, resolve_token_digest, route_path
from predictor.csv_upload import read_csv_upload
from predictor.proxy_deadline import HEADER_TIMEOUT_S, controller_env
from predictor.service import ServeLimits, SuggestionService

logger = logging.getLogger(__name__)

API_VERSION = "1.0"
MAX_ERRORS_SHOWN = 10
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 413, 422, 429, 503)}
#: Serve's cap on a replica's concurrent requests sits this far above the API's own
#: (ServeLimits.max_concurrent_requests, counted by RequestGuard without /v1/health): with every
#: API slot held, health, the API description and the instant 503s of a full replica still find a
#: Serve slot instead of waiting in the proxy's queue (issue 15: 8 slow uploads held all 8 slots,
#: health check included).
SERVE_SLOTS_ABOVE_API = 64
#: End-to-end limit of one request in the Serve HTTP proxy (Ray answers 408 after it): above the
#: body deadline plus the slowest suggestion the server limits allow.
REQUEST_TIMEOUT_S = 120.0


# -- the HTTP layer ----------------------------------------------------------------------------
def _loc(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p != "body"]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def _message(exc: BaseException) -> str:
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return str(msg).splitlines()[0] if str(msg) else type(exc).__name__


def build_api(service: SuggestionService, *, expected_digest: str | None, limits: ServeLimits | None = None) -> FastAPI:
    """The FastAPI app around ``service``: routes, error mapping, and the token/size guard."""
    limits = limits or service.limits
    app = FastAPIOffline(title="nasdb suggestion API", version=API_VERSION,
                  description="Task-aware architecture suggestions (Algorithm 2 of task-aware performance "
                              "prediction) and predicted scores, from a predictor fitted on the nasdb store.")
    bearer = HTTPBearer(auto_error=False, description="The API token (NASDB_API_TOKEN or --token-file).")
    protected = [Depends(bearer)] if expected_digest is not None else []  # documents it; RequestGuard enforces it

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        bad_json = [e for e in raw if e.get("type") == "json_invalid"]
        if bad_json:  # loc is (body, character position); ctx holds the parser's message
            e = bad_json[0]
            pos = e.get("loc", ("body", "?"))[-1]
            reason = (e.get("ctx") or {}).get("error", "JSON decode error")
            return JSONResponse({"detail": f"body: malformed JSON ({reason} at character {pos})"}, status_code=400)
        # loc, msg and type only: pydantic's "input" would echo the request back, and x can be megabytes
        errors = [{"loc": _loc(e.get("loc", ())), "msg": e.get("msg", "").removeprefix("Value error, "),
                   "type": e.get("type", "")} for e in raw]
        first = errors[0] if errors else {"loc": "body", "msg": "invalid request"}
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return JSONResponse({"detail": f"{first['loc']}: {first['msg']}{more}", "errors": errors[:MAX_ERRORS_SHOWN]},
                            status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(UnknownTaskError)
    async def _unknown(_: Request, exc: UnknownTaskError) -> JSONResponse:
        return JSONResponse({"detail": f"task: {_message(exc)}"}, status_code=404)

    @app.exception_handler(PayloadTooLargeError)
    async def _too_large(_: Request, exc: PayloadTooLargeError) -> JSONResponse:
        return JSONResponse({"detail": _message(exc)}, status_code=413)

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        logger.error("store unavailable: %s", exc)
        return JSONResponse({"detail": f"store unavailable: {_message(exc)}"}, status_code=503)

    for exc_type in (ValueError, KeyError, NasdbError):
        app.add_exception_handler(exc_type, _unprocessable)

    @app.post("/v1/suggest", response_model=SuggestResponse, dependencies=protected, responses=_ERRORS,
              openapi_extra=_csv_body("?label=COL, optional &k_max_iters=N&kappa=K"))
    def suggest(body: SuggestRequest) -> dict[str, Any]:
        """Algorithm 2: the architecture the predictor scores highest for the task, found by gradient
        ascent from the top architectures of the closest training tasks."""
        return service.suggest(body)

    @app.post("/v1/predict", response_model=PredictResponse, dependencies=protected, responses=_ERRORS,
              openapi_extra=_csv_body("?label=COL&architectures=[[15 ints], ...] (JSON)"))
    def predict(body: PredictRequest) -> dict[str, Any]:
        """Predicted scores (higher = better expected validation accuracy) of architectures on the task."""
        return service.predict(body)

    @app.post(CSV_ROUTES["/v1/suggest"], response_model=SuggestResponse, dependencies=protected, responses=_ERRORS,
              include_in_schema=False)  # documented as /v1/suggest's text/csv body
    async def suggest_csv(request: Request, label: str | None = None,
                          k_max_iters: int | None = Query(None, ge=1, le=HARD_MAX_ITERS),
                          kappa: float | None = Query(None, ge=0, le=100, allow_inf_nan=False)) -> dict[str, Any]:
        """POST /v1/suggest with a CSV upload (``Content-Type: text/csv``, ``?label=COL``): Algorithm 2 for the
        table, preprocessed as ``nasdb tasks add`` does (any width for a predictor with the cells encoder)."""
        table, label = await read_csv_upload(request, label, service.check_csv)  # parsed while it arrives
        return await run_in_threadpool(service.suggest_table, table, label, _kv(k_max_iters=k_max_iters, kappa=kappa))

    @app.post(CSV_ROUTES["/v1/predict"], response_model=PredictResponse, dependencies=protected, responses=_ERRORS,
              include_in_schema=False)  # documented as /v1/predict's text/csv body
    async def predict_csv(request: Request, label: str | None = None,
                          architectures: str | None = None) -> dict[str, Any]:
        """POST /v1/predict with a CSV upload (``?label=COL&architectures=[[15 ints], ...]``, JSON)."""
        try:
            archs = json.loads(architectures or "")
        except ValueError:
            raise ArgumentError("architectures: the query parameter must be a JSON list of choice-index lists") from None
        try:
            archs = PredictRequest.model_validate({"task": "csv", "architectures": archs}).architectures
        except ValidationError as e:
            raise RequestValidationError([{**err, "loc": ("query", *err["loc"])} for err in e.errors()]) from None
        table, label = await read_csv_upload(request, label, service.check_csv)
        return await run_in_threadpool(service.predict_table, table, label, archs)

    @app.get("/v1/model", response_model=ModelResponse, dependencies=protected, responses=_ERRORS)
    def model() -> dict[str, Any]:
        """The predictor in use: id, training tasks, loss, metrics, creation time, limits."""
        return service.model_info()

    @app.get("/v1/health", response_model=HealthResponse)
    async def health() -> dict[str, Any]:
        """Liveness; no token needed. Answered on the event loop, never behind the worker threads
        that run suggestions, and exempt from the per-client cap."""
        return service.health()

    app.add_middleware(CsvRoutes)  # inside the guard: the guard sees the path the client sent
    app.add_middleware(RequestGuard, expected_digest=expected_digest, max_body_bytes=limits.max_body_bytes,
                       body_timeout_s=limits.body_timeout_s, max_requests_per_client=limits.max_requests_per_client,
                       max_csv_bytes=limits.max_csv_bytes, max_concurrent_requests=limits.max_concurrent_requests)
    return app


#: Where a CSV upload to /v1/suggest or /v1/predict is routed (FastAPI routes by path, not content type).
CSV_ROUTES = {"/v1/suggest": "/v1/suggest/csv", "/v1/predict": "/v1/predict/csv"}


def _csv_body(query: str) -> dict[str, Any]:
    """The OpenAPI text of a route's CSV upload (merged into its JSON request body by FastAPI)."""
    return {"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}},
                            "description": f"JSON (a task name, inline samples or a table), or a CSV upload: a "
                                           f"table with a header row, Content-Type text/csv, with {query} in the "
                                           f"query string."}}


def _kv(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class CsvRoutes:
    """ASGI middleware: a ``text/csv`` POST to /v1/suggest or /v1/predict goes to its CSV route, so
    both paths take a JSON body or a CSV upload (the CSV routes are also reachable by their own path)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("method") == "POST" and is_csv(scope.get("headers", [])):
            path = route_path(scope)
            if path in CSV_ROUTES:
                root = scope.get("root_path", "") or ""
                prefix = scope["path"][:len(scope["path"]) - len(path)] if scope["path"].endswith(path) else root
                scope = {**scope, "path": prefix + CSV_ROUTES[path], "raw_path": (prefix + CSV_ROUTES[path]).encode()}
        await self.app(scope, receive, send)


async def _unprocessable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": _message(exc)}, status_code=422)


# -- the Ray Serve deployment ----------------------------------------------------------------------
# One replica per process: its app, built in __init__. Serve pickles the deployment class BY VALUE
# (its name is bound to the Deployment object), which would give the class a private copy of any
# module global; both sides therefore reach this dict through a real import of the module.
_REPLICA_API: dict[str, FastAPI] = {}


def _replica_app() -> FastAPI:
    """Serve calls this in the replica right after ``SuggestionDeployment.__init__``."""
    from predictor import serve as module

    return module._REPLICA_API["app"]


def _replica_id() -> str | None:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:
        return None


def _proxy_host() -> str | None:
    """The host the Serve HTTP proxy binds, asked from the controller (None when it cannot be told)."""
    try:
        from ray.serve.context import _get_global_client

        return _get_global_client().http_config.host
    except Exception:  # private API: fail closed
        return None


@serve.deployment(name="SuggestionService", health_check_period_s=10,
                  max_ongoing_requests=ServeLimits.max_concurrent_requests + SERVE_SLOTS_ABOVE_API)
@serve.ingress(_replica_app)
class SuggestionDeployment:
    """A replica: the service, its API, and Serve's hooks (reconfigure = user_config, health)."""

    def __init__(self, store_root: str, *, predictor_id: str | None = None, token_digest: str | None = None,
                 allow_unauthenticated: bool = False, refresh_seconds: float = 0.0,
                 limits: dict[str, Any] | None = None, suggest_defaults: dict[str, Any] | None = None,
                 torch_threads: int = 1):
        import torch

        from nasdb.store import ExperimentStore
        from predictor import serve as module  # the real module, see _REPLICA_API

        torch.set_num_threads(torch_threads)  # tiny matmuls: threads cost more than they give
        if token_digest is None:
            if not allow_unauthenticated:
                raise ArgumentError("no API token configured for the suggestion service")
            host = _proxy_host()
            if not is_loopback(host or ""):
                raise ArgumentError(f"allow_unauthenticated needs the Serve HTTP proxy on a loopback host, "
                                    f"but it binds {host!r}; configure a token instead")
        store = ExperimentStore(store_root)
        store.require()
        self.service = SuggestionService(store, predictor_id=predictor_id, refresh_seconds=refresh_seconds,
                                         limits=ServeLimits(**(limits or {})), suggest_defaults=suggest_defaults)
        self.service.replica = _replica_id()
        module._REPLICA_API["app"] = build_api(self.service, expected_digest=token_digest)

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        self.service.reconfigure(user_config)

    def check_health(self) -> None:
        self.service.check_health()


def build_app(store_root: str, *, predictor_id: str | None = None, token_digest: str | None = None,
              allow_unauthenticated: bool = False, replicas: int = 1, num_cpus: float = 1.0,
              refresh_seconds: float = 0.0, limits: ServeLimits | None = None,
              suggest_defaults: dict[str, Any] | None = None, user_config: dict[str, Any] | None = None):
    """The bound Serve application (for serve.run); the token arrives as its digest only."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ArgumentError(f"`replicas` must be a positive integer, but got replicas={replicas!r}.")
    if not num_cpus > 0:
        raise ArgumentError(f"`num_cpus` must be > 0, but got num_cpus={num_cpus!r}.")
    limits = limits or ServeLimits()
    options: dict[str, Any] = {"num_replicas": replicas, "ray_actor_options": {"num_cpus": num_cpus},
                               "max_ongoing_requests": limits.max_concurrent_requests + SERVE_SLOTS_ABOVE_API}
    if user_config is not None:
        options["user_config"] = user_config
    return SuggestionDeployment.options(**options).bind(
        str(store_root), predictor_id=predictor_id, token_digest=token_digest,
        allow_unauthenticated=allow_unauthenticated, refresh_seconds=refresh_seconds,
        limits=asdict(limits),
        suggest_defaults=suggest_defaults)


class AppArgs(BaseModel):
    """Arguments of ``serve run predictor.serve:app_builder key=value ...`` and of a config's ``args``.

    The token comes from ``token_file`` (a path on the cluster) or $NASDB_API_TOKEN where the
    application is built (the runtime_env's env_vars); never inline in a config.
    """

    model_config = ConfigDict(extra="forbid")
    store: str = Field(description="Store root (path or URI) reachable from every replica.")
    predictor: str | None = Field(None, description="A predictor id, an alias to follow (e.g. champion) or "
                                                    "'latest'; default: the champion alias, else the newest, pinned.")
    predictor_id: str | None = Field(None, description="Older spelling of `predictor`.")
    token_file: str | None = None
    allow_unauthenticated: bool = False
    refresh_seconds: float = Field(0.0, ge=0)
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(1.0, gt=0)
    max_samples: int = Field(ServeLimits.max_samples, ge=1)
    max_architectures: int = Field(ServeLimits.max_architectures, ge=1)
    max_k_max_iters: int = Field(ServeLimits.max_k_max_iters, ge=1)
    max_requests_per_client: int = Field(ServeLimits.max_requests_per_client, ge=1)
    body_timeout_s: float = Field(ServeLimits.body_timeout_s, gt=0, allow_inf_nan=False)
    max_table_rows: int = Field(ServeLimits.max_table_rows, ge=1)
    max_csv_bytes: int = Field(ServeLimits.max_csv_bytes, ge=1)
    max_concurrent_requests: int = Field(ServeLimits.max_concurrent_requests, ge=1)


def app_builder(args: dict[str, Any]):
    """Application builder for ``serve run`` / ``serve deploy`` (import path ``predictor.serve:app_builder``)."""
    a = AppArgs.model_validate(dict(args))
    if a.predictor is not None and a.predictor_id is not None and a.predictor != a.predictor_id:
        raise ArgumentError(f"give `predictor` or `predictor_id`, not both (got {a.predictor!r} and {a.predictor_id!r})")
    # Without a token the replica itself checks that the proxy binds a loopback host.
    digest = None if a.allow_unauthenticated else resolve_token_digest(token_file=a.token_file)
    return build_app(a.store, predictor_id=a.predictor or a.predictor_id, token_digest=digest,
                     allow_unauthenticated=a.allow_unauthenticated, replicas=a.replicas, num_cpus=a.num_cpus,
                     refresh_seconds=a.refresh_seconds,
                     limits=ServeLimits(**{f: getattr(a, f) for f in LIMIT_FIELDS}))


#: The ServeLimits fields a Serve config's ``args`` may set (all of them).
LIMIT_FIELDS = tuple(f.name for f in fields(ServeLimits))


# -- the embedded server (nasdb serve) ------------------------------------------------------------
@dataclass
class ServerInfo:
    url: str  # base URL, e.g. http://127.0.0.1:8000
    predictor_id: str
    replicas: int
    authenticated: bool
    app_name: str


def start_server(store_root: str, *, port: int = 8000, replicas: int = 1, predictor_id: str | None = None,
                 host: str = "127.0.0.1", token: str | None = None, token_file: str | None = None,
                 allow_unauthenticated: bool = False, refresh_seconds: float = 0.0, num_cpus: float = 1.0,
                 limits: ServeLimits | None = None, suggest_defaults: dict[str, Any] | None = None,
                 app_name: str = "nasdb", route_prefix: str = "/", ray_address: str | None = None,
                 header_timeout_s: float = HEADER_TIMEOUT_S) -> ServerInfo:
    """Start the API on Ray Serve (the running Ray, else an embedded one) and return once it answers.

    Refuses, before starting anything, with a one-line ValueError: no token and no explicit
    ``allow_unauthenticated``; ``allow_unauthenticated`` on a non-loopback host; a store without
    the requested (or any) predictor; a ``header_timeout_s`` that is not a number > 0. Serve
    started here gets the proxy's header deadline (predictor/proxy_deadline.py); a Serve instance
    already running keeps the proxies it has.
    """
    import ray

    from nasdb.store import ExperimentStore
    from predictor.registry import LATEST, select

    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ArgumentError(f"`port` must be an integer in [1, 65535], but got port={port!r}.")
    proxy_env = controller_env(header_timeout_s)  # ArgumentError for a bad header_timeout_s
    digest = resolve_token_digest(token=token, token_file=token_file, allow_unauthenticated=allow_unauthenticated,
                                  host=host)
    store = ExperimentStore(store_root)
    store.require()
    selection = select(store, predictor_id)  # one line naming an unknown id or alias, or "no predictor yet"
    pid = selection.target(store)
    app = build_app(store.uri, predictor_id=selection.name or LATEST, token_digest=digest,
                    allow_unauthenticated=allow_unauthenticated, replicas=replicas, num_cpus=num_cpus,
                    refresh_seconds=refresh_seconds, limits=limits, suggest_defaults=suggest_defaults)
    if not ray.is_initialized():
        ray.init(address=ray_address, include_dashboard=False, logging_level=logging.WARNING)
    restarted = _start_serve({"host": host, "port": port, "request_timeout_s": REQUEST_TIMEOUT_S},
                             {"runtime_env": {"env_vars": proxy_env}})
    actual = _http_config()
    if actual is not None and (str(actual.host), int(actual.port)) != (host, port):
        raise ArgumentError(f"Ray Serve already runs on this cluster with HTTP {actual.host}:{actual.port}, not "
                            f"{host}:{port}; stop it (serve shutdown) or use that address")
    started = time.perf_counter()
    serve.run(app, name=app_name, route_prefix=route_prefix, blocking=False)
    logger.info("suggestion API up in %.1fs", time.perf_counter() - started)
    prefix = "" if route_prefix == "/" else route_prefix.rstrip("/")
    url_host = f"[{host}]" if ":" in host else host
    if restarted:  # serve.start did not wait for the restarted proxy: wait for the API itself
        _wait_until_healthy(f"http://{'127.0.0.1' if host == '0.0.0.0' else url_host}:{port}{prefix}/v1/health")
    return ServerInfo(f"http://{url_host}:{port}{prefix}", pid, replicas, digest is not None, app_name)


def _start_serve(http_options: dict[str, Any], controller_options: dict[str, Any], attempts: int = 3) -> bool:
    """``serve.start``, retried when the controller kills an HTTP proxy that was slow to become
    ready (its ready check allows 5 s; on a loaded node the proxy's worker can take longer, and
    the controller restarts it with a longer allowance). True when a retry was needed.
    ``controller_options`` reach a controller started here, and through it its proxies."""
    from ray.exceptions import ActorDiedError

    for attempt in range(attempts - 1):
        try:
            serve.start(http_options=http_options, controller_options=controller_options)
            return attempt > 0
        except ActorDiedError as e:
            if "ProxyActor" not in str(e):
                raise
            logger.warning("Ray Serve's HTTP proxy was restarted while starting; waiting for it (try %d of %d)",
                           attempt + 2, attempts)
    # the last try: its error goes to the caller
    serve.start(http_options=http_options, controller_options=controller_options)
    return True


def _wait_until_healthy(url: str, timeout_s: float = 120.0) -> None:
    """Poll the API's health route until it answers 200 (UnreachableError naming the URL after ``timeout_s``)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise UnreachableError(f"the suggestion API did not answer {url} within {timeout_s:.0f} s")
        time.sleep(0.5)


def _http_config():
    try:
        from ray.serve.context import _get_global_client

        return _get_global_client().http_config
    except Exception:
        return None


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def run_server(store_root: str, *, on_ready=None, **kwargs: Any) -> None:
    """``start_server`` and block until Ctrl-C / SIGTERM, then shut Serve down (``nasdb serve``)."""
    import signal

    info = start_server(store_root, **kwargs)
    if on_ready is not None:
        on_ready(info)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()


__all__ = ["API_VERSION", "AppArgs", "ServerInfo", "ServeLimits", "SuggestionDeployment", "app_builder",
           "build_api", "build_app", "run_server", "start_server"]
