"""Access control of the suggestion API: bearer tokens, the loopback rule, and a request guard.

Ray's own token (RAY_AUTH_MODE=token) does not cover the Serve HTTP proxy (Ray's security
notes), so the API checks its own token. Only a SHA-256 digest of the token travels to the
replicas (deployment arguments are visible to whoever can read the Serve config); requests
are compared digest to digest with ``hmac.compare_digest`` (constant time). Running without a
token is allowed only on a loopback host. ``RequestGuard`` is a pure ASGI middleware, so an
unauthenticated or oversized request is refused before its body is read or parsed.

It also bounds what a slow or hostile client can hold (issue 15): a request's body must arrive
within ``body_timeout_s`` of its headers (408 after it; a slow upload otherwise holds a replica
slot for as long as it trickles), and one client address may have at most
``max_requests_per_client`` requests in flight on a replica (429 above it), so the replica's
``max_concurrent_requests`` slots (many more than one client may hold) stay free for others (503
once all are taken). /v1/health and the API description take no slot and never wait for a body,
so they answer while every slot is held (Serve's own cap, predictor/serve.py, sits above).
"""

from __future__ import annotations

import hashlib
import asyncio
import hmac
import ipaddress
import json
import logging
import os
import stat
from typing import Any, Awaitable, Callable

from fastapi import HTTPException

from nasdb.errors import ArgumentError

logger = logging.getLogger(__name__)

