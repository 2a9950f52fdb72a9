"""Shared test settings."""

import contextlib
import socket
import sys
import threading
import time

import pytest
import torch

from cluster.child import EmbeddingBank
from nasdb.space import default_space
from nasdb.tasks import load_builtin_task


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Child models and predictors are tiny: one thread is much faster than two on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- module fixtures of the child-training tests (a test module may define its own) --------------
@pytest.fixture(scope="module")
def space():
    return default_space()


@pytest.fixture(scope="module")
def task():
    return load_builtin_task("digits10_small")  # 10 classes, 300 training images, 500 validation


@pytest.fixture(scope="module")
def bank(task):
    return EmbeddingBank.fit(task.x_train)  # the default space's 7 modules, fitted in milliseconds


# -- one local Ray cluster for the whole session -------------------------------------------------
#: The shared cluster's size: 2 CPUs, as in every Ray test of this suite (a 2-core machine).
RAY_CPUS = 2


def start_ray(num_cpus: int = RAY_CPUS, attempts: int = 3):
    """``ray.init`` of a fresh local cluster, retried: on a loaded machine the raylet can miss
    Ray's fixed 30 s start-up wait ("The current node timed out during startup").

    ``address="local"``: without it ``ray.init`` joins the cluster named in
    /tmp/ray/ray_current_cluster, which ``ray start`` or a test's ``ray.cluster_utils.Cluster``
    in any process on the machine writes, and the tests would run on someone else's cluster."""
    import ray

    for attempt in range(attempts):
        try:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
            return ray
        except Exception:  # noqa: BLE001 - retried; the last failure is raised
            if ray.is_initialized():
                ray.shutdown()
            if attempt == attempts - 1:
                raise
    return ray


@pytest.fixture(scope="session")
def ray_cluster():
    """The session's local Ray cluster (2 CPUs), started on first use and shut down at the end.

    Every test that needs Ray uses this one, so a run starts Ray once instead of once per test
    module. Tests leave it as they found it: actors they start are killed, Serve is shut down.
    A test that must stop or restart Ray itself uses ``own_ray_cluster`` instead.
    """
    import ray

    if not ray.is_initialized():
        start_ray()
    yield ray
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(autouse=True)
def ray_settled():
    """After each test on the shared cluster, wait (at most 60 s) until the CPUs and GPUs that were
    free when it started are free again: a killed actor or a crashed search driver gives its
    resources back asynchronously, and on a loaded machine slowly, so the next test would
    otherwise start on a partly held cluster. What a longer-lived fixture holds (a module's Serve
    replica) was held before the test too and is not waited for."""
    ray = sys.modules.get("ray")
    before = ray.available_resources() if ray is not None and ray.is_initialized() else None
    yield
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return
    total = ray.cluster_resources()
    want = {k: (before or total).get(k, 0.0) for k in ("CPU", "GPU")}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        free = ray.available_resources()
        if all(free.get(k, 0.0) >= want[k] - 1e-6 for k in want):
            return
        time.sleep(0.25)


@pytest.fixture
def own_ray_cluster():
    """For a test that must start, kill or restart Ray itself (a multi-node ``ray.cluster_utils.Cluster``,
    a killed raylet); mark such a test ``@pytest.mark.own_ray`` as well. The shared cluster, if
    running, is stopped first; whatever the test leaves running is shut down after it, and the
    shared cluster is started again, so the tests after it find it as they expect."""
    import ray

    shared = ray.is_initialized()
    if shared:
        ray.shutdown()
    yield
    if ray.is_initialized():
        ray.shutdown()
    if shared:
        start_ray()


@pytest.fixture
def cli(monkeypatch):
    """``cli(*args, code=0)``: the ``nasdb`` CLI in process (no NASDB_STORE from the environment), checking the
    exit code and returning click's result."""
    from click.testing import CliRunner

    from nasdb.cli import main

    monkeypatch.delenv("NASDB_STORE", raising=False)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0):
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == code, (args, result.output)
        return result
    return invoke


def pytest_configure(config):
    config.addinivalue_line("markers", "own_ray: the test starts, kills or restarts its own Ray cluster "
                                       "(fixture own_ray_cluster) instead of sharing the session's")


@contextlib.contextmanager
def _uvicorn_in_thread(app, start_timeout: float = 30.0, **config):
    """Serve ``app`` with uvicorn on a free loopback port in a daemon thread; yields the port."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def uvicorn_in_thread():
    """``with uvicorn_in_thread(app, **uvicorn_config) as port``: a real uvicorn server on loopback."""
    return _uvicorn_in_thread
