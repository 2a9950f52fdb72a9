"""Dashboard benchmark: seconds to load each page over HTTP on a store of a million rows (issue 20 target: < 1 s).

The store is the HPOLib import (995,328 rows in 4 tasks), compacted: one deduplicated Parquet
file per task (built by ``ensure_store`` when ``--store`` does not exist; ``--store`` may name
any other store, e.g. the plain import, whose files reads deduplicate every time).
The app runs under uvicorn on loopback in this process; each page is fetched whole (HTML,
or the PNG/JSON it names) with urllib:

- ``cold``: the first request of each page in a fresh app, with nothing cached and the
  start-up warm-up switched off (the first page also pays DuckDB's first reads);
- ``warm-up``: what ``nasdb dashboard`` runs in the background at start (the first pages'
  queries), timed once in a second fresh app;
- ``cached``: the median of 5 further requests (query results are kept until the store's
  files change; the HTML is rendered anew each time).

    python benchmarks/dashboard_pages.py [--store /tmp/nasdb-bench-hpolib-compacted] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

PAGES = ("/", "/runs", "/predictors", "/curves", "/curves?task=hpolib.naval_propulsion", "/embeddings", "/suggest",
         "/docs", "/api/overview")


def ensure_store(root: str) -> None:
    """The HPOLib import, compacted: a retried write of 1,000 rows per task gives each partition a second
    file, which ``nasdb compact`` merges with the first into one deduplicated file (the import alone writes
    one file per task, which compaction leaves as it is and reads deduplicate every time)."""
    if os.path.exists(root):
        return
    nasdb = [sys.executable, "-m", "nasdb.cli", "--store", root]
    subprocess.run(nasdb + ["init"], check=True)
    subprocess.run(nasdb + ["import-benchmark", "hpolib"], check=True)
    from nasdb.store import ExperimentStore

    store = ExperimentStore(root)
    for task in store.task_names():
        if task.startswith("hpolib."):
            with store.writer("retried-write") as w:
                w.append_table(store.experiments_arrow(task, status=None).slice(0, 1000).drop_columns(["worker"]))
    subprocess.run(nasdb + ["compact"], check=True)


def serve(store, *, warm: bool) -> tuple[str, object, float | None]:
    import uvicorn

    from nasdb.cli.dashboard import create_app, warm as warm_up

    app = create_app(store)
    warm_seconds = None
    if warm:
        start = time.perf_counter()
        warm_up(app)
        warm_seconds = time.perf_counter() - start
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, warm_seconds


def fetch(url: str) -> tuple[float, int, int]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        body = r.read()
        status = r.status
    return time.perf_counter() - start, status, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="/tmp/nasdb-bench-hpolib-compacted")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "dashboard_pages.json"))
    args = parser.parse_args()
    ensure_store(args.store)
    from nasdb.store import ExperimentStore

    store = ExperimentStore(args.store)
    rows = store.count(None, status=None)
    base, server, _ = serve(ExperimentStore(args.store), warm=False)
    results = []
    for page in PAGES:
        cold, status, size = fetch(base + page)
        cached = statistics.median(fetch(base + page)[0] for _ in range(args.repeats))
        results.append({"page": page, "status": status, "bytes": size, "cold_s": round(cold, 3),
                        "cached_s": round(cached, 3)})
        print(f"{page:45s} {status}  cold {cold:6.3f} s  cached {cached:6.3f} s  ({size:,} bytes)", flush=True)
    server.should_exit = True
    base, server, warm_seconds = serve(ExperimentStore(args.store), warm=True)
    after_warm = {p: round(fetch(base + p)[0], 3) for p in ("/", "/runs", "/curves")}
    server.should_exit = True
    print(f"start-up warm-up {warm_seconds:.2f} s; first loads after it: {after_warm}")
    load = os.getloadavg()
    out = {"store": args.store, "rows": rows, "pages": results, "warm_up_s": round(warm_seconds, 3),
           "first_load_after_warm_up_s": after_warm, "cpus": os.cpu_count(), "load_average": [round(x, 2) for x in load],
           "machine": platform.platform(), "python": platform.python_version()}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(f"{rows:,} rows; load average {load[0]:.1f} on {os.cpu_count()} CPUs; written {args.out}")


if __name__ == "__main__":
    main()
