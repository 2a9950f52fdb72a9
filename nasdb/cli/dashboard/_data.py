"""What the dashboard's pages show, read through the same store API as the CLI (``store.query``).

Each page is one or two DuckDB aggregates over the store's deduplicated ``experiments`` view:
nothing here loads all rows into Python, so a page of a store of a million rows costs a few
hundred milliseconds (benchmarks/dashboard_pages.py). Runs come from ``nasdb runs``
(nasdb/cli/_runs.py), predictors and aliases from predictor/registry.py, suggestions from
``nasdb suggest``'s function (predictor/zero_shot.py). A CLI module: it may read every wing
(tests/test_layering.py).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import threading
from typing import Any

from nasdb import records
from nasdb.errors import ArgumentError
from nasdb.store import sql_str

#: Quantiles of a task's box plot: whiskers at 5% and 95%, box at the quartiles.
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
_OK = "status = 'ok' AND isfinite(val_accuracy)"

_OVERVIEW_SQL = f"""
SELECT task, count(*)::BIGINT AS rows, count(*) FILTER (WHERE status = 'ok')::BIGINT AS ok,
       count(*) FILTER (WHERE status <> 'ok')::BIGINT AS failed, count(DISTINCT run_id)::BIGINT AS runs,
       count(DISTINCT space_id)::BIGINT AS spaces,
       quantile_cont(val_accuracy, {list(QUANTILES)}) FILTER (WHERE {_OK}) AS q,
       max(test_accuracy) FILTER (WHERE status = 'ok' AND isfinite(test_accuracy)) AS best_test,
       max(created_at) AS last_row
