"""Store benchmark: rows/s appended by 1, 4 and 16 concurrent writer processes, and top-10 latency at 1M rows.

Rows are realistic (15-int architecture, 20-float validation curve, 16 tasks) and built as
columnar pyarrow batches before the clock starts; they go through the real writer API
(``ExperimentWriter.append_table``: validation, experiment ids, atomic Parquet files with
fsync). The clock runs from the moment every process is ready until the last writer closed.

    python benchmarks/store_throughput.py                  # the full run (about 2-4 minutes)
    python benchmarks/store_throughput.py --rows 50000 --throughput-rows 20000   # a quick one
    python benchmarks/store_throughput.py --s3 --rows 160000 --flush-rows 500      # issue 14's load figure

``--s3`` runs only the 16 writers, against a real S3-protocol server on loopback (moto's, through
s3fs over HTTP; ``nasdb.s3_testing``), while two reader processes run: one reads every object
whole as soon as it is listed (a partial object fails its listed size or its Parquet decode), the
other counts the store's rows in a loop. It exits 1 unless the bucket then holds exactly
``--rows`` rows, no object was partial and no count went down.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa

BATCH = 500  # rows per append_table call: one batch of children trained together


def make_batches(n: int, num_tasks: int, seed: int) -> list[pa.Table]:
    """``n`` realistic rows as columnar batches of BATCH rows, each batch one task (tasks rotate)."""
    from nasdb.store import EXPERIMENT_SCHEMA

    rng = np.random.default_rng(seed)
    batches = []
    recipe = '{"batch_size":64,"epochs":20,"learning_rate":0.0001,"optimizer":"adam"}'
    for b, start in enumerate(range(0, n, BATCH)):
        m = min(BATCH, n - start)
        curve = np.sort(rng.random((m, 20)), axis=1)  # (m, 20)
        arch = rng.integers(0, 12, (m, 15)).astype(np.int32)  # (m, 15)
        fields = EXPERIMENT_SCHEMA
        batches.append(pa.table({
            "task": pa.array([f"task{(seed * 7 + b) % num_tasks:02d}"] * m),
            "space_id": pa.array(["ec17a7a19876db46"] * m),
            "architecture": pa.ListArray.from_arrays(np.arange(0, 15 * m + 1, 15, dtype=np.int32), arch.ravel()),
            "seed": pa.array(np.arange(start, start + m, dtype=np.int64) + seed * 10_000_000),
            "recipe": pa.array([recipe] * m),
            "agent": pa.array(["random"] * m), "run_id": pa.array([f"bench-{seed}"] * m),
            "val_accuracy": pa.array(curve[:, -1]), "test_accuracy": pa.array(curve[:, -1] - rng.random(m) * 0.05),
            "val_curve": pa.ListArray.from_arrays(np.arange(0, 20 * m + 1, 20, dtype=np.int32), curve.ravel()),
            "epochs": pa.array(np.full(m, 20, dtype=np.int32)),
            "train_seconds": pa.array(rng.random(m) * 30), "num_params": pa.array(rng.integers(1_000, 500_000, m)),
            "device": pa.array(["cpu"] * m),
        }).cast(pa.schema([fields.field(c) for c in (
            "task", "space_id", "architecture", "seed", "recipe", "agent", "run_id", "val_accuracy", "test_accuracy",
            "val_curve", "epochs", "train_seconds", "num_params", "device")])))
    return batches


def writer_process(root: str, worker: int, n: int, num_tasks: int, flush_rows: int, ready: Any, go: Any,
                   done: Any) -> None:
    from nasdb.store import ExperimentStore

    batches = make_batches(n, num_tasks, seed=worker)
    store = ExperimentStore(root)
    store.init()
    ready.put(worker)
    go.wait()
    cpu = time.process_time()
    with store.writer(f"bench{worker}", flush_rows=flush_rows, flush_seconds=5.0) as w:
        for b in batches:
            w.append_table(b)
    done.put((time.perf_counter(), time.process_time() - cpu))


def measure_append(root: str, writers: int, rows: int, num_tasks: int, flush_rows: int) -> tuple[float, float]:
    """(rows/s, rows per CPU-second) of ``writers`` processes appending ``rows`` in all.

    Rows per CPU-second does not depend on what else the machine runs; rows/s does.
    """
    ctx = mp.get_context("spawn")
    ready, done, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    per = rows // writers
    procs = [ctx.Process(target=writer_process, args=(root, w, per, num_tasks, flush_rows, ready, go, done))
             for w in range(writers)]
    for p in procs:
        p.start()
    for _ in procs:
        while True:
            try:
                ready.get(timeout=1.0)
                break
            except queue.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a writer process failed before starting (exit code {dead[0]})") from None
    t0 = time.perf_counter()
    go.set()
    ends = [done.get(timeout=1200) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"writer process failed with exit code {p.exitcode}")
    total = per * writers
    return total / (max(e for e, _ in ends) - t0), total / sum(c for _, c in ends)


def audit_reader(root: str, stop_file: str, out_file: str) -> None:
    """Until ``stop_file`` exists (then one last pass): list the experiments objects and read each
    new one whole, once, as soon as it is listed. Writes a summary as JSON to ``out_file``."""
    import pyarrow.parquet as pq

    from nasdb.store import ExperimentStore

    store = ExperimentStore(root)
    seen: dict[str, int] = {}
    partial: list[str] = []
    listed: list[int] = []
    while True:
        last = os.path.exists(stop_file)
        store.fs.invalidate_cache()
        for key, info in sorted(store.fs.find(store.path("experiments"), detail=True).items()):
            if key in seen or not key.endswith(".parquet"):
                continue
            data = store.fs.cat_file(key)
            try:
                if len(data) != int(info["size"]):
                    raise ValueError(f"listed {info['size']} bytes, read {len(data)}")
                seen[key] = pq.read_table(io.BytesIO(data)).num_rows
            except Exception as e:  # a partial or corrupt object, visible to a reader
                partial.append(f"{key}: {e}")
                seen[key] = 0
        listed.append(len(seen))
        if last:
            break
    with open(out_file, "w") as f:
        json.dump({"listings": len(listed), "objects_seen_per_listing": listed, "objects": len(seen),
                   "object_rows": sum(seen.values()), "partial": partial}, f)


def measure_s3(rows: int, writers: int, num_tasks: int, flush_rows: int) -> dict[str, Any]:
    """``writers`` processes append ``rows`` to an s3:// store on loopback while two readers run:
    ``audit_reader`` (every object whole) and the store's own ``count()`` in a loop."""
    from nasdb.s3_testing import loopback_s3
    from nasdb.store import ExperimentStore
    from nasdb.store.testing import count_reader

    with tempfile.TemporaryDirectory(prefix="nasdb-s3-bench-") as tmp, loopback_s3("nasdb-bench"):
        root = "s3://nasdb-bench/throughput"  # endpoint and credentials are in os.environ: children inherit them
        ExperimentStore(root).init()
        ctx = mp.get_context("spawn")
        stop, audit_out, count_out = (os.path.join(tmp, n) for n in ("stop", "audit.json", "counts.json"))
        readers = [ctx.Process(target=audit_reader, args=(root, stop, audit_out)),
                   ctx.Process(target=count_reader, args=(root, stop, count_out))]
        for r in readers:
            r.start()
        while not os.path.exists(count_out + ".ready"):
            if not readers[1].is_alive():
                raise RuntimeError(f"the counting reader exited with code {readers[1].exitcode} before its first count")
            time.sleep(0.1)
        load = os.getloadavg()[0]
        rate, per_cpu = measure_append(root, writers, rows, num_tasks, flush_rows)
        open(stop, "w").close()
        for r in readers:
            r.join()
        with open(audit_out) as f, open(count_out) as g:
            audit, counts = json.load(f), json.load(g)["counts"]
        return {"writers": writers, "rows": rows, "rows_per_s": rate, "rows_per_cpu_s": per_cpu, "load_before": load,
                "load_after": os.getloadavg()[0], "count": ExperimentStore(root).count(), **audit,
                "counts": counts, "counts_monotone": all(a <= b for a, b in zip(counts, counts[1:]))}


