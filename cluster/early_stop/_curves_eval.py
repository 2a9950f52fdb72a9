"""Evaluate learning-curve prediction and early stopping on stored full curves (issue 8).

(a) R^2 of the predicted final validation accuracy against the observed epochs ``tau``, trained
on a random half of a task's full curves and tested on the other half, with the
last-seen-value heuristic as the baseline (accelerating-nas-performance-prediction-baker.md
Fig. 3); (b) early stopping simulated over the stored runs in random orders (Fig. 4): the
speedup in epochs trained and whether the best model was still fully trained.
``evaluate_curves`` runs both per task and writes report.json, report.md and r2_vs_tau.png.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cluster.early_stop._arch_prior import architecture_prior, with_prior
from cluster.early_stop._features import model_feature_names, model_features
from cluster.early_stop._pooled import PooledRegressor, comparable_curve_sets, fit_pooled, predict_pooled
from cluster.early_stop._srm import SequentialRegressor
from cluster.early_stop._stopper import EarlyStopConfig, EarlyStopper, pooled_prior
from nasdb.checks import markdown_table
from nasdb.errors import ArgumentError

if TYPE_CHECKING:
    from nasdb.space import SearchSpace
    from nasdb.store import ExperimentStore


@dataclass
class CurveSet:
    """A task's complete curves as the SRMs see them: ``curves (N, T)``, ``features (N, F)``."""

    task: str
    curves: np.ndarray  # (N, T)
    features: np.ndarray  # (N, F) static AP + HP features (model_features)
    experiment_ids: list[str]
    feature_names: tuple[str, ...]
    skipped: dict[str, int]  # rows left out, by reason
    architectures: np.ndarray | None = None  # (N, D) choice indices: what an architecture prior reads
    space: SearchSpace | None = None

    @property
    def num_curves(self) -> int:
        return self.curves.shape[0]

    @property
    def num_epochs(self) -> int:
        return self.curves.shape[1]

    @property
    def finals(self) -> np.ndarray:
        return self.curves[:, -1]


#: The experiment columns a curve set is read from.
_CURVE_COLUMNS = ["experiment_id", "space_id", "architecture", "num_params", "recipe", "val_curve", "epochs",
                  "stopped_early"]


def load_full_curves(store: ExperimentStore, task: str, *, recipe: Any = None, space_id: str | None = None) -> CurveSet:
    """The fully trained curves of ``task`` in ``store``: status ok, not stopped early, finite, of
    the most common length and search space (other rows are counted in ``skipped``).

    ``recipe`` / ``space_id`` keep only rows trained with that recipe (dict or ``TrainRecipe``)
    in that space -- what a job seeding its early stopper from earlier rows wants.
    """
    rows = store.experiments_arrow(task, status="ok", columns=_CURVE_COLUMNS).to_pylist()
    return _curve_set(store, task, rows, recipe, space_id)


def load_other_curves(store: ExperimentStore, *, recipe: Any, space_id: str,
                      exclude: Sequence[str] = ()) -> dict[str, CurveSet]:
    """Every task's fully trained curves of ``recipe`` in ``space_id`` but ``exclude``'s, by task:
    the comparable curves a job's early stopper pools over (issue 19). One query for all tasks;
    rows of other spaces (e.g. imported benchmarks) are never read into Python."""
    table = store.query("SELECT task, " + ", ".join(f'"{c}"' for c in _CURVE_COLUMNS) + " FROM experiments "
                        f"WHERE status = 'ok' AND space_id = '{space_id.replace(chr(39), '')}' "
                        "AND NOT coalesce(stopped_early, false) ORDER BY created_at, experiment_id")
    by_task: dict[str, list[dict]] = {}
    for r in table.to_pylist():
        if r["task"] not in exclude:
            by_task.setdefault(r["task"], []).append(r)
    sets = {}
    for task, rows in sorted(by_task.items()):
        try:
            sets[task] = _curve_set(store, task, rows, recipe, space_id)
        except ValueError:  # no complete curve of this recipe
            continue
    return sets


