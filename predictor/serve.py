"""The suggestion API on Ray Serve: the replica deployment and its application builder (issue 6).

Each replica holds a ``SuggestionService`` (predictor/service.py) behind the FastAPI app of
predictor/api.py. Three ways to run it:

- ``start_server(store, port=..., replicas=...)`` (``nasdb serve``, predictor/server.py) on the embedded Ray;
- ``serve run predictor.serve:app_builder store=ROOT token_file=PATH`` on a cluster;
- ``serve deploy`` of a config like ``predictor/serve_config.example.yaml``; a new predictor is
  then picked up without downtime by promoting it (``nasdb predictors promote ID --alias
  champion``: replicas that follow the alias swap in place, predictor/registry.py), by changing
  the deployment's ``user_config`` (``{"predictor_id": ID}``: Serve calls ``reconfigure`` on the
  live replicas) or, asked for explicitly, by following ``latest`` with ``refresh_seconds`` > 0.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from nasdb.errors import ArgumentError
from predictor.api import build_api
from predictor.auth import is_loopback, resolve_token_digest
from predictor.service import ServeLimits, SuggestionService

#: Serve's cap on a replica's concurrent requests sits this far above the API's own
#: (ServeLimits.max_concurrent_requests, counted by RequestGuard without /v1/health): with every
#: API slot held, health, the API description and the instant 503s of a full replica still find a
#: Serve slot instead of waiting in the proxy's queue (issue 15: 8 slow uploads held all 8 slots,
#: health check included).
SERVE_SLOTS_ABOVE_API = 64


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


def serve_http_options():
    """The HTTP options (host, port, request_timeout_s) of the running Serve instance, asked from its
    controller; None when they cannot be told."""
    try:
        from ray.serve.context import _get_global_client

        return _get_global_client().http_config
    except Exception:  # private API: fail closed
        return None


def _proxy_host() -> str | None:
    """The host the Serve HTTP proxy binds, asked from the controller (None when it cannot be told)."""
    options = serve_http_options()
    return None if options is None else options.host


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


__all__ = ["AppArgs", "SuggestionDeployment", "app_builder", "build_app", "serve_http_options"]
