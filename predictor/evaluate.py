"""Leave-one-task-out evaluation of the predictor (task-aware-performance-prediction.md Sec. 5.2, Table 2;
ranking-architectures-meta-learning.md Sec. 4.1, Table 1).

For each task: fit without it, predict all its stored architectures (the mean validation
accuracy over seeds is the target), report Spearman and Pearson (mean and std over repeats)
for each loss, with and without meta-features, next to the task's noise ceiling: the
Spearman between two training seeds of the same architectures, the best any predictor can
hope for. Fits run in-process (Algorithm 1 without Ray), optionally in a pool of processes:
LOTO is hundreds of small fits, and Ray Train's per-job start-up would dominate them.
Imported tabular benchmarks (tasks without samples, ~250k rows each) run without
meta-features; the per-architecture means and the noise ceiling are linear in the rows.
Beside the predictor, each task-agnostic baseline of predictor/baselines.py (gbm, ridge) is
fitted once per held-out task on the same training tasks and scored on the same rows: the
report shows what the task-aware predictor gains over ranking architectures the same way
for every task (issue 16).
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from nasdb.checks import markdown_table
from nasdb.errors import ArgumentError
from nasdb.space import unique_rows
from predictor.baselines import BASELINES, RANKERS, parse_baselines, unique_architectures
from predictor.config import LOSSES, PredictorConfig
from predictor.data import TaskData, TrainingData, load_for_config
from predictor.fit import fit_in_process, rank_correlations

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

logger = logging.getLogger(__name__)

MIN_NOISE_PAIRS = 5
REPORT_COLUMNS = ("task", "loss", "meta_features", "spearman_mean", "spearman_std", "pearson_mean", "pearson_std",
                  "repeats", "architectures", "noise_ceiling", "noise_pairs", "target")


def baseline_columns(baselines: Iterable[str]) -> list[str]:
    """The report's columns of each baseline: ``<name>_spearman``, ``<name>_pearson``."""
    return [f"{b}_{m}" for b in baselines for m in ("spearman", "pearson")]


def noise_ceiling(task: TaskData) -> tuple[float, int]:
    """Spearman between the two lowest seeds of every architecture trained with at least two seeds.

    Returns (ceiling, number of architecture pairs); the ceiling is NaN when fewer than
    MIN_NOISE_PAIRS architectures have two seeds. A repeated (architecture, seed) counts once
    (its first row). Vectorized: sort rows by (architecture, seed), keep the first two seeds.
    """
    if task.num_experiments == 0:
        return math.nan, 0
    _, arch_id = unique_rows(task.architectures, return_inverse=True)
    arch_id = arch_id.reshape(-1)
    order = np.lexsort((np.arange(len(arch_id)), task.seeds, arch_id))  # by architecture, seed, row
    a, s = arch_id[order], task.seeds[order]
    new_pair = np.ones(len(a), dtype=bool)
    new_pair[1:] = (a[1:] != a[:-1]) | (s[1:] != s[:-1])
    order, a = order[new_pair], a[new_pair]  # first row of each (architecture, seed)
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])  # first row of each architecture
    counts = np.diff(np.r_[starts, len(a)])
    two = starts[counts >= 2]
    if len(two) < MIN_NOISE_PAIRS:
        return math.nan, int(len(two))
    acc = task.accuracy.astype(np.float64)
    return rank_correlations(acc[order[two]], acc[order[two + 1]])[0], int(len(two))


# -- one fit, runnable in a worker process ------------------------------------------------------
_DATA: TrainingData | None = None


def _init_worker(data: TrainingData) -> None:
    global _DATA
    import torch

    torch.set_num_threads(1)
    _DATA = data


