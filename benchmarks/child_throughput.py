"""Child models trained per core-hour: one-model-at-a-time PyTorch loop vs train_children.

Issue 4 ("Speed"): the same random architectures of the default space, the same recipe
(epochs, batch size, Adam, lr) and seeds, trained once by ``train_child`` in a plain loop
(autograd, one model per step) and once by ``train_children`` (many models per step,
cluster/child/_batched.py). Prints both rates, their ratio, and how well the accuracies agree.

    python benchmarks/child_throughput.py                      # 64 archs on digits10, 1 thread
    python benchmarks/child_throughput.py --task digits10_small,mnist10_small --repeats 3
    python benchmarks/child_throughput.py --device cuda         # rates per GPU-hour (wall time)

On CPU the rate is per core: torch runs one thread and the time is the process's CPU time.
On a shared machine other processes still slow both paths (caches, memory bandwidth), so the
two paths run in the same process, interleaved: each repeat times one naive and one batched
run back to back, alternating which goes first, and the reported ratio is the median of the
per-repeat ratios (the fastest time of each path is reported too). The embedding bank fit and
one warm-up child per path are excluded from the timings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from cluster.child import (BucketNetwork, CostModel, TrainRecipe, child_plan, default_bank, make_buckets,  # noqa: E402
                           resolve_device, train_child, train_children)
from nasdb.space import default_space  # noqa: E402
from nasdb.tasks import load_builtin_task  # noqa: E402


def _timed(fn, device: torch.device) -> tuple[object, float, float]:
    """Run fn(); return (result, CPU seconds of this process, wall seconds)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.process_time() - c0, time.perf_counter() - w0


def _padding(plans, num_classes: int, cm: CostModel) -> tuple[int, float]:
    """Number of buckets and padded / exact multiply-adds per step."""
    buckets = make_buckets(plans, num_classes, cm)
    exact = sum(sum(a * b for a, b in zip(p.widths + (num_classes,), p.widths[1:] + (num_classes,))) for p in plans)
    padded = 0
    for b in buckets:  # each slot's stacked weight is (members computing there, P_j, P_j+1), zero-padded
        net = BucketNetwork([plans[i] for i in b], [torch.Generator() for _ in b], num_classes, torch.device("cpu"))
        padded += sum(math.prod(shape) for shape in net.shapes)
    return len(buckets), padded / exact


def _agreement(naive: list, batched: list) -> dict:
    """How well the two paths' final validation accuracies agree, per architecture."""
    va = np.array([r.val_accuracy for r in naive])
    vb = np.array([r.val_accuracy for r in batched])
    ok = np.isfinite(va) & np.isfinite(vb)
    diff = np.abs(va - vb)[ok]
    return {"mean_abs_val_diff": float(diff.mean()), "max_abs_val_diff": float(diff.max()),
            "identical_val": int((diff == 0).sum()), "compared": int(ok.sum()),
            "spearman": float(spearmanr(va[ok], vb[ok])[0]) if ok.sum() > 2 else float("nan"),
            "mean_val": [float(va[ok].mean()), float(vb[ok].mean())],
            "failed": [int((~np.isfinite(va)).sum()), int((~np.isfinite(vb)).sum())]}


