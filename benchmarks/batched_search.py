"""RL-NAS one child at a time vs batched, and batched with early stopping, in one run (issue 19).

The papers train many children per controller update (Zoph & Le's batch of samples, T-NAML's
parallel children); ``run_search(..., batch_size=B)`` proposes B children at once, one trainer
actor trains them in one call of the batched trainer (one Parquet flush), the agent learns from
the batch in one REINFORCE update as soon as it returns and the checkpoint is written once per
batch; ``parallel`` batches are in flight, one per actor, so no actor waits for another. This
script runs RL-NAS with the same task, budget and seed under each configuration on one local Ray
cluster and reports wall time, children/s, epochs trained, the trainers' busy seconds per child
(``child_train_seconds``: what the batched trainer itself saves, apart from idle actors) and the
best complete child, per seed and as ratios within the run, with the load average before and
after each run. Configurations: ``one`` (today's search: ``parallel`` children in flight, one
per trainer call), ``N`` (batches of N), ``Nes`` (batches of N with early stopping; its
stopped children are retrained afterwards, as in benchmarks/early_stop_rlnas.py, to check the
best model was kept) and ``Nesown`` (the same, its stopper never pooling over other tasks'
curves). With ``--prior-store`` each invocation's store starts as a copy of that store without
the searched task, so the ``Nes`` stoppers pool over the other tasks' complete curves and start
after ``--pool-burn-in`` of their own (issue 19); without it the store is empty and both are the same.

    python benchmarks/batched_search.py                                    # mnist10, 300 x 20 epochs, 3 seeds
    python benchmarks/batched_search.py --budget 128 --seeds 0 --configs one,8,16,32,64 --no-check  # batch size
    python benchmarks/batched_search.py --trainer-rates 8,16,32,64 --epochs 5   # the trainer alone, CPU s/child
    python benchmarks/batched_search.py --configs 16,16es,16esown --prior-store /tmp/loto16 \
        --out benchmarks/results/batched_search_mnist10_prior.json    # early stopping pooled over 15 other tasks

Each invocation uses a fresh store under ``--store`` (runs of an earlier invocation would
resume, i.e. return at once); the order of the configurations rotates from seed to seed, so a
change of machine load does not favour one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from early_stop_rlnas import retrain_stopped, summarize  # noqa: E402


def parse_config(text: str) -> tuple[int | None, str | None]:
    """``one`` -> (None, None); ``16`` -> (16, None); ``16es`` -> (16, "pool"); ``16esown`` -> (16, "own")."""
    if text == "one":
        return None, None
    es = "own" if text.endswith("esown") else "pool" if text.endswith("es") else None
    size = text[:len(text) - {"own": 5, "pool": 2, None: 0}[es]]
    if not size.isdigit() or int(size) < 1:
        raise SystemExit(f"error: configuration {text!r} is not 'one', N, Nes or Nesown (N >= 1)")
    return int(size), es


def run_config(store_root: str, args: argparse.Namespace, config: str, seed: int) -> dict:
    from search import run_search

    batch, es = parse_config(config)
    early_stop = None
    if es:
        early_stop = {"burn_in": args.burn_in, "confidence": args.confidence, "pool_burn_in": args.pool_burn_in,
                      **({"pool_curves": 0} if es == "own" else {})}
    print(f"== seed {seed}: RL-NAS on {args.task}, {args.budget} children, {config}", flush=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = run_search(store_root, "rl", args.task, args.budget, seed=seed, epochs=args.epochs,
                        parallel=args.parallel, verbose=args.verbose, early_stop=early_stop,
                        batch_size=batch or 1)
    wall = time.perf_counter() - t0
    out = summarize(result, wall, args.epochs)
    out["children_per_s"] = result.num_evaluations / wall
    out["train_seconds_per_child"] = out["child_train_seconds"] / max(1, result.num_evaluations)
    out["load_average"] = [load_before, os.getloadavg()[0]]
    if es and args.check:
        out["check"] = retrain_stopped(result, args.task, args.epochs)
    print(f"   {wall:.1f}s, {out['children_per_s']:.2f} children/s, {out['epochs_trained']} epochs, "
          f"{out['stopped']} stopped, {out['train_seconds_per_child']:.2f} trainer s/child, best val "
          f"{out['best_val']:.4f} test {out['best_test']:.4f}, load {load_before:.1f} -> {os.getloadavg()[0]:.1f}",
          flush=True)
    return out


def trainer_rates(task_name: str, sizes: list[int], archs_n: int, epochs: int, repeats: int) -> dict:
    """CPU seconds per child (one thread, this process) of the same ``archs_n`` random architectures
    trained by a ``train_child`` loop, by ``train_children`` one child per call (what a search of one
    child at a time runs on its actors) and by ``train_children`` in calls of each of ``sizes``
    children (a batch per actor): what batching can save in compute, apart from fixed costs.
    Each repeat runs every path once, in a rotating order; the fastest repeat of each counts."""
    import torch

    from cluster.child import TrainRecipe, default_bank, train_child, train_children
    from nasdb.space import default_space
    from nasdb.tasks import load_builtin_task

    torch.set_num_threads(1)
    task, space, bank = load_builtin_task(task_name), default_space(), default_bank()
    recipe = TrainRecipe(epochs=epochs)
    archs, seeds = space.sample(archs_n, 0), list(range(archs_n))  # (N, D)
    train_children(task, space, archs[:2], recipe=recipe, seeds=seeds[:2], bank=bank)  # warm-up

    def calls(size: int):
        return lambda: [train_children(task, space, archs[i:i + size], recipe=recipe, seeds=seeds[i:i + size],
                                       bank=bank) for i in range(0, archs_n, size)]

    paths = {"train_child loop": lambda: [train_child(task, space, a, recipe=recipe, seed=s, bank=bank)
                                          for a, s in zip(archs, seeds)],
             **{f"train_children, {n} per call": calls(n) for n in [1, *sizes]}}
    best: dict[str, float] = {}
    names = list(paths)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            c0 = time.process_time()
            paths[name]()
            best[name] = min(best.get(name, float("inf")), (time.process_time() - c0) / archs_n)
    one = best["train_children, 1 per call"]
    out = {"task": task_name, "archs": archs_n, "epochs": epochs, "repeats": repeats,
           "cpu_seconds_per_child": best, "speedup_over_one_per_call": {k: one / v for k, v in best.items()},
           "load_average": os.getloadavg()}
    for k, v in best.items():
        print(f"  {k:32s} {v:.4f} CPU s/child  {one / v:.2f}x of one per call", flush=True)
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
    p.add_argument("--pool-burn-in", type=int, default=20, help="own full curves before a pooled stopper starts")
    p.add_argument("--prior-store", default=None,
                   help="start each store as a copy of this one without --task (its other tasks' curves)")
    p.add_argument("--confidence", type=float, default=0.99)
    p.add_argument("--no-check", dest="check", action="store_false", help="skip retraining the stopped children")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--store", default="/tmp/nasdb-batched-search")
    p.add_argument("--out", default=None, help="default: benchmarks/results/batched_search_<task>.json")
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--trainer-rates", default=None, metavar="SIZES",
                   help="only measure the trainer's CPU s/child per call size (e.g. 8,16,32,64) in this process; "
                        "no search")
    p.add_argument("--archs", type=int, default=64, help="--trainer-rates: random architectures")
    p.add_argument("--repeats", type=int, default=2, help="--trainer-rates: repeats")
    args = p.parse_args(argv)
    if args.trainer_rates:
        report = trainer_rates(args.task, [int(x) for x in args.trainer_rates.split(",")], args.archs, args.epochs,
                               args.repeats)
        out = args.out or f"benchmarks/results/trainer_rates_{args.task}.json"
        with open(out, "w") as f:
            json.dump(report, f, indent=2)
        return report
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in configs:
        parse_config(c)
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out = args.out or f"benchmarks/results/batched_search_{args.task}.json"
    store_root = os.path.join(args.store, time.strftime("%Y%m%dT%H%M%S"))
    if args.prior_store:  # the other tasks' rows; the searched task's own would let the search skip training
        shutil.copytree(args.prior_store, store_root,
                        ignore=lambda folder, names: [n for n in names if n in (f"task={args.task}", "predictors")])

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
                   "train_seconds_per_child": mean(c, "train_seconds_per_child"),
                   "best_val": mean(c, "best_val"), "best_test": mean(c, "best_test"),
                   "best_val_per_seed": [runs[c][s]["best_val"] for s in seeds],
                   "best_test_per_seed": [runs[c][s]["best_test"] for s in seeds]} for c in configs}
    ratios = {}
    if "one" in configs:
        for c in configs:
            if c != "one":
                ratios[f"{c} vs one, children/s"] = [runs[c][s]["children_per_s"] / runs["one"][s]["children_per_s"]
                                                     for s in seeds]
                ratios[f"{c} vs one, trainer s/child"] = [runs["one"][s]["train_seconds_per_child"]
                                                          / runs[c][s]["train_seconds_per_child"] for s in seeds]
    for c in configs:
        batch, es = parse_config(c)
        if es and str(batch) in configs:
            ratios[f"{c} vs {batch}, wall time"] = [runs[str(batch)][s]["wall_seconds"] / runs[c][s]["wall_seconds"]
                                                   for s in seeds]
    report = {"task": args.task, "budget": args.budget, "epochs": args.epochs, "parallel": args.parallel,
              "seeds": seeds, "configs": configs, "burn_in": args.burn_in, "confidence": args.confidence,
              "pool_burn_in": args.pool_burn_in, "prior_store": args.prior_store,
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
