"""``nasdb benchmark-report``: zero-shot suggestions vs search baselines on an imported tabular benchmark.

For each held-out task of the benchmark (e.g. HPOLib's 4 datasets, ``nasdb import-benchmark
hpolib``): fit the predictor on the other tasks without meta-features (an imported task has no
samples), suggest one configuration (Algorithm 2), and read its true value from the table
(mean over seeds), its percentile and its regret; run random search, RL-NAS and T-NAML
(leave-one-task-out pre-training) and, with ``--agents predictor``, the predictor agent (each
repeat searching with that repeat's fit) through the lookup evaluator and judge their
incumbents after each budget (default 10 and 100 evaluations) the same way
(search/regret.py). Beside zero-shot, the task-agnostic baselines' picks
(predictor/baselines.py, fitted on the other tasks): the portfolio configuration (best mean
within-task rank) and the gbm pick (argmax of gbm over the held-out task's configurations),
judged the same way. Writes report.md, report.json and regret.png.
This is the one module that imports both predictor/ and search/.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

import click

from nasdb.cli.options import AGENT_NAMES, BENCHMARK_NAMES, choice_list_option, output_dir, task_list_option
from nasdb.errors import ArgumentError
from predictor.config import LOSSES, TARGETS, PredictorConfig, SuggestConfig

logger = logging.getLogger(__name__)


def benchmark_tasks(store: Any, benchmark: str) -> list[str]:
    """The store's tasks imported from ``benchmark`` (task metadata ``source == "benchmark"``), sorted."""
    out = []
    for name in store.registered_tasks():
        meta = store.task_metadata(name)
        if meta.get("source") == "benchmark" and meta.get("benchmark") == benchmark:
            out.append(name)
    return out


