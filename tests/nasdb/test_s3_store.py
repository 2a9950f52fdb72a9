"""The store on object storage: a real S3-protocol server (moto's) on loopback, reached through s3fs over HTTP.

Every process gets the store's full URI (``s3://bucket/prefix``) and the endpoint and
credentials from the standard AWS environment variables; the Ray test passes them as a job
would, through the runtime environment. Each test runs with its working directory in an empty
temp folder and checks that it stays empty: a process that lost the scheme would have opened
``bucket/prefix`` as a relative local path there (issue 14).
"""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from nasdb.s3_testing import free_port, loopback_s3  # noqa: E402
from nasdb.store import ExperimentStore  # noqa: E402

BUCKET = "nasdb-test"


@pytest.fixture(scope="module")
def s3():
    with loopback_s3(BUCKET) as env:
        yield env


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _bucket_rows(store: ExperimentStore) -> tuple[int, int]:
    """(rows in every experiments object of the bucket, distinct experiment ids), read object by object."""
    ids: list[str] = []
    store.fs.invalidate_cache()  # s3fs caches listings per instance; the store's own reads list with refresh
    for path in store.fs.find(store.path("experiments")):
        if path.endswith(".parquet"):
            with store.fs.open(path, "rb") as f:
                ids += pq.read_table(f, columns=["experiment_id"]).column(0).to_pylist()
    return len(ids), len(set(ids))


def test_uri_is_the_address_that_reopens_the_same_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cases = {"rel/store": str(tmp_path / "rel" / "store"), f"file://{tmp_path}/x": f"{tmp_path}/x",
             "memory://m/s": "memory:///m/s", "s3://bucket/nasdb/": "s3://bucket/nasdb"}
    for given, uri in cases.items():
        store = ExperimentStore(given)
        assert store.uri == uri and ExperimentStore(store.uri).root == store.root
    assert ExperimentStore("s3://bucket/nasdb").root == "bucket/nasdb"  # fs-native: never hand it to another process


def test_a_missing_s3_extra_is_one_line_naming_it(tmp_path):
    code = ("import sys; sys.modules['s3fs'] = None; from nasdb.cli import main; "
            "main(['--store', 's3://bucket/nasdb', 'stats'])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "error: store 's3://bucket/nasdb' needs an optional extra: pip install 'nasdb[s3]'"]


def test_writers_on_s3_publish_whole_objects_and_every_row_counts_once(s3, empty_cwd):
    from nasdb.store.testing import append_worker

    uri = f"s3://{BUCKET}/writers"
    store = ExperimentStore(uri)
    store.init()
    assert store.uri == uri and repr(store) == f"ExperimentStore({uri!r})"
    part = store.path("experiments", "task=alpha", "part-broken-0.parquet")
    with pytest.raises(RuntimeError):  # a write that fails midway leaves no object behind
        with store._sfs.atomic_output(part) as sink:
            sink.write(b"PAR1 half a file")
            raise RuntimeError("killed mid-write")
    assert not store.fs.exists(part)

    workers, per_worker = 3, 60
    with multiprocessing.get_context("spawn").Pool(workers) as pool:  # concurrent writers, same prefix
        appended = pool.starmap(append_worker, [(uri, w, per_worker, ["alpha", "beta"], 20, 0.0)
                                                for w in range(workers)])
    raw, distinct = _bucket_rows(store)
    assert raw == sum(appended) and distinct == workers * per_worker  # every 10th row retried: counted once
    assert ExperimentStore(uri).count() == workers * per_worker

    report = store.verify()
    assert report["quarantined"] == [] and report["checked"] > 0
    merged = store.compact()
    assert merged["unique_rows"] == workers * per_worker
    assert ExperimentStore(uri).count() == workers * per_worker
    assert list(empty_cwd.iterdir()) == []


def _cli(*args: str) -> str:
    from click.testing import CliRunner

    from nasdb.cli import main

    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.mark.own_ray
@pytest.mark.timeout(1800)  # about 3 minutes on a quiet 2-core machine; far more at load average 30+
def test_populate_search_fit_serve_across_three_nodes_write_only_to_the_bucket(own_ray_cluster, empty_cwd,
                                                                                monkeypatch):
    """A 3-node cluster (the head has no CPU, so every trainer, Train worker and replica runs on
    the two worker nodes) that learns the S3 endpoint and credentials only from the job's
    runtime environment, as README's cluster recipe does."""
    import ray
    import requests
    from ray.cluster_utils import Cluster

    # No retry of a node that misses Ray's fixed 30 s start-up wait (load average 40+): the failed
    # node's GCS and dashboard outlive it, and Cluster.shutdown() does not know them.
    cluster = Cluster()
    try:
        for cpus in (0, 1, 1):  # the head first
            cluster.add_node(num_cpus=cpus, object_store_memory=80 << 20)
        with loopback_s3(BUCKET, set_env=False) as env:
            for k, v in env.items():  # the driver's own environment; the nodes started without it
                monkeypatch.setenv(k, v)
            ray.init(address=cluster.address, runtime_env={"env_vars": env}, logging_level="ERROR",
                     log_to_driver=False)
            uri = f"s3://{BUCKET}/cluster"
            tasks = ["digits10_small", "digits_0to5"]
            _cli("--store", uri, "init")
            _cli("--store", uri, "populate", "--tasks", ",".join(tasks), "--per-task", "2", "--workers", "2",
                 "--epochs", "1", "--batch-size-models", "1", "--no-progress")
            cpus = {n["NodeID"]: n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]}
            assert len(cpus) == 3 and cpus[cluster.head_node.node_id] == 0  # trainers (1 CPU each) ran elsewhere

            _cli("--store", uri, "search", "--agent", "random", "--task", "digits10_small", "--budget", "2",
                 "--epochs", "1")
            store = ExperimentStore(uri)
            raw, distinct = _bucket_rows(store)
            assert store.count() == distinct == 2 * 2 + 2 and raw >= distinct  # a retried chunk may write twice
            from predictor.config import PredictorConfig
            from predictor.train import fit_predictor

            pid = fit_predictor(store, PredictorConfig(num_steps=20, batch_size=2), exclude_tasks=(), workers=1)
            assert store.fs.exists(store.path("predictors", pid, "metadata.json"))

            from ray import serve

            from predictor.server import start_server

            info = start_server(uri, port=free_port(), predictor_id=pid, allow_unauthenticated=True, num_cpus=0.5)
            try:
                answer = requests.post(f"{info.url}/v1/suggest", json={"task": "digits_0to5"}, timeout=120)
                assert answer.status_code == 200, answer.text
                assert len(answer.json()["architecture"]) == 15
            finally:
                serve.shutdown()
            report = json.loads(_cli("--store", uri, "verify", "--json"))
            assert report["quarantined"] == []
            assert list(empty_cwd.iterdir()) == [], "a process wrote the store to a local relative path"
    finally:
        ray.shutdown()
        cluster.shutdown()
