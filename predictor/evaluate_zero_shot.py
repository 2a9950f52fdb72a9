"""Zero-shot evaluation on the suite (issue 16 item 5; task-aware-performance-prediction.md Sec. 5.3).

For each held-out task: fit the predictor without it (in-process, as leave-one-task-out),
suggest an architecture for it (Algorithm 2, the code path of ``nasdb suggest``:
predictor.zero_shot.fit_held_out + SuggestionEngine.suggest_z), train the suggestion with
``seeds`` seeds and report where its mean validation (and test) accuracy falls among the
task's stored architectures' means: the percentile, 100 for the best of them. Next to it the
baselines' picks (predictor/baselines.py): the portfolio pick, trained the same way when it
is not one of the task's stored architectures (on the suite it never is: it comes from
another task), and each ranker's pick (its argmax over the task's stored architectures,
whose accuracy is known: no training). Children are trained with the recipe of the task's
stored rows (the most common one), so the percentile compares like with like; nothing is
written into the store.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nasdb.checks import markdown_table
from nasdb.errors import ArgumentError
from predictor.baselines import BASELINES, distinct_architectures, held_out_picks, parse_baselines, task_embeddings
from predictor.config import PredictorConfig
from predictor.data import TaskData, TrainingData, architecture_matrix, load_for_config
from predictor.suggest import SuggestConfig

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

logger = logging.getLogger(__name__)

DEFAULT_BASELINES = ("portfolio", "gbm")

_STATE: dict[str, Any] = {}


def _init_worker(data: TrainingData, store_uri: str) -> None:
    import torch

    from nasdb.store import ExperimentStore

    torch.set_num_threads(1)
    _STATE.update(data=data, store=ExperimentStore(store_uri))


def stored_reference(store: ExperimentStore, task: TaskData, space: Any) -> dict[str, Any]:
    """The task's stored architectures as the predictor is judged on them: distinct (A, D) with their mean
    val accuracy over seeds (A,) from the training data (predictor/data.py's row filters), their mean test
    accuracy (A,) from the store's rows of the same architectures, and the most common recipe of those rows."""
    archs, _, val = distinct_architectures(task)
    table = store.experiments_arrow(task.name, status="ok", columns=["space_id", "architecture", "test_accuracy",
                                                                     "recipe"])
    table = table.filter(pc.equal(table.column("space_id"), space.space_id))
    rows = architecture_matrix(table.column("architecture"), space.num_dimensions, f"task {task.name!r}")
    test = table.column("test_accuracy").fill_null(math.nan).to_numpy(zero_copy_only=False).astype(np.float64)
    index = {tuple(int(v) for v in a): i for i, a in enumerate(archs)}
    mine = np.array([index.get(tuple(int(v) for v in r), -1) for r in rows], dtype=np.int64)  # row -> arch
    keep = (mine >= 0) & np.isfinite(test)
    total = np.bincount(mine[keep], weights=test[keep], minlength=len(archs))
    count = np.bincount(mine[keep], minlength=len(archs))
    recipes = Counter(table.column("recipe").filter(pa.array(mine >= 0)).to_pylist())
    return {"architectures": archs, "val": val,
            "test": np.divide(total, count, out=np.full(len(archs), math.nan), where=count > 0),
            "recipe": json.loads(recipes.most_common(1)[0][0]) if recipes else {}}


def percentile(values: np.ndarray, value: float) -> float:
    """% of ``values`` that ``value`` is at least as good as (100: the best of them); NaN for a NaN value."""
    v = values[np.isfinite(values)]
    return math.nan if not math.isfinite(value) or not len(v) else 100.0 * float(np.mean(v <= value))


def judge_pick(arch: list[int], ref: dict[str, Any], task: Any, space: Any, seeds: int) -> dict[str, Any]:
    """A pick's mean val/test accuracy: the stored means when the task holds it, else trained with ``seeds`` seeds."""
    hit = np.flatnonzero((ref["architectures"] == np.asarray(arch)).all(axis=1))
    if len(hit):
        val, test, source, n = float(ref["val"][hit[0]]), float(ref["test"][hit[0]]), "stored", 0
    else:
        from cluster.child import TrainRecipe, train_children

        recipe = TrainRecipe.from_dict(ref["recipe"]) if ref["recipe"] else TrainRecipe()
        results = train_children(task, space, np.asarray([arch] * seeds, dtype=np.int64), recipe=recipe,
                                 seeds=np.arange(seeds, dtype=np.int64))
        ok = [r for r in results if r.status == "ok" and math.isfinite(r.val_accuracy)]
        val = float(np.mean([r.val_accuracy for r in ok])) if ok else math.nan
        test = float(np.mean([r.test_accuracy for r in ok])) if ok else math.nan
        source, n = "trained", len(ok)
    return {"architecture": [int(v) for v in arch], "source": source, "seeds": n, "val_accuracy": val,
            "test_accuracy": test, "val_percentile": percentile(ref["val"], val),
            "test_percentile": percentile(ref["test"], test)}


def _zero_shot_task(held_out: str, config_dict: dict, suggest_dict: dict, baselines: tuple[str, ...],
                    seeds: int) -> dict[str, Any]:
    from predictor.zero_shot import fit_held_out

    data, store = _STATE["data"], _STATE["store"]
    config, start = PredictorConfig.from_dict(config_dict), time.perf_counter()
    engine, z, history = fit_held_out(store, held_out, data, config)
    suggestion = engine.suggest_z(z, SuggestConfig.from_dict(suggest_dict))
    train, task = data.without(held_out), store.task(held_out)  # the suggestion's and portfolio's task
    ref = stored_reference(store, data.tasks[held_out], data.space)
    row: dict[str, Any] = {"task": held_out, "architectures": len(ref["val"]), "best_stored_val": float(ref["val"].max()),
                           "fit_seconds": history.seconds, "meta_encoder": config.meta_encoder}
    zs = task_embeddings(engine.model, train) if z is not None and "portfolio" in baselines else None
    chosen = held_out_picks(data, held_out, baselines, z=None if z is None else z.detach().cpu().numpy(), task_z=zs)
    if "portfolio" in chosen:
        row.update(portfolio_rule=chosen["portfolio"]["rule"], portfolio_source_task=chosen["portfolio"]["source_task"])
    picks = {"suggestion": suggestion.architecture, **{b: p["architecture"] for b, p in chosen.items()}}
    for name, arch in picks.items():
        row.update({f"{name}_{k}": v for k, v in judge_pick(arch, ref, task, data.space, seeds).items()})
    row["seconds"] = time.perf_counter() - start
    logger.info("zero-shot %s: suggestion at percentile %.1f (%s)", held_out, row["suggestion_val_percentile"],
                ", ".join(f"{b} {row[f'{b}_val_percentile']:.1f}" for b in baselines))
    return row


def evaluate_zero_shot(store: ExperimentStore | str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                       config: PredictorConfig | None = None, suggest_config: SuggestConfig | None = None,
                       tasks: Iterable[str] | None = None, space_id: str | None = None, processes: int = 1,
                       baselines: str | Iterable[str] = DEFAULT_BASELINES, seeds: int = 2,
                       meta_encoder: str | None = None, held_out: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per held-out task: the suggestion's and each baseline pick's accuracy and percentile.

    ``config``: the predictor (one fit per task, seed ``config.seed``); ``seeds``: training
    seeds of each trained pick; ``held_out``: only these tasks are held out, each fit still
    training on all the other ``tasks``. With ``out_dir``: ``zero_shot.csv`` and ``zero_shot.md``.
    """
    baselines = parse_baselines(baselines, zero_shot=True)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ArgumentError(f"`seeds >= 1` must hold, but got seeds={seeds!r}.")
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ArgumentError(f"`processes >= 1` must hold, but got processes={processes!r}.")
    base, suggest = config or PredictorConfig(), suggest_config or SuggestConfig()
    if isinstance(store, (str, os.PathLike)):
        from nasdb.store import ExperimentStore

        store = ExperimentStore(str(store))
    # meta_encoder: auto | samples | cells | None (the config's); predictor/data.py choose_meta_encoder
    data, base, _ = load_for_config(store, base, meta_encoder=meta_encoder, space=space_id, tasks=tasks,
                                    min_tasks=3)
    sample_less = [n for n, t in data.tasks.items() if not t.has_samples]
    if sample_less:
        raise ArgumentError(f"task {sample_less[0]!r} has no raw samples (an imported tabular benchmark): nothing can be "
                            f"trained on it; judge zero-shot there with nasdb benchmark-report")
    jobs = [(n, base.to_dict(), suggest.to_dict(), baselines, seeds) for n in data.held_out(held_out)]
    logger.info("zero-shot: %d held-out tasks, baselines %s", len(jobs), list(baselines))
    start = time.perf_counter()
    if processes > 1:
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(data, _uri(store))) as pool:
            rows = list(pool.map(_zero_shot_task, *zip(*jobs)))
    else:
        _init_worker(data, _uri(store))
        rows = [_zero_shot_task(*job) for job in jobs]
    logger.info("zero-shot: %d tasks in %.0fs", len(rows), time.perf_counter() - start)
    if out_dir is not None:
        write_zero_shot_report(rows, Path(out_dir), base)
    return rows


def _uri(store: ExperimentStore) -> str:
    """How a worker process reopens the store (``ExperimentStore.uri``; the root on older stores)."""
    return getattr(store, "uri", None) or str(store.root)


def _f(v: Any, fmt: str = "{:.1f}") -> str:
    return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v)


def zero_shot_markdown(rows: list[dict[str, Any]], config: PredictorConfig | None = None) -> str:
    """Per task: val percentile (and accuracy) of the suggestion and of each baseline pick, then the summary."""
    methods = ["suggestion"] + [b for b in BASELINES if rows and f"{b}_val_percentile" in rows[0]]
    head = [f"{m} val pct (acc)" for m in methods] + [f"{m} test pct" for m in methods]
    table = []
    for r in rows:
        cells = [f"{_f(r[f'{m}_val_percentile'])} ({_f(r[f'{m}_val_accuracy'], '{:.3f}')})" for m in methods]
        cells += [_f(r[f"{m}_test_percentile"]) for m in methods]
        table.append([r["task"], str(r["architectures"]), _f(r["best_stored_val"], "{:.3f}"), *cells])
    header = ["task", "archs", "best stored val", *head]
    lines = markdown_table(header, table, right=range(1, len(header)))
    text = ("Zero-shot on held-out tasks: percentile of each pick's mean accuracy among the task's stored "
            "architectures' means (100 = at least as good as all of them); suggestion = Algorithm 2 with the "
            "predictor fitted without the task; trained picks: mean over their training seeds\n\n")
    if config is not None:
        text += f"Predictor: `{config.to_json()}`\n\n"
    text += "\n".join(lines) + "\n"
    if rows:
        med = {m: float(np.nanmedian([r[f"{m}_val_percentile"] for r in rows])) for m in methods}
        summary = ["median val percentile: " + ", ".join(f"{m} {_f(v)}" for m, v in med.items())]
        summary += [f"suggestion >= {b} on {sum(_ge(r, b) for r in rows)}/{len(rows)} tasks" for b in methods[1:]]
        text += "\n" + "; ".join(summary) + ".\n"
    return text


def _ge(row: dict[str, Any], baseline: str) -> bool:
    mine, theirs = row["suggestion_val_accuracy"], row[f"{baseline}_val_accuracy"]
    return math.isfinite(mine) and math.isfinite(theirs) and mine >= theirs


def write_zero_shot_report(rows: list[dict[str, Any]], out_dir: Path, config: PredictorConfig | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "zero_shot.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["task"])
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, out_dir / "zero_shot.csv")
    (out_dir / "zero_shot.md").write_text(zero_shot_markdown(rows, config))


__all__ = ["DEFAULT_BASELINES", "evaluate_zero_shot", "judge_pick", "percentile", "stored_reference",
           "write_zero_shot_report", "zero_shot_markdown"]
