"""Search baselines on a fully tabulated benchmark: every agent, several repeats, judged by regret.

For each held-out task, random search, RL-NAS and T-NAML (after leave-one-task-out
pre-training on the other tasks' stored rows, T-NAML Sec. 2.2-2.3) run ``max(budgets)``
evaluations through the lookup evaluator, ``repeats`` times with seeds ``seed + r``; the
incumbent after each budget N (the best observed among the first N) is judged on the table
(search/regret.py). The loop is search/_driver.py's with one evaluation in flight (ask,
look up, tell), run in-process without a run folder: a lookup run takes seconds, so nothing
needs resuming, and one table load per task serves every agent and repeat.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from nasdb.checks import int_at_least, mean_std
from nasdb.errors import ArgumentError, ConfigError
from nasdb.space import SearchSpace
from search.agents import SearchAgent, Surrogate, agent_class, create_agent
from search.evaluators import Evaluation, LookupEvaluator, Trial
from search.regret import TableTruth, judge_search

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TableSearchConfig:
    """Which agents run, for how long, how often. Defaults: the issue's budgets 10 and 100, and
    search/run.py's T-NAML pre-training budget (1000 stored rows per other task, one pass)."""

    agents: tuple[str, ...] = ("random", "rl", "tnaml")
    budgets: tuple[int, ...] = (10, 100)
    repeats: int = 5
    seed: int = 0
    pretrain_budget: int = 1000
    agent_args: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        agents = tuple(self.agents)
        if not agents or len(set(agents)) != len(agents):
            raise ConfigError(f"`agents` must be distinct agent names, at least one, but got agents={agents!r}.")
        for a in agents:
            agent_class(a)  # ValueError listing the known agents
        budgets = tuple(sorted({int_at_least("budgets", b, 1, error=ConfigError) for b in self.budgets}))
        if not budgets:
            raise ConfigError("`budgets` must name at least one number of evaluations, but got budgets=().")
        object.__setattr__(self, "agents", agents)
        object.__setattr__(self, "budgets", budgets)
        int_at_least("repeats", self.repeats, 1, error=ConfigError)
        int_at_least("seed", self.seed, 0, error=ConfigError)
        int_at_least("pretrain_budget", self.pretrain_budget, 1, error=ConfigError)
        unknown = sorted(set(self.agent_args) - set(agents))
        if unknown:
            raise ConfigError(f"`agent_args` names agents that do not run: {unknown} (agents: {list(agents)})")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "agents": list(self.agents), "budgets": list(self.budgets)}


def run_agent(agent: SearchAgent, evaluator: LookupEvaluator, budget: int, seed_base: int) -> list[Evaluation]:
    """``budget`` ask / look-up / tell rounds on ``agent.task``; trial i reads seed row ``seed_base + i``."""
    evals = []
    for i in range(budget):
        arch = tuple(int(v) for v in agent.ask(1)[0])
        ev = evaluator.evaluate([Trial(agent.task, i, arch, seed_base + i, f"lookup-{agent.task}-{i}")])[0]
        agent.tell([ev.architecture], [ev.reward])
        evals.append(ev)
    return evals


