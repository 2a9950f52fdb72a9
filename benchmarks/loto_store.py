"""Build the leave-one-task-out store of the README: N random architectures per task, plus a
second training seed for the first K of them (the noise ceiling of each task).

Populate draws each task's architectures from a stream seeded by (seed, task) and trains
them with that same seed, so it cannot train the same architectures twice with two seeds;
this script plans both seeds over the seed-0 stream and trains them with the populate job's
own trainer class (``ChildTrainer``, in-process), so the rows are exactly populate's rows.
Rerunning skips the rows already stored.

    python benchmarks/loto_store.py --store /tmp/loto-store [--per-task 200] [--second-seed 50]
        [--suite digits|tabular|all] [--tasks a,b] [--max-tasks N] [--processes 2]

``--suite`` picks the built-in suite (``nasdb.tasks.builtin_task_names``; the tabular suite
already leaves out ``nasdb.tabular_suite.DROPPED``); ``--tasks`` names tasks instead, and
``--max-tasks N`` keeps the first N of the suite's order.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster.child import ChildTrainer, TrainRecipe, WorkItem, default_bank  # noqa: E402
from cluster.populate import DEFAULT_BATCH_SIZE_MODELS, sample_task_architectures  # noqa: E402
from nasdb.space import default_space  # noqa: E402
from nasdb.store import ExperimentStore, experiment_id  # noqa: E402
from nasdb.tasks import builtin_task_names  # noqa: E402


def plan(task: str, per_task: int, second_seed: int, recipe: dict, fingerprints: tuple[str, str]) -> list[WorkItem]:
    """Seed 0 for every architecture of the task's seed-0 stream, seed 1 for the first ``second_seed``;
    ids include the task data's and the embedding bank's fingerprints, as populate's do."""
    space = default_space()
    archs = sample_task_architectures(space, task, per_task, seed=0)
    items = []
    for seed, count in ((0, per_task), (1, second_seed)):
        for index, arch in enumerate(archs[:count]):
            a = tuple(int(v) for v in arch)
            eid = experiment_id(task, space.space_id, list(a), seed, recipe, task_fingerprint=fingerprints[0],
                                bank_fingerprint=fingerprints[1])
            items.append(WorkItem(task, index, a, seed, eid))
    return items


def build(store_root: str, tasks: list[str], per_task: int, second_seed: int, worker: str) -> int:
    """Train the planned rows of ``tasks`` that the store lacks; returns the rows written."""
    recipe = TrainRecipe().to_dict()
    bank = default_bank()
    trainer = ChildTrainer(store_root, default_space().to_json(), recipe, worker=worker, agent="random",
                           run_id=f"loto-store-{worker}", bank=bank)
    written = 0
    try:
        for task in tasks:
            done = trainer.store.done_ids(task)
            fingerprints = (trainer.store.task(task).fingerprint(), bank.fingerprint())
            todo = [i for i in plan(task, per_task, second_seed, recipe, fingerprints) if i.experiment_id not in done]
            for seed in (0, 1):  # one seed per chunk: ChildTrainer trains one chunk of a task at a time
                mine = [i for i in todo if i.seed == seed]
                for start in range(0, len(mine), DEFAULT_BATCH_SIZE_MODELS * 4):
                    written += trainer.train_chunk(task, mine[start:start + DEFAULT_BATCH_SIZE_MODELS * 4],
                                                   0, False).rows
            print(f"{worker}: {task} done ({written} rows so far)", flush=True)
    finally:
        trainer.close()
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True)
    p.add_argument("--per-task", type=int, default=200)
    p.add_argument("--second-seed", type=int, default=50)
    p.add_argument("--suite", default="digits", help="built-in suite: digits, tabular or all [digits]")
    p.add_argument("--tasks", default=None, help="comma-separated (overrides --suite)")
    p.add_argument("--max-tasks", type=int, default=None, help="keep the first N tasks [all]")
    p.add_argument("--processes", type=int, default=2)
    args = p.parse_args()
    if not 0 <= args.second_seed <= args.per_task:
        raise SystemExit(f"error: --second-seed must lie in [0, --per-task], got {args.second_seed}")
    try:
        tasks = args.tasks.split(",") if args.tasks else builtin_task_names(args.suite)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if args.max_tasks is not None:
        tasks = tasks[:args.max_tasks]
    store = ExperimentStore(args.store)
    if not store.exists():
        store.init()
    store.save_space(default_space())
    start = time.perf_counter()
    groups = [tasks[i::args.processes] for i in range(args.processes)]
    with ProcessPoolExecutor(args.processes, mp_context=get_context("spawn")) as pool:
        rows = sum(pool.map(build, [args.store] * len(groups), groups, [args.per_task] * len(groups),
                            [args.second_seed] * len(groups), [f"loto{i}" for i in range(len(groups))]))
    print(f"{rows} rows in {time.perf_counter() - start:.0f}s; store holds {store.count()} ok rows")


if __name__ == "__main__":
    main()