def _curve_set(store: ExperimentStore, task: str, rows: list[dict], recipe: Any, space_id: str | None) -> CurveSet:
    want_recipe = None
    if recipe is not None:
        want_recipe = dict(recipe.to_dict() if hasattr(recipe, "to_dict") else recipe)
    skipped: Counter = Counter()
    usable = []
    for r in rows:
        curve = r["val_curve"] or []
        if (want_recipe is not None and json.loads(r["recipe"]) != want_recipe) or \
                (space_id is not None and r["space_id"] != space_id):
            skipped["other_recipe_or_space"] += 1
        elif r["stopped_early"]:
            skipped["stopped_early"] += 1
        elif len(curve) < 2 or len(curve) != r["epochs"] or not all(math.isfinite(v) for v in curve):
            skipped["incomplete_curve"] += 1
        else:
            usable.append(r)
    if not usable:
        raise ArgumentError(f"task {task!r} has no complete learning curves in the store ({dict(skipped)} skipped)")
    space_id, _ = Counter(r["space_id"] for r in usable).most_common(1)[0]
    length, _ = Counter(len(r["val_curve"]) for r in usable if r["space_id"] == space_id).most_common(1)[0]
    keep = [r for r in usable if r["space_id"] == space_id and len(r["val_curve"]) == length]
    skipped["other_space_or_length"] += len(usable) - len(keep)
    space = store.space(space_id)
    features = model_features(space, [r["architecture"] for r in keep], [r["num_params"] for r in keep],
                              [json.loads(r["recipe"]) for r in keep])
    curves = np.array([r["val_curve"] for r in keep], dtype=np.float64)  # (N, T)
    return CurveSet(task, curves, features, [r["experiment_id"] for r in keep], model_feature_names(space),
                    {k: v for k, v in skipped.items() if v}, np.array([r["architecture"] for r in keep]), space)


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan


def r2_by_tau(cs: CurveSet, *, repeats: int = 5, train_fraction: float = 0.5, taus: Any = None,
              search_trials: int = 12, search_points: int = 5, target: str = "final", model: str = "svr",
              features: str = "paper", seed: int = 0, pool: Sequence[CurveSet] = (),
              prior: PooledRegressor | None = None, context_curves: int = 20) -> dict[str, Any]:
    """R^2 of the SRM's predicted ``y_T`` per ``tau`` on held-out curves (random splits, ``repeats``
    times), next to the last-seen-value heuristic (predict ``y_T = y_tau``).

    With ``pool`` (other tasks' curve sets), each tau's model also learns from the comparable
    ones (cluster/early_stop/_pooled.py); the splits of ``cs`` are the same as without. With
    ``prior`` (a model fitted on other tasks alone) the task is read through the first
    ``context_curves`` of each training half (context and recalibration), as the live stopper
    reads it right after its pooled burn-in.
    """
    if repeats < 1 or not (0.0 < train_fraction < 1.0):
        raise ArgumentError(f"need repeats >= 1 and 0 < train_fraction < 1, got {repeats} and {train_fraction}")
    n, T = cs.curves.shape
    n_train = int(round(train_fraction * n))
    if n_train < 5 or n - n_train < 2:
        raise ArgumentError(f"task {cs.task!r}: {n} curves are too few to split {train_fraction:.0%} / rest")
    taus = list(range(1, T)) if taus is None else sorted({int(t) for t in taus})
    pool = comparable_curve_sets(cs, pool)
    srm = {"search_trials": search_trials, "search_points": search_points, "target": target, "model": model,
           "features": features}
    rng = np.random.default_rng(seed)
    srm_r2, last = np.zeros((repeats, len(taus))), np.zeros((repeats, len(taus)))
    for r in range(repeats):
        perm = rng.permutation(n)
        tr, te = perm[:n_train], perm[n_train:]
        y = cs.finals[te]
        if prior is not None:
            first = tr[:context_curves]
            model = prior.for_task(cs.curves[first], cs.curves[first], cs.features[first], taus)
            preds = [model.predict(cs.curves[te, :tau], cs.features[te])[0] for tau in taus]
        elif pool:
            preds = [predict_pooled(fit_pooled(cs, tr, pool, tau, seed=seed + r, **srm), cs, tr, te, tau)
                     for tau in taus]
        else:
            fitted = SequentialRegressor(seed=seed + r, **srm).fit(cs.curves[tr], cs.features[tr], taus=taus,
                                                                   estimate_sigma=False)
            preds = [fitted.predict(cs.curves[te, :tau], cs.features[te])[0] for tau in taus]
        for j, (tau, pred) in enumerate(zip(taus, preds)):
            srm_r2[r, j] = r2_score(y, pred)
            last[r, j] = r2_score(y, cs.curves[te, tau - 1])
    return {"taus": taus, "train_curves": n_train, "test_curves": n - n_train, "repeats": repeats,
            "target": target, "model": model, "features": features, "pooled_tasks": [o.task for o in pool],
            "prior_curves": 0 if prior is None else prior.num_curves,
            "r2_mean": srm_r2.mean(0).tolist(), "r2_std": srm_r2.std(0).tolist(),
            "last_seen_r2_mean": last.mean(0).tolist()}