def pretrain_sample(evaluator: LookupEvaluator, tasks: Sequence[str], budget: int,
                    seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """T-NAML's stored children: per task, a seeded sample of ``budget`` rows ``((N, D), (N,))``."""
    out = {}
    for i, t in enumerate(tasks):
        table = evaluator.table(t)
        keep = np.random.default_rng([seed, i]).permutation(len(table.val_accuracy))[:budget]
        keep = keep[np.isfinite(table.val_accuracy[keep])]
        out[t] = (table.architectures[keep], table.val_accuracy[keep])
    return out


def _one_run(name: str, space: SearchSpace, task: str, others: list[str], evaluator: LookupEvaluator,
             truth: TableTruth, config: TableSearchConfig, seed: int,
             surrogate: Surrogate | None = None) -> dict[str, Any]:
    args = {"task": task, "seed": seed, **config.agent_args.get(name, {})}
    if name == "tnaml":
        args.update(pretrain_tasks=others, pretrain_source="store", pretrain_budget=config.pretrain_budget)
    agent = create_agent(name, space, args, surrogate=surrogate)
    start = time.perf_counter()
    pretrained = 0
    if name == "tnaml":
        rows = pretrain_sample(evaluator, others, config.pretrain_budget, seed)
        agent.pretrain_rows(rows)
        agent.transfer()
        pretrained = sum(len(r) for _, r in rows.values())
    base = zlib.crc32(f"{task}/{name}/{seed}".encode()) % (2**31)
    evals = run_agent(agent, evaluator, max(config.budgets), base)
    return {"agent": agent.describe(), "seed": seed, "pretrain_children": pretrained,
            "failed": sum(not e.ok for e in evals), "seconds": time.perf_counter() - start,
            "judged": judge_search(truth, evals, config.budgets)}


def judge_suggestion(truth: TableTruth, suggestion: dict[str, Any]) -> dict[str, Any]:
    """``suggestion`` plus the table's verdict on it: its first candidate that the table holds.

    On a full table that is the suggestion itself (``candidate`` 0); on a slice of a benchmark
    (tests, ``--max-configurations``) the ascent may end outside it, and the best-scored
    runner-up inside it stands in (``candidate`` > 0); none inside: NaN values.
    """
    candidates = suggestion.get("candidates") or [suggestion["architecture"]]
    for i, arch in enumerate(candidates):
        if truth.has(arch):
            return {**suggestion, **truth.judge(arch), "candidate": i}
    return {**suggestion, "value": math.nan, "regret": math.nan, "percentile": math.nan, "rank": None,
            "candidate": None}


@dataclass
class BenchmarkReport:
    """Zero-shot vs search baselines on held-out tasks of a tabulated benchmark, judged on the table.

    - ``truth[task]``: ``TableTruth.summary()`` (configurations, best, median, worst true value);
    - ``zero_shot[task]``: one dict per repeat: the suggestion's fields (seed, architecture, ...)
      plus its ``value``, ``regret``, ``percentile``, ``rank`` (``TableTruth.judge``);
    - ``runs[task][agent]``: one dict per repeat: ``{"agent", "seed", "pretrain_children",
      "failed", "seconds", "judged": {N: {"value", "regret", "percentile", "rank", "architecture",
      "observed", "found_at", "evaluations"}}}`` for each budget N;
    - ``baselines[task][name]``: a task-agnostic baseline's pick (predictor/baselines.py: the
      portfolio, a ranker's argmax), judged like a zero-shot suggestion.
    """

    benchmark: str
    tasks: list[str]
    config: TableSearchConfig
    truth: dict[str, dict[str, Any]]
    zero_shot: dict[str, list[dict[str, Any]]]
    runs: dict[str, dict[str, list[dict[str, Any]]]]
    settings: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    @property
    def baseline_names(self) -> list[str]:
        return list(dict.fromkeys(b for by in self.baselines.values() for b in by))

    def rows(self) -> list[dict[str, Any]]:
        """One row per held-out task: mean and std over repeats of each method's regret and percentile."""
        out = []
        for t in self.tasks:
            row: dict[str, Any] = {"task": t, **self.truth[t]}
            zs = self.zero_shot.get(t, [])
            for key in ("value", "regret", "percentile"):
                s = mean_std([z[key] for z in zs])
                row[f"zero_shot_{key}_mean"], row[f"zero_shot_{key}_std"] = s["mean"], s["std"]
            row["zero_shot_repeats"] = len(zs)
            for b in self.baseline_names:
                judged = self.baselines.get(t, {}).get(b, {})
                for key in ("value", "regret", "percentile"):
                    row[f"{b}_{key}"] = judged.get(key, math.nan)
            for a in self.config.agents:
                for n in self.config.budgets:
                    for key in ("value", "regret", "percentile"):
                        s = mean_std([r["judged"][n][key] for r in self.runs[t][a]])
                        row[f"{a}@{n}_{key}_mean"], row[f"{a}@{n}_{key}_std"] = s["mean"], s["std"]
            out.append(row)
        return out

    def to_dict(self) -> dict[str, Any]:
        from search.result import jsonable

        return jsonable({"benchmark": self.benchmark, "tasks": self.tasks, "config": self.config.to_dict(),
                         "settings": self.settings, "truth": self.truth, "rows": self.rows(),
                         "zero_shot": self.zero_shot, "baselines": self.baselines,
                         "runs": {t: {a: [{**r, "judged": {str(n): j for n, j in r["judged"].items()}}
                                          for r in rs] for a, rs in by.items()} for t, by in self.runs.items()}})

    def to_markdown(self) -> str:
        from search._report import benchmark_markdown

        return benchmark_markdown(self)

    def write(self, out_dir: str) -> dict[str, str]:
        """Write report.md, report.json and regret.png to ``out_dir``; returns their paths."""
        import json
        import os

        from search._report import regret_plot

        os.makedirs(out_dir, exist_ok=True)
        paths = {"markdown": os.path.join(out_dir, "report.md"), "json": os.path.join(out_dir, "report.json"),
                 "png": os.path.join(out_dir, "regret.png")}
        regret_plot(self.rows(), self.config.agents, self.config.budgets, paths["png"])
        with open(paths["markdown"], "w") as f:
            f.write(self.to_markdown())
        with open(paths["json"], "w") as f:
            json.dump(self.to_dict(), f, indent=1)
        return paths


def search_benchmark(store: ExperimentStore, space: SearchSpace, held_out: Sequence[str], pool: Sequence[str],
                     config: TableSearchConfig | None = None, *, benchmark: str = "",
                     zero_shot: dict[str, list[dict[str, Any]]] | None = None,
                     on_run: Callable[[str, str, dict], None] | None = None,
                     baselines: dict[str, dict[str, dict[str, Any]]] | None = None,
                     surrogates: dict[str, Sequence[Surrogate]] | None = None) -> BenchmarkReport:
    """Run every agent ``config.repeats`` times on each held-out task and judge them, ``zero_shot`` and ``baselines``.

    T-NAML pre-trains on the stored rows of the other tasks of ``pool`` (leave-one-task-out).
    ``zero_shot[task]``: the predictor's suggestions for the task, one dict per repeat with at
    least ``architecture`` (search/ does not import predictor/: the caller computes them);
    ``baselines[task][name]``: one pick per baseline, with ``architecture`` (and ``candidates``);
    ``surrogates[task]``: the predictor agent's predictor fitted without the task, one per repeat
    (repeat r uses ``surrogates[task][r % len]``), needed when "predictor" is among the agents.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as search/_driver.py: the controllers are tiny, one thread is faster
    try:
        return _search_benchmark(store, space, held_out, pool, config or TableSearchConfig(), benchmark, zero_shot,
                                 on_run, baselines or {}, surrogates or {})
    finally:
        torch.set_num_threads(threads)


def _search_benchmark(store, space, held_out, pool, config, benchmark, zero_shot, on_run, baselines,
                      surrogates) -> BenchmarkReport:
    pool = list(dict.fromkeys(pool))
    missing = [t for t in held_out if t not in pool]
    if missing:
        raise ArgumentError(f"held-out tasks {missing} are not among the benchmark's tasks {pool}")
    lacking = [t for t in held_out if "predictor" in config.agents and not surrogates.get(t)]
    if lacking:
        raise ArgumentError(f"the predictor agent needs a predictor fitted without each held-out task; none for {lacking}")
    evaluator = LookupEvaluator(store, space, tasks=pool)  # NotTabulatedError naming an empty task
    truths = {t: TableTruth.from_table(evaluator.table(t)) for t in held_out}
    judged_zs = {t: [judge_suggestion(truths[t], z) for z in (zero_shot or {}).get(t, [])] for t in held_out}
    judged_bl = {t: {b: judge_suggestion(truths[t], p) for b, p in baselines.get(t, {}).items()} for t in held_out}
    runs: dict[str, dict[str, list]] = {}
    for task in held_out:
        others = [t for t in pool if t != task]
        if "tnaml" in config.agents and not others:
            raise ArgumentError(f"T-NAML needs other tasks to pre-train on; the benchmark pool is only {pool}")
        runs[task] = {}
        for name in config.agents:
            runs[task][name] = []
            for r in range(config.repeats):
                surrogate = surrogates[task][r % len(surrogates[task])] if name == "predictor" else None
                run = _one_run(name, space, task, others, evaluator, truths[task], config, config.seed + r, surrogate)
                runs[task][name].append(run)
                logger.info("%s on %s, seed %d: regret %s after %s evaluations (%.1fs)", name, task, run["seed"],
                            [float(f"{j['regret']:.4g}") for j in run["judged"].values()], list(run["judged"]),
                            run["seconds"])
                if on_run is not None:
                    on_run(task, name, run)
    return BenchmarkReport(benchmark, list(held_out), config, {t: truths[t].summary() for t in held_out},
                           judged_zs, runs, settings={"space_id": space.space_id, "pool": pool}, baselines=judged_bl)


__all__ = ["BenchmarkReport", "TableSearchConfig", "judge_suggestion", "pretrain_sample", "run_agent",
           "search_benchmark"]