def _one_thread(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` on one torch thread: fits and gradient ascents of these tiny networks are faster so."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _resolve_tasks(store: Any, benchmark: str, tasks: Sequence[str] | None) -> tuple[list[str], list[str]]:
    pool = benchmark_tasks(store, benchmark)
    if not pool:
        raise ArgumentError(f"store {store.uri} holds no task of benchmark {benchmark!r}; import it first "
                            f"(nasdb import-benchmark {benchmark})")
    if len(pool) < 2:
        raise ArgumentError(f"benchmark {benchmark!r} has only {pool} in the store: a held-out task needs at least "
                            f"one other task to fit the predictor on")
    held_out = list(tasks) if tasks else pool
    unknown = [t for t in held_out if t not in pool]
    if unknown:
        raise ArgumentError(f"tasks {unknown} are not tasks of benchmark {benchmark!r} in the store ({', '.join(pool)})")
    return held_out, pool


def run_benchmark_report(store: Any, benchmark: str, *, tasks: Sequence[str] | None = None, repeats: int = 5,
                         budgets: Sequence[int] = (10, 100), agents: Sequence[str] = ("random", "rl", "tnaml"),
                         predictor: Any = None, suggest: Any = None, seed: int = 0,
                         pretrain_budget: int = 1000, out_dir: str | None = None,
                         say: Callable[[str], None] = logger.info,
                         baselines: str | Sequence[str] = ("portfolio", "gbm")) -> Any:
    """The report of ``nasdb benchmark-report`` as a ``search.table_search.BenchmarkReport``.

    ``predictor``: a PredictorConfig (meta-features are switched off: the tasks have no
    samples; repeat r uses seed ``predictor.seed + r``; ``predictor.target``: what is fitted);
    ``suggest``: a SuggestConfig;
    ``baselines``: names of predictor/baselines.py (one deterministic pick per held-out task).
    Every input is checked before the first fit.
    """
    from predictor.baselines import BASELINES, held_out_picks, parse_baselines
    from predictor.config import PredictorConfig
    from predictor.data import load_training_data
    from predictor.suggest import SuggestConfig
    from predictor.surrogate import EnsembleSurrogate
    from predictor.zero_shot import held_out_suggestions
    from search.table_search import TableSearchConfig, search_benchmark

    started = time.perf_counter()
    baselines = parse_baselines(baselines, zero_shot=True)
    held_out, pool = _resolve_tasks(store, benchmark, tasks)
    search_config = TableSearchConfig(agents=tuple(agents), budgets=tuple(budgets), repeats=repeats, seed=seed,
                                      pretrain_budget=pretrain_budget)
    cfg = (predictor or PredictorConfig()).replace(use_meta_features=False)
    suggest = suggest or SuggestConfig()
    space = store.space(store.task_metadata(pool[0])["space_id"])
    data = load_training_data(store, space=space, tasks=pool, min_tasks=2,
                              feature_dim=cfg.feature_dim, use_meta_features=False,
                              target=cfg.target)
    say(f"loaded {len(pool)} tasks of {benchmark} ({sum(t.num_experiments for t in data.tasks.values())} rows, "
        f"{time.perf_counter() - started:.0f}s); zero-shot: {len(held_out)} held-out x {repeats} fits of "
        f"{cfg.num_steps} steps")
    zero_shot, surrogates = {}, {t: [] for t in held_out}

    def keep(task: str) -> Callable | None:  # the predictor agent searches with each repeat's fit
        return (lambda r, engine, z: surrogates[task].append(EnsembleSurrogate(engine, z, suggest))) \
            if "predictor" in agents else None

    for t in held_out:
        zero_shot[t] = _one_thread(held_out_suggestions, store, t, data, cfg, repeats=repeats, suggest_config=suggest,
                                   on_fit=keep(t))
        say(f"zero-shot {t}: {[z['architecture'] for z in zero_shot[t]]} "
            f"({sum(z['fit_seconds'] for z in zero_shot[t]):.0f}s of fitting)")
    picks = {}
    for t in held_out:
        picks[t] = _one_thread(held_out_picks, data, t, baselines)
        say(f"baselines {t}: " + ", ".join(f"{b} {p['architecture']} ({p['seconds']:.1f}s)" for b, p in picks[t].items()))
    targets = {n: t.target_kind for n, t in data.tasks.items()}
    del data  # the lookup tables below hold the rows again, in their own layout
    zs_seconds = time.perf_counter() - started
    def on_run(task: str, agent: str, run: dict) -> None:
        regrets = ", ".join(f"@{n} {j['regret']:.4g}" for n, j in run["judged"].items())
        say(f"{agent} on {task}, seed {run['seed']}: regret {regrets} ({run['seconds']:.1f}s)")

    report = search_benchmark(store, space, held_out, pool, search_config, benchmark=benchmark, zero_shot=zero_shot,
                              on_run=on_run, baselines=picks, surrogates=surrogates)
    report.settings.update(store=store.uri, predictor=cfg.to_dict(), suggest=suggest.to_dict(),
                           baselines={b: BASELINES[b].describe() for b in baselines},
                           target=cfg.target, targets=targets,
                           zero_shot_seconds=zs_seconds, seconds=time.perf_counter() - started)
    if out_dir is not None:
        report.write(out_dir)
    return report


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise click.BadParameter(f"{what} is empty")
    return values


@click.command("benchmark-report", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store_root", envvar="NASDB_STORE", required=True,
              help="Store root: a local path or a filesystem URI [env NASDB_STORE].")
@click.option("--benchmark", required=True, type=click.Choice(BENCHMARK_NAMES), help="An imported benchmark.")
@task_list_option("--task", "--tasks", "tasks", help="Held-out tasks [every task of the benchmark].")
@click.option("--repeats", type=int, default=5, show_default=True, help="Predictor fits and searches per task.")
@click.option("--budgets", default="10,100", show_default=True, help="Evaluations at which searches are judged.")
@choice_list_option("--agent", "--agents", "agents", choices=AGENT_NAMES, default=("random", "rl", "tnaml"),
                    show_default=True, help="Searches to run (predictor: the predictor agent, with each repeat's fit).")
@click.option("--steps", type=int, default=None, help=f"Predictor optimizer steps per fit [{PredictorConfig().num_steps}].")
@click.option("--loss", type=click.Choice(LOSSES), default=None, help=f"Predictor loss [{PredictorConfig().loss}].")
@click.option("--target", type=click.Choice(TARGETS), default="auto", show_default=True,
              help="What the predictor fits per task (auto: the quantile rank for imported benchmarks).")
@click.option("--max-iters", "k_max_iters", type=int, default=None, help=f"Gradient-ascent steps [{SuggestConfig().k_max_iters}].")
@click.option("--pretrain-budget", type=int, default=1000, show_default=True,
              help="T-NAML: stored rows per pre-training task.")
@click.option("--baselines", default="portfolio,gbm", show_default=True,
              help="Task-agnostic baseline picks to judge beside zero-shot (portfolio, gbm, ridge), or none.")
@click.option("--seed", type=int, default=0, show_default=True, help="Base seed of fits and searches.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, allow_dash=True),
              help="Report folder [reports/benchmark-<benchmark>]; -: only print the report.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of markdown.")
def benchmark_report_command(store_root, benchmark, tasks, repeats, budgets, agents, steps, loss, target, k_max_iters,
                             pretrain_budget, baselines, seed, out_dir, as_json):
    """Zero-shot percentile and regret vs the portfolio and gbm picks, random search, RL-NAS and T-NAML on
    each held-out task of an imported benchmark (issues #9, #16); writes report.md, report.json and regret.png."""
    import json

    from nasdb.store import ExperimentStore
    from predictor.config import PredictorConfig
    from predictor.suggest import SuggestConfig

    store = ExperimentStore(store_root)
    store.require()
    predictor = PredictorConfig(**{k: v for k, v in (("num_steps", steps), ("loss", loss)) if v is not None},
                                use_meta_features=False, seed=seed, target=target)
    suggest = SuggestConfig(**({"k_max_iters": k_max_iters} if k_max_iters is not None else {}))
    out_dir = out_dir or f"reports/benchmark-{benchmark}"
    with output_dir(out_dir) as folder:  # "-": the report only goes to stdout
        report = run_benchmark_report(
            store, benchmark, tasks=list(tasks) if tasks else None, repeats=repeats,
            budgets=_ints(budgets, "--budgets"), agents=list(agents or ()), predictor=predictor, suggest=suggest,
            seed=seed, pretrain_budget=pretrain_budget, baselines=baselines, out_dir=folder,
            say=lambda line: click.echo(line, err=True))
    click.echo(json.dumps(report.to_dict(), indent=1) if as_json else report.to_markdown())
    written = "not written (--out -)" if folder != out_dir else f"written to {out_dir}"
    click.echo(f"report {written} ({report.settings['seconds']:.0f}s)", err=True)
