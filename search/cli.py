"""The ``search`` and ``compare`` click commands, shared by ``python -m search.run`` and the nasdb CLI."""

from __future__ import annotations

import json
from typing import Any

import click

from nasdb.cli.options import AGENT_NAMES, EVALUATOR_NAMES, choice_list_option, output_dir, task_list_option
from nasdb.errors import ArgumentError, NasdbError
from search.acquisition import ACQUISITIONS, AcquisitionConfig

_STORE = click.option("--store", "store_root", envvar="NASDB_STORE", required=True,
                      help="Store root: a local path or a filesystem URI [env NASDB_STORE].")


def _fail(e: NasdbError) -> click.ClickException:
    return click.ClickException(str(e))


#: ``--batch-size`` when not given (capped at the budget): benchmarks/batched_search.py measured it.
DEFAULT_BATCH_SIZE = 16

_BATCH = click.option("--batch-size", type=int, default=None,
                      help=f"Children proposed, trained (one batched-trainer call on one trainer actor) and learned "
                           f"from at once; each actor trains its own batch; 1 = one at a time "
                           f"[default: {DEFAULT_BATCH_SIZE}, at most the budget].")


_START_TIMEOUT = click.option(
    "--start-timeout", type=float, default=60.0, show_default=True,
    help="Seconds the trainer actors may wait for free CPUs/GPUs; then the run fails naming the shortfall.")


def _batch_size(batch_size: int | None, budget: int) -> int:
    return batch_size if batch_size is not None else max(1, min(DEFAULT_BATCH_SIZE, budget))


_PREDICTOR = click.option("--predictor", "predictor_id", default=None,
                          help="predictor agent: the predictor id or alias [default: the registry's default].")
_ACQUISITION = click.option("--acquisition", type=click.Choice(ACQUISITIONS), default=None,
                            help=f"predictor agent: ucb or ei [default: {AcquisitionConfig().acquisition}].")
_BETA = click.option("--beta", type=float, default=None,
                     help=f"predictor agent: UCB's weight on the spread [default: {AcquisitionConfig().beta}].")


def _surrogate(agents: list[str], store_root: str, predictor_id: str | None) -> Any:
    """The predictor agent's ``surrogate(task)``, from the factory the nasdb CLI puts in the click context
    (``ctx.obj["surrogates"]``: search/ does not import predictor/); None without the predictor agent."""
    if "predictor" not in agents:
        if predictor_id is not None:
            raise ArgumentError(f"--predictor applies to the predictor agent only, not {', '.join(agents)}")
        return None
    obj = click.get_current_context().obj
    make = obj.get("surrogates") if isinstance(obj, dict) else None
    if make is None:
        raise ArgumentError("the predictor agent needs the predictor, which the nasdb CLI wires: run "
                            "`nasdb search --agent predictor` (python -m search.run has no predictor)")
    return make(store_root, predictor_id)


def _predictor_args(agent: str, acquisition: str | None, beta: float | None) -> dict:
    if agent != "predictor" and (acquisition is not None or beta is not None):
        raise ArgumentError(f"--acquisition and --beta apply to the predictor agent only, not {agent}")
    return {"acquisition": acquisition, "beta": beta}


def _agent_args(learning_rate: float | None, pretrain_epochs: int | None, **predictor: Any) -> dict:
    args: dict = {k: v for k, v in predictor.items() if v is not None}
    if learning_rate is not None:
        args["learning_rate"] = learning_rate
    if pretrain_epochs is not None:
        args["pretrain_epochs"] = pretrain_epochs
    return args


@click.command("search", context_settings={"help_option_names": ["-h", "--help"]})
@_STORE
@click.option("--agent", required=True, type=click.Choice(AGENT_NAMES),
              help="Search agent: predictor (predictor-guided), rl (RL-NAS), tnaml (T-NAML) or random.")
@click.option("--task", required=True, help="Target task (built-in or registered in the store).")
@click.option("--budget", type=int, required=True, help="Child models to evaluate on the target task.")
@task_list_option("--pretrain-task", "--pretrain-tasks", "pretrain_tasks",
                  help="T-NAML: pre-training tasks (default: every other task with offline rows).")
@click.option("--pretrain-source", default="store", show_default=True,
              help="T-NAML: pre-train on stored rows (store) or on live trials (live).")
@click.option("--pretrain-budget", type=int, default=None,
              help="T-NAML: children per pre-training task (stored rows used, or live trials) [default: 1000].")
@click.option("--pretrain-epochs", type=int, default=None,
              help="T-NAML: passes over the stored pre-training children [default: 1].")
@click.option("--learning-rate", type=float, default=None,
              help="rl/tnaml: controller learning rate [default: 1e-4, T-NAML Sec. 4].")
@click.option("--parallel", type=int, default=1, show_default=True, help="Evaluations in flight (trainer actors).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the agent (and so the run id).")
@click.option("--epochs", type=int, default=None, help="Training epochs per child (default: the recipe's).")
@click.option("--evaluator", type=click.Choice(EVALUATOR_NAMES), default="train", show_default=True,
              help="train: real child training on Ray actors; lookup: a tabulated benchmark in the store.")