def _fit_and_score(held_out: str, config_dict: dict) -> dict[str, Any]:
    assert _DATA is not None
    config = PredictorConfig.from_dict(config_dict)
    model, history = fit_in_process(_DATA.without(held_out), config)
    task = _DATA.tasks[held_out]
    u, target = unique_architectures(task)
    mean, std = model.predict_with_std(u, task.x, task.y)
    rho, r = rank_correlations(mean, target)
    return {"task": held_out, "loss": config.loss, "meta_features": config.use_meta_features, "seed": config.seed,
            "spearman": rho, "pearson": r, **calibration(mean, std, target),
            "final_train_loss": history.final_loss, "seconds": history.seconds}


def calibration(mean: np.ndarray, std: np.ndarray | None, target: np.ndarray) -> dict[str, float]:
    """How well the ensemble's spread knows its error on held-out architectures (issue 16).

    Scores and targets are compared standardized (a ranking loss fixes no scale; the L2 loss
    fits the task-normalized target, the same thing): ``error = z(mean) - z(target)``, the
    spread divided by the scores' std. -> Spearman between |error| and the spread, and the
    share of architectures with |error| <= 2 spreads (NaN without an ensemble).
    """
    if std is None or len(target) < 3 or np.ptp(mean) == 0 or np.ptp(target) == 0:
        return {"calibration_spearman": math.nan, "coverage_2std": math.nan}
    scale = float(mean.std())
    error = np.abs((mean - mean.mean()) / scale - (target - target.mean()) / target.std())
    spread = np.asarray(std, dtype=np.float64) / scale
    rho = rank_correlations(spread, error)[0] if np.ptp(spread) > 0 else math.nan
    return {"calibration_spearman": rho, "coverage_2std": float(np.mean(error <= 2.0 * spread))}


def _baseline_score(held_out: str, name: str) -> dict[str, Any]:
    """Fit baseline ``name`` without ``held_out`` and score it on the held-out task's distinct architectures."""
    assert _DATA is not None
    start = time.perf_counter()
    ranker = BASELINES[name].fit(_DATA.without(held_out))
    u, target = unique_architectures(_DATA.tasks[held_out])
    rho, r = rank_correlations(ranker.scores(u), target)
    return {"task": held_out, "baseline": name, "spearman": rho, "pearson": r,
            "seconds": time.perf_counter() - start}


def _run_job(kind: str, held_out: str, arg: Any) -> dict[str, Any]:
    return _fit_and_score(held_out, arg) if kind == "fit" else _baseline_score(held_out, arg)


def _logged(results: Iterable[dict[str, Any]], total: int, start: float) -> list[dict[str, Any]]:
    """Collect fit results, logging progress and an ETA about every 10%."""
    out = []
    for r in results:
        out.append(r)
        if len(out) % max(1, total // 10) == 0 and len(out) < total:
            elapsed = time.perf_counter() - start
            logger.info("LOTO: %d/%d fits, %.0fs, about %.0fs left", len(out), total, elapsed,
                        elapsed / len(out) * (total - len(out)))
    return out


def _nan_stats(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if not math.isnan(x)])
    return (float(v.mean()), float(v.std())) if len(v) else (math.nan, math.nan)


