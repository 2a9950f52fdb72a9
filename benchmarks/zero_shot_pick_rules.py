"""Zero-shot pick rules by leave-one-task-out: how issue 16's kappa was chosen (README, "The zero-shot pick").

For each held-out task: one fit without it (``predictor.zero_shot.fit_held_out``, the default
PredictorConfig; without meta-features on an imported benchmark, whose tasks have no samples),
then Algorithm 2 once per kappa (``SuggestionEngine.suggest_z``: the ascent is deterministic,
so every kappa sees the same candidates). Beside those picks: mean - kappa * raw spread of the
scores (the rule before the gap to the portfolio pick), the best-mean candidate among the stored
ones only (no ascent result), and the portfolio pick. Each distinct pick is judged once: trained
with ``--seeds`` seeds on a task with samples (the suite), looked up on an imported benchmark;
its percentile among the task's stored architectures (``evaluate_zero_shot.percentile``).

    python benchmarks/zero_shot_pick_rules.py --store S [--kappas 0,0.5,1,2,3,4] [--fit-seeds 0]
        [--tasks a,b] [--processes 2] [--seeds 2] [--no-meta-features] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nasdb.store import ExperimentStore  # noqa: E402
from predictor.baselines import distinct_architectures  # noqa: E402
from predictor.config import PredictorConfig, SuggestConfig  # noqa: E402
from predictor.data import load_for_config  # noqa: E402
from predictor.evaluate_zero_shot import judge_pick, percentile, stored_reference  # noqa: E402
from predictor.zero_shot import fit_held_out  # noqa: E402

_STATE: dict = {}


def _init(store_root: str, data, config: PredictorConfig) -> None:
    import torch

    torch.set_num_threads(1)
    _STATE.update(store=ExperimentStore(store_root), data=data, config=config)


def _picks(engine, z, kappas: list[float]) -> tuple[dict[str, list[int]], list[int]]:
    """Each rule's architecture for one held-out task, and the portfolio pick."""
    suggestions = {k: engine.suggest_z(z, SuggestConfig(kappa=k)) for k in kappas}
    candidates = suggestions[kappas[0]].candidates  # the same for every kappa: only the order differs
    picks = {f"gap, kappa {k:g}": s.architecture for k, s in suggestions.items()}
    for k in kappas:
        if k > 0:  # the rule before issue 16's floor: the raw spread, the members' offsets and all
            best = max(candidates, key=lambda c: (c.score - k * c.std, c.score))
            picks[f"raw spread, kappa {k:g}"] = best.architecture
    stored = [c for c in candidates if c.source != "ascent"]
    picks["stored candidates only"] = max(stored, key=lambda c: c.score).architecture
    return picks, list(suggestions[kappas[0]].portfolio)


def _one(held_out: str, seed: int, kappas: list[float], seeds: int) -> dict:
    store, data = _STATE["store"], _STATE["data"]
    engine, z, _ = fit_held_out(store, held_out, data, _STATE["config"].replace(seed=seed))
    picks, portfolio = _picks(engine, z, kappas)
    picks["portfolio"] = portfolio
    task = data.tasks[held_out]
    if task.has_samples:  # the suite: train each distinct pick (the store's recipe) unless the task holds it
        ref = stored_reference(store, task, data.space)
        judged: dict[tuple, float] = {}
        for arch in picks.values():
            if tuple(arch) not in judged:
                judged[tuple(arch)] = judge_pick(arch, ref, store.task(held_out), data.space, seeds)["val_percentile"]
    else:  # an imported benchmark: every configuration is in the table
        archs, _, val = distinct_architectures(task)
        index = {tuple(int(v) for v in a): i for i, a in enumerate(archs)}
        judged = {tuple(a): percentile(val, float(val[index[tuple(a)]])) for a in picks.values()}
    row = {"task": held_out, "fit_seed": seed, **{r: judged[tuple(a)] for r, a in picks.items()}}
    print(json.dumps(row), flush=True)
    return row


def summary(rows: list[dict]) -> list[dict]:
    """Per rule: median and mean percentile, and on how many (task, seed) fits it is >= the portfolio pick."""
    rules = [r for r in rows[0] if r not in ("task", "fit_seed")]
    return [{"rule": r, "median": statistics.median(x[r] for x in rows), "mean": statistics.mean(x[r] for x in rows),
             "at_least_portfolio": sum(x[r] >= x["portfolio"] for x in rows), "fits": len(rows)} for r in rules]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True)
    p.add_argument("--kappas", default="0,0.5,1,2,3,4")
    p.add_argument("--fit-seeds", default="0", help="predictor seeds per held-out task [0]")
    p.add_argument("--tasks", default=None, help="held-out tasks, comma-separated [every task]")
    p.add_argument("--seeds", type=int, default=2, help="training seeds of a trained pick [2]")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--no-meta-features", action="store_true", help="an imported benchmark: its tasks have no samples")
    p.add_argument("--json", default=None, help="write the rows and the summary here")
    args = p.parse_args()
    kappas = [float(k) for k in args.kappas.split(",")]
    store = ExperimentStore(args.store)
    config = PredictorConfig(use_meta_features=not args.no_meta_features)
    data, config, _ = load_for_config(store, config, min_tasks=2)
    held_out = args.tasks.split(",") if args.tasks else data.task_names
    jobs = [(t, int(s), kappas, args.seeds) for t in held_out for s in args.fit_seeds.split(",")]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.processes, mp_context=get_context("spawn"), initializer=_init,
                             initargs=(args.store, data, config)) as pool:
        rows = list(pool.map(_one, *zip(*jobs)))
    table = summary(rows)
    for r in table:
        print(f"{r['rule']:>26}: median {r['median']:.3f}, mean {r['mean']:.3f}, "
              f">= portfolio {r['at_least_portfolio']}/{r['fits']}")
    print(f"{len(jobs)} fits in {time.perf_counter() - start:.0f}s; load average {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"store": args.store, "kappas": kappas, "rows": rows, "summary": table}, f, indent=1)


if __name__ == "__main__":
    main()