def simulate_order(cs: CurveSet, order: np.ndarray, config: EarlyStopConfig,
                   prior: PooledRegressor | None = None) -> dict[str, Any]:
    """Train the models in ``order`` one after another with early stopping (reading ``prior``, a
    model pooled over other tasks, if given); what was trained how long."""
    T = cs.num_epochs
    stopper = EarlyStopper(replace(config, num_epochs=T), prior or ())
    epochs = np.full(cs.num_curves, T, dtype=np.int64)
    predicted = np.full(cs.num_curves, math.nan)
    for i in order:
        curve, feats = cs.curves[i], cs.features[i][None, :]  # (T,), (1, F)
        if stopper.ready:
            for tau in range(config.min_tau, T):
                d = stopper.decide_many(curve[None, :tau], feats)
                if d.stop[0]:
                    epochs[i], predicted[i] = tau, d.predicted_final[0]
                    break
        if epochs[i] == T:
            stopper.report_complete(curve[None, :], feats)
    full = epochs == T
    ranking = np.argsort(-cs.finals, kind="stable")
    best = cs.finals.max()
    stopped = ~full
    return {
        "total_epochs": int(epochs.sum()),
        "speedup": float(cs.num_curves * T / epochs.sum()),
        "stopped": int(stopped.sum()),
        "best_kept": bool(full[cs.finals >= best].any()),
        "top5_kept": int(full[ranking[:5]].sum()),
        "best_fully_trained": float(cs.finals[full].max()),
        "mean_abs_error_stopped": float(np.nanmean(np.abs(predicted[stopped] - cs.finals[stopped])))
        if stopped.any() else None,
        "fits": stopper.fits,
    }


def simulate_early_stopping(cs: CurveSet, config: EarlyStopConfig | None = None, *, orders: int = 10,
                            seed: int = 0, prior: Sequence[CurveSet] = ()) -> dict[str, Any]:
    """Early stopping over ``orders`` random orders of the stored runs (the paper's Fig. 4); with
    ``prior`` (other tasks' curve sets) the stopper reads the comparable ones through a pooled
    model after ``pool_burn_in`` curves of ``cs`` (one pooled fit serves every order)."""
    config = config or EarlyStopConfig()
    if orders < 1:
        raise ArgumentError(f"orders must be >= 1, got {orders}")
    pooled = pooled_prior(config, [(o.curves, o.features) for o in comparable_curve_sets(cs, prior)])
    burn_in = config.burn_in if pooled is None else config.pool_burn_in
    if cs.num_curves <= burn_in:
        raise ArgumentError(f"task {cs.task!r}: {cs.num_curves} curves leave nothing after a burn-in of {burn_in}")
    rng = np.random.default_rng(seed)
    runs = [simulate_order(cs, rng.permutation(cs.num_curves), config, pooled) for _ in range(orders)]
    speedups = np.array([r["speedup"] for r in runs])
    return {"orders": orders, "config": config.to_dict(), "runs": runs,
            "pooled_curves": 0 if pooled is None else pooled.num_curves,
            "speedup_mean": float(speedups.mean()), "speedup_min": float(speedups.min()),
            "speedup_max": float(speedups.max()),
            "best_kept_orders": int(sum(r["best_kept"] for r in runs)),
            "stopped_mean": float(np.mean([r["stopped"] for r in runs]))}


