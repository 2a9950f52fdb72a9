"""The ``nasdb import-benchmark`` command: a tabular benchmark into the store (nasdb.benchmarks)."""

from __future__ import annotations

from typing import Any

import click

from nasdb.benchmarks import BENCHMARKS, import_benchmark
from nasdb.cli._format import echo_json, echo_table
from nasdb.cli.options import task_list_option


def _store(ctx: click.Context, store_root: str | None) -> Any:
    from nasdb.store import ExperimentStore

    if store_root is None:  # `nasdb --store ROOT import-benchmark`
        store_root = (ctx.find_root().obj or {}).get("store_root")
    return ExperimentStore(store_root)


@click.command("import-benchmark", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("benchmark", type=click.Choice(sorted(BENCHMARKS)))
@task_list_option("--task", "--tasks", "tasks", metavar="D[,D...]",
                  help="Datasets (or <benchmark>.<dataset> task names); default: every dataset.")
@click.option("--max-configurations", type=click.IntRange(min=1), default=None, metavar="N",
              help="Import only N configurations per dataset (a fixed spread subset; larger N contains smaller).")
@click.option("--store", "store_root", envvar="NASDB_STORE", default=None, metavar="ROOT",
              help="Store root [env NASDB_STORE; under `nasdb --store ROOT` the group's].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_context
def import_benchmark_command(ctx: click.Context, benchmark: str, tasks: tuple[str, ...] | None,
                             max_configurations: int | None,
                             store_root: str | None, as_json: bool) -> None:
    """Import a tabular benchmark: its search space, one task per dataset, one row per configuration and seed.

    Each row's val_accuracy is the benchmark's metric mapped so that higher is better (hpolib:
    -val_loss; hpobench: val_acc; nasbench201: val_acc/100). Idempotent: rows already in the
    store are skipped, so rerunning completes an interrupted import and otherwise adds nothing.
    """
    store = _store(ctx, store_root)

    def show(task: dict[str, Any]) -> None:
        if not as_json:
            click.echo(f"{task['task']}: {task['rows_added']} rows added, {task['rows_present']} already present "
                       f"({task['configurations']} configurations, {task['seconds']:.1f} s)")

    result = import_benchmark(store, benchmark, tasks=tasks, max_configurations=max_configurations, progress=show)
    if as_json:
        echo_json(result)
        return
    click.echo()
    echo_table(result["tasks"], ["task", "configurations", "rows", "rows_added", "rows_present", "seconds"])
    if result["rows_added"]:
        click.echo(f"imported {result['rows_added']} rows of {benchmark} into {len(result['tasks'])} task(s) "
                   f"in {result['seconds']:.1f} s (space {result['space_id']})")
    else:
        click.echo(f"nothing to add: all {result['rows_present']} rows of {benchmark} are already in the store "
                   f"({result['seconds']:.1f} s)")