def measure_top_k(root: str, num_tasks: int, repeats: int) -> dict[str, float]:
    """p50 latency (ms) of top-10 of one task: fresh ExperimentStore each time, and one warm store."""
    from nasdb.store import ExperimentStore

    tasks = [f"task{t:02d}" for t in range(num_tasks)]
    fresh, warm = [], []
    warm_store = ExperimentStore(root)
    warm_store.top_k(tasks[0], 10)
    for i in range(repeats):
        task = tasks[i % num_tasks]
        t0 = time.perf_counter()
        top = ExperimentStore(root).top_k(task, 10)
        fresh.append(time.perf_counter() - t0)
        assert top.num_rows == 10
        t0 = time.perf_counter()
        warm_store.top_k(task, 10)
        warm.append(time.perf_counter() - t0)
    cold = []
    code = ("import sys, time; t0 = time.perf_counter(); from nasdb.store import ExperimentStore; "
            "ExperimentStore(sys.argv[1]).top_k(sys.argv[2], 10); print(time.perf_counter() - t0)")
    for i in range(3):
        out = subprocess.run([sys.executable, "-c", code, root, tasks[i % num_tasks]], capture_output=True,
                             text=True, check=True)
        cold.append(float(out.stdout))
    t0 = time.perf_counter()
    n = warm_store.count()
    count_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm_store.task_stats()
    stats_s = time.perf_counter() - t0
    return {"fresh_ms": 1000 * statistics.median(fresh), "warm_ms": 1000 * statistics.median(warm),
            "process_ms": 1000 * statistics.median(cold),
            "fresh_p90_ms": 1000 * sorted(fresh)[int(0.9 * (len(fresh) - 1))], "rows": n,
            "count_ms": 1000 * count_s, "task_stats_ms": 1000 * stats_s}


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, Python "
            f"{platform.python_version()}; load average at the end {load}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the query store (written by 16 writers)")
    ap.add_argument("--throughput-rows", type=int, default=200_000, help="rows per 1- and 4-writer run")
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--flush-rows", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--root", default=None, help="folder for the stores (default: a temp folder, removed after)")
    ap.add_argument("--query-only", action="store_true", help="reuse the 16-writer store under --root")
    ap.add_argument("--s3", action="store_true", help="only the 16 writers, on s3:// (moto on loopback), audited")
    args = ap.parse_args()
    if args.s3:
        r = measure_s3(args.rows, 16, args.tasks, args.flush_rows)
        brief = {k: (f"{len(v)} values, distinct: {sorted(set(v))}" if k in ("counts", "objects_seen_per_listing")
                     else v) for k, v in r.items()}
        print(json.dumps(brief, indent=1))
        print(f"\nMachine: {machine()}")
        ok = r["count"] == r["object_rows"] == (args.rows // 16) * 16 and not r["partial"] and r["counts_monotone"]
        sys.exit(0 if ok else 1)

    base = args.root or tempfile.mkdtemp(prefix="nasdb-bench-")
    os.makedirs(base, exist_ok=True)
    results = []
    try:
        for writers in (() if args.query_only else (1, 4)):
            root = os.path.join(base, f"w{writers}")
            load = os.getloadavg()[0]
            rate, per_cpu = measure_append(root, writers, args.throughput_rows, args.tasks, args.flush_rows)
            results.append((writers, args.throughput_rows, rate, per_cpu, load))
            print(f"{writers:2d} writers: {rate:,.0f} rows/s, {per_cpu:,.0f} rows per CPU-second", flush=True)
            shutil.rmtree(root, ignore_errors=True)
        root = os.path.join(base, "w16")
        if not args.query_only:
            load = os.getloadavg()[0]
            rate, per_cpu = measure_append(root, 16, args.rows, args.tasks, args.flush_rows)
            results.append((16, args.rows, rate, per_cpu, load))
            print(f"16 writers: {rate:,.0f} rows/s, {per_cpu:,.0f} rows per CPU-second", flush=True)

        from nasdb.store import ExperimentStore

        store = ExperimentStore(root)
        files_before = sum(s["files"] for s in store.storage().values())
        before = measure_top_k(root, args.tasks, args.repeats)
        t0 = time.perf_counter()
        store.compact()
        compact_s = time.perf_counter() - t0
        files_after = sum(s["files"] for s in store.storage().values())
        after = measure_top_k(root, args.tasks, args.repeats)
    finally:
        if args.root is None:
            shutil.rmtree(base, ignore_errors=True)

    print(f"\nMachine: {machine()}\n")
    print("| writers (processes) | rows | rows/s appended | rows per CPU-second | load average before |")
    print("|---:|---:|---:|---:|---:|")
    for writers, rows, rate, per_cpu, load in results:
        print(f"| {writers} | {rows:,} | {rate:,.0f} | {per_cpu:,.0f} | {load:.1f} |")
    print(f"\nQuery latency at {before['rows']:,} rows over {args.tasks} tasks "
          f"(p50 of {args.repeats}; compaction took {compact_s:.1f} s):\n")
    print("| layout | files | top-10 of one task, fresh store | top-10, warm store | top-10 fresh p90 "
          "| top-10 in a new process (with imports) | count() all | task_stats() all |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, files, r in (("as written", files_before, before), ("compacted", files_after, after)):
        print(f"| {name} | {files} | {r['fresh_ms']:.0f} ms | {r['warm_ms']:.0f} ms | {r['fresh_p90_ms']:.0f} ms "
              f"| {r['process_ms']:.0f} ms | {r['count_ms']:.0f} ms | {r['task_stats_ms']:.0f} ms |")
    print("\n'fresh store' = a new ExperimentStore object per query in a warm process (the process keeps "
          "one in-memory DuckDB engine and its Parquet footer cache); 'new process' pays the imports too.")


if __name__ == "__main__":
    main()
