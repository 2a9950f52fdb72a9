"""Seconds to turn a large table into a registered task (issue 17 target: 50,000 x 200 in < 30 s).

A synthetic table of ROWS rows: numeric columns with 5% missing values, low-cardinality text
columns (one-hot), high-cardinality text columns (hashed) and a 5-class label, written as
CSV and as Parquet. Timed: ``task_from_file`` (read, check, split, fit the transform on the
train split, encode every split), ``ExperimentStore.save_task`` (the `nasdb tasks add`
path end to end), and the task's embedding modules (``EmbeddingBank.for_task`` + features),
which the first child model of the task pays once per process. Wall seconds and this
process's CPU seconds are both reported: on a shared machine the wall time mostly measures
the other processes.

With ``--serve`` it also times a suggestion for the same table over HTTP, sent as a CSV upload
(issue 17 target: < 2 s): a small store with a ``cells`` predictor (predictor/testing.py
``shared_table_store``, refitted with the default network: 5 members, 4,096-row budget) is served by Ray Serve on this machine, and the CSV file's bytes are
POSTed to ``/v1/suggest?label=label`` ``--requests`` times (the first one separately: it warms
the replica). The server-side steps (read the CSV, check and encode the table, meta-features,
Algorithm 2) are also timed in-process, one by one, wall and CPU seconds, to show where the time goes,
and the CPU seconds the replica's and the proxy's processes spend per request are read from /proc.

    python benchmarks/table_task_speed.py [--rows 50000] [--cols 200] [--serve] [--requests 5]
        [--out reports/table_task_speed.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster.child import default_bank  # noqa: E402
from nasdb.store import ExperimentStore  # noqa: E402
from nasdb.tasks import task_from_file  # noqa: E402


def make_table(rows: int, cols: int, seed: int = 0) -> pa.Table:
    """``cols`` feature columns (75% numeric, 20% low- and 5% high-cardinality text) and ``label``."""
    rng = np.random.default_rng(seed)
    n_num, n_low = int(cols * 0.75), int(cols * 0.2)
    n_high = cols - n_num - n_low
    data: dict[str, pa.Array] = {}
    signal = np.zeros(rows)
    for j in range(n_num):
        x = rng.standard_normal(rows)
        signal += x * (j < 10)
        x[rng.random(rows) < 0.05] = np.nan
        data[f"num{j}"] = pa.array(x, from_pandas=True)
    for j in range(n_low):
        data[f"cat{j}"] = pa.array(np.array(list("abcdefg"))[rng.integers(0, 7, rows)])
    for j in range(n_high):
        data[f"id{j}"] = pa.array([f"u{v}" for v in rng.integers(0, 5000, rows)])
    data["label"] = pa.array(np.digitize(signal + rng.standard_normal(rows), [-2, -0.7, 0.7, 2]))
    return pa.table(data)


def _steps(store: ExperimentStore, pid: str, data: bytes, reps: int = 3) -> dict[str, list[float]]:
    """Wall and CPU seconds ``[wall, cpu]`` of each server-side step of a CSV suggestion, run here
    in-process with the replica's threads (one torch thread, one Arrow thread: Ray sets
    OMP_NUM_THREADS=1 for a one-CPU actor); the median of ``reps`` runs after an untimed one."""
    import torch

    from predictor.checkpoint import load_predictor
    from predictor.suggest import engine_for
    from predictor.tables import request_samples, table_from_csv

    engine = engine_for(load_predictor(store, pid), store)
    threads, arrow = torch.get_num_threads(), pa.cpu_count()
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    runs: list[dict[str, tuple[float, float]]] = []
    try:
        for _ in range(reps + 1):
            clock = [(time.perf_counter(), time.process_time())]
            table = table_from_csv(data)
            clock.append((time.perf_counter(), time.process_time()))
            x, y = request_samples(table, "label", engine.config, where="table")
            clock.append((time.perf_counter(), time.process_time()))
            z = engine.embed(x, y, where="table")
            clock.append((time.perf_counter(), time.process_time()))
            engine.suggest_z(z)
            clock.append((time.perf_counter(), time.process_time()))
            names = ("read_csv", "check_and_encode", "meta_features", "algorithm2")
            run = {n: (b[0] - a[0], b[1] - a[1]) for n, a, b in zip(names, clock, clock[1:])}
            runs.append({**run, "total": (clock[-1][0] - clock[0][0], clock[-1][1] - clock[0][1])})
    finally:
        torch.set_num_threads(threads)
        pa.set_cpu_count(arrow)
    return {f"{k}_s": [round(float(np.median([r[k][i] for r in runs[1:]])), 3) for i in (0, 1)] for k in runs[0]}


#: The server's processes whose CPU seconds per request are reported (background work included).
SERVE_PROCESSES = {"replica": "ServeReplica", "proxy": "ProxyActor"}


def _process_cpu_s(marker: str) -> float | None:
    """CPU seconds (user + system) used so far by the processes whose command line holds ``marker``
    (Ray names its actors' processes, e.g. ``ray::ServeReplica:...``, ``ray::ProxyActor``); None off Linux."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pid in (p for p in proc.iterdir() if p.name.isdigit()):
        try:
            if marker.encode() in (pid / "cmdline").read_bytes():
                fields = (pid / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
    return total


def time_suggestions(csv_path: Path, tmp: Path, requests_n: int) -> dict:
    """Serve a cells predictor and time POST /v1/suggest with the CSV file as the body."""
    import requests
    from ray import serve

    from predictor.server import start_server
    from predictor.testing import TABLE_TRAIN_TASKS, fit_tiny_predictor, shared_table_store

    root, _ = shared_table_store(str(tmp))
    # the default predictor shape (5 members, 4,096-row budget), fitted briefly: the request's cost is its shape's
    pid = fit_tiny_predictor(ExperimentStore(root), TABLE_TRAIN_TASKS, num_steps=200, meta_encoder="cells",
                             batch_size=8, sample_batch_size=256)
    data = csv_path.read_bytes()
    out = {"csv_mb": round(len(data) / 2**20, 1), "in_process": _steps(ExperimentStore(root), pid, data)}
    info = start_server(root, port=8765, allow_unauthenticated=True, predictor_id=pid)
    try:
        with requests.Session() as http:
            def post() -> float:
                t = time.perf_counter()
                r = http.post(f"{info.url}/v1/suggest", params={"label": "label"}, data=data,
                              headers={"Content-Type": "text/csv"}, timeout=120)
                r.raise_for_status()
                return time.perf_counter() - t
            out["first_s"] = round(post(), 3)
            cpu0 = {k: _process_cpu_s(m) for k, m in SERVE_PROCESSES.items()}
            lat = sorted(post() for _ in range(requests_n))
            cpu1 = {k: _process_cpu_s(m) for k, m in SERVE_PROCESSES.items()}
            out.update(requests=requests_n, p50_s=round(lat[len(lat) // 2], 3), min_s=round(lat[0], 3),
                       max_s=round(lat[-1], 3), load=[round(v, 1) for v in os.getloadavg()])
            out.update({f"{k}_cpu_s_per_request": round((cpu1[k] - cpu0[k]) / requests_n, 3)
                        for k in SERVE_PROCESSES if cpu0[k] is not None})
    finally:
        serve.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--cols", type=int, default=200)
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    p.add_argument("--serve", action="store_true", help="also time a suggestion for the CSV over HTTP")
    p.add_argument("--requests", type=int, default=5, help="timed HTTP requests after the first (--serve)")
    args = p.parse_args(argv)
    table = make_table(args.rows, args.cols)
    results = {"rows": args.rows, "cols": args.cols,
               "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"csv": Path(tmp, "t.csv"), "parquet": Path(tmp, "t.parquet")}
        pacsv.write_csv(table, files["csv"])
        pq.write_table(table, files["parquet"])
        for kind, path in files.items():
            store = ExperimentStore(Path(tmp, f"store-{kind}"))
            store.init()
            c0, t0 = time.process_time(), time.perf_counter()
            task = task_from_file(f"big_{kind}", path, "label")
            t1 = time.perf_counter()
            store.save_task(task)
            c2, t2 = time.process_time(), time.perf_counter()
            bank = default_bank().for_task(task)
            for split in ("train", "val", "test"):
                bank.task_features(task, split)
            t3 = time.perf_counter()
            results[kind] = {"file_mb": round(path.stat().st_size / 2**20, 1), "encoded_width": task.feature_dim,
                             "task_from_file_s": round(t1 - t0, 2), "save_task_s": round(t2 - t1, 2),
                             "tasks_add_s": round(t2 - t0, 2),
                             "tasks_add_cpu_s": round(c2 - c0, 2), "embedding_fit_s": round(t3 - t2, 2)}
            print(f"{kind:8s} {results[kind]}", flush=True)
        if args.serve:
            results["suggest_csv"] = time_suggestions(files["csv"], Path(tmp), args.requests)
            print(f"suggest  {results['suggest_csv']}", flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
