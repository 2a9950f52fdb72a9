"""Fixtures of the suggestion API tests (test_serve.py, test_serve_deploy.py): each test module that asks
for ``server`` gets its own Serve app, on its own copy of the tiny store (predictor/testing.py)."""

import shutil

import pytest
import requests
from serve_helpers import HEADER_TIMEOUT_S, LIMITS, TOKEN, free_port

from nasdb.store import ExperimentStore
from predictor.testing import shared_tiny_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root, pid = shared_tiny_store(str(tmp_path_factory.getbasetemp()))
    copy = tmp_path_factory.mktemp("serve") / "store"
    shutil.copytree(root, copy)  # test_serve_deploy.py adds predictors
    return ExperimentStore(str(copy)), pid


@pytest.fixture(scope="module")
def server(store, ray_cluster):
    from ray import serve

    from predictor.server import start_server

    try:
        info = start_server(store[0].root, port=free_port(), token=TOKEN, limits=LIMITS, refresh_seconds=1.0,
                            predictor_id="latest",  # follow new fits: asked for explicitly (predictor/registry.py)
                            num_cpus=0.5, header_timeout_s=HEADER_TIMEOUT_S)
        yield info
    finally:
        serve.shutdown()  # the shared Ray cluster stays up for the next test module


@pytest.fixture(scope="module")
def http():
    with requests.Session() as s:
        yield s
