"""The suggestion API's FastAPI app: its routes, error answers and request guard (issue 6).

    POST /v1/suggest   {"task": NAME} or {"x": [[64 floats], ...], "y": [ints]}, optional
                       k_max_iters / step_size / top_per_task / closest_tasks -> a suggestion
    POST /v1/predict   the same task input + {"architectures": [[15 ints], ...]} -> scores
                       both also take a table: {"columns": [...], "rows": [[...]], "label": COL}, or a CSV
                       upload (Content-Type: text/csv, ?label=COL; /v1/predict: &architectures=[[...]])
    GET  /v1/model     which predictor, trained on which tasks, loss, metrics, created
    GET  /v1/health    liveness (no token needed), also /openapi.json and /docs (Swagger UI from bundled files)

Every request but health and the API description carries ``Authorization: Bearer <token>``
(predictor/auth.py). Bad input is a 4xx whose ``detail`` names the field; the replica
keeps serving. The app wraps a ``SuggestionService`` (predictor/service.py); each Ray Serve
replica builds one (predictor/serve.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi_offline import FastAPIOffline
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from nasdb.errors import ArgumentError, NasdbError, PayloadTooLargeError, StoreError, UnknownTaskError
from predictor._api_schema import (HARD_MAX_ITERS, ErrorResponse, HealthResponse, ModelResponse, PredictRequest,
                                   PredictResponse, SuggestRequest, SuggestResponse)
from predictor.auth import RequestGuard, is_csv, route_path
from predictor.csv_upload import read_csv_upload
from predictor.service import ServeLimits, SuggestionService

logger = logging.getLogger(__name__)

API_VERSION = "1.0"
MAX_ERRORS_SHOWN = 10
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 404, 408, 413, 422, 429, 503)}


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


__all__ = ["API_VERSION", "build_api"]
