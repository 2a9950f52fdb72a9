"""The suggestion API on this machine: ``nasdb serve`` starts it on Ray Serve and runs until Ctrl-C.

``start_server`` starts Serve (the running Ray, else an embedded one) with the deployment of
predictor/serve.py and returns once the API answers; ``run_server`` then blocks until Ctrl-C or
SIGTERM and shuts Serve down. On a cluster, ``serve run`` / ``serve deploy`` take its place
(predictor/serve.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ray import serve

from nasdb.errors import ArgumentError, UnreachableError
from predictor.auth import resolve_token_digest
from predictor.proxy_deadline import HEADER_TIMEOUT_S, controller_env
from predictor.serve import build_app, serve_http_options
from predictor.service import ServeLimits

logger = logging.getLogger(__name__)

#: End-to-end limit of one request in the Serve HTTP proxy (Ray answers 408 after it): above the
#: body deadline plus the slowest suggestion the server limits allow.
REQUEST_TIMEOUT_S = 120.0


@dataclass
class ServerInfo:
    """Where a started Serve application answers and what it serves (``start_server``'s result)."""

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
    actual = serve_http_options()
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


__all__ = ["REQUEST_TIMEOUT_S", "ServerInfo", "run_server", "start_server"]
