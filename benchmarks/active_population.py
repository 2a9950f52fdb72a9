"""Uncertainty vs random population of new tasks: the predictor's Spearman vs children per task (issue 18).

    python benchmarks/active_population.py --source /tmp/loto16 --work /tmp/active-pop \
        --out benchmarks/results/active_population

``--source`` is a populated suite store (each task's seed-0 random stream, default recipe; e.g.
benchmarks/loto_store.py). Each new task T (default: every second task by name) is left out
in turn and added to a copy of the source holding every other task's rows and none of T's:

- **uncertainty**: ``populate_by_strategy(strategy="uncertainty")`` (what ``nasdb populate
  --strategy uncertainty`` runs) trains T's children in rounds of ``--round`` architectures,
  each round picked by the ensemble refitted on the store as it stands (predictor/active.py);
- **random**: ``populate`` trains the first N architectures of T's random stream (``--strategy
  random``), N growing by the same rounds.

After every round the ensemble refitted on the store (``UncertaintyProposer``'s fit:
``nasdb fit``'s defaults, seeded by the round, the same seed for both strategies at the same N)
scores T's **test architectures**: positions ``[budget, budget + test)`` of T's random stream,
trained once into ``<work>/reference`` (neither strategy trains them; an uncertainty pick that
happens to be one is dropped from that strategy's test set and counted). Reported: Spearman
between the ensemble's mean score and their validation accuracy, per task and N, and the mean.
``--proposer`` fits the uncertainty picks with other predictor settings (the scored fits keep
the defaults). ``--repeats`` reruns both strategies with other seeds (the fits, and the
uncertainty picks that depend on them; the random stream is the same). Writes ``<out>.json``,
``<out>.md`` and ``<out>.png``; resumes (populate skips stored rows, ``<work>/results.json``
keeps finished points).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

STRATEGIES = ("uncertainty", "random")


def copy_without(source: str, dest: str, task: str) -> None:
    """``source`` copied to ``dest`` minus ``task``'s rows (the task stays registered) and its predictors."""
    if not os.path.exists(dest):
        shutil.copytree(source, dest, ignore=lambda d, names: [n for n in names if n in (f"task={task}", "predictors")])


def test_set(reference: Any, space: Any, task: str, budget: int, test: int) -> tuple[np.ndarray, np.ndarray]:
    """T's stream positions [budget, budget + test): (n, D) architectures and their seed-0 validation accuracy."""
    from cluster.populate import sample_task_architectures

    archs = sample_task_architectures(space, task, budget + test, seed=0)[budget:]
    rows = reference.experiments_arrow(task, status="ok").to_pylist()
    acc = {tuple(r["architecture"]): r["val_accuracy"] for r in rows if r["seed"] == 0}
    missing = [a for a in archs.tolist() if tuple(a) not in acc]
    if missing:
        raise SystemExit(f"error: {len(missing)} test architectures of {task} have no row in the reference store")
    return archs, np.array([acc[tuple(a)] for a in archs.tolist()], dtype=np.float64)


def spearman(fitted: Any, seconds: float, task: str, archs: np.ndarray, accuracy: np.ndarray) -> dict[str, Any]:
    """The refitted ensemble ``fitted`` (an UncertaintyProposer) scoring T's test architectures not stored for T."""
    from predictor.fit import rank_correlations

    store = fitted.store
    stored = {tuple(a) for a in store.experiments_arrow(task, status="ok").column("architecture").to_pylist()}
    keep = np.array([tuple(a) not in stored for a in archs.tolist()], dtype=bool)
    mean, _ = fitted.engine.score_with_std(archs[keep], fitted.engine.task_z_or_embed(store, task))
    return {"spearman": rank_correlations(mean, accuracy[keep])[0], "test": int(keep.sum()),
            "dropped": int((~keep).sum()), "rows": len(stored), "fit_seconds": seconds}


def references(data: Any, task: str, archs: np.ndarray, accuracy: np.ndarray) -> dict[str, float]:
    """Beside the curves: the task-agnostic gbm (fitted on every other task's rows of the source's
    training data ``data``, the n = 0 training set; predictor/baselines.py) scoring T's test
    architectures, and T's noise ceiling (seed 0 vs 1)."""
    from predictor.baselines import BASELINES
    from predictor.evaluate import noise_ceiling
    from predictor.fit import rank_correlations

    gbm = BASELINES["gbm"].fit(data.without(task))
    return {"gbm": rank_correlations(gbm.scores(data.space.encode_many(archs)), accuracy)[0],
            "noise_ceiling": noise_ceiling(data.tasks[task])[0]}


