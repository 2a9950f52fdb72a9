"""``nasdb runs list|show RUN``: every populate, import, search, zero-shot and fit run of a store.

Nothing new is recorded: a run is assembled from what the jobs already write.

- experiment rows, grouped by ``run_id``: rows, failures, tasks, agent, first and last row
  time (populate ``populate-<time>-<hex>``, import ``import-<benchmark>-<version>``, a search's
  children ``<agent>-<task>-<hash>`` and its pre-training ``<run>.pretrain``, a trained
  suggestion ``zero-shot-<predictor>``);
- ``<store>/search/<run_id>/run.json`` (the plan: agent, evaluator, budget) and
  ``result.json`` (written when the budget is spent) of a search, or of each search of a
  ``nasdb compare``;
- ``<store>/predictors/<id>/metadata.json`` of a fit: its tasks, snapshot, metrics and time.

The command line shown is rebuilt from those records (the jobs do not store argv), so it
names the run's settings rather than quoting what was typed. The search and predictor records
are read through nasdb/records.py, so listing runs imports neither torch nor Ray.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import click

from nasdb.cli._format import echo_json, echo_pairs, echo_table
from nasdb.records import list_predictors, read_metadata, search_run_ids

_JSON = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
_ROWS_SQL = """
SELECT run_id, count(*) AS rows, count(*) FILTER (WHERE status <> 'ok') AS failures,
       count(*) FILTER (WHERE stopped_early) AS stopped_early,
       list(DISTINCT task ORDER BY task) AS tasks, list(DISTINCT agent ORDER BY agent) AS agents,
       min(created_at) AS first_row, max(created_at) AS last_row