#: Points of the curve (percent of the epochs observed) at which R^2 is reported per task.
FRACTIONS = (10, 25, 50)


def _tau_at(fraction: float, taus: list[int], T: int) -> int:
    want = max(1, int(round(fraction * T)))
    return min(taus, key=lambda t: abs(t - want))


def evaluate_curves(store: ExperimentStore, task: str | None = None, out_dir: str | Path | None = None, *,
                    config: EarlyStopConfig | None = None, repeats: int = 5, orders: int = 10,
                    search_trials: int = 12, target: str | None = None, model: str | None = None,
                    features: str | None = None, seed: int = 0, pool: bool = False,
                    progress: Any = None) -> dict[str, Any]:
    """R^2 vs tau and the early-stopping simulation for ``task`` (default: every task with at least
    ``burn_in + 1`` complete curves); writes report.json/.md and r2_vs_tau.png to ``out_dir``.

    ``target``, ``model`` and ``features`` default to the config's; ``orders=0`` skips the
    simulation (R^2 only). R^2 is reported at every tau and, per task, at 10/25/50 % of the
    curve. With ``pool`` each task's models also learn from every other task's comparable curves
    (cluster/early_stop/_pooled.py), at the 10/25/50 % taus only, next to the task's own models on
    the same splits (``own_r2_*``). ``progress`` (optional) is called with one-line messages.
    """
    config = config or EarlyStopConfig()
    target = target or config.target
    model, features = model or config.model, features or config.features
    say = progress or (lambda msg: None)
    every = sorted(store.task_stats().column("task").to_pylist())  # tasks with rows
    names = [task] if task else every
    report: dict[str, Any] = {"config": config.to_dict(), "repeats": repeats, "orders": orders,
                              "target": target, "model": model, "features": features, "pooled": pool,
                              "tasks": {}, "skipped_tasks": {}}
    sets = {}
    for name in dict.fromkeys(names + (every if pool else [])):
        try:
            sets[name] = load_full_curves(store, name)
        except ValueError as e:
            if name == task:
                raise
            report["skipped_tasks"][name] = str(e)
    srm = {"search_trials": search_trials, "search_points": config.search_points, "target": target,
           "model": model, "features": features, "seed": seed}
    for name in names:
        cs = sets.get(name)
        if cs is None:
            continue
        if cs.num_curves <= config.burn_in and not task:
            report["skipped_tasks"][name] = f"{cs.num_curves} complete curves <= burn_in {config.burn_in}"
            continue
        say(f"{name}: {cs.num_curves} curves x {cs.num_epochs} epochs: R^2 vs tau" + (" (pooled)" if pool else ""))
        entry = {"num_curves": cs.num_curves, "num_epochs": cs.num_epochs, "skipped": cs.skipped}
        taus = None
        stop_config = replace(config, target=target, model=model, features=features)
        others = comparable_curve_sets(cs, list(sets.values())) if pool else []
        pooled_cs = cs  # what the pooled models read of the task: with the architecture prior's column
        if others and config.arch_prior:
            arch, others = architecture_prior(others, cs.space)
            pooled_cs = cs if arch is None else with_prior(cs, arch)
            entry["arch_prior"] = None if arch is None else arch.describe()
        if pool:  # one pooled fit per tau: only the taus reported per task, the task's own models beside
            at = {pct: _tau_at(pct / 100, list(range(1, cs.num_epochs)), cs.num_epochs) for pct in FRACTIONS}
            taus = sorted(set(at.values()))
            own = r2_by_tau(cs, repeats=repeats, taus=taus, **srm)
            entry.update({f"own_r2_{pct}pct": own["r2_mean"][taus.index(at[pct])] for pct in FRACTIONS})
            prior = pooled_prior(stop_config, [(o.curves, o.features) for o in others])
            if prior is not None:  # what the live stopper reads after its pooled burn-in
                live = r2_by_tau(pooled_cs, repeats=repeats, taus=taus, prior=prior,
                                 context_curves=config.pool_burn_in, **srm)
                entry.update({f"prior_r2_{pct}pct": live["r2_mean"][taus.index(at[pct])] for pct in FRACTIONS})
        r2 = r2_by_tau(pooled_cs, repeats=repeats, taus=taus, pool=others, **srm)
        sim = None
        if orders:
            say(f"{name}: simulating early stopping over {orders} orders" + (" (pooled prior)" if pool else ""))
            sim = simulate_early_stopping(pooled_cs, stop_config, orders=orders, seed=seed, prior=others)
        for pct in FRACTIONS:
            tau = _tau_at(pct / 100, r2["taus"], cs.num_epochs)
            j = r2["taus"].index(tau)
            entry.update({f"tau_{pct}pct": tau, f"r2_{pct}pct": r2["r2_mean"][j],
                          f"last_seen_r2_{pct}pct": r2["last_seen_r2_mean"][j]})
        report["tasks"][name] = {**entry, "r2": r2, "simulation": sim}
    if not report["tasks"]:
        raise ArgumentError(f"no task has enough complete curves to evaluate: {report['skipped_tasks']}")
    per = report["tasks"].values()
    report["summary"] = {
        **{f"r2_{pct}pct_mean": float(np.mean([t[f"r2_{pct}pct"] for t in per])) for pct in FRACTIONS},
        **{f"{k}_{pct}pct_mean": float(np.mean([t[f"{k}_{pct}pct"] for t in per]))
           for k in _COMPARED if all(f"{k}_25pct" in t for t in per) for pct in FRACTIONS},
        **({"speedup_mean": float(np.mean([t["simulation"]["speedup_mean"] for t in per])),
            "best_kept_orders": f"{sum(t['simulation']['best_kept_orders'] for t in per)}/{orders * len(per)}"}
           if orders else {}),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2))
        (out / "report.md").write_text(format_markdown(report))
        plot_r2(report, out / "r2_vs_tau.png")
        report["files"] = [str(out / f) for f in ("report.json", "report.md", "r2_vs_tau.png")]
    return report