def run_task(args: Any, strategy: str, task: str, repeat: int, test: tuple[np.ndarray, np.ndarray], points: dict,
             save: Any) -> None:
    """Populate T by ``strategy`` round by round, scoring the refitted ensemble before each round and at the end."""
    from cluster.populate import PopulateConfig, populate, populate_by_strategy
    from nasdb.store import ExperimentStore
    from predictor.active import ActiveConfig, UncertaintyProposer

    if str(args.budget) in points:
        return  # finished in an earlier invocation
    root = os.path.join(args.work, f"repeat{repeat}", f"{strategy}-{task}")
    copy_without(args.source, root, task)
    store = ExperimentStore(root)
    rounds = args.budget // args.round
    config = PopulateConfig(per_task=args.budget, tasks=[task], seed=0, workers=args.workers, run_id=None)

    def score(n: int) -> Any:
        """The ensemble refitted on the store with n children of T, its point recorded. Seeded 1000 * repeat
        + n / round + 1: in repeat 0 the CLI's seed of the round that starts at n (uncertainty_proposer)."""
        t0 = time.perf_counter()
        fitted = UncertaintyProposer(store, seed=1000 * repeat + n // args.round + 1)
        if str(n) not in points:
            points[str(n)] = spearman(fitted, time.perf_counter() - t0, task, *test)
            print(f"repeat {repeat} {strategy:11s} {task:22s} n={n:3d} spearman={points[str(n)]['spearman']:.3f} "
                  f"({points[str(n)]['fit_seconds']:.0f}s fit)", flush=True)
            save()
        return fitted

    if strategy == "uncertainty":
        def factory(s: Any, r: int) -> Any:  # round r's proposer, seeded r as the CLI's: the point at its n
            fitted = score(args.round * (r - 1))
            if args.proposer is None:
                return fitted
            return UncertaintyProposer(s, ActiveConfig(predictor=args.proposer), seed=1000 * repeat + r)

        populate_by_strategy(store, config, strategy="uncertainty", rounds=rounds, proposer_factory=factory,
                             progress=False, create_store=False)
    else:
        for r in range(1, rounds + 1):
            populate(store, config.replace(per_task=args.round * r, agent="random"), progress=False,
                     create_store=False)
            if str(args.round * r) not in points:
                score(args.round * r)
    if str(args.budget) not in points:  # uncertainty: the fit after its last round
        score(args.budget)


def point(results: dict, task: str, strategy: str, n: int) -> float:
    """T's Spearman at n children by ``strategy``, averaged over the repeats that have it (NaN if none)."""
    vals = [pts[str(n)]["spearman"] for pts in results[task].get(strategy, {}).values() if str(n) in pts]
    return float(np.mean(vals)) if vals else float("nan")


def summarize(results: dict, ns: list[int]) -> dict:
    """Per strategy and n: the mean over tasks of each task's mean over repeats; per n the paired
    difference uncertainty - random (mean and standard error over the tasks); and the fewest
    children with which uncertainty reaches random's mean at the full budget."""
    out: dict = {s: {} for s in STRATEGIES}
    for n in ns:
        by = {s: np.array([point(results, t, s, n) for t in results]) for s in STRATEGIES}
        for s in STRATEGIES:
            out[s][str(n)] = {"mean": float(np.nanmean(by[s])), "tasks": int(np.isfinite(by[s]).sum())}
        diff = by["uncertainty"] - by["random"]
        diff = diff[np.isfinite(diff)]
        out.setdefault("difference", {})[str(n)] = {
            "mean": float(diff.mean()) if len(diff) else float("nan"),
            "stderr": float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")}
    for key in ("gbm", "noise_ceiling"):
        out[key] = float(np.nanmean([by.get(key, np.nan) for by in results.values()]))
    goal = out["random"][str(ns[-1])]["mean"]
    out["uncertainty_reaches_random_at_budget"] = next(
        (n for n in ns if out["uncertainty"][str(n)]["mean"] >= goal), None)
    return out


def markdown(results: dict, summary: dict, ns: list[int]) -> str:
    head = "| task | strategy | " + " | ".join(f"n={n}" for n in ns) + " | gbm | noise ceiling |"
    lines = [head, "|---|---|" + "---:|" * (len(ns) + 2)]
    for task, by in results.items():
        for strategy in STRATEGIES:
            refs = f"{by.get('gbm', float('nan')):.3f} | {by.get('noise_ceiling', float('nan')):.3f}"
            lines.append(f"| {task} | {strategy} | " + " | ".join(f"{point(results, task, strategy, n):.3f}"
                                                                 for n in ns) + f" | {refs} |")
    refs = " | ".join(f"{summary[k]:.3f}" for k in ("gbm", "noise_ceiling"))
    for strategy in STRATEGIES:
        cells = [f"**{summary[strategy][str(n)]['mean']:.3f}**" for n in ns]
        lines.append(f"| **mean** | {strategy} | " + " | ".join(cells) + f" | {refs} |")
    cells = [f"{d['mean']:+.3f} ± {d['stderr']:.3f}" for d in (summary["difference"][str(n)] for n in ns)]
    lines.append("| **uncertainty - random** | (± s.e. over tasks) | " + " | ".join(cells) + " | | |")
    return "\n".join(lines) + "\n"


def plot(results: dict, summary: dict, ns: list[int], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for strategy, color in zip(STRATEGIES, ("tab:red", "tab:blue")):
        for task in results:
            ax.plot(ns, [point(results, task, strategy, n) for n in ns], color=color, alpha=0.15, lw=0.8)
        ax.plot(ns, [summary[strategy][str(n)]["mean"] for n in ns], color=color, lw=2, marker="o",
                label=f"{strategy} (mean over {len(results)} tasks)")
    ax.set_xlabel("children trained on the new task")
    ax.set_ylabel("Spearman on the new task's test architectures")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", required=True, help="a populated suite store (read only)")
    ap.add_argument("--work", required=True, help="folder of the per-task, per-strategy store copies")
    ap.add_argument("--tasks", default=None, help="comma-separated new tasks [every second task of the source]")
    ap.add_argument("--budget", type=int, default=150, help="children per new task and strategy")
    ap.add_argument("--round", type=int, default=25, help="children per round (one refit each)")
    ap.add_argument("--test", type=int, default=250, help="test architectures per new task")
    ap.add_argument("--repeats", type=int, default=1, help="repeats with other fit and proposer seeds")
    ap.add_argument("--proposer", type=json.loads, default=None,
                    help="PredictorConfig fields of the uncertainty proposer's own fit, as JSON (e.g. "
                         "'{\"loss\": \"l2\"}'); default: the scored fit is the proposer")
    ap.add_argument("--workers", type=int, default=2, help="trainer actors")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    ap.add_argument("--out", default="benchmarks/results/active_population")
    args = ap.parse_args()
    if args.round < 1 or args.budget < args.round or args.budget % args.round:
        raise SystemExit(f"error: --budget ({args.budget}) must be a positive multiple of --round ({args.round})")

    import ray

    from cluster.populate import PopulateConfig, populate
    from nasdb.store import ExperimentStore
    from predictor import PredictorConfig
    from predictor.data import load_for_config

    source = ExperimentStore(args.source)
    names = sorted(source.task_stats().column("task").to_pylist())
    tasks = args.tasks.split(",") if args.tasks else names[::2]
    if set(tasks) - set(names):
        raise SystemExit(f"error: --tasks {sorted(set(tasks) - set(names))} have no rows in {args.source}")
    ns = list(range(0, args.budget + 1, args.round))
    os.makedirs(args.work, exist_ok=True)
    state_path = os.path.join(args.work, "results.json")
    results: dict = json.load(open(state_path)) if os.path.exists(state_path) else {}

    def save() -> None:
        with open(state_path + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(state_path + ".tmp", state_path)

    started = time.perf_counter()
    ray.init(address="local", num_cpus=args.cpus, logging_level="WARNING", log_to_driver=False)
    try:
        ref_root = os.path.join(args.work, "reference")
        if not os.path.exists(ref_root):
            shutil.copytree(args.source, ref_root, ignore=shutil.ignore_patterns("predictors"))
        reference = ExperimentStore(ref_root)  # the test architectures, trained once (seed 0, default recipe)
        populate(reference, PopulateConfig(per_task=args.budget + args.test, tasks=tasks, seed=0, workers=args.workers,
                                           run_id="active-population-test"), progress=False, create_store=False)
        space = next(iter(reference.spaces().values()))
        source_data = None
        for repeat in range(args.repeats):
            for task in tasks:
                test = test_set(reference, space, task, args.budget, args.test)
                by = {s: results.setdefault(task, {}).setdefault(s, {}).setdefault(str(repeat), {})
                      for s in STRATEGIES}
                run_task(args, "uncertainty", task, repeat, test, by["uncertainty"], save)
                # n = 0 is one fit for both: the same store content (no row of T) and seed
                by["random"].setdefault("0", {**by["uncertainty"]["0"], "shared": True})
                run_task(args, "random", task, repeat, test, by["random"], save)
                if "gbm" not in results[task]:
                    if source_data is None:  # read once, and only when a task still lacks its references
                        source_data = load_for_config(source, PredictorConfig(use_meta_features=False))[0]
                    results[task].update(references(source_data, task, *test))
                    save()
    finally:
        ray.shutdown()
    summary = summarize(results, ns)
    report = {"source": args.source, "tasks": tasks, "budget": args.budget, "round": args.round, "test": args.test,
              "repeats": args.repeats, "proposer": args.proposer,
              "total_seconds": time.perf_counter() - started, "host": platform.node(), "cores": os.cpu_count(),
              "load_average": os.getloadavg(), "summary": summary, "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(results, summary, ns))
    plot(results, summary, ns, args.out + ".png")
    print(markdown(results, summary, ns))


if __name__ == "__main__":
    main()