@click.option("--run-id", default=None, help="Run id (default: derived from the settings, so a rerun resumes).")
@click.option("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a new local cluster).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--verbose/--quiet", default=True, show_default=True, help="Print a line per child model.")
@click.option("--early-stop", is_flag=True,
              help="Stop children whose learning curve predicts a final accuracy below the best so far "
                   "(Baker et al. Sec. 3); the agent is rewarded with the prediction. Train evaluator only.")
@click.option("--early-stop-config", "early_stop_json", default=None,
              help='Early-stop settings as JSON (implies --early-stop), e.g. \'{"burn_in": 50}\'.')
@_BATCH
@_START_TIMEOUT
@_PREDICTOR
@_ACQUISITION
@_BETA
def search_command(store_root, agent, task, budget, pretrain_tasks, pretrain_source, pretrain_budget, pretrain_epochs,
                   learning_rate, parallel, seed, epochs, evaluator, run_id, address, as_json, verbose, early_stop,
                   early_stop_json, batch_size, start_timeout, predictor_id, acquisition, beta):
    """Search BUDGET child models of TASK with one agent; rows go to the store tagged agent and run id.

    Rerunning the same command resumes an interrupted search from its stored children and
    controller checkpoint (<store>/search/<run_id>/).
    """
    from cluster.populate.cli import early_stop_from_options
    from search.run import run_search

    try:
        result = run_search(store_root, agent, task, budget, pretrain_tasks=pretrain_tasks,
                            pretrain_source=pretrain_source, pretrain_budget=pretrain_budget, parallel=parallel,
                            seed=seed, epochs=epochs, evaluator=evaluator, run_id=run_id, verbose=verbose,
                            address=address, agent_args=_agent_args(learning_rate, pretrain_epochs,
                                                                    **_predictor_args(agent, acquisition, beta)),
                            early_stop=early_stop_from_options(early_stop, early_stop_json),
                            batch_size=_batch_size(batch_size, budget), start_timeout=start_timeout,
                            surrogate=_surrogate([agent], store_root, predictor_id))
    except NasdbError as e:
        raise _fail(e) from None
    click.echo(result.to_json() if as_json else result.summary())


@click.command("compare", context_settings={"help_option_names": ["-h", "--help"]})
@_STORE
@task_list_option("--task", "--tasks", "tasks", required=True, help="Held-out test tasks.")
@click.option("--budget", type=int, default=100, show_default=True, help="Child models per search.")
@choice_list_option("--agent", "--agents", "agents", choices=AGENT_NAMES, default=("rl", "tnaml", "random"),
                    show_default=True, help="Agents to run.")
@click.option("--evaluator", type=click.Choice(EVALUATOR_NAMES), default="train", show_default=True,
              help="train or lookup.")
@task_list_option("--pretrain-task", "--pretrain-tasks", "pretrain_tasks",
                  help="T-NAML's fixed pre-training tasks (default: leave-one-task-out over offline rows).")
@click.option("--pretrain-budget", type=int, default=None, help="T-NAML: stored children per pre-training task.")
@click.option("--pretrain-epochs", type=int, default=None, help="T-NAML: passes over the stored children [default: 1].")
@click.option("--learning-rate", type=float, default=None, help="RL-NAS and T-NAML controller learning rate.")
@click.option("--first-n", type=int, default=10, show_default=True, help="The 'first N children' of Tables 3-4.")
@click.option("--parallel", type=int, default=1, show_default=True, help="Evaluations in flight per search.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--epochs", type=int, default=None, help="Training epochs per child (default: the recipe's).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, allow_dash=True),
              help="Write report.md, CSVs, comparison.json and curves.png here (-: only print the report).")
@click.option("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a new local cluster).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON instead of markdown.")
@click.option("--progress/--quiet", default=True, show_default=True,
              help="Print each search's start and a progress line every ~10 s (stderr).")
@click.option("--verbose", is_flag=True, help="Print a line per child model instead.")
@_BATCH
@_START_TIMEOUT
@_PREDICTOR
def compare_command(store_root, tasks, budget, agents, evaluator, pretrain_tasks, pretrain_budget, pretrain_epochs,
                    learning_rate, first_n, parallel, seed, epochs, out_dir, address, as_json, progress, verbose,
                    batch_size, start_timeout, predictor_id):
    """Run RL-NAS, T-NAML, random search (and the predictor agent) on each test task; print Tables 3-4 and the cost."""
    from search.compare import compare

    try:
        with output_dir(out_dir) as out_dir:  # "-": the report only goes to stdout
            c = compare(store_root, tasks, budget, agents=list(agents),
                    evaluator=evaluator, pretrain_tasks=pretrain_tasks, pretrain_budget=pretrain_budget,
                    first_n=first_n, seed=seed, parallel=parallel, epochs=epochs, verbose=verbose, address=address,
                    progress=progress, start_timeout=start_timeout,
                    surrogate=_surrogate(list(agents), store_root, predictor_id),
                    out_dir=out_dir, batch_size=_batch_size(batch_size, budget), agent_args={"rl": _agent_args(learning_rate, None),
                                                 "tnaml": _agent_args(learning_rate, pretrain_epochs)})
    except NasdbError as e:
        raise _fail(e) from None
    click.echo(json.dumps(c.to_dict(), default=str) if as_json else c.to_markdown())


def search_main(argv: list[str] | None = None) -> None:
    """``python -m search.run``: the ``nasdb search`` command as a script."""
    search_command.main(args=argv, prog_name="python -m search.run")