_MODEL_NAMES = {"svr": "nu-SVR (RBF)", "gbt": "gradient-boosted trees"}
#: Models a pooled report puts beside the pooled one: the task's own, and the live stopper's prior.
_COMPARED = {"own_r2": "own models", "prior_r2": "prior alone"}


def format_markdown(report: dict[str, Any]) -> str:
    cfg = report["config"]
    lines = ["# Learning-curve prediction and early stopping", "",
             f"Sequential regression models ({_MODEL_NAMES[report.get('model', 'svr')]}, "
             f"{report.get('features', 'paper')} features), target `{report['target']}`; R^2 on a random half "
             f"of each task's full curves (trained on the other half, {report['repeats']} splits). "
             + (f"Early stopping simulated over {report['orders']} random orders: burn-in {cfg['burn_in']}, "
                f"Delta={cfg['confidence']}, delta={cfg['delta']}, top_n={cfg['top_n']}, retrain every "
                f"{cfg['retrain_every']}." if report["orders"] else "Early stopping not simulated."), ""]
    pooled = report.get("pooled", False)
    if pooled:
        lines[-1:] = ["R^2 columns: models pooled over every other task's comparable curves with each task's "
                      "context" + (" and each architecture's prior (how the other tasks rank it)"
                                   if cfg.get("arch_prior") else "")
                      + " (own: the task's curves alone, same splits; prior: the other tasks' curves alone, "
                      f"the task read through {cfg.get('pool_burn_in')} of its training curves, as the live stopper "
                      "reads it)." + (" The simulated stopper reads the prior." if report["orders"] else ""), ""]
    sm = report["summary"]
    compared = [k for k in _COMPARED if f"{k}_25pct_mean" in sm]
    rows = []
    for name, t in report["tasks"].items():
        s = t["simulation"]
        sim = [f"{s['speedup_mean']:.2f}x ({s['speedup_min']:.2f}-{s['speedup_max']:.2f})",
               f"{s['best_kept_orders']}/{s['orders']}", f"{s['stopped_mean']:.0f}"] if s else []
        r2s = [f"{t[f'r2_{p}pct']:.3f} ({t[f'tau_{p}pct']})" if f"r2_{p}pct" in t else "n/a" for p in FRACTIONS]
        beside = [f"{t[f'{k}_{p}pct']:.3f}" for k in compared for p in FRACTIONS]
        rows.append([name, str(t["num_curves"]), str(t["num_epochs"]), *r2s, *beside,
                     f"{t['last_seen_r2_25pct']:.3f}", *sim])
    heads = [f"{k.split('_')[0]} R^2 at {p}%" for k in compared for p in FRACTIONS]
    lines += markdown_table(["task", "curves", "epochs", "R^2 at 10% (tau)", "R^2 at 25% (tau)", "R^2 at 50% (tau)",
                             *heads, "last-seen R^2 at 25%",
                             *(("speedup (min-max)", "best kept", "stopped") if report["orders"] else ())], rows)
    means = [" / ".join(format(sm[f"{k}_{p}pct_mean"], ".3f") for p in FRACTIONS) for k in ("r2", *compared)]
    lines += ["", f"Mean over tasks: R^2 at 10/25/50% of the curve {means[0]}"
              + "".join(f" ({_COMPARED[k]}: {m})" for k, m in zip(compared, means[1:]))
              + (f"; simulated speedup {sm['speedup_mean']:.2f}x; best model fully trained in "
                 f"{sm['best_kept_orders']} orders" if report["orders"] else "") + ".", ""]
    first = next(iter(report["tasks"].values()))
    rows = [[str(tau)] + [f"{t['r2']['r2_mean'][j]:.3f} (last {t['r2']['last_seen_r2_mean'][j]:.2f})"
                          if j < len(t["r2"]["taus"]) else "" for t in report["tasks"].values()]
            for j, tau in enumerate(first["r2"]["taus"])]
    lines += ["## R^2 against observed epochs", ""] + markdown_table(["tau", *report["tasks"]], rows)
    if report["skipped_tasks"]:
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in report["skipped_tasks"].items())]
    return "\n".join(lines) + "\n"


def plot_r2(report: dict[str, Any], path: str | Path) -> None:
    """R^2 vs tau per task (SRM solid, last-seen-value dashed), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, t in report["tasks"].items():
        r2 = t["r2"]
        frac = np.asarray(r2["taus"]) / t["num_epochs"]
        line, = ax.plot(frac, r2["r2_mean"], marker="o", ms=3, label=f"{name} (SRM)")
        ax.plot(frac, r2["last_seen_r2_mean"], ls="--", color=line.get_color(), alpha=0.6)
    ax.axvline(0.25, color="grey", lw=0.8, ls=":")
    ax.set_ylim(-0.5, 1.0)
    ax.set_xlabel("fraction of the learning curve observed (tau / T)")
    ax.set_ylabel("R^2 of predicted final val. accuracy")
    ax.set_title("SRM (solid) vs last seen value (dashed)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
