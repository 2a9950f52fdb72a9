"""A header deadline for Ray Serve's HTTP proxy: a connection must finish its request headers in time.

Ray 2.60's proxy serves HTTP with uvicorn, which never times out a request whose headers are
never finished (its keep-alive timer runs only between requests and stops at the first byte),
so each half-sent header held one proxy connection forever (issue 15). Ray lets an import path
run inside every proxy before it starts serving (``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``);
:func:`install` is that callback: it gives uvicorn's HTTP protocols a deadline, counted from the
connection's start or from the first byte of a later request on a kept-alive connection, for the
request line and headers. At the deadline a connection that sent part of a request gets a 408
and is closed; one that sent nothing is closed. The body has its own deadline in the replica
(predictor/auth.py ``body_timeout_s``).

The proxy reads both variables from the Serve controller's environment, which
``serve.start(controller_options={"runtime_env": {"env_vars": controller_env(t)}})`` sets
(``nasdb serve`` does; a cluster config sets ``controller_options`` the same way, see
predictor/serve_config.example.yaml). Ray's HAProxy mode (``RAY_SERVE_ENABLE_HA_PROXY=1``) has a
header timeout of its own but forwards every request from its own address and passes a client's
``X-Forwarded-For`` on to the replica's uvicorn, which trusts it from loopback: the per-client cap
of predictor/auth.py would become one cap shared by all clients, or be dodged with a forged
header, so nasdb keeps the uvicorn proxy.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from nasdb.errors import ArgumentError

logger = logging.getLogger(__name__)

#: How long a client has to send its request line and headers, in seconds (nginx's
#: client_header_timeout is 60 s; a request's headers are a few hundred bytes).
HEADER_TIMEOUT_S = 10.0
TIMEOUT_ENV = "NASDB_HEADER_TIMEOUT_S"
CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"
CALLBACK = "predictor.proxy_deadline:install"
_REPLY = b"request headers not complete within %g s\n"


def check_timeout(header_timeout_s: Any) -> float:
    """``header_timeout_s`` as a float; a one-line ArgumentError naming it unless finite and > 0."""
    v = header_timeout_s
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ArgumentError(f"`header_timeout_s` must be a finite number of seconds > 0, but got header_timeout_s={v!r}.")
    return float(v)


def controller_env(header_timeout_s: float = HEADER_TIMEOUT_S) -> dict[str, str]:
    """The Serve controller's env_vars that make every proxy it starts run :func:`install`."""
    return {CALLBACK_ENV: CALLBACK, TIMEOUT_ENV: repr(check_timeout(header_timeout_s))}


def install() -> list:
    """Ray's proxy callback: patch uvicorn's HTTP protocols in this process; no middleware added."""
    timeout_s = check_timeout(float(os.environ.get(TIMEOUT_ENV, HEADER_TIMEOUT_S)))
    from uvicorn.protocols.http.h11_impl import H11Protocol

    protocols: list[type] = [H11Protocol]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        protocols.append(HttpToolsProtocol)
    except ImportError:  # httptools not installed: uvicorn serves with h11
        pass
    for cls in protocols:
        patch_protocol(cls, timeout_s)
    logger.info("nasdb: HTTP request headers must be complete within %g s", timeout_s)
    return []


def patch_protocol(cls: type, timeout_s: float) -> None:
    """Give uvicorn protocol class ``cls`` the header deadline (idempotent; a second call sets the time).

    Both of uvicorn's HTTP protocols start a new ``cycle`` (request-response) once a request's
    headers are parsed, which is what disarms the deadline."""
    cls._nasdb_header_timeout_s = timeout_s
    if getattr(cls, "_nasdb_header_deadline", False):
        return
    made, received, lost = cls.connection_made, cls.data_received, cls.connection_lost

    def connection_made(self, transport) -> None:
        made(self, transport)
        _arm(self, got_bytes=False)

    def data_received(self, data: bytes) -> None:
        if getattr(self, "_nasdb_deadline", None) is None and _between_requests(self):
            _arm(self, got_bytes=True)  # a new request starts on a kept-alive connection
        elif getattr(self, "_nasdb_deadline", None) is not None:
            self._nasdb_got_bytes = True
        received(self, data)
        if not _between_requests(self):
            _disarm(self)  # its headers are in: the request is the replica's now

    def connection_lost(self, exc) -> None:
        _disarm(self)
        lost(self, exc)

    cls.connection_made, cls.data_received, cls.connection_lost = connection_made, data_received, connection_lost
    cls._nasdb_header_deadline = True


def _between_requests(protocol: Any) -> bool:
    cycle = getattr(protocol, "cycle", None)
    return cycle is None or cycle.response_complete


def _arm(protocol: Any, *, got_bytes: bool) -> None:
    protocol._nasdb_got_bytes = got_bytes
    protocol._nasdb_deadline = protocol.loop.call_later(type(protocol)._nasdb_header_timeout_s, _expire, protocol)


def _disarm(protocol: Any) -> None:
    handle = getattr(protocol, "_nasdb_deadline", None)
    if handle is not None:
        handle.cancel()
        protocol._nasdb_deadline = None


def _expire(protocol: Any) -> None:
    """The deadline passed with the headers unfinished: 408 if part of a request came, then close."""
    protocol._nasdb_deadline = None
    transport = protocol.transport
    if transport is None or transport.is_closing():
        return
    if protocol._nasdb_got_bytes:
        body = _REPLY % type(protocol)._nasdb_header_timeout_s
        transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                        b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
    transport.close()


__all__ = ["CALLBACK", "HEADER_TIMEOUT_S", "check_timeout", "controller_env", "install", "patch_protocol"]
