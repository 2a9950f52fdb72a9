"""Noise ceiling of every built-in task: do architectures differ, and do two seeds agree?

For each task, the same random architectures of the default space are trained with two
training seeds (default recipe). A predictor cannot rank architectures better than the
seed-to-seed Spearman of their validation accuracies (task-aware-performance-prediction.md
Sec. 5.2 reports Spearman per task), so tasks with a low ceiling or a tiny spread of accuracy
across architectures make poor tasks for the suite.

    python benchmarks/task_ceilings.py [--tasks a,b] [--num-archs 24] [--out reports/task_ceilings.json]
    python benchmarks/task_ceilings.py --suite tabular --num-archs 16 --out reports/tabular_ceilings.json
    python benchmarks/task_ceilings.py --from-store STORE --out reports/store_ceilings.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster.child import TrainRecipe, train_child  # noqa: E402
from nasdb.space import default_space  # noqa: E402
from nasdb.tasks import builtin_task_names, load_builtin_task, load_tabular_candidate  # noqa: E402


def _load(name: str):
    """A built-in task, or a dropped tabular candidate (to measure it again)."""
    return load_builtin_task(name) if name in builtin_task_names("all") else load_tabular_candidate(name)


def _train(task, space, archs: np.ndarray, seed: int, recipe) -> list:
    """All architectures with one seed, through the batched path when the child module has one."""
    try:
        from cluster.child import train_children
    except ImportError:
        train_children = None
    if train_children is not None:
        return train_children(task, space, archs, recipe=recipe, seeds=np.full(len(archs), seed))
    return [train_child(task, space, a, recipe=recipe, seed=seed) for a in archs]


def spearman_interval(rho: float, n: int, z: float = 1.645) -> tuple[float, float]:
    """90% interval of a Spearman correlation from n pairs (Fisher z, Bonett-Wright variance)."""
    if n < 4 or not np.isfinite(rho):
        return float("nan"), float("nan")
    centre, half = np.arctanh(np.clip(rho, -0.9999, 0.9999)), z * np.sqrt((1 + rho**2 / 2) / (n - 3))
    return float(np.tanh(centre - half)), float(np.tanh(centre + half))


def measure_task(name: str, archs: np.ndarray, seeds: tuple[int, int], recipe) -> dict:
    """Spread, mean and seed-to-seed Spearman of val accuracy over ``archs`` on one task, trained here."""
    space = default_space()
    task = _load(name)
    start = time.perf_counter()
    val = np.full((len(seeds), len(archs)), np.nan)  # (S, A)
    test = np.full((len(seeds), len(archs)), np.nan)
    failed = 0
    for s, seed in enumerate(seeds):
        for a, result in enumerate(_train(task, space, archs, seed, recipe)):
            if result.status == "ok":
                val[s, a], test[s, a] = result.val_accuracy, result.test_accuracy
            else:
                failed += 1
    return summarize(task, val, test, failed=failed, seconds=time.perf_counter() - start)


def measure_from_store(store, name: str, seeds: tuple[int, int]) -> dict | None:
    """The same figures from a store's rows: every architecture stored under both ``seeds``
    (e.g. benchmarks/loto_store.py's doubly trained ones); None when fewer than 3 are."""
    rows = store.experiments_arrow(name, status=None, columns=["architecture", "seed", "status", "val_accuracy",
                                                                "test_accuracy"]).to_pylist()
    by_arch: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        if r["seed"] in seeds:
            by_arch.setdefault(tuple(r["architecture"]), {})[r["seed"]] = r
    both = [v for v in by_arch.values() if all(s in v for s in seeds)]
    if len(both) < 3:
        return None
    val, test = (np.array([[v[s][k] if v[s]["status"] == "ok" else np.nan for v in both] for s in seeds], dtype=float)
                 for k in ("val_accuracy", "test_accuracy"))
    return summarize(store.task(name), val, test, failed=int(np.isnan(val).sum()), seconds=0.0)


def summarize(task, val: np.ndarray, test: np.ndarray, *, failed: int, seconds: float) -> dict:
    """A report row from the (seeds, architectures) validation and test accuracies of one task."""
    ok = ~np.isnan(val).any(0)  # (A,) architectures that trained under every seed
    rho = float(spearmanr(val[0, ok], val[1, ok]).statistic) if ok.sum() >= 3 else float("nan")
    return {
        "task": task.name, "num_classes": task.num_classes, "source": task.source, "sizes": task.sizes(),
        "fingerprint": task.fingerprint(), "num_archs": int(ok.sum()),
        "val_std": float(np.nanmean(np.nanstd(val, axis=1))),  # spread across archs, averaged over seeds
        "val_mean": float(np.nanmean(val)), "val_max": float(np.nanmax(val)),
        "test_mean": float(np.nanmean(test)), "seed_spearman": rho,
        "seed_spearman_90ci": spearman_interval(rho, int(ok.sum())),
        "seed_mean_abs_diff": float(np.nanmean(np.abs(val[0] - val[1]))),
        "failed": failed, "seconds": round(seconds, 1),
        "val_accuracy": [[None if np.isnan(v) else round(float(v), 5) for v in row] for row in val],
    }


def markdown(rows: list[dict]) -> str:
    head = ("| task | source | classes | train/val/test | mean val | std val (archs) | max val | "
            "seed Spearman (90% CI) | mean abs seed diff | failed | s |\n|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        z, (lo, hi) = r["sizes"], r.get("seed_spearman_90ci", (float("nan"),) * 2)
        lines.append(
            f"| {r['task']} | {r['source']} | {r['num_classes']} | {z['train']}/{z['val']}/{z['test']} | "
            f"{r['val_mean']:.3f} | {r['val_std']:.3f} | {r['val_max']:.3f} | {r['seed_spearman']:.2f} ({lo:.2f}-{hi:.2f}) | "
            f"{r['seed_mean_abs_diff']:.3f} | {r['failed']} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def from_store(root: str, names: list[str], seeds: tuple[int, int], out: Path) -> int:
    """Write the report for the store's tasks (or ``names``) with architectures under both seeds."""
    from nasdb.store import ExperimentStore

    store = ExperimentStore(root)
    rows = [r for r in (measure_from_store(store, n, seeds) for n in names or store.task_names()) if r]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"num_archs": "per task", "seeds": list(seeds), "from_store": root,
                               "tasks": rows}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(rows) + "\n")
    print(markdown(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="", help="comma-separated built-in tasks or tabular candidates, dropped ones "
                                              "included (default: the whole suite)")
    p.add_argument("--suite", default="digits", help="built-in suite when --tasks is not given (digits, tabular)")
    p.add_argument("--num-archs", type=int, default=24)
    p.add_argument("--arch-seed", type=int, default=0)
    p.add_argument("--seeds", default="0,1", help="two training seeds")
    p.add_argument("--epochs", type=int, default=None, help="override the default recipe's epochs")
    p.add_argument("--resume", action="store_true", help="skip tasks already in --out with unchanged data")
    p.add_argument("--threads", type=int, default=1, help="torch threads (tiny nets: 1 is fastest)")
    p.add_argument("--from-store", default=None, metavar="STORE",
                   help="train nothing: read each task's architectures stored under both --seeds from STORE "
                        "(e.g. a benchmarks/loto_store.py store)")
    p.add_argument("--out", default="reports/task_ceilings.json")
    args = p.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(","))
    if len(seeds) != 2:
        p.error(f"--seeds needs exactly two seeds, got {args.seeds!r}")
    if args.from_store:
        return from_store(args.from_store, [t for t in args.tasks.split(",") if t], seeds, Path(args.out))
    import torch

    torch.set_num_threads(args.threads)

    names = [t for t in args.tasks.split(",") if t] or builtin_task_names(args.suite)
    recipe = TrainRecipe() if args.epochs is None else TrainRecipe(epochs=args.epochs)
    archs = default_space().sample(args.num_archs, seed=args.arch_seed)  # (A, 15)

    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    if old.get("num_archs") != args.num_archs or old.get("recipe") != recipe.to_dict():
        old = {}  # a different protocol: do not merge rows measured under it
    suite = list(dict.fromkeys([*builtin_task_names("all"), *names]))  # dropped candidates measured again too
    current = {n: _load(n).fingerprint() for n in names}
    # keep earlier rows only for tasks whose data is unchanged
    by_task = {r["task"]: r for r in old.get("tasks", []) if current.get(r["task"]) == r["fingerprint"]}
    report = {
        "num_archs": args.num_archs, "arch_seed": args.arch_seed, "seeds": list(seeds),
        "recipe": recipe.to_dict(),
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch threads {args.threads}",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.resume:
        names = [n for n in names if n not in by_task]
    rows = [by_task[n] for n in suite if n in by_task]
    for name in names:  # rewrite the report after every task, so a long run can be read (and resumed)
        row = measure_task(name, archs, seeds, recipe)
        by_task[name] = row
        print(f"{name}: mean {row['val_mean']:.3f} std {row['val_std']:.3f} "
              f"spearman {row['seed_spearman']:.2f} ({row['seconds']:.0f}s)", flush=True)
        rows = [by_task[n] for n in suite if n in by_task]
        out.write_text(json.dumps(report | {"tasks": rows}, indent=1) + "\n")
        out.with_suffix(".md").write_text(markdown(rows) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
