"""RL-NAS with and without learning-curve early stopping: the same task, budget and seed (issue 8).

accelerating-nas-performance-prediction-baker.md Sec. 3 runs MetaQNN with early stopping and
reports the speedup and that the agent still finds the best models. Here RL-NAS (search agent
"rl") searches ``--budget`` children of ``--task`` twice on a real local Ray cluster, once
training every child to the end and once with ``early_stop`` (the agent is rewarded with a
stopped child's predicted final accuracy). Per run: wall time, epochs trained, children
stopped, the best complete child (validation and test accuracy) and where it was found.

"Was the best kept?" (the paper's criterion): afterwards the early-stopped run's stopped
children are retrained to the end here, with their own seeds (same init and batch order, so
the same curve up to float rounding), and we check that none of them would have beaten the
best complete child; the same retraining measures the error of the predicted final accuracy.

    python benchmarks/early_stop_rlnas.py                                  # digits10, 250 children
    python benchmarks/early_stop_rlnas.py --budget 100 --burn-in 30 --out /tmp/es.json

Both runs share one store (distinct run ids, so the early-stopped run never sees the other's
curves) and one Ray cluster of ``--cpus`` CPUs; the run without early stopping goes first
unless ``--first with``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402


def run_one(store_root: str, args: argparse.Namespace, early_stop: dict | None):
    from search import run_search

    label = "early stop" if early_stop else "no early stop"
    print(f"== RL-NAS on {args.task}, {args.budget} children, {label}", flush=True)
    t0 = time.perf_counter()
    result = run_search(store_root, "rl", args.task, args.budget, seed=args.seed, epochs=args.epochs,
                        parallel=args.parallel, verbose=args.verbose, early_stop=early_stop)
    return result, time.perf_counter() - t0


def summarize(result, wall: float, epochs: int) -> dict:
    best = result.best
    ok = [e for e in result.evaluations if e.ok]
    return {
        "run_id": result.run_id, "wall_seconds": wall, "search_wall_seconds": result.wall_seconds,
        "children": result.num_evaluations, "failed": result.num_failed, "stopped": result.num_stopped,
        "epochs_trained": result.epochs_trained, "epochs_full": epochs * len(ok),
        "child_train_seconds": float(sum(e.train_seconds for e in result.evaluations)),
        "best_val": None if best is None else best.val_accuracy,
        "best_test": None if best is None else best.test_accuracy,
        "best_position": result.best_position, "best_architecture": None if best is None else list(best.architecture),
        "top10_test": float(result.best_so_far(10)[-1]),
    }


def retrain_stopped(result, task_name: str, epochs: int) -> dict:
    """Train the stopped children to the end (their own seeds) and compare with the best complete child."""
    from cluster.child import TrainRecipe, default_bank, train_children
    from nasdb.space import default_space
    from nasdb.tasks import load_builtin_task

    stopped = [e for e in result.evaluations if e.ok and e.stopped_early]
    if not stopped:
        return {"retrained": 0}
    archs = np.array([e.architecture for e in stopped], dtype=np.int64)  # (S, D)
    seeds = np.array([e.seed for e in stopped], dtype=np.int64)  # (S,)
    res = train_children(load_builtin_task(task_name), default_space(), archs, recipe=TrainRecipe(epochs=epochs),
                         seeds=seeds, bank=default_bank())
    final = np.array([r.val_accuracy if r.status == "ok" else math.nan for r in res])  # (S,)
    test = np.array([r.test_accuracy if r.status == "ok" else math.nan for r in res])
    pred = np.array([math.nan if e.predicted_final is None else e.predicted_final for e in stopped])
    err = pred - final
    best = result.best
    beat = [int(i) for i in np.flatnonzero(final > best.val_accuracy)]
    return {
        "retrained": len(stopped),
        "would_have_beaten_best_val": len(beat),
        "best_kept": not beat,
        "best_retrained_val": float(np.nanmax(final)), "best_retrained_test": float(test[int(np.nanargmax(final))]),
        "prediction_mae": float(np.nanmean(np.abs(err))), "prediction_bias": float(np.nanmean(err)),
        "epochs_at_stop_mean": float(np.mean([e.epochs for e in stopped])),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="digits10")
    p.add_argument("--budget", type=int, default=250)
    p.add_argument("--epochs", type=int, default=20, help="recipe epochs (default: the default recipe's 20)")
    p.add_argument("--burn-in", type=int, default=50, help="complete curves before anything stops")
    p.add_argument("--confidence", type=float, default=0.99, help="the paper's Delta")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--store", default="/tmp/nasdb-es-rlnas/store")
    p.add_argument("--out", default=None, help="default: benchmarks/results/early_stop_rlnas_<task>.json")
    p.add_argument("--first", choices=("without", "with"), default="without",
                   help="which run goes first (swap to see how much the order / machine load moves the wall times)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    args.out = args.out or f"benchmarks/results/early_stop_rlnas_{args.task}.json"

    import ray
    import torch

    torch.set_num_threads(1)
    es = {"burn_in": args.burn_in, "confidence": args.confidence}
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=args.verbose)
    try:
        if args.first == "without":
            off, wall_off = run_one(args.store, args, None)
            on, wall_on = run_one(args.store, args, es)
        else:
            on, wall_on = run_one(args.store, args, es)
            off, wall_off = run_one(args.store, args, None)
    finally:
        ray.shutdown()
    report = {
        "task": args.task, "budget": args.budget, "epochs": args.epochs, "seed": args.seed, "parallel": args.parallel,
        "early_stop": es, "first": args.first, "cpus": args.cpus, "host": platform.node(), "cores": os.cpu_count(),
        "without": summarize(off, wall_off, args.epochs), "with": summarize(on, wall_on, args.epochs),
    }
    report["with"]["check"] = retrain_stopped(on, args.task, args.epochs)
    w, o = report["with"], report["without"]
    report["wall_time_ratio"] = o["wall_seconds"] / w["wall_seconds"]
    report["epoch_ratio"] = o["epochs_trained"] / w["epochs_trained"] if w["epochs_trained"] else None
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({k: v for k, v in report.items() if k not in ("with", "without")}, indent=2))
    for name in ("without", "with"):
        r = report[name]
        print(f"{name:>8} early stopping: {r['wall_seconds']:.0f}s wall, {r['epochs_trained']} epochs, "
              f"{r['stopped']} stopped, best val {r['best_val']:.4f} test {r['best_test']:.4f} "
              f"at child {r['best_position']}; top-10 test {r['top10_test']:.4f}")
    print(f"check of the stopped children: {report['with']['check']}")
    return report


if __name__ == "__main__":
    main()
