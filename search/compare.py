"""Head-to-head comparison of the search baselines with the zero-shot suggestion on held-out tasks.

The shape of task-aware-performance-prediction.md Sec. 5.3: Table 3 (per test task, the test
accuracy of the best-by-validation child RL-NAS found, how many children it took, and the mean
of its first 10) and Table 4 (first 10 children of T-NAML after pre-training on the other tasks
vs the zero-shot suggestion), plus random search and the cost of each method (children trained,
wall time), and T-NAML's Fig. 2 curves (best-so-far test accuracy vs children trained).

The zero-shot numbers come from predictor/ (Algorithm 2), which this module does not import:
pass ``zero_shot=fn`` with ``fn(task) -> test accuracies`` (one per repeat), or let it read the
store's rows with ``agent == "zero-shot"`` for the task (what the predictor writes when it
trains its suggestion).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from nasdb.checks import mean_std
from nasdb.errors import ArgumentError
from search._report import ZERO_SHOT_AGENT, markdown, write_report
from search.result import SearchResult

#: Seconds between a running search's progress lines in a comparison (populate logs every 10 s too).
PROGRESS_SECONDS = 10.0
DEFAULT_AGENTS = ("rl", "tnaml", "random")


def stored_zero_shot(store, task: str, agent: str = ZERO_SHOT_AGENT) -> list[float]:
    """Test accuracies of the store's zero-shot rows for ``task`` (empty if there are none)."""
    table = store.experiments_arrow(task, status="ok").select(["agent", "test_accuracy"])
    return [t for a, t in zip(table.column("agent").to_pylist(), table.column("test_accuracy").to_pylist())
            if a == agent]


