"""The store's admin commands: init, tasks, stats, top, show, query, export, compact, verify.

Each is one small click command whose help is its docstring; ``--json`` switches any command
that prints data to JSON. Every command but ``init`` refuses a store root that does not exist.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from nasdb.cli._format import cell, echo_json, echo_pairs, echo_table, human_bytes
from nasdb.cli.options import task_list_option

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def open_store(ctx: click.Context, *, must_exist: bool = True) -> Any:
    from nasdb.store import ExperimentStore

    store = ExperimentStore(ctx.find_root().obj["store_root"])
    if must_exist:
        store.require()
    return store


@click.command("init")
@json_option
@click.pass_context
def init_cmd(ctx: click.Context, as_json: bool) -> None:
    """Create the store layout at ROOT (idempotent)."""
    store = open_store(ctx, must_exist=False)
    existed = store.exists()
    store.init()
    if as_json:
        echo_json({"root": store.uri, "created": not existed})
    else:
        click.echo(f"{'store already exists' if existed else 'initialized store'} at {store.uri}")


@click.group("tasks")
def tasks_group() -> None:
    """Built-in and registered tasks."""


@tasks_group.command("list")
@json_option
@click.pass_context
def tasks_list(ctx: click.Context, as_json: bool) -> None:
    """Every task: built in, registered and imported benchmarks, with sizes, classes and experiment counts."""
    store = open_store(ctx)
    counts = {r["task"]: r["rows"] for r in store.task_stats().to_pylist()}
    rows = []
    for name in store.task_names():
        try:
            meta = store.task_metadata(name, load=False)
        except KeyError:  # experiments of a task that is neither built in nor registered
            meta = {"name": name, "source": None, "num_classes": None, "sizes": {}, "registered": False}
        sizes = meta.get("sizes") or {}
        if meta.get("source") == "benchmark":  # imported tabular benchmark (nasdb.benchmarks): no samples
            kind, source = "benchmark", meta.get("benchmark")
        else:
            kind = "registered" if meta["registered"] else ("built-in" if meta["source"] is not None else "unknown")
            source = meta["source"]
        rows.append({"task": name, "kind": kind, "source": source,
                     "classes": meta.get("num_classes"), "train": sizes.get("train"), "val": sizes.get("val"),
                     "test": sizes.get("test"), "experiments": counts.get(name, 0)})
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows)


@tasks_group.command("show")
@click.argument("name")
@json_option
@click.pass_context
def tasks_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """One task's metadata and its experiment statistics."""
    store = open_store(ctx)
    stats = next((r for r in store.task_stats().to_pylist() if r["task"] == name), None)
    try:
        meta = store.task_metadata(name)
    except KeyError:
        if stats is None:
            raise
        meta = {"name": name, "source": None, "registered": False}  # experiments of an unknown task
    if not meta.get("registered"):  # a built-in table's provenance, licence and noise ceiling too
        from nasdb.tasks import builtin_task_info

        recorded = {("table_rows" if k == "rows" else k): v for k, v in (builtin_task_info(name) or {}).items()
                    if k != "sizes"}  # "rows" below counts experiments
        meta = {**recorded, **meta}
    info = {**meta, "experiments": stats or {"rows": 0}}
    if as_json:
        echo_json(info)
        return
    flat = {k: v for k, v in info.items() if k not in ("sizes", "experiments")}
    flat.update({f"{k} samples": v for k, v in (meta.get("sizes") or {}).items()})
    flat.update({k: v for k, v in (stats or {"rows": 0}).items() if k != "task"})
    echo_pairs(flat)


@tasks_group.command("add")
@click.argument("name")
@click.option("--from", "path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A .csv or .parquet file: a label column and 1-2,000 numeric, boolean or text feature "
                   "columns (missing values allowed; see README 'Tasks from any table').")
@click.option("--label", required=True, help="Name of the label column.")
@click.option("--description", default="", help="Free text stored with the task.")
@json_option
@click.pass_context
def tasks_add(ctx: click.Context, name: str, path: str, label: str, description: str, as_json: bool) -> None:
    """Register a user task from a file (refuses a built-in name, or a name registered with other data;
    the same data again is a no-op)."""
    from nasdb import tasks

    store = open_store(ctx)
    task = tasks.task_from_file(name, path, label, description=description)
    created = store.save_task(task)
    meta = store.task_metadata(name)
    if as_json:
        echo_json({**meta, "created": created})
    elif not created:
        click.echo(f"task {name!r} is already registered with the same data (fingerprint {meta['fingerprint']}): "
                   "nothing to do")
    else:
        sizes = meta.get("sizes", {})
        click.echo(f"registered task {name!r}: {meta['num_classes']} classes, "
                   + ", ".join(f"{k} {v}" for k, v in sizes.items()))