TOKEN_ENV = "NASDB_API_TOKEN"
MIN_TOKEN_LENGTH = 16
LOOPBACK_NAMES = ("localhost",)
#: Paths answered without a token: liveness probes and the API description.
PUBLIC_PATHS = frozenset({"/v1/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
#: Path prefixes answered without a token: /docs' Swagger UI files, bundled by fastapi-offline (no CDN).
PUBLIC_PREFIXES = ("/static-offline-docs/",)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; False for 0.0.0.0, :: and every other address."""
    if not isinstance(host, str):
        return False
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_token(token: str, where: str) -> str:
    token = token.strip()
    if len(token) < MIN_TOKEN_LENGTH:
        raise ArgumentError(f"the API token from {where} has {len(token)} characters; use at least {MIN_TOKEN_LENGTH} "
                            f"(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def read_token_file(path: str | os.PathLike) -> str:
    """The token in ``path`` (surrounding whitespace stripped); warns when others may read the file."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read()
        mode = os.stat(path).st_mode
    except OSError as e:
        raise ArgumentError(f"cannot read the API token file {path!r}: {e.strerror or e}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("API token file %s is readable by other users; chmod 600 it", path)
    return _check_token(token, f"token file {path!r}")


def resolve_token_digest(*, token: str | None = None, token_file: str | os.PathLike | None = None,
                         allow_unauthenticated: bool = False, host: str | None = None) -> str | None:
    """The digest the API checks requests against, or None when it runs without a token.

    Precedence: ``token``, then ``token_file``, then $NASDB_API_TOKEN. Refuses (ValueError, one
    line) to run without a token unless ``allow_unauthenticated`` is set AND ``host`` is a
    loopback address; ``host=None`` (unknown) counts as not loopback.
    """
    if allow_unauthenticated:
        if not is_loopback(host or ""):
            raise ArgumentError(f"allow_unauthenticated is only allowed when the HTTP host is loopback "
                                f"(127.0.0.1, ::1, localhost), got host={host!r}; configure a token instead")
        if token or token_file or os.environ.get(TOKEN_ENV):
            logger.warning("allow_unauthenticated is set: the configured API token is ignored")
        return None
    if token:
        return token_digest(_check_token(token, "the token argument"))
    if token_file:
        return token_digest(read_token_file(token_file))
    env = os.environ.get(TOKEN_ENV)
    if env:
        return token_digest(_check_token(env, f"${TOKEN_ENV}"))
    raise ArgumentError(f"no API token configured: set ${TOKEN_ENV}, pass a token file (--token-file), or "
                        f"allow unauthenticated access on a loopback host only (--allow-unauthenticated)")


def route_path(scope: dict[str, Any]) -> str:
    """The request path below the app's route prefix (Serve sets ``root_path`` to the prefix)."""
    path, root = scope.get("path", ""), scope.get("root_path", "") or ""
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


def is_csv(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request's Content-Type is text/csv (a table upload)."""
    for k, v in headers:
        if k.lower() == b"content-type":
            return v.split(b";")[0].strip().lower() == b"text/csv"
    return False


def client_key(scope: dict[str, Any]) -> str:
    """Whom the per-client cap counts: the peer address the Serve proxy saw (its host, not its port)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class RequestGuard:
    """ASGI middleware: 401 without the right bearer token, 413 for a body over ``max_body_bytes``,
    429 above ``max_requests_per_client`` concurrent requests of one address, 503 above
    ``max_concurrent_requests`` in all (public paths exempt), 408 for a body not in within ``body_timeout_s``.

    Runs before routing and body parsing; the token check compares SHA-256 digests in
    constant time. ``expected_digest=None`` (loopback-only, explicitly allowed) skips the check.
    The per-client counts live in the replica's event loop (no lock needed: no await between
    the check and the increment).
    """

    def __init__(self, app: Callable[..., Awaitable[None]], *, expected_digest: str | None, max_body_bytes: int,
                 body_timeout_s: float = 30.0, max_requests_per_client: int = 64,
                 public_paths: frozenset[str] = PUBLIC_PATHS, max_csv_bytes: int | None = None,
                 max_concurrent_requests: int = 512):
        self.app, self.expected, self.max_body_bytes, self.public = app, expected_digest, max_body_bytes, public_paths
        self.max_csv_bytes = max_csv_bytes  # the limit of a text/csv body (a table upload), else max_body_bytes
        self.body_timeout_s, self.max_per_client = body_timeout_s, max_requests_per_client
        self.max_concurrent = max_concurrent_requests
        self.in_flight: dict[str, int] = {}
        self.total = 0  # requests holding a slot, all clients

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        if self.expected is None:
            return True
        values = [v for k, v in headers if k.lower() == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, presented = values[0].decode("latin-1").strip().partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return False
        return hmac.compare_digest(token_digest(presented.strip()), self.expected)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = route_path(scope)
        public = path in self.public or path.startswith(PUBLIC_PREFIXES)
        if not public and not self.authorized(scope.get("headers", [])):
            return await _reply(send, 401, "missing or invalid bearer token (header `Authorization: Bearer <token>`)",
                                extra_headers=[(b"www-authenticate", b'Bearer realm="nasdb"')])
        limit = (self.max_csv_bytes if self.max_csv_bytes is not None and is_csv(scope.get("headers", []))
                 else self.max_body_bytes)
        length = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if length:
            try:
                declared = int(length[0])
            except ValueError:
                return await _reply(send, 400, "Content-Length header is not an integer")
            if declared > limit:
                return await _reply(send, 413, f"body: {declared} bytes exceed the limit of {limit}")
        if public:
            return await self.app(scope, receive, send)
        client = client_key(scope)
        held = self.in_flight.get(client, 0)
        if held >= self.max_per_client:
            return await _reply(send, 429, f"too many concurrent requests from {client}: at most "
                                           f"{self.max_per_client} per client", extra_headers=[(b"retry-after", b"1")])
        if self.total >= self.max_concurrent:
            return await _reply(send, 503, f"the replica is at capacity: {self.total} requests in flight, at most "
                                           f"{self.max_concurrent}", extra_headers=[(b"retry-after", b"1")])
        self.in_flight[client] = held + 1
        self.total += 1
        try:
            await self.app(scope, self._receive_within_limits(receive, limit), send)
        finally:
            self.total -= 1
            left = self.in_flight[client] - 1
            if left:
                self.in_flight[client] = left
            else:
                del self.in_flight[client]

    def _receive_within_limits(self, receive, limit: int):
        """``receive`` that refuses a body over ``limit`` bytes (413) or not complete within
        ``body_timeout_s`` of the request's start (408)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout_s
        received, complete = 0, False

        async def guarded_receive():
            nonlocal received, complete
            if complete:  # the body is in: what is left to receive is a disconnect, no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"body: not complete within {self.body_timeout_s:g} s of the request "
                                         f"headers ({received} bytes received)") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:  # a chunked body without Content-Length
                    raise HTTPException(413, f"body: more than {limit} bytes")
                complete = not message.get("more_body", False)
            return message

        return guarded_receive


async def _reply(send, status: int, detail: str, extra_headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *extra_headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