def measure(task_name: str, args: argparse.Namespace, dev: torch.device, recipe: TrainRecipe) -> dict:
    """Time both paths on one task, interleaved ``args.repeats`` times; rates, ratio, agreement."""
    space, task, bank = default_space(), load_builtin_task(task_name), default_bank()
    archs = space.sample(args.archs, args.seed)  # (N, 15)
    seeds = np.arange(args.archs)
    print(f"task {task.name}: {task.sizes()} samples, {task.num_classes} classes; {args.archs} random archs of "
          f"{space.name}; recipe {recipe.to_dict()}; device {dev}; torch threads {torch.get_num_threads()}")
    plans = [child_plan(space, a, bank) for a in archs]
    n_buckets, waste = _padding(plans, task.num_classes, CostModel.for_device(dev, recipe.batch_size))
    print(f"train_children groups them into {n_buckets} buckets; padded/exact multiply-adds = {waste:.2f}")

    train_child(task, space, archs[0], recipe=recipe, seed=0, device=dev)  # warm-up, untimed
    train_children(task, space, archs[:2], recipe=recipe, seeds=seeds[:2], device=dev)
    paths = {
        "naive": lambda: [train_child(task, space, a, recipe=recipe, seed=int(s), device=dev)
                          for a, s in zip(archs, seeds)],
        "batched": lambda: train_children(task, space, archs, recipe=recipe, seeds=seeds, device=dev),
    }
    best, ratios = {}, []
    for r in range(args.repeats):
        secs = {}
        for name in (("naive", "batched") if r % 2 == 0 else ("batched", "naive")):
            res, cpu, wall = _timed(paths[name], dev)
            secs[name] = wall if dev.type == "cuda" else cpu
            print(f"  repeat {r + 1}: {name:8s} {cpu:7.2f} s CPU, {wall:7.2f} s wall", flush=True)
            if name not in best or secs[name] < best[name][1]:
                best[name] = (res, secs[name])
        ratios.append(secs["naive"] / secs["batched"])
    unit = "GPU-hour" if dev.type == "cuda" else "core-hour"
    rate = {k: args.archs / v[1] * 3600 for k, v in best.items()}
    out = {"task": task.name, "archs": args.archs, "recipe": recipe.to_dict(), "device": str(dev),
           "threads": torch.get_num_threads(), "buckets": n_buckets, "padding": waste,
           "naive_seconds": best["naive"][1], "batched_seconds": best["batched"][1],
           "naive_rate": rate["naive"], "batched_rate": rate["batched"],
           "ratio": float(np.median(ratios)), "ratios": ratios, "ratio_of_fastest": rate["batched"] / rate["naive"],
           **_agreement(best["naive"][0], best["batched"][0])}
    print(f"naive loop      : {rate['naive']:9.0f} children per {unit} (fastest repeat)")
    print(f"train_children  : {rate['batched']:9.0f} children per {unit} (fastest repeat)")
    print(f"ratio           : {out['ratio']:.2f}x median of repeats {[round(x, 2) for x in ratios]}; "
          f"{out['ratio_of_fastest']:.2f}x of the fastest runs")
    print(f"val accuracy    : naive mean {out['mean_val'][0]:.4f}, batched mean {out['mean_val'][1]:.4f}; "
          f"per-arch |diff| mean {out['mean_abs_val_diff']:.5f}, max {out['max_abs_val_diff']:.5f}; "
          f"identical {out['identical_val']}/{out['compared']}; Spearman {out['spearman']:.4f}; "
          f"failed {out['failed']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="digits10", help="built-in task(s), comma-separated (default: digits10)")
    ap.add_argument("--archs", type=int, default=64, help="random architectures of the default space")
    ap.add_argument("--seed", type=int, default=0, help="seed of the architecture sample")
    ap.add_argument("--epochs", type=int, default=TrainRecipe.epochs)
    ap.add_argument("--batch-size", type=int, default=TrainRecipe.batch_size)
    ap.add_argument("--lr", type=float, default=TrainRecipe.learning_rate)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: rates are per core)")
    ap.add_argument("--repeats", type=int, default=1, help="interleaved naive/batched pairs per task")
    ap.add_argument("--json", default=None, help="also write the results (a list, one per task) to this file")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")

    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    recipe = TrainRecipe(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr)
    results = [measure(name.strip(), args, dev, recipe) for name in args.task.split(",") if name.strip()]
    if len(results) > 1:
        print("\ntask              ratio (median)  ratio (fastest)  max |val diff|  Spearman")
        for r in results:
            print(f"{r['task']:18s}{r['ratio']:13.2f}x{r['ratio_of_fastest']:16.2f}x"
                  f"{r['max_abs_val_diff']:16.4f}{r['spearman']:10.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