@click.command("stats")
@json_option
@click.pass_context
def stats_cmd(ctx: click.Context, as_json: bool) -> None:
    """Rows, tasks, per-task counts, best/median accuracy, files and bytes."""
    store = open_store(ctx)
    per_task = store.task_stats().to_pylist()
    storage = store.storage()
    for r in per_task:
        r.update(storage.get(r["task"], {"files": 0, "bytes": 0}))
    summary = {"root": store.uri, "rows": sum(r["rows"] for r in per_task), "tasks": len(per_task),
               "files": sum(s["files"] for s in storage.values()), "bytes": sum(s["bytes"] for s in storage.values())}
    if as_json:
        echo_json({**summary, "per_task": per_task})
        return
    echo_pairs({**summary, "bytes": human_bytes(summary["bytes"])})
    click.echo()
    echo_table(per_task, ["task", "rows", "ok", "failed", "best_val_accuracy", "median_val_accuracy",
                          "best_test_accuracy", "files", "bytes"])


@click.command("top")
@click.option("--task", required=True, help="Task name.")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="How many.")
@click.option("--metric", default="val_accuracy", show_default=True,
              type=click.Choice(["val_accuracy", "test_accuracy"]), help="Ranking metric.")
@json_option
@click.pass_context
def top_cmd(ctx: click.Context, task: str, k: int, metric: str, as_json: bool) -> None:
    """The k best ok experiments of a task."""
    store = open_store(ctx)
    if task not in store.task_names():
        store.task(task)  # raises UnknownTaskError listing the known tasks
    rows = store.top_k(task, k, metric).to_pylist()
    if as_json:
        echo_json(rows)
        return
    table = [{"rank": i + 1, "experiment_id": r["experiment_id"], "val_accuracy": r["val_accuracy"],
              "test_accuracy": r["test_accuracy"], "epochs": r["epochs"], "params": r["num_params"],
              "agent": r["agent"], "architecture": r["architecture"]} for i, r in enumerate(rows)]
    echo_table(table)


@click.command("show")
@click.argument("experiment_id")
@json_option
@click.pass_context
def show_cmd(ctx: click.Context, experiment_id: str, as_json: bool) -> None:
    """Every field of one experiment (the architecture described by its search space, if stored)."""
    store = open_store(ctx)
    row = store.experiment(experiment_id)
    row["recipe"] = json.loads(row["recipe"])
    try:
        row["architecture_choices"] = store.space(row["space_id"]).describe(row["architecture"])
    except (KeyError, ValueError):
        pass
    if as_json:
        echo_json(row)
        return
    pairs = {k: (json.dumps(v, sort_keys=True) if isinstance(v, dict) else v) for k, v in row.items()
             if k != "val_curve"}
    pairs["val_curve"] = "[" + ", ".join(cell(v) for v in row["val_curve"] or []) + "]"
    echo_pairs(pairs)


@click.command("query")
@click.argument("sql")
@click.option("--timeout", default=60.0, show_default=True, type=click.FloatRange(min=0, min_open=True, max=1e9),
              help="Stop the query after this many seconds (Ctrl-C stops it too).")
@json_option
@click.pass_context
def query_cmd(ctx: click.Context, sql: str, timeout: float, as_json: bool) -> None:
    """Run one read-only SQL statement over the views `experiments` and `experiments_raw`."""
    store = open_store(ctx)
    rows = store.query(sql, timeout=timeout).to_pylist()
    if as_json:
        echo_json(rows)
    else:
        echo_table(rows)


@click.command("export")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv", "optuna", "syne-tune"]), default="parquet",
              show_default=True, help="A file, Optuna studies (one per task) in --storage, or a Syne Tune blackbox "
                                      "repository folder.")
@click.option("--out", default=None, type=click.Path(writable=True, allow_dash=True),
              help="Output file (parquet, csv; - writes to stdout, the summary then to stderr) or folder (syne-tune).")
@click.option("--storage", default=None, metavar="URL",
              help="Optuna storage URL (--format optuna), e.g. sqlite:///nasdb.db for optuna-dashboard.")
