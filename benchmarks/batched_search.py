"""RL-NAS one child at a time vs batched, and batched with early stopping, in one run (issue 19).

The papers train many children per controller update (Zoph & Le's batch of samples, T-NAML's
parallel children); ``run_search(..., batch_size=B)`` proposes B children at once, trains them
with one call of the batched trainer per actor (one Parquet flush each), tells the agent the
batch in one REINFORCE update and checkpoints once per batch. This script runs RL-NAS with the
same task, budget and seed under each configuration on one local Ray cluster and reports wall
time, children/s, epochs trained and the best complete child, per seed and as ratios within
the run. Configurations: ``one`` (today's search: ``parallel`` children in flight, one per
trainer call), ``N`` (batches of N) and ``Nes`` (batches of N with early stopping; its stopped
children are retrained afterwards, as in benchmarks/early_stop_rlnas.py, to check the best
model was kept).

    python benchmarks/batched_search.py                                    # mnist10, 300 x 20 epochs, 3 seeds
    python benchmarks/batched_search.py --budget 64 --seeds 0 --configs one,8,16,32   # pick a batch size

Each invocation uses a fresh store under ``--store`` (runs of an earlier invocation would
resume, i.e. return at once); the order of the configurations rotates from seed to seed, so a
change of machine load does not favour one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from early_stop_rlnas import retrain_stopped, summarize  # noqa: E402


def parse_config(text: str) -> tuple[int | None, bool]:
    """``one`` -> (None, False); ``16`` -> (16, False); ``16es`` -> (16, True)."""
    if text == "one":
        return None, False
    es = text.endswith("es")
    size = text[:-2] if es else text
    if not size.isdigit() or int(size) < 1:
        raise SystemExit(f"error: configuration {text!r} is not 'one', N or Nes (N >= 1)")
    return int(size), es


def run_config(store_root: str, args: argparse.Namespace, config: str, seed: int) -> dict:
    from search import run_search

    batch, es = parse_config(config)
    early_stop = {"burn_in": args.burn_in, "confidence": args.confidence} if es else None
    print(f"== seed {seed}: RL-NAS on {args.task}, {args.budget} children, {config}", flush=True)
    t0 = time.perf_counter()
    result = run_search(store_root, "rl", args.task, args.budget, seed=seed, epochs=args.epochs,
                        parallel=args.parallel, verbose=args.verbose, early_stop=early_stop,
                        batch_size=batch or 1)
    wall = time.perf_counter() - t0
    out = summarize(result, wall, args.epochs)
    out["children_per_s"] = result.num_evaluations / wall
    if es and args.check:
        out["check"] = retrain_stopped(result, args.task, args.epochs)
    print(f"   {wall:.1f}s, {out['children_per_s']:.2f} children/s, {out['epochs_trained']} epochs, "
          f"{out['stopped']} stopped, best val {out['best_val']:.4f} test {out['best_test']:.4f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="mnist10")
    p.add_argument("--budget", type=int, default=300)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--parallel", type=int, default=2, help="trainer actors")
    p.add_argument("--configs", default="one,16,16es", help="comma-separated: one, N (batch size), Nes")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--burn-in", type=int, default=50)
    p.add_argument("--confidence", type=float, default=0.99)
    p.add_argument("--no-check", dest="check", action="store_false", help="skip retraining the stopped children")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--store", default="/tmp/nasdb-batched-search")
    p.add_argument("--out", default=None, help="default: benchmarks/results/batched_search_<task>.json")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        parse_config(c)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out = args.out or f"benchmarks/results/batched_search_{args.task}.json"
    store_root = os.path.join(args.store, time.strftime("%Y%m%dT%H%M%S"))

    import ray
    import torch

    torch.set_num_threads(1)
    # address="local": a cluster of our own (another job's Ray on this machine must not be joined)
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=args.verbose)
    runs: dict[str, dict[int, dict]] = {c: {} for c in configs}
    t_start = time.perf_counter()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    try:
        for k, seed in enumerate(seeds):
            order = configs[k % len(configs):] + configs[:k % len(configs)]
            for c in order:
                runs[c][seed] = run_config(store_root, args, c, seed)
                with open(args.out + ".partial", "w") as f:  # what is done so far, if the run is cut short
                    json.dump({"args": vars(args), "runs": runs}, f, indent=2, default=str)
    finally:
        ray.shutdown()

    def mean(c: str, key: str) -> float:
        return float(np.mean([runs[c][s][key] for s in seeds]))

    summary = {c: {"wall_seconds": mean(c, "wall_seconds"), "children_per_s": mean(c, "children_per_s"),
                   "epochs_trained": mean(c, "epochs_trained"), "stopped": mean(c, "stopped"),
                   "best_val": mean(c, "best_val"), "best_test": mean(c, "best_test"),
                   "best_val_per_seed": [runs[c][s]["best_val"] for s in seeds],
                   "best_test_per_seed": [runs[c][s]["best_test"] for s in seeds]} for c in configs}
    ratios = {}
    if "one" in configs:
        for c in configs:
            if c != "one":
                ratios[f"{c} vs one, children/s"] = [runs[c][s]["children_per_s"] / runs["one"][s]["children_per_s"]
                                                     for s in seeds]
    for c in configs:
        batch, es = parse_config(c)
        if es and str(batch) in configs:
            ratios[f"{c} vs {batch}, wall time"] = [runs[str(batch)][s]["wall_seconds"] / runs[c][s]["wall_seconds"]
                                                   for s in seeds]
    report = {"task": args.task, "budget": args.budget, "epochs": args.epochs, "parallel": args.parallel,
              "seeds": seeds, "configs": configs, "burn_in": args.burn_in, "confidence": args.confidence,
              "cpus": args.cpus, "host": platform.node(), "cores": os.cpu_count(),
              "load_average": os.getloadavg(), "total_seconds": time.perf_counter() - t_start,
              "summary": summary, "ratios": ratios, "runs": {c: {str(s): r for s, r in v.items()}
                                                             for c, v in runs.items()}}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({"summary": summary, "ratios": ratios}, indent=2))
    return report


if __name__ == "__main__":
    main()
