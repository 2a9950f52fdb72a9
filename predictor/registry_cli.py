"""``nasdb predictors list|show|promote|unalias|delete``: the predictor registry (predictor/registry.py).

Plugged into ``nasdb`` with one line in ``nasdb/cli/_main.py``'s ``LAZY_COMMANDS``. The store comes
from ``nasdb --store ROOT`` or $NASDB_STORE, as for the store's own commands.
"""

from __future__ import annotations

from typing import Any

import click

from nasdb.cli import echo_json, echo_pairs, echo_table

_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _store(ctx: click.Context) -> Any:
    from nasdb.store import ExperimentStore

    store = ExperimentStore((ctx.find_root().obj or {}).get("store_root"))
    store.require()
    return store


def _answer(as_json: bool, record: dict[str, Any], text: str) -> None:
    """A command's result: the record as JSON, or one line of text."""
    if as_json:
        echo_json(record)
    else:
        click.echo(text)


def _headline(metrics: dict[str, Any] | None) -> Any:
    """The one figure a list shows: held-out (LOTO) Spearman when evaluated, else the training Spearman."""
    metrics = metrics or {}
    loto = metrics.get("loto")
    if isinstance(loto, dict) and loto.get("mean_spearman") is not None:
        return loto["mean_spearman"]
    return metrics.get("mean_train_spearman")


@click.group("predictors")
def predictors_group() -> None:
    """Fitted predictors and their aliases (champion, staging, ...): list, show, promote, unalias, delete."""


@predictors_group.command("list")
@_JSON
@click.pass_context
def list_cmd(ctx: click.Context, as_json: bool) -> None:
    """Every predictor of the store, oldest first, with its aliases."""
    from predictor.registry import summaries

    rows = summaries(_store(ctx))
    if as_json:
        echo_json(rows)
        return
    echo_table([{"predictor_id": r["predictor_id"], "created_at": (r.get("created_at") or "")[:19],
                 "loss": r.get("loss"), "meta": r.get("use_meta_features"), "space_id": r.get("space_id"),
                 "tasks": len(r.get("tasks") or []), "spearman": _headline(r.get("metrics")),
                 "aliases": ",".join(r["aliases"]) or None} for r in rows])


@predictors_group.command("show")
@click.argument("ref", metavar="ID|ALIAS|latest")
@_JSON
@click.pass_context
def show_cmd(ctx: click.Context, ref: str, as_json: bool) -> None:
    """One predictor: tasks, loss, metrics, data snapshot, parent, aliases."""
    from predictor.registry import details

    d = details(_store(ctx), ref)
    if as_json:
        echo_json(d)
        return
    metrics = d.get("metrics") or {}
    snapshot = d.get("data_snapshot") or {}
    echo_pairs({
        "predictor_id": d["predictor_id"], "selected as": d["selected_as"],
        "aliases": ", ".join(d["aliases"]) or "-", "created_at": d.get("created_at") or "-",
        "predictor": (d.get("predictor") or {}).get("name", "-"), "space_id": d["space"]["id"],
        "tasks": f"{len(d.get('tasks') or [])}: {', '.join(d.get('tasks') or [])}",
        "excluded_tasks": ", ".join(d.get("excluded_tasks") or []) or "-",
        "warm_start_parent": d.get("warm_start_parent") or "-",
        "rows trained on": sum(int(s.get("ok", 0)) for s in snapshot.values() if isinstance(s, dict)),
        **{f"metrics.{k}": v for k, v in metrics.items() if not isinstance(v, (dict, list))},
    })


@predictors_group.command("promote")
@click.argument("predictor_id", metavar="ID")
@click.option("--alias", default="champion", show_default=True, help="The alias to point at ID.")
@_JSON
@click.pass_context
def promote_cmd(ctx: click.Context, predictor_id: str, alias: str, as_json: bool) -> None:
    """Point an alias at a predictor; servers following the alias swap to it in place."""
    from predictor.registry import promote

    record = promote(_store(ctx), predictor_id, alias)
    was = f" (was {record['previous']})" if record["previous"] else ""
    _answer(as_json, record, f"alias {alias} -> {predictor_id}{was}")


@predictors_group.command("unalias")
@click.argument("alias")
@_JSON
@click.pass_context
def unalias_cmd(ctx: click.Context, alias: str, as_json: bool) -> None:
    """Remove an alias (the predictor stays; servers following the alias keep their predictor)."""
    from predictor.registry import unalias

    record = unalias(_store(ctx), alias)
    _answer(as_json, record, f"removed alias {alias} (was {record['predictor_id']})")


@predictors_group.command("delete")
@click.argument("predictor_id", metavar="ID")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_JSON
@click.pass_context
def delete_cmd(ctx: click.Context, predictor_id: str, yes: bool, as_json: bool) -> None:
    """Delete a predictor's checkpoint (refused while an alias points at it)."""
    from predictor.registry import check_deletable, delete_predictor

    store = _store(ctx)
    check_deletable(store, predictor_id)
    if not yes:
        click.confirm(f"delete predictor {predictor_id}?", abort=True)
    delete_predictor(store, predictor_id)
    _answer(as_json, {"deleted": predictor_id}, f"deleted predictor {predictor_id}")
