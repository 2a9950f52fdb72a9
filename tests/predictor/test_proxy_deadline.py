"""The proxy's header deadline (predictor/proxy_deadline.py) on a real uvicorn server, both HTTP protocols.

A subclass of each uvicorn protocol is patched (the class Ray's proxy uses is patched only inside
the proxy process), served on loopback in a thread, and driven over raw sockets.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nasdb.errors import ArgumentError
from predictor.proxy_deadline import CALLBACK, check_timeout, controller_env, install, patch_protocol

TIMEOUT_S = 0.8
SLACK_S = 1.0  # event-loop and scheduling delay on a loaded 2-core machine


async def app(scope, receive, send) -> None:
    """Reads the whole body, sleeps ``?sleep=S`` seconds, answers 200 with the body's length."""
    if scope["type"] != "http":
        return
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    query = scope.get("query_string", b"").decode()
    if query.startswith("sleep="):
        await asyncio.sleep(float(query[6:]))
    body = str(size).encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module", params=[H11Protocol, HttpToolsProtocol], ids=["h11", "httptools"])
def server(request, uvicorn_in_thread):
    protocol = type(f"Deadline{request.param.__name__}", (request.param,), {})
    patch_protocol(protocol, TIMEOUT_S)
    with uvicorn_in_thread(app, start_timeout=20, http=protocol, timeout_keep_alive=30, lifespan="off") as port:
        yield port


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S + SLACK_S + 5)
    return sock


def _read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything until the server closes, and when it closed (monotonic)."""
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data, time.monotonic()


def _get(path: str = "/", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n"


def test_half_sent_headers_get_408_and_are_closed_at_the_deadline(server):
    with _connect(server) as sock:
        opened = time.monotonic()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bear")
        data, closed = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 408 ") and b"connection: close" in data, data
    assert TIMEOUT_S - 0.05 <= closed - opened <= TIMEOUT_S + SLACK_S


def test_headers_dripped_a_byte_at_a_time_still_meet_the_deadline(server):
    """The deadline is for the whole header, not for silence between bytes (a slowloris drip)."""
    with _connect(server) as sock:
        opened = time.monotonic()
        for byte in b"GET / HTTP/1.1\r\nHost: xxxxxxxxxxxxxxxxxxxxxxxx":
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # closed by the server
                break
            time.sleep(TIMEOUT_S / 8)
        data, closed = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert closed - opened <= TIMEOUT_S + SLACK_S


def test_a_connection_that_sends_nothing_is_closed_without_a_reply(server):
    with _connect(server) as sock:
        opened = time.monotonic()
        data, closed = _read_all(sock)
    assert data == b"" and TIMEOUT_S - 0.05 <= closed - opened <= TIMEOUT_S + SLACK_S


def test_slow_answers_slow_bodies_and_idle_keep_alive_are_not_cut(server):
    """Once the headers are in, the deadline is off: an answer slower than it and a body sent
    over longer than it both complete; an idle kept-alive connection waits for its next request,
    whose headers get the deadline again."""
    with _connect(server) as sock:
        sock.sendall(_get(f"/?sleep={TIMEOUT_S * 2}"))
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcde")
        time.sleep(TIMEOUT_S * 2)
        sock.sendall(b"fghij")
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"10"), answer
        time.sleep(TIMEOUT_S * 2)  # idle between requests: uvicorn's keep-alive timer (30 s) governs
        sock.sendall(_get())
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET / HTTP/1.1\r\nHo")
        started = time.monotonic()
        data, closed = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 408 ") and closed - started <= TIMEOUT_S + SLACK_S


def test_the_proxy_callback_and_its_settings():
    env = controller_env(12)
    assert env == {"RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": CALLBACK, "NASDB_HEADER_TIMEOUT_S": "12.0"}
    module, _, name = CALLBACK.partition(":")
    assert getattr(__import__(module, fromlist=[name]), name) is install
    for bad in (0, -1, float("inf"), float("nan"), "10", True):
        with pytest.raises(ArgumentError, match="header_timeout_s="):
            check_timeout(bad)
