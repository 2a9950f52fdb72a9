"""The predictor agent against RL-NAS, T-NAML and random search on held-out suite tasks, trained (issue 18).

    python benchmarks/predictor_search_suite.py --source /tmp/loto16 --store /tmp/ps-suite \
        --out benchmarks/results/predictor_search_suite

``--source`` is a populated suite store (random architectures per task, default recipe). It is
copied to ``--store`` (searches write their rows there, never into the source); one predictor
is fitted on every task but the held-out ones (``nasdb fit``'s defaults: an ensemble of 5,
linear loss, meta-features; a Ray Train job), then ``nasdb compare`` runs each agent on each
held-out task with the train evaluator, once per seed (the same seeds for every agent; every
child trained for the recipe's epochs, no early stopping). Held out by default: every fourth
task of the source in name order.

Each search is judged by its incumbent after N = 1, 10, 30, 100 children: the child with the
best validation accuracy among its first N (the paper's best-by-validation child), its
validation and test accuracy, and the validation accuracy's percentile among the task's
architectures stored in the source (random ones: the share at most as good). Writes
``<out>.json`` (every search's incumbents), ``<out>.md`` (mean +- std over seeds) and
``<out>.png`` (mean best-so-far validation accuracy vs children, one panel per task).
Interrupted, it resumes: a rerun with the same arguments reuses the fit and finished searches.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

BUDGETS = (1, 10, 30, 100)
AGENTS = ("predictor", "random", "rl", "tnaml")


def incumbents(evaluations, budgets) -> dict[str, Any]:
    """Per N in ``budgets``: validation and test accuracy of the best-by-validation complete child
    among the first N evaluations (NaN while none succeeded), and the best-so-far curve."""
    out, best, curve = {}, None, []
    for i, e in enumerate(evaluations, 1):
        if e.complete and math.isfinite(e.val_accuracy) and (best is None or e.val_accuracy > best.val_accuracy):
            best = e
        curve.append(best.val_accuracy if best else math.nan)
        if i in budgets:
            out[i] = {"val": best.val_accuracy if best else math.nan, "test": best.test_accuracy if best else math.nan}
    return {"at": out, "curve": curve}


def fit(store_root: str, tasks: list[str], held_out: list[str], seed: int) -> tuple[str, bool]:
    """The predictor every search of the run uses, fitted without the held-out tasks, and whether
    it was already in the store (a resumed run reuses it)."""
    from nasdb.store import ExperimentStore
    from predictor import PredictorConfig, fit_predictor, list_predictors

    store = ExperimentStore(store_root)
    for meta in list_predictors(store):
        if set(meta.get("tasks") or []) == set(tasks) - set(held_out):
            return meta["predictor_id"], True
    return fit_predictor(store, PredictorConfig(seed=seed), exclude_tasks=held_out, workers=2), False


def summarize(runs: dict, reference: dict, budgets) -> dict:
    """``{task: {agent: {N: mean/std of val, test, percentile over seeds}}}``."""
    from predictor.evaluate_zero_shot import percentile

    out: dict = {}
    for task, by_agent in runs.items():
        for agent, by_seed in by_agent.items():
            for n in budgets:
                vals = np.array([r["at"][str(n)]["val"] for r in by_seed.values()])
                tests = np.array([r["at"][str(n)]["test"] for r in by_seed.values()])
                pct = np.array([percentile(reference[task], v) for v in vals])
                out.setdefault(task, {}).setdefault(agent, {})[str(n)] = {
                    "val_mean": float(np.mean(vals)), "val_std": float(np.std(vals)),
                    "test_mean": float(np.mean(tests)), "test_std": float(np.std(tests)),
                    "percentile_mean": float(np.mean(pct)), "n": len(vals)}
    return out


def markdown(summary: dict, budgets) -> str:
    head = "| task | agent | " + " | ".join(f"val @{n}" for n in budgets) + " | " + \
        " | ".join(f"pct @{n}" for n in budgets) + f" | test @{budgets[-1]} |"
    lines = [head, "|---|---|" + "---:|" * (2 * len(budgets) + 1)]
    for task, by_agent in summary.items():
        for agent, at in by_agent.items():
            vals = " | ".join(f"{at[str(n)]['val_mean']:.4f} ± {at[str(n)]['val_std']:.4f}" for n in budgets)
            pcts = " | ".join(f"{at[str(n)]['percentile_mean']:.1f}" for n in budgets)
            last = at[str(budgets[-1])]
            lines.append(f"| {task} | {agent} | {vals} | {pcts} | {last['test_mean']:.4f} ± {last['test_std']:.4f} |")
    return "\n".join(lines) + "\n"


def plot(runs: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 3.6), squeeze=False)
    for ax, (task, by_agent) in zip(axes[0], runs.items()):
        for agent, by_seed in by_agent.items():
            curves = np.array([r["curve"] for r in by_seed.values()], dtype=np.float64)
            ax.plot(np.arange(1, curves.shape[1] + 1), np.nanmean(curves, 0), label=agent)
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("children trained")
        ax.set_ylabel("best validation accuracy so far")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, help="a populated suite store (read only)")
    ap.add_argument("--store", required=True, help="the working copy (created from --source when absent)")
    ap.add_argument("--held-out", default=None, help="comma-separated [every fourth task of the source]")
    ap.add_argument("--agents", default=",".join(AGENTS))
    ap.add_argument("--repeats", type=int, default=5, help="searches per agent and task (seeds 0..repeats-1)")
    ap.add_argument("--budget", type=int, default=max(BUDGETS))
    ap.add_argument("--parallel", type=int, default=2, help="trainer actors per search")
    ap.add_argument("--batch-size", type=int, default=8, help="children per trainer call and agent update")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--out", default="benchmarks/results/predictor_search_suite")
    args = ap.parse_args()

    import ray

    from nasdb.store import ExperimentStore
    from predictor import SurrogateFactory
    from search import compare

    source = ExperimentStore(args.source)
    tasks = sorted(source.task_stats().column("task").to_pylist())  # the tasks with rows
    held_out = args.held_out.split(",") if args.held_out else tasks[::4]
    if set(held_out) - set(tasks):
        raise SystemExit(f"error: --held-out {sorted(set(held_out) - set(tasks))} have no rows in {args.source}")
    reference = {t: np.asarray(source.experiments_arrow(t, status="ok").column("val_accuracy").to_numpy(),
                               dtype=np.float64) for t in held_out}
    if not os.path.exists(args.store):
        shutil.copytree(args.source, args.store)
    budgets = tuple(n for n in BUDGETS if n <= args.budget)
    agents = args.agents.split(",")
    started = time.perf_counter()
    # address="local": a cluster of our own (another job's Ray on this machine must not be joined)
    ray.init(address="local", num_cpus=args.cpus, logging_level="WARNING", log_to_driver=False)
    try:
        t0 = time.perf_counter()
        pid, reused = fit(args.store, tasks, held_out, seed=0)
        fit_seconds = time.perf_counter() - t0
        print(f"predictor {pid} (without {held_out}) {'reused' if reused else f'in {fit_seconds:.0f}s'}", flush=True)
        runs: dict = {t: {a: {} for a in agents} for t in held_out}
        seconds: dict = {}
        for seed in range(args.repeats):
            t0 = time.perf_counter()
            result = compare(args.store, held_out, args.budget, agents=agents, evaluator="train", seed=seed,
                             parallel=args.parallel, batch_size=args.batch_size,
                             surrogate=SurrogateFactory(args.store, pid), progress=False)
            seconds[seed] = time.perf_counter() - t0
            for t in held_out:
                for a in agents:
                    judged = incumbents(result.results[t][a].evaluations, budgets)
                    runs[t][a][str(seed)] = {"at": {str(n): v for n, v in judged["at"].items()},
                                             "curve": judged["curve"], "run_id": result.results[t][a].run_id}
            print(f"seed {seed}: {seconds[seed]:.0f}s", flush=True)
    finally:
        ray.shutdown()
    summary = summarize(runs, reference, budgets)
    report = {"source": args.source, "held_out": held_out, "agents": agents, "repeats": args.repeats,
              "budget": args.budget, "parallel": args.parallel, "batch_size": args.batch_size, "predictor": pid,
              "fit_seconds": fit_seconds, "fit_reused": reused, "compare_seconds": seconds,
              "total_seconds": time.perf_counter() - started,
              "host": platform.node(), "cores": os.cpu_count(), "load_average": os.getloadavg(),
              "reference_architectures": {t: len(v) for t, v in reference.items()}, "summary": summary, "runs": runs}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=1, allow_nan=True)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(summary, budgets))
    plot(runs, args.out + ".png")
    print(markdown(summary, budgets))


if __name__ == "__main__":
    main()