FROM experiments GROUP BY task ORDER BY task
"""


def overview(store: Any) -> dict[str, Any]:
    """Per task: rows, ok, failed, runs, the val-accuracy quantiles (QUANTILES) and the best test accuracy."""
    tasks = [{**r, "q": [float(v) for v in r["q"]] if r["q"] else None}
             for r in store.query(_OVERVIEW_SQL).to_pylist()]
    registered = set(store.registered_tasks())
    for t in tasks:
        t["registered"] = t["task"] in registered
    return {"store": store.uri, "rows": sum(t["rows"] for t in tasks), "ok": sum(t["ok"] for t in tasks),
            "tasks": tasks}


def runs(store: Any) -> list[dict[str, Any]]:
    """Every run, newest first: what ``nasdb runs list`` shows."""
    from nasdb.cli._runs import collect_runs

    return list(reversed(collect_runs(store)))


def search_run_ids(store: Any) -> list[str]:
    return sorted(records.search_run_ids(store))


def curves(store: Any, *, task: str | None = None, run_ids: list[str] | None = None,
           max_runs: int = 12) -> list[dict[str, Any]]:
    """Best-so-far validation accuracy per (run, task), children in the order of ``created_at``.

    Only the points where the best improves (and the run's last child) come back, so a run of
    a million rows is a few dozen points. ``run_ids`` limits the runs; ``task`` the task. The
    ``max_runs`` runs with the most rows are kept. Rows stored at the same instant keep no
    order among themselves (a tie-break on the id made the window's sort 3x slower).
    """
    where = [_OK]
    if task:
        where.append(f"task = {sql_str(task)}")
    if run_ids:
        where.append(f"run_id IN ({', '.join(sql_str(r) for r in run_ids)})")
    sql = f"""
    WITH r AS (SELECT run_id, task, agent, val_accuracy, row_number() OVER w AS n,
                      max(val_accuracy) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before
               FROM experiments WHERE {' AND '.join(where)}
               WINDOW w AS (PARTITION BY run_id, task ORDER BY created_at))
    SELECT run_id, task, any_value(agent) AS agent, count(*)::BIGINT AS children, max(val_accuracy) AS best,
           list([n::DOUBLE, val_accuracy] ORDER BY n) FILTER (WHERE before IS NULL OR val_accuracy > before) AS points
    FROM r GROUP BY run_id, task ORDER BY children DESC, run_id, task LIMIT {int(max_runs)}
    """
    out = []
    for r in store.query(sql).to_pylist():
        points = [(int(n), float(b)) for n, b in r.pop("points")]
        if points[-1][0] < r["children"]:
            points.append((r["children"], float(r["best"])))  # flat to the last child
        out.append({**r, "points": points})
    return out


def predictors(store: Any) -> list[dict[str, Any]]:
    """Every predictor, newest first, with its aliases (``nasdb predictors list``)."""
    from predictor.registry import summaries

    return list(reversed(summaries(store)))


def predictor_details(store: Any, ref: str) -> dict[str, Any]:
    """One predictor's metadata, metrics (its LOTO figures when evaluated) and aliases (``nasdb predictors show``)."""
    from predictor.registry import details

    return details(store, ref)


def aliases(store: Any) -> dict[str, dict[str, Any]]:
    from predictor.registry import aliases as read

    return read(store)


_PNG_CACHE: dict[tuple[str, str, tuple[str, ...]], bytes] = {}
_PNG_LOCK = threading.Lock()


def embeddings_png(store: Any, ref: str | None, highlight: list[str], *, n_batches: int = 10) -> bytes:
    """The PCA picture of a predictor's task meta-features z (``nasdb embeddings``), ``highlight`` starred."""
    from predictor.checkpoint import load_predictor
    from predictor.embeddings_plot import batch_embeddings, plot_embeddings
    from predictor.registry import resolve

    pid = resolve(store, ref) if ref else resolve(store, "latest")
    key = (store.uri, pid, tuple(sorted(highlight)))
    with _PNG_LOCK:
        if key in _PNG_CACHE:
            return _PNG_CACHE[key]
    ckpt = load_predictor(store, pid)
    extra = [t for t in highlight if t not in ckpt.tasks]
    tasks = {name: store.task(name).samples("train") for name in [*ckpt.tasks, *extra]}
    labels, z = batch_embeddings(ckpt.model, tasks, n_batches=n_batches)
    with tempfile.TemporaryDirectory(prefix="nasdb-dashboard-") as tmp:
        paths = plot_embeddings(labels, z, tmp, highlight=highlight, title=f"predictor {pid} meta-features")
        with open(paths[0], "rb") as f:  # task_embeddings_pca.png
            png = f.read()
    with _PNG_LOCK:
        _PNG_CACHE[key] = png
    return png


def held_out_tasks(store: Any, details: dict[str, Any]) -> list[str]:
    """Tasks with samples that the predictor was not trained on: its excluded tasks first."""
    trained = set(details.get("tasks") or [])
    excluded = [t for t in details.get("excluded_tasks") or [] if t not in trained]
    others = [t for t in store.task_names() if t not in trained and t not in excluded and "." not in t]
    return excluded + others


def warm_suggestions(store: Any) -> None:
    """Build the suggestion engine of the default predictor (champion, else the newest), if there is one."""
    from predictor.checkpoint import load_predictor
    from predictor.registry import select
    from predictor.suggest import engine_for

    if predictors(store):
        engine_for(load_predictor(store, select(store, None).target(store)), store)


def suggest(store: Any, *, task: str | None = None, csv_bytes: bytes | None = None, filename: str | None = None,
            label: str | None = None, predictor: str | None = None) -> dict[str, Any]:
    """``nasdb suggest --task NAME`` or ``--data FILE --label COL`` for an upload: the suggestion and its nearest tasks.

    The upload is written to a private temporary file and read by the same loader as
    ``nasdb tasks add`` (any table: numeric, boolean and text columns and a label); a table it
    refuses raises ValueError naming the problem.
    """
    from predictor.zero_shot import suggest_for_cli

    if csv_bytes is None:
        return suggest_for_cli(store, task=task, predictor_id=predictor)
    if not csv_bytes.strip():
        raise ArgumentError(f"the uploaded file {filename or 'upload.csv'!r} is empty")
    if not label:
        raise ArgumentError("an uploaded table needs its label column: fill in 'label column'")
    stem = os.path.splitext(os.path.basename(filename or "upload.csv"))[0] or "upload"
    with tempfile.TemporaryDirectory(prefix="nasdb-upload-") as tmp:
        path = os.path.join(tmp, "upload.csv")
        with open(path, "wb") as f:
            f.write(csv_bytes)
        name = "user_" + (re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "upload")
        try:
            out = suggest_for_cli(store, data=path, label=label, predictor_id=predictor, name=name[:64])
            return {**out, "source": filename or "upload.csv"}  # the upload, not its temporary file
        except Exception as e:
            if path not in str(e):
                raise
            from nasdb.cli._main import one_line  # a reading error: name the upload, not the temporary file

            raise ArgumentError(one_line(e).replace(repr(path), repr(filename)).replace(path, str(filename))) from e


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
