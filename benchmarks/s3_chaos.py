"""Populate on s3:// through chaos: a trainer actor kill -9'd mid-run, then the driver killed, then the command rerun.

Issue 14's chaos figure: afterwards the bucket holds exactly the planned rows, no experiment id
twice (reported both for the store's deduplicated read and for the raw objects), and nothing was
written to the working folder of the driver and the cluster. The bucket is
moto's S3 server on loopback (``nasdb.s3_testing``), reached through s3fs over HTTP; the
cluster is a ``ray.cluster_utils.Cluster`` of this process, so it outlives the killed driver
(``python -m cluster.populate --address ...``, as under ``ray job submit``).

    python benchmarks/s3_chaos.py                      # 2 tasks x 40, 2 epochs: 45-65 s at load 7-12

The run fails (exit 1) unless the chaos really happened: a trainer process was found and killed
while rows were still missing, and the driver was killed before the bucket held every planned row.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import pyarrow.parquet as pq  # noqa: E402

from nasdb.s3_testing import loopback_s3  # noqa: E402
from nasdb.store import ExperimentStore  # noqa: E402

BUCKET = "nasdb-chaos"


def _trainer_pids(endpoint: str) -> list[int]:
    """Worker processes of this run's trainer actors: titled ``ray::ChildTrainer...`` and carrying
    this run's S3 endpoint (other Ray clusters on the machine are left alone)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].decode(errors="replace")
            if not title.startswith("ray::ChildTrainer"):
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if f"AWS_ENDPOINT_URL={endpoint}".encode() in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def _raw_ids(uri: str) -> list[str]:
    """Every experiment id in the bucket's objects, read object by object (no dedup)."""
    store = ExperimentStore(uri)
    store.fs.invalidate_cache()  # s3fs caches listings per (shared) instance
    ids: list[str] = []
    for path in store.fs.find(store.path("experiments")):
        if path.endswith(".parquet"):
            with store.fs.open(path, "rb") as f:
                ids += pq.read_table(f, columns=["experiment_id"]).column(0).to_pylist()
    return ids


def _wait_rows(uri: str, at_least: int, proc: subprocess.Popen, timeout_s: float) -> int:
    """Distinct ids in the bucket once there are at least ``at_least`` (polled every 0.5 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        n = len(set(_raw_ids(uri)))
        if n >= at_least:
            return n
        time.sleep(0.5)
    raise SystemExit(f"populate reached fewer than {at_least} rows in {timeout_s:.0f}s (exit {proc.poll()})")


def _kill_one_trainer(endpoint: str, timeout_s: float) -> int:
    """SIGKILL the worker process of one of this run's trainer actors; its pid (waits for one to exist)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        victims = _trainer_pids(endpoint)
        if victims:
            os.kill(victims[0], signal.SIGKILL)
            return victims[0]
        time.sleep(0.2)
    raise SystemExit(f"no trainer actor process of this run appeared in {timeout_s:.0f}s")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="digits10_small,digits_0to5")
    p.add_argument("--per-task", type=int, default=40)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size-models", type=int, default=2)
    p.add_argument("--timeout", type=float, default=600.0, help="Seconds to wait for each phase.")
    args = p.parse_args()
    from ray.cluster_utils import Cluster

    planned = len(args.tasks.split(",")) * args.per_task
    repo = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    with tempfile.TemporaryDirectory(prefix="nasdb-chaos-") as tmp, loopback_s3(BUCKET) as env:
        cwd = os.path.join(tmp, "cwd")
        os.makedirs(cwd)
        os.chdir(cwd)
        uri = f"s3://{BUCKET}/nasdb"
        ExperimentStore(uri).init()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "object_store_memory": 100 << 20})
        report: dict = {"planned": planned, "tasks": args.tasks, "per_task": args.per_task, "epochs": args.epochs,
                        "load_average_at_start": _load()}
        rerun = None
        try:
            cmd = [sys.executable, "-m", "cluster.populate", "--store", uri, "--tasks", args.tasks,
                   "--per-task", str(args.per_task), "--epochs", str(args.epochs), "--workers", "2",
                   "--batch-size-models", str(args.batch_size_models), "--address", cluster.address,
                   "--summary-json", os.path.join(tmp, "summary.json")]  # progress lines and notes to the log
            run_env = {**os.environ, "PYTHONPATH": os.path.abspath(repo)}
            t0 = time.monotonic()
            log = open(os.path.join(tmp, "driver1.log"), "w")
            driver = subprocess.Popen(cmd, cwd=cwd, env=run_env, stdout=log, stderr=subprocess.STDOUT)
            report["rows_when_trainer_killed"] = _wait_rows(uri, max(1, planned // 8), driver, args.timeout)
            _kill_one_trainer(env["AWS_ENDPOINT_URL"], args.timeout)
            report["trainer_processes_killed"] = 1
            report["rows_when_driver_killed"] = _wait_rows(uri, max(2, planned // 2), driver, args.timeout)
            driver.send_signal(signal.SIGKILL)
            report["first_driver_exit"] = driver.wait()
            log.close()
            with open(log.name) as f:  # the pool's note: "trainer <name> lost (...); chunk <id> (...) requeued"
                report["first_driver_trainers_lost_and_requeued"] = sum(" lost (" in line for line in f)
            rerun = subprocess.run(cmd, cwd=cwd, env=run_env, capture_output=True, text=True, timeout=args.timeout)
            report["rerun_exit"] = rerun.returncode
            if rerun.returncode == 0:
                with open(os.path.join(tmp, "summary.json")) as f:
                    tasks = json.load(f)["tasks"]
                report["rerun_skipped"] = sum(t["skipped"] for t in tasks)
                report["rerun_trained_ok"] = sum(t["ok"] for t in tasks)
            report["seconds"] = round(time.monotonic() - t0, 1)
            report["load_average_at_end"] = _load()
        finally:
            cluster.shutdown()
        raw = _raw_ids(uri)
        rows = ExperimentStore(uri).experiments_arrow(status=None)
        read = rows.column("experiment_id").to_pylist()
        local = [os.path.relpath(os.path.join(d, f), cwd) for d, _, files in os.walk(cwd) for f in files]
        report.update(rows_in_bucket=len(read), rows_ok=rows.column("status").to_pylist().count("ok"),
                      duplicated_ids=len(read) - len(set(read)), raw_rows=len(raw),
                      distinct_ids_in_objects=len(set(raw)), local_files=len(local))
        print(json.dumps(report, indent=1))
        if rerun is not None and rerun.returncode != 0:
            print(rerun.stdout[-2000:], rerun.stderr[-2000:], file=sys.stderr)
        chaos = report["rows_when_trainer_killed"] < planned and report["rows_when_driver_killed"] < planned
        if not chaos:
            print("the run finished before the kills: rerun with more --per-task or --epochs", file=sys.stderr)
        ok = chaos and len(read) == len(set(read)) == report["rows_ok"] == planned and not local and report["rerun_exit"] == 0
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