@dataclass
class Comparison:
    """Search results per (task, agent) and the zero-shot accuracies per task; renders the tables."""

    tasks: list[str]
    agents: list[str]
    budget: int
    first_n: int
    results: dict[str, dict[str, SearchResult]]
    zero_shot: dict[str, list[float]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    #: lookup comparisons only: ``{task: {agent: {N: judged}}}`` of the incumbent after N = first_n and
    #: budget evaluations on the table (search/regret.py: true value, regret, percentile, rank)
    regret: dict[str, dict[str, dict[int, dict[str, Any]]]] = field(default_factory=dict)

    def table3(self) -> list[dict[str, Any]]:
        """Per task: RL-NAS best-by-validation test accuracy, children it took, first-N mean/std; zero-shot."""
        rows = []
        for t in self.tasks:
            r = self.results[t].get("rl")
            best = r.best if r else None
            first = r.first(self.first_n) if r else mean_std([])
            zs = mean_std(self.zero_shot.get(t, []))
            rows.append({"task": t, f"rl_first{self.first_n}_mean": first["mean"],
                         f"rl_first{self.first_n}_std": first["std"],
                         "rl_best_test": best.test_accuracy if best else math.nan,
                         "rl_best_val": best.val_accuracy if best else math.nan,
                         "rl_child_models": r.best_position if r else None,
                         "zero_shot_mean": zs["mean"], "zero_shot_std": zs["std"], "zero_shot_n": zs["n"]})
        return rows

    def table4(self) -> list[dict[str, Any]]:
        """Per task: first-N test accuracy of T-NAML, random search and RL-NAS vs the zero-shot suggestion."""
        rows = []
        for t in self.tasks:
            row: dict[str, Any] = {"task": t}
            for a in ("tnaml", "random", "rl"):
                r = self.results[t].get(a)
                f = r.first(self.first_n) if r else mean_std([])
                row[f"{a}_first{self.first_n}_mean"], row[f"{a}_first{self.first_n}_std"] = f["mean"], f["std"]
            zs = mean_std(self.zero_shot.get(t, []))
            row["zero_shot_mean"], row["zero_shot_std"] = zs["mean"], zs["std"]
            rows.append(row)
        return rows

    def cost(self) -> list[dict[str, Any]]:
        """Per (task, method): children evaluated on the task, children trained, pre-training children, wall time."""
        rows = []
        for t in self.tasks:
            for a in self.agents:
                r = self.results[t].get(a)
                if r is None:
                    continue
                trained = r.num_evaluations if r.evaluator["name"] == "train" else 0
                rows.append({"task": t, "method": a, "children_evaluated": r.num_evaluations,
                             "children_trained": trained, "failed": r.num_failed,
                             "pretrain_children": r.pretrain_children, "wall_seconds": r.wall_seconds,
                             "best_test": r.best.test_accuracy if r.best else math.nan,
                             "best_position": r.best_position, "run_id": r.run_id})
            zs = self.zero_shot.get(t, [])
            if zs:
                rows.append({"task": t, "method": ZERO_SHOT_AGENT, "children_evaluated": 0, "children_trained": 0,
                             "failed": 0, "pretrain_children": None, "wall_seconds": None,
                             "best_test": max(zs), "best_position": None, "run_id": None})
        return rows

    def table_regret(self) -> list[dict[str, Any]]:
        """Per (task, agent) of a lookup comparison: regret and percentile after first_n and budget evaluations."""
        rows = []
        for t, by_agent in self.regret.items():
            for a, judged in by_agent.items():
                row: dict[str, Any] = {"task": t, "method": a}
                for n, j in judged.items():
                    row[f"regret@{n}"], row[f"percentile@{n}"], row[f"value@{n}"] = j["regret"], j["percentile"], \
                        j["value"]
                rows.append(row)
        return rows

    def curves(self, top_n: int = 1) -> dict[str, dict[str, list[float]]]:
        """``{task: {agent: best-so-far test accuracy after each child}}`` (T-NAML Fig. 2)."""
        return {t: {a: r.best_so_far(top_n).tolist() for a, r in self.results[t].items()} for t in self.tasks}

    def to_dict(self) -> dict[str, Any]:
        """Everything as strict JSON-ready data (NaN as None)."""
        from search.result import jsonable

        return jsonable({"tasks": self.tasks, "agents": self.agents, "budget": self.budget, "first_n": self.first_n,
                "settings": self.settings, "table3": self.table3(), "table4": self.table4(), "cost": self.cost(),
                "zero_shot": self.zero_shot, "curves": self.curves(), "regret": self.table_regret(),
                "runs": {t: {a: r.run_id for a, r in rs.items()} for t, rs in self.results.items()}})

    def to_markdown(self) -> str:
        return markdown(self)

    def write(self, out_dir: str) -> dict[str, str]:
        """Write report.md, table3.csv, table4.csv, cost.csv, comparison.json and curves.png to ``out_dir``."""
        return write_report(self, out_dir)


def _table_regret(store, plans: dict, results: dict, first_n: int) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """Judge every lookup run's incumbent after first_n and budget evaluations on its task's table."""
    from search.evaluators import load_table
    from search.regret import TableTruth, judge_search

    out = {}
    for t, by_agent in plans.items():
        plan = next(iter(by_agent.values()))
        truth = TableTruth.from_table(load_table(store, t, store.space(plan.space_id), plan.recipe))
        out[t] = {a: judge_search(truth, results[t][a].evaluations, sorted({first_n, results[t][a].budget}))
                  for a in by_agent}
    return out


def compare(store, tasks: Sequence[str] | str, budget: int = 100, *, agents: Sequence[str] = DEFAULT_AGENTS,
            evaluator: str = "train", pretrain_tasks: Sequence[str] | str | None = None,
            pretrain_budget: int | None = None, first_n: int = 10, seed: int = 0, parallel: int = 1,
            epochs: int | None = None, recipe: dict | None = None, agent_args: dict[str, dict] | None = None,
            zero_shot: Callable[[str], Sequence[float]] | None = None, verbose: bool = False,
            address: str | None = None, out_dir: str | None = None, batch_size: int = 1, progress: bool = True,
            start_timeout: float = 60.0, surrogate: Callable[[str], Any] | None = None) -> Comparison:
    """Run every agent on every test task with ``budget`` children each and gather the tables.

    ``pretrain_tasks`` None: T-NAML pre-trains on the offline rows of every other task in the
    store (leave-one-task-out); a list: the paper's fixed split (it must not contain a test task).
    All runs are planned (every input checked) before the first starts; each is resumable, so an
    interrupted comparison picks up where it stopped when rerun with the same arguments.
    ``batch_size``: children each search proposes, trains and learns from at once (search.run_search).
    ``progress`` prints (stderr) a line as each search starts and a progress line every
    ``PROGRESS_SECONDS`` while it runs (``verbose``: a line per child instead); ``start_timeout``:
    seconds the trainer actors may wait for free resources before the comparison fails.
    ``surrogate``: the predictor agent's predictor, ``surrogate(task)`` (search.run.plan_search).
    """
    from nasdb.store import ExperimentStore
    from search.run import _split_tasks, execute, plan_search

    names = _split_tasks(tasks, "test tasks")
    if names is None:
        raise ArgumentError("compare needs at least one test task")
    agents = list(agents)
    if not agents:
        raise ArgumentError("compare needs at least one agent")
    if len(set(agents)) != len(agents):
        raise ArgumentError(f"agents are repeated: {agents}")
    first_n = int(first_n)
    if first_n < 1:
        raise ArgumentError(f"first_n must be >= 1, got {first_n}")
    fixed = _split_tasks(pretrain_tasks)
    if fixed is not None and set(fixed) & set(names):
        raise ArgumentError(f"the pre-training tasks {fixed} include test tasks {sorted(set(fixed) & set(names))}")
    store = store if isinstance(store, ExperimentStore) else ExperimentStore(store)
    plans = {t: {} for t in names}
    for t in names:
        for a in agents:
            plans[t][a] = plan_search(
                store, a, t, budget, pretrain_tasks=fixed if a == "tnaml" else None,
                pretrain_budget=pretrain_budget if a == "tnaml" else None, parallel=parallel, seed=seed,
                epochs=epochs, recipe=recipe, evaluator=evaluator, agent_args=(agent_args or {}).get(a),
                verbose=verbose, batch_size=batch_size, start_timeout=start_timeout,
                progress_s=PROGRESS_SECONDS if progress and not verbose else None,
                surrogate=surrogate if a == "predictor" else None)

    started = False
    if evaluator == "train":
        import os

        import ray

        if not ray.is_initialized():
            ray.init(address=address or os.environ.get("RAY_ADDRESS"), log_to_driver=True)
            started = True
    try:
        results: dict[str, dict[str, SearchResult]] = {t: {} for t in names}
        for k, (t, a) in enumerate((t, a) for t in names for a in agents):
            if progress or verbose:
                print(f"compare: search {k + 1}/{len(names) * len(agents)}: {a} on {t} (budget {budget})",
                      file=sys.stderr, flush=True)
            results[t][a] = execute(plans[t][a])
    finally:
        if started:
            import ray

            ray.shutdown()
    zs = {t: [float(v) for v in (zero_shot(t) if zero_shot is not None else stored_zero_shot(store, t))]
          for t in names}
    out = Comparison(names, agents, int(budget), first_n, results, zs,
                     settings={"evaluator": evaluator, "seed": seed, "parallel": parallel, "epochs": epochs,
                               "batch_size": batch_size,
                               "pretrain_tasks": fixed, "store": store.uri},
                     regret=_table_regret(store, plans, results, first_n) if evaluator == "lookup" else {})
    if out_dir is not None:
        out.write(out_dir)
    return out
