"""Fit cost of the deep ensemble against the single predictor it replaced (issue 16: at most 2x).

Both fits run Algorithm 1 in this process (``fit_in_process``, one torch thread) on the same
training data for the same number of steps: the default ``PredictorConfig`` (K members with
architecture features) and the single predictor before issue 16 (``PredictorConfig.legacy``:
one member, ``u`` alone). Each repeat times both back to back, alternating which goes first,
and the reported ratio is the median of the per-repeat ratios of process CPU time (the machines
are shared; the other load slows both alike).

    python benchmarks/fit_time.py --store /tmp/loto16 [--steps 500] [--repeats 3] [--json]

Without --store a small real store is built in a temporary folder (predictor/testing.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402

from nasdb.store import ExperimentStore  # noqa: E402
from predictor.config import PredictorConfig  # noqa: E402
from predictor.data import load_training_data  # noqa: E402
from predictor.fit import fit_in_process  # noqa: E402
from predictor.testing import TINY_TASKS, build_tiny_store  # noqa: E402


def cpu_seconds_of_fit(data, config: PredictorConfig) -> float:
    start = time.process_time()
    fit_in_process(data, config, report_every=10**9)
    return time.process_time() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", default=None, help="store root [a tiny store built in a temporary folder]")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps per fit")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ensemble-size", type=int, default=PredictorConfig().ensemble_size)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.steps < 1 or args.repeats < 1:
        raise SystemExit(f"error: --steps and --repeats must be >= 1, got {args.steps}, {args.repeats}")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.store
        if root is None:
            root = os.path.join(tmp, "store")
            build_tiny_store(root, TINY_TASKS)
        data = load_training_data(ExperimentStore(root))
        ensemble = PredictorConfig(num_steps=args.steps, ensemble_size=args.ensemble_size)
        single = PredictorConfig.legacy({"num_steps": args.steps})
        cpu_seconds_of_fit(data, single)  # warm-up: first-call allocations and kernel selection
        times = {"ensemble": [], "single": []}
        for r in range(args.repeats):
            order = [("ensemble", ensemble), ("single", single)]
            for name, cfg in order if r % 2 == 0 else order[::-1]:
                times[name].append(cpu_seconds_of_fit(data, cfg))
    ratios = [e / s for e, s in zip(times["ensemble"], times["single"])]
    result = {
        "store": args.store or "tiny (predictor/testing.py)", "tasks": len(data.tasks), "steps": args.steps,
        "ensemble_size": args.ensemble_size, "repeats": args.repeats,
        "ensemble_cpu_ms_per_step": 1000 * min(times["ensemble"]) / args.steps,
        "single_cpu_ms_per_step": 1000 * min(times["single"]) / args.steps,
        "ratio_median": statistics.median(ratios), "ratios": ratios,
        "load_average": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['tasks']} tasks, {args.steps} steps, {args.repeats} repeats, 1 torch thread, "
          f"load {result['load_average']:.1f}")
    print(f"ensemble (K={args.ensemble_size}, features): {result['ensemble_cpu_ms_per_step']:.2f} ms CPU/step")
    print(f"single predictor (before issue 16):      {result['single_cpu_ms_per_step']:.2f} ms CPU/step")
    print(f"ratio (median of repeats): {result['ratio_median']:.2f}x  (target <= 2x)")


if __name__ == "__main__":
    main()