def evaluate_loto(store: ExperimentStore | str | os.PathLike, losses: Iterable[str] = LOSSES, repeats: int = 3,
                  meta_features: Iterable[bool] = (True, False), out_dir: str | os.PathLike | None = None, *,
                  config: PredictorConfig | None = None, tasks: Iterable[str] | None = None,
                  space_id: str | None = None, processes: int = 1, baselines: str | Iterable[str] = RANKERS,
                  meta_encoder: str | None = None, held_out: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Leave-one-task-out report rows (one per task x loss x meta-features), written as CSV + markdown.

    ``config`` sets everything but the loss, the meta-features switch and the seed (base seed
    + repeat index). With ``out_dir`` the report goes to ``loto.csv``, ``loto_runs.csv`` (every
    single fit) and ``loto.md``. Tasks without samples (imported benchmarks) need
    ``meta_features=(False,)``; ``config.target`` and ``config.include_stopped``: see predictor/data.py.
    ``baselines``: rankers of predictor/baselines.py fitted once per held-out task (deterministic,
    so not per repeat); their Spearman and Pearson go into every row of the task
    (``<name>_spearman``, ``<name>_pearson``). ``held_out``: only these tasks are held out (each
    fit still trains on every other task of ``tasks``), for a store whose every task would cost
    too many fits; None holds out each task in turn.
    """
    baselines = parse_baselines(baselines, zero_shot=False)
    losses, meta_features = list(losses), [bool(m) for m in meta_features]
    for loss in losses:
        if loss not in LOSSES:
            raise ArgumentError(f"unknown loss {loss!r}; known: {list(LOSSES)}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ArgumentError(f"`repeats >= 1` must hold, but got repeats={repeats!r}.")
    if not losses or not meta_features:
        raise ArgumentError("pass at least one loss and one meta-features setting")
    base = config or PredictorConfig()
    if isinstance(store, (str, os.PathLike)):
        from nasdb.store import ExperimentStore

        store = ExperimentStore(str(store))
    # LOTO trains on all tasks but one, so at least 3 tasks are needed.
    # meta_encoder: auto | samples | cells | None (the config's); predictor/data.py choose_meta_encoder
    data, base, _ = load_for_config(store, base, meta_encoder=meta_encoder, space=space_id, tasks=tasks,
                                    min_tasks=3,
                                    use_meta_features=any(meta_features))
    held = data.held_out(held_out)
    jobs = [("fit", name, base.replace(loss=loss, use_meta_features=meta, seed=base.seed + r).to_dict())
            for name in held for loss in losses for meta in meta_features for r in range(repeats)]
    jobs += [("baseline", name, b) for name in held for b in baselines]
    logger.info("LOTO: %d held-out tasks (of %d) x %d losses x %d meta settings x %d repeats = %d fits, plus %d "
                "baseline fits", len(held), len(data.tasks), len(losses), len(meta_features), repeats,
                len(jobs) - len(held) * len(baselines), len(held) * len(baselines))
    start = time.perf_counter()
    if processes > 1:
        with ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(data,)) as pool:
            done = _logged(pool.map(_run_job, *zip(*jobs)), len(jobs), start)
    else:
        _init_worker(data)
        done = _logged((_run_job(*job) for job in jobs), len(jobs), start)
    runs = [r for r in done if "baseline" not in r]
    scored = {(r["task"], r["baseline"]): r for r in done if "baseline" in r}
    logger.info("LOTO: %d fits in %.0fs", len(done), time.perf_counter() - start)
    ceilings = {name: noise_ceiling(data.tasks[name]) for name in held}
    num_archs = {name: len(unique_architectures(data.tasks[name])[1]) for name in held}
    rows = []
    for name in held:
        for loss in losses:
            for meta in meta_features:
                mine = [r for r in runs if (r["task"], r["loss"], r["meta_features"]) == (name, loss, meta)]
                s_mean, s_std = _nan_stats([r["spearman"] for r in mine])
                p_mean, p_std = _nan_stats([r["pearson"] for r in mine])
                calib = {k: _nan_stats([r[k] for r in mine])[0] for k in ("calibration_spearman", "coverage_2std")}
                ceiling, pairs = ceilings[name]
                rows.append({"task": name, "loss": loss, "meta_features": meta, "spearman_mean": s_mean,
                             "spearman_std": s_std, "pearson_mean": p_mean, "pearson_std": p_std,
                             "repeats": len(mine), "architectures": num_archs[name],
                             "noise_ceiling": None if math.isnan(ceiling) else ceiling, "noise_pairs": pairs,
                             "target": data.tasks[name].target_kind, "meta_encoder": base.meta_encoder, **calib,
                             **{f"{b}_{m}": scored[(name, b)][m] for b in baselines for m in ("spearman", "pearson")}})
    if out_dir is not None:
        write_report(rows, runs, Path(out_dir), base)
    return rows


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing" if v is None else "nan"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown_report(rows: list[dict[str, Any]], config: PredictorConfig | None = None) -> str:
    """Per-task Spearman (mean ± std over repeats) for each loss and meta-features setting, plus means."""
    settings = list(dict.fromkeys((r["loss"], r["meta_features"]) for r in rows))
    head = [_setting(loss, meta) for loss, meta in settings]
    baselines = [b for b in BASELINES if rows and f"{b}_spearman" in rows[0]]
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    index = {(r["task"], r["loss"], r["meta_features"]): r for r in rows}
    table = []
    for t in tasks:
        first = index[(t, *settings[0])]
        cells = [f"{_fmt(index[(t, *s)]['spearman_mean'])} ± {_fmt(index[(t, *s)]['spearman_std'])}" for s in settings]
        cells += [_fmt(first[f"{b}_spearman"]) for b in baselines]
        table.append([t, str(first["architectures"]), _fmt(first["noise_ceiling"]), *cells])
    means = [_nan_stats([index[(t, *s)]["spearman_mean"] for t in tasks])[0] for s in settings]
    means += [_nan_stats([index[(t, *settings[0])][f"{b}_spearman"] for t in tasks])[0] for b in baselines]
    ceilings = [index[(t, *settings[0])]["noise_ceiling"] for t in tasks]
    ceil_mean = _nan_stats([c for c in ceilings if c is not None])[0] if any(c is not None for c in ceilings) else None
    table.append(["**mean**", "", _fmt(ceil_mean), *(f"**{_fmt(m)}**" for m in means)])
    header = ["task", "archs", "noise ceiling", *head, *baselines]
    lines = markdown_table(header, table, right=range(1, len(header)))
    text = "Leave-one-task-out Spearman rank correlation (predicted vs. mean validation accuracy over seeds)\n\n"
    if config is not None:
        text += f"Predictor: `{config.to_json()}` (the loss, meta-features and seed vary per column and repeat)\n\n"
    if baselines:
        text += ("Baselines (task-agnostic, fitted once per held-out task on the same training tasks and scored on "
                 "the same rows): " + "; ".join(f"{b}: {BASELINES[b].description}" for b in baselines) + "\n\n")
    text += "\n".join(lines) + "\n"
    if baselines:
        wins = [f"{_setting(*s)} beats {b} on {sum(_beats(index[(t, *s)], b) for t in tasks)}/{len(tasks)} tasks"
                for s in settings for b in baselines]
        text += "\nPredictor (mean Spearman over repeats) vs baselines, per task: " + "; ".join(wins) + ".\n"
    calib = [f"{_setting(*s)}: Spearman(|error|, std) "
             f"{_fmt(_nan_stats([index[(t, *s)]['calibration_spearman'] for t in tasks])[0])}, "
             f"inside mean ± 2 std {_fmt(_nan_stats([index[(t, *s)]['coverage_2std'] for t in tasks])[0])}"
             for s in settings if any(not math.isnan(index[(t, *s)]["calibration_spearman"]) for t in tasks)]
    if calib:
        text += "\nEnsemble calibration on the held-out architectures (mean over tasks): " + "; ".join(calib) + ".\n"
    return text


def _setting(loss: str, meta: bool) -> str:
    return f"{loss} {'+meta' if meta else 'no-meta'}"


def _beats(row: dict[str, Any], baseline: str) -> bool:
    mine, theirs = row["spearman_mean"], row[f"{baseline}_spearman"]
    return not (math.isnan(mine) or math.isnan(theirs)) and mine > theirs


def write_report(rows: list[dict[str, Any]], runs: list[dict[str, Any]], out_dir: Path,
                 config: PredictorConfig | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "loto.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(REPORT_COLUMNS) + [k for k in (rows[0] if rows else {})
                                                                  if k not in REPORT_COLUMNS])
        w.writeheader()
        w.writerows(rows)
    with open(out_dir / "loto_runs.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(runs[0]))
        w.writeheader()
        w.writerows(runs)
    (out_dir / "loto.md").write_text(markdown_report(rows, config))


if __name__ == "__main__":  # the CLI's entry point (predictor/cli.py)
    from predictor.cli import evaluate_main

    raise SystemExit(evaluate_main())
