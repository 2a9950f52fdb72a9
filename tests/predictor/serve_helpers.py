"""Helpers shared by the suggestion API tests (test_serve.py, test_serve_deploy.py, test_serve_tables.py)."""

import socket
import threading
import time
from contextlib import contextmanager

import requests

from predictor.service import ServeLimits

TOKEN = "test-token-" + "k" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = ServeLimits(max_samples=500, max_architectures=20, max_k_max_iters=2000, max_requests_per_client=60,
                     body_timeout_s=10.0, max_concurrent_requests=100)
#: The proxy's header deadline of the ``server`` fixture (predictor/proxy_deadline.py; 10 s by default).
HEADER_TIMEOUT_S = 4.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def asked_while_swapping(http: requests.Session, url: str, headers: dict, task: str, k_max_iters: int):
    """Keep asking ``url`` for a suggestion for ``task`` in a thread while the body runs (a predictor
    swap); yields the list of failed requests' status codes, complete once the block exits."""
    failures: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            r = http.post(f"{url}/v1/suggest", json={"task": task, "k_max_iters": k_max_iters}, headers=headers,
                          timeout=60)
            if r.status_code != 200:
                failures.append(r.status_code)

    thread = threading.Thread(target=probe)
    thread.start()
    try:
        yield failures
    finally:
        stop.set()
        thread.join()


def wait_for_predictor(http: requests.Session, url: str, headers: dict, predictor_id: str,
                       timeout_s: float = 60.0) -> dict:
    """GET /v1/model until it reports ``predictor_id`` (or ``timeout_s`` passes): the last answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        model = http.get(f"{url}/v1/model", headers=headers, timeout=30).json()
        if model["predictor_id"] == predictor_id or time.monotonic() > deadline:
            return model
        time.sleep(0.3)


def healthy(http: requests.Session, server) -> None:
    r = http.get(f"{server.url}/v1/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok"