FROM experiments GROUP BY run_id
"""
_KINDS = (("populate-", "populate"), ("import-", "import-benchmark"), ("zero-shot-", "zero-shot"))


def _kind(run_id: str) -> str:
    return next((kind for prefix, kind in _KINDS if run_id.startswith(prefix)), "rows")


def _read_json(store: Any, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.artifacts("search").get(key))
    except FileNotFoundError:
        return None


def _row_runs(store: Any) -> dict[str, dict[str, Any]]:
    return {r["run_id"]: r for r in store.query(_ROWS_SQL).to_pylist()}


def _search_run(store: Any, run_id: str, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    plan = _read_json(store, f"{run_id}/run.json") or {}
    result = _read_json(store, f"{run_id}/result.json")
    own, pre = rows.pop(run_id, None), rows.pop(f"{run_id}.pretrain", None)
    agent = (plan.get("agent") or {}).get("name", "?")
    evaluator = (plan.get("evaluator") or {}).get("name", "?")
    command = (f"nasdb search --agent {agent} --task {plan.get('task')} --budget {plan.get('budget')} "
               f"--evaluator {evaluator} --run-id {run_id}")
    if result is not None:
        status = "complete"
        evaluations, failures = result.get("num_evaluations"), result.get("num_failed")
    else:
        status = "incomplete"  # running, or stopped before its budget: `nasdb search` with the same flags resumes
        evaluations, failures = (own or {}).get("rows", 0), (own or {}).get("failures", 0)
    times = [r[k] for r in (own, pre) if r for k in ("first_row", "last_row")]
    run = {"run_id": run_id, "kind": "search", "command": command, "status": status,
           "start": min(times) if times else None, "end": max(times) if times else None,
           "rows": sum(r["rows"] for r in (own, pre) if r), "evaluations": evaluations, "budget": plan.get("budget"),
           "tasks": [plan.get("task")] if plan.get("task") else [], "failures": failures, "agent": agent,
           "evaluator": evaluator, "pretrain_rows": (pre or {}).get("rows", 0)}
    if result is not None:
        best = result.get("best") or {}
        run.update(wall_seconds=result.get("wall_seconds"), best_val=best.get("val_accuracy"),
                   best_test=best.get("test_accuracy"), best_position=result.get("best_position"))
    return run


def _rows_run(run_id: str, r: dict[str, Any]) -> dict[str, Any]:
    kind = _kind(run_id)
    tasks = list(r["tasks"])
    command = {"populate": f"nasdb populate --task {','.join(tasks)}",
               "import-benchmark": f"nasdb import-benchmark {run_id.split('-')[1] if '-' in run_id else '?'}",
               "zero-shot": f"nasdb suggest --predictor {run_id.removeprefix('zero-shot-')} --train --task "
                            f"{','.join(tasks)}"}.get(kind)
    return {"run_id": run_id, "kind": kind, "command": command,
            "status": "with failures" if r["failures"] else "ok", "start": r["first_row"], "end": r["last_row"],
            "rows": r["rows"], "tasks": tasks, "failures": r["failures"], "stopped_early": r["stopped_early"],
            "agent": ",".join(a for a in r["agents"] if a)}


def _fit_run(meta: dict[str, Any]) -> dict[str, Any]:
    metrics = meta.get("metrics") or {}
    snapshot = meta.get("data_snapshot") or {}
    end = datetime.fromisoformat(meta["created_at"]) if meta.get("created_at") else None
    seconds = metrics.get("seconds")
    start = end - timedelta(seconds=float(seconds)) if end is not None and isinstance(seconds, (int, float)) else None
    excluded = meta.get("excluded_tasks") or []
    command = " ".join([f"nasdb fit --loss {meta.get('loss')}", *(f"--exclude-task {t}" for t in excluded),
                        *([] if meta.get("use_meta_features", True) else ["--no-meta-features"]),
                        *([f"--warm-start {meta['warm_start_parent']}"] if meta.get("warm_start_parent") else [])])
    return {"run_id": meta["predictor_id"], "kind": "fit", "command": command, "status": "complete",
            "start": start, "end": end,
            "rows": sum(int(s.get("ok", 0)) for s in snapshot.values() if isinstance(s, dict)),
            "tasks": list(meta.get("tasks") or []),
            "failures": sum(int(s.get("failed", 0)) for s in snapshot.values() if isinstance(s, dict)),
            "agent": None, "predictor": (meta.get("predictor") or {}).get("name"),
            "mean_train_spearman": metrics.get("mean_train_spearman")}


def collect_runs(store: Any) -> list[dict[str, Any]]:
    """Every run of ``store``, oldest first (see the module docstring for where each comes from)."""
    rows = _row_runs(store)
    runs = [_search_run(store, run_id, rows) for run_id in sorted(search_run_ids(store))]
    runs += [_rows_run(run_id, r) for run_id, r in rows.items()]
    runs += [_fit_run(read_metadata(store, p["predictor_id"])) for p in list_predictors(store)]
    return sorted(runs, key=lambda r: (r["start"] is None, str(r["start"] or ""), r["run_id"]))


def _store(ctx: click.Context) -> Any:
    from nasdb.cli._store import open_store

    return open_store(ctx)


@click.group("runs")
def runs_group() -> None:
    """Populate, import, search, zero-shot and fit runs recorded in the store."""


@runs_group.command("list")
@click.option("--kind", type=click.Choice(["populate", "import-benchmark", "search", "zero-shot", "fit", "rows"]),
              multiple=True, help="Only runs of this kind (repeatable).")
@_JSON
@click.pass_context
def list_cmd(ctx: click.Context, kind: tuple[str, ...], as_json: bool) -> None:
    """Every run, oldest first: kind, status, start/end, rows, tasks, failures, agent."""
    runs = [r for r in collect_runs(_store(ctx)) if not kind or r["kind"] in kind]
    if as_json:
        echo_json(runs)
        return
    echo_table([{"run_id": r["run_id"], "kind": r["kind"], "status": r["status"],
                 "start": _time(r["start"]), "end": _time(r["end"]), "rows": r["rows"],
                 "tasks": len(r["tasks"]) if len(r["tasks"]) > 1 else (r["tasks"] or [None])[0],
                 "failures": r["failures"], "agent": r["agent"]} for r in runs])


@runs_group.command("show")
@click.argument("run_id", metavar="RUN")
@_JSON
@click.pass_context
def show_cmd(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """One run, with the command that reproduces it and its per-kind figures."""
    runs = {r["run_id"]: r for r in collect_runs(_store(ctx))}
    if run_id not in runs:
        close = [r for r in runs if run_id in r][:5]
        hint = f"; did you mean {', '.join(close)}?" if close else "; see nasdb runs list"
        raise click.ClickException(f"no run {run_id!r} in the store{hint}")
    run = runs[run_id]
    if as_json:
        echo_json(run)
        return
    echo_pairs({k: (", ".join(v) if k == "tasks" else _time(v) if k in ("start", "end") else v)
                for k, v in run.items()})


def _time(value: Any) -> str | None:
    if value is None:
        return None
    return value.strftime("%Y-%m-%d %H:%M:%S") if isinstance(value, datetime) else str(value)[:19]