@click.option("--overwrite", is_flag=True, help="Replace Optuna studies of the same names, or a non-empty --out folder.")
@task_list_option("--task", "--tasks", "tasks", help="Only these tasks (a file export: one).")
@json_option
@click.pass_context
def export_cmd(ctx: click.Context, fmt: str, out: str | None, storage: str | None, overwrite: bool,
               tasks: tuple[str, ...] | None, as_json: bool) -> None:
    """Write the deduplicated experiments (all statuses) to one Parquet or CSV file, or the ok rows to
    Optuna studies, one per task, one completed trial per experiment (--format optuna --storage URL),
    or to a Syne Tune blackbox repository, an objective per epoch of each curve (--format syne-tune --out DIR)."""
    from nasdb.cli.options import copy_to_stdout, is_stdout, output_dir

    store = open_store(ctx)
    if fmt == "optuna":
        if storage is None or out is not None:
            raise click.UsageError("--format optuna writes to --storage URL, not --out")
        from nasdb.export_optuna import export_optuna

        result = export_optuna(store, storage, tasks=tasks, overwrite=overwrite)
        if as_json:
            echo_json(result)
        else:
            click.echo(f"exported {result['trials']} trials to {len(result['studies'])} Optuna studies in {storage}")
        return
    if fmt == "syne-tune":
        if out is None or is_stdout(out) or storage is not None:
            raise click.UsageError("--format syne-tune writes a folder: --out DIR")
        from nasdb.export_syne_tune import export_syne_tune

        result = export_syne_tune(store, out, tasks=tasks, overwrite=overwrite)
        if as_json:
            echo_json(result)
        else:
            click.echo(f"exported {result['experiments']} experiments ({result['rows']} epoch rows) of "
                       f"{len(result['tasks'])} tasks to the Syne Tune blackbox repository {result['out']}")
        return
    if out is None or storage is not None:
        raise click.UsageError(f"--format {fmt} writes to --out FILE (or - for stdout)")
    if os.path.isdir(out):
        raise click.UsageError(f"--format {fmt} writes one file, but --out {out} is a folder")
    if tasks and len(tasks) > 1:
        raise click.UsageError(f"a {fmt} export takes at most one --task, got {list(tasks)}")
    task = tasks[0] if tasks else None
    if task is not None and task not in store.task_names():
        store.task(task)
    with output_dir(out if is_stdout(out) else None) as tmp:
        rows = store.export(f"{tmp}/export.{fmt}" if tmp else out, format=fmt, task=task)
        if tmp:
            copy_to_stdout(f"{tmp}/export.{fmt}")
    summary = {"rows": rows, "out": out, "format": fmt}
    if as_json:
        click.echo(json.dumps(summary), err=is_stdout(out))
    else:
        click.echo(f"exported {rows} rows to {'stdout' if is_stdout(out) else out} ({fmt})", err=is_stdout(out))


@click.command("compact")
@click.option("--task", default=None, help="Only this task's partition.")
@json_option
@click.pass_context
def compact_cmd(ctx: click.Context, task: str | None, as_json: bool) -> None:
    """Merge each partition's small files into one (safe while others read and write)."""
    result = open_store(ctx).compact(task)
    if as_json:
        echo_json(result)
        return
    click.echo(f"merged {result['merged_files']} files into {result['files_written']} "
               f"({result['rows']} rows, {result['unique_rows']} after removing duplicates)")
    if result["partitions"]:
        echo_table([{**p, "files": ", ".join(p["files"])} for p in result["partitions"]],
                   ["task", "merged_files", "rows", "unique_rows", "files"])


@click.command("verify")
@click.option("--deep", is_flag=True, help="Also re-derive every row's experiment_id from its fields.")
@json_option
@click.pass_context
def verify_cmd(ctx: click.Context, deep: bool, as_json: bool) -> None:
    """Move experiments files readers would skip (bad Parquet, pages, schema or partition) to quarantine/."""
    from nasdb.fingerprints import check_fingerprints

    store = open_store(ctx)
    result = store.verify(deep=deep)
    result["fingerprints"] = check_fingerprints(store, _current_bank_fingerprint)  # rows vs. their task's data now
    if as_json:
        echo_json(result)
        _exit_if_stale(ctx, result["fingerprints"])
        return
    click.echo(f"checked {result['checked']} files: {result['ok']} ok, {len(result['quarantined'])} quarantined, "
               f"{len(result['stale_temp'])} stale temp files")
    for rel in result["quarantined"]:
        click.echo(f"quarantined {rel}: {result['problems'][rel]}")
    for rel in result["stale_temp"]:
        click.echo(f"quarantined {rel}: stale temp file")
    _echo_fingerprints(result["fingerprints"])
    _exit_if_stale(ctx, result["fingerprints"])


def _current_bank_fingerprint() -> str:
    """The embedding bank trainers use now (cluster.child.default_bank): fitted, about 10 s of CPU."""
    from cluster.child import default_bank

    return default_bank().fingerprint()


def _echo_fingerprints(prints: dict[str, Any]) -> None:
    """verify's fingerprint lines: counts, then each task with stale rows (what they and the task hold)."""
    click.echo(f"fingerprints of {prints['rows']} rows: {prints['verified']} verified, {prints['unverified']} "
               f"unverified (written before schema v3), {prints['stale']} stale (trained on other data)")
    for t in prints["tasks"]:
        if t["stale"]:
            was = ", ".join([f"task data {fp}" for fp in t["stale_fingerprints"]["task"]]
                            + [f"embedding bank {fp}" for fp in t["stale_fingerprints"]["bank"]])
            now = t["current"] if t["error"] is None else f"unknown ({t['error']})"
            click.echo(f"stale {t['task']}: {t['stale']} rows trained on {was}; now: task data {now}"
                       + (f", embedding bank {prints['bank']}" if prints["bank"] else ""))


def _exit_if_stale(ctx: click.Context, prints: dict[str, Any]) -> None:
    """Exit 1 when rows were trained on other data than their task holds (unverified rows are fine)."""
    if prints["stale"]:
        ctx.exit(1)


COMMANDS = (init_cmd, tasks_group, stats_cmd, top_cmd, show_cmd, query_cmd, export_cmd, compact_cmd, verify_cmd)
