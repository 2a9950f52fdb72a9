"""Helpers shared by the suggestion API tests (test_serve.py, test_serve_deploy.py, test_serve_tables.py)."""

import socket

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


def healthy(http: requests.Session, server) -> None:
    r = http.get(f"{server.url}/v1/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok"
