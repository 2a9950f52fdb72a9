"""The ``populate`` click command, shared by ``python -m cluster.populate`` and ``nasdb populate``."""

from __future__ import annotations

import json

import click

from cluster.populate._active import STRATEGIES, check_strategy
from nasdb.cli.options import task_list_option
from nasdb.errors import ArgumentError, NasdbError


def recipe_from_options(epochs: int | None, recipe_json: str | None):
    from cluster.child import TrainRecipe

    fields = TrainRecipe().to_dict()
    if recipe_json:
        fields.update(_json_object("--recipe", recipe_json))  # TrainRecipe.from_dict names any unknown field
    if epochs is not None:
        if epochs <= 0:
            raise ArgumentError(f"--epochs must be > 0, got {epochs}")
        fields["epochs"] = epochs
    return TrainRecipe.from_dict(fields)


def early_stop_from_options(enabled: bool, config_json: str | None):
    """``--early-stop`` / ``--early-stop-config JSON`` as what ``resolve_early_stop`` takes: None
    (off), True (the paper's defaults) or a dict of EarlyStopConfig settings (implies on).
    Shared by ``populate`` and ``search`` (search/cli.py)."""
    if not config_json:
        return True if enabled else None
    return _json_object("--early-stop-config", config_json)


def _json_object(option: str, text: str) -> dict:
    """The JSON object given to ``option``; ValueError naming the option otherwise."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ArgumentError(f"{option} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ArgumentError(f"{option} must be a JSON object, got {text!r}")
    return value


@click.command("populate", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--store", "store_root", envvar="NASDB_STORE", default=None,
              help="Store root: a local path or a filesystem URI shared by all nodes [env NASDB_STORE; "
                   "under `nasdb --store ROOT populate` the group's].")
@click.option("--suite", default="digits", show_default=True, help="Built-in task suite to populate (unless --tasks).")
@task_list_option("--task", "--tasks", "tasks", help="Task names (built-in or registered); default: the suite.")
@click.option("--per-task", type=int, required=True, help="Architectures sampled and trained per task.")
@click.option("--epochs", type=int, default=None, help="Training epochs per child model (default: the recipe's).")
@click.option("--recipe", "recipe_json", default=None, help='Recipe fields as JSON, e.g. \'{"learning_rate": 1e-3}\'.')
@click.option("--workers", type=int, default=None, help="Trainer actors (default: fill the cluster).")
@click.option("--gpus-per-worker", type=float, default=None,
              help="GPU share per actor, e.g. 0.25 (default: spread the cluster's GPUs; 0 = CPU only).")
@click.option("--cpus-per-worker", type=float, default=1.0, show_default=True, help="CPUs (torch threads) per actor.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the architecture sample and training.")
@click.option("--batch-size-models", type=int, default=None,
              help="Child models one actor trains at once (a chunk) [default: 16].")
@click.option("--max-attempts", type=int, default=3, show_default=True,
              help="Tries per item before it is recorded as failed.")
@click.option("--chunk-timeout", type=float, default=None,
              help="Seconds before a chunk's actor is presumed hung and replaced.")
@click.option("--address", default=None, help="Ray address (default: RAY_ADDRESS, else a new local cluster).")
@click.option("--retry-failed", is_flag=True, help="Train again planned experiments whose rows are all failed.")
@click.option("--run-id", default=None, help="Run id stored with every row (default: generated).")
@click.option("--summary-json", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write the summary as JSON to this file.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress while it runs.")
@click.option("--early-stop", is_flag=True,
              help="Stop children whose learning curve predicts, with probability >= Delta, a final accuracy below "
                   "the best so far (Baker et al. Sec. 3); burn-in: 100 complete curves.")
@click.option("--early-stop-config", "early_stop_json", default=None,
              help='Early-stop settings as JSON (implies --early-stop), e.g. \'{"burn_in": 50, "confidence": 0.99, '
                   '"delta": 0.0}\'; see cluster.early_stop.EarlyStopConfig.')
@click.option("--strategy", type=click.Choice(STRATEGIES), default="random", show_default=True,
              help="random: each task's random stream; uncertainty: what the ensemble disagrees on most, refitted "
                   "between rounds (rows record the strategy as their agent).")
@click.option("--rounds", type=int, default=1, show_default=True,
              help="Rounds the per-task budget is split into (uncertainty: a refit before each).")
@click.pass_context
def populate_command(ctx, store_root, suite, tasks, per_task, epochs, recipe_json, workers, gpus_per_worker,
                     cpus_per_worker, seed, batch_size_models, max_attempts, chunk_timeout, address, retry_failed,
                     run_id, summary_json, progress, early_stop, early_stop_json, strategy, rounds):
    """Train PER_TASK architectures per task on a pool of Ray actors; rows go to the store.

    Rerunning the same command resumes: experiments already in the store are skipped.
    """
    from cluster.populate import DEFAULT_BATCH_SIZE_MODELS, PopulateConfig, populate_by_strategy

    parent = ctx.find_root().obj
    if store_root is None and isinstance(parent, dict):  # plugged into `nasdb [--store ROOT] populate`
        store_root = parent.get("store_root")
    if not store_root:
        raise click.ClickException("no store given: pass --store ROOT or set NASDB_STORE")
    try:
        check_strategy(strategy, rounds)
        factory = parent.get("proposers") if isinstance(parent, dict) and strategy == "uncertainty" else None
        config = PopulateConfig(
            per_task=per_task, tasks=tasks, suite=suite, recipe=recipe_from_options(epochs, recipe_json),
            workers=workers, seed=seed, run_id=run_id,
            batch_size_models=batch_size_models if batch_size_models is not None else DEFAULT_BATCH_SIZE_MODELS,
            gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker, max_attempts=max_attempts,
            chunk_timeout_s=chunk_timeout, retry_failed=retry_failed,
            early_stop=early_stop_from_options(early_stop, early_stop_json))
        summaries = populate_by_strategy(store_root, config, strategy=strategy, rounds=rounds,
                                         proposer_factory=factory, progress=progress, address=address,
                                         create_store=False)
    except NasdbError as e:
        raise click.ClickException(str(e)) from None
    for r, summary in enumerate(summaries, start=1):
        click.echo((f"round {r}/{len(summaries)}\n" if len(summaries) > 1 else "") + summary.format_table())
    summary = summaries[-1]
    if summary_json:
        with open(summary_json, "w") as f:
            json.dump([s.to_dict() for s in summaries] if len(summaries) > 1 else summary.to_dict(), f, indent=2,
                      default=str)
    if not all(s.complete for s in summaries):
        ctx.exit(3)  # aborted, planned rows missing: rerunning the same command resumes
