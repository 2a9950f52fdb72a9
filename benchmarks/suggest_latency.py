"""Latency (p50, p99) and throughput of POST /v1/suggest end to end over HTTP on Ray Serve.

    python benchmarks/suggest_latency.py [--store ROOT] [--requests 100] [--concurrency 1 2]
        [--replicas 1] [--inline] [--json]

The paper's defaults (Sec. 5.3): 10 starting points x 1000 gradient-ascent steps; the paper
reports about one minute per suggestion. Without --store a small real store is built in a
temporary folder (predictor/testing.py: 3 built-in tasks x 12 trained children) and a
predictor fitted on it; the suggestion is asked for a held-out task, by name (the replica
loads its samples from the store) or, with --inline, with its training samples in the
request body. Loopback only; a bounded number of real requests (the `requests` library).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def measure(url: str, headers: dict, body: dict, n: int, concurrency: int) -> dict:
    """``n`` requests spread over ``concurrency`` client threads: latency percentiles and requests/s."""
    import requests

    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    counter = iter(range(n))

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                t0 = time.perf_counter()
                r = session.post(f"{url}/v1/suggest", json=body, headers=headers, timeout=120)
                dt = time.perf_counter() - t0
                with lock:
                    if r.status_code == 200:
                        latencies.append(dt)
                    else:
                        errors.append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if not latencies:
        return {"concurrency": concurrency, "requests": n, "errors": len(errors), "statuses": sorted(set(errors))}
    return {"concurrency": concurrency, "requests": n, "errors": len(errors),
            "p50_s": round(_percentile(latencies, 0.50), 4), "p99_s": round(_percentile(latencies, 0.99), 4),
            "mean_s": round(statistics.fmean(latencies), 4), "requests_per_s": round(len(latencies) / wall, 2)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="store root with a fitted predictor (default: build a small one)")
    parser.add_argument("--task", default=None, help="task to ask for (default: a task left out of training)")
    parser.add_argument("--requests", type=int, default=100, help="measured requests per concurrency level")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--inline", action="store_true", help="send the task's samples in the body")
    parser.add_argument("--json", action="store_true", help="print only the JSON result")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.requests > 10_000 or min(args.concurrency) < 1:
        parser.error("--requests must be in [1, 10000] and --concurrency >= 1")

    import ray
    import torch
    from ray import serve

    from nasdb.store import ExperimentStore
    from predictor.server import start_server
    from predictor.testing import HELD_OUT_TASK, shared_tiny_store

    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    tmp = None
    if args.store:
        root = args.store
    else:
        tmp = tempfile.mkdtemp(prefix="nasdb-bench-")
        t0 = time.perf_counter()
        root, _ = shared_tiny_store(tmp)
        log(f"built a small store and fitted a predictor in {time.perf_counter() - t0:.1f}s ({root})")
    store = ExperimentStore(root)
    task = args.task or HELD_OUT_TASK
    body: dict = {"task": task}
    if args.inline:
        x, y = store.task(task).samples("train")
        body = {"x": x.tolist(), "y": y.tolist()}

    token = secrets.token_urlsafe(32)
    headers = {"Authorization": f"Bearer {token}"}
    ray.init(num_cpus=max(2, args.replicas), include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        info = start_server(root, port=_free_port(), replicas=args.replicas, token=token)
        log(f"Serve app up in {time.perf_counter() - t0:.1f}s at {info.url} (predictor {info.predictor_id})")
        warm = measure(info.url, headers, body, args.warmup, 1)
        if warm["errors"]:
            raise SystemExit(f"warm-up requests failed: {warm}")
        import requests

        sample = requests.post(f"{info.url}/v1/suggest", json=body, headers=headers, timeout=120).json()
        results = {
            "machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__},
            "predictor_id": info.predictor_id,
            "task": task, "inline_samples": len(body.get("x", [])), "replicas": args.replicas,
            "k_max_iters": sample["config"]["k_max_iters"], "starting_points": sample["config"]["top_per_task"]
            * sample["config"]["closest_tasks"], "iterations_run": sample["iterations"],
            "server_side_seconds": round(sample["seconds"], 4),
            "runs": [],
        }
        for c in args.concurrency:
            run = measure(info.url, headers, body, args.requests, c)
            log(f"concurrency {c}: p50 {run['p50_s'] * 1e3:.0f} ms, p99 {run['p99_s'] * 1e3:.0f} ms, "
                f"{run['requests_per_s']:.2f} requests/s ({run['errors']} errors)")
            results["runs"].append(run)
    finally:
        serve.shutdown()
        ray.shutdown()
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
