"""Held-out Spearman along the fit: does Algorithm 1 over-train the predictor (issue 16, "model
selection on a validation task instead of a fixed step count")?

For each held-out task, fit the default predictor on the other tasks (``fit_in_process``'s loop,
one torch thread, in a pool of processes) and score the held-out task's architectures every
``--every`` steps. If the mean Spearman peaked well before the last step, a step count chosen on
validation tasks would pay; if it plateaus, it would not.

    python benchmarks/loto_curve.py --store /tmp/loto16 [--steps 4500] [--every 250]
        [--held-out a,b] [--processes 2] [--uncertainty-gap validation|0.01] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402

from nasdb.store import ExperimentStore  # noqa: E402
from predictor.baselines import unique_architectures  # noqa: E402
from predictor.config import PredictorConfig  # noqa: E402
from predictor.data import TrainingData, load_for_config  # noqa: E402
from predictor.fit import new_predictor, rank_correlations, run_algorithm1  # noqa: E402
from predictor.model import TaskScorer  # noqa: E402

_DATA: TrainingData | None = None


def _curve(held_out: str, config_dict: dict, every: int) -> tuple[str, list[tuple[int, float]]]:
    """Fit without ``held_out``; its Spearman every ``every`` steps and at the last one."""
    config = PredictorConfig.from_dict(config_dict)
    train = _DATA.without(held_out)
    model = new_predictor(train, config)
    task = _DATA.tasks[held_out]
    u, target = unique_architectures(task)
    curve = []

    def score(step: int, _metrics: dict) -> None:
        mean, _ = model.predict_with_std(u, task.x, task.y, task.landmarks_for(model))  # eval mode, then back
        curve.append((step, rank_correlations(mean, target)[0]))

    run_algorithm1(TaskScorer(model), train, config, report_every=every, on_report=score)
    return held_out, curve


def main() -> None:
    global _DATA
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True)
    p.add_argument("--steps", type=int, default=4500)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--held-out", default=None, help="comma-separated [every task]")
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--uncertainty-gap", default=None, help="a number or validation [the default config's]")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    config = PredictorConfig(loss="linear", num_steps=args.steps)
    if args.uncertainty_gap is not None:
        gap = args.uncertainty_gap
        try:
            config = config.replace(uncertainty_gap=gap if gap == "validation" else float(gap))
        except ValueError as e:  # not a number, or refused by the config
            p.error(f"--uncertainty-gap {gap!r}: {e}")
    _DATA, config, _ = load_for_config(ExperimentStore(args.store), config, meta_encoder="auto",
                                       min_experiments=config.batch_size, min_tasks=3)
    held = _DATA.held_out(args.held_out.split(",") if args.held_out else None)
    # fork: the workers inherit the loaded data (one torch thread each, as the fit sets)
    with ProcessPoolExecutor(args.processes, mp_context=get_context("fork")) as pool:
        curves = dict(pool.map(_curve, held, [config.to_dict()] * len(held), [args.every] * len(held)))
    steps = [s for s, _ in next(iter(curves.values()))]
    mean = np.nanmean([[v for _, v in c] for c in curves.values()], axis=0)
    if args.json:
        print(json.dumps({"steps": steps, "mean": mean.tolist(), "tasks": {t: [v for _, v in c] for t, c in
                                                                          curves.items()}}, indent=1))
        return
    for task, c in curves.items():
        print(f"{task:24s}", " ".join(f"{v:6.3f}" for _, v in c))
    print(f"{'mean':24s}", " ".join(f"{v:6.3f}" for v in mean))
    print(f"{'step':24s}", " ".join(f"{s:6d}" for s in steps))


if __name__ == "__main__":
    main()
