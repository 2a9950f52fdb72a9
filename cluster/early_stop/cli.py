"""``nasdb curves evaluate``: learning-curve prediction and simulated early stopping on stored runs.

Plugged into ``nasdb`` with one line in ``nasdb/cli/_main.py``'s ``LAZY_COMMANDS``:
``"curves": "cluster.early_stop.cli:curves_group"``.
"""

from __future__ import annotations

import click


@click.group("curves")
def curves_group() -> None:
    """Learning-curve prediction and early stopping of child training (issue 8)."""


@curves_group.command("evaluate")
@click.option("--task", default=None, help="One task (default: every task with more than BURN_IN full curves).")
@click.option("--out", "out_dir", default="curves-report", show_default=True,
              type=click.Path(file_okay=False, allow_dash=True),
              help="Folder for report.json, report.md and r2_vs_tau.png (-: only print the report).")
@click.option("--orders", type=click.IntRange(min=0), default=10, show_default=True,
              help="Random orders of the early-stopping simulation (0: R^2 only).")
@click.option("--repeats", type=int, default=5, show_default=True, help="Random half/half splits for R^2 vs tau.")
@click.option("--burn-in", type=int, default=100, show_default=True, help="Full curves before the first stop.")
@click.option("--confidence", type=float, default=0.99, show_default=True,
              help="Delta: stop when P(final <= best - delta) >= this.")
@click.option("--delta", type=float, default=0.0, show_default=True, help="Margin below the best that still trains on.")
@click.option("--top-n", type=int, default=1, show_default=True, help="Compare with the n-th best final, not the best.")
@click.option("--retrain-every", type=int, default=25, show_default=True,
              help="Refit the regressors after this many new full curves (the simulation's cost).")
@click.option("--target", type=click.Choice(["final", "gain"]), default=None,
              help="Regress the final accuracy (paper) or the remaining gain (default: the config's).")
@click.option("--model", type=click.Choice(["svr", "gbt"]), default=None,
              help="Regressor: the paper's nu-SVR or gradient-boosted trees (default: the config's).")
@click.option("--features", type=click.Choice(["paper", "trend"]), default=None,
              help="The paper's features, or those plus slope/gain/extrapolations (default: the config's).")
@click.option("--search-trials", type=click.IntRange(min=0), default=12, show_default=True,
              help="Random hyperparameter candidates searched per model (0: the regressor's defaults).")
@click.option("--pool", is_flag=True,
              help="Also fit each task's models on every other task's comparable curves, each beside its task's "
                   "curve statistics (R^2 at 10/25/50% of the curve, next to the task's own models and the live "
                   "stopper's prior); the simulation then pools over the other tasks too.")
@click.option("--pool-burn-in", type=click.IntRange(min=5), default=20, show_default=True,
              help="With --pool: the task's own full curves before the pooled stopper's first stop.")
@click.option("--arch-prior/--no-arch-prior", default=True, show_default=True,
              help="With --pool: the pooled models also read how the other tasks rank each architecture (a ridge "
                   "on its one-hot encoding, cross-fitted across the pooled tasks).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of markdown.")
@click.pass_context
def evaluate_cmd(ctx: click.Context, task, out_dir, orders, repeats, burn_in, confidence, delta, top_n,
                 retrain_every, target, model, features, search_trials, pool, pool_burn_in, arch_prior, seed,
                 as_json) -> None:
    """R^2 of the predicted final accuracy against observed epochs, and the speedup of early
    stopping simulated over the stored runs (accelerating-nas-performance-prediction-baker.md Fig. 3, 4)."""
    import json

    from cluster.early_stop._curves_eval import evaluate_curves, format_markdown
    from cluster.early_stop._stopper import EarlyStopConfig
    from nasdb.cli.options import out_folder
    from nasdb.store import ExperimentStore

    root = (ctx.find_root().obj or {}).get("store_root")
    store = ExperimentStore(root)
    store.require()
    kwargs = {k: v for k, v in (("target", target), ("model", model), ("features", features)) if v}
    config = EarlyStopConfig(burn_in=burn_in, confidence=confidence, delta=delta, top_n=top_n,
                             retrain_every=retrain_every, seed=seed, search_trials=search_trials,
                             pool_burn_in=pool_burn_in, arch_prior=arch_prior, **kwargs)
    report = evaluate_curves(store, task, out_folder(out_dir, "curves-report"), config=config, repeats=repeats,
                             orders=orders, seed=seed, search_trials=search_trials, pool=pool,
                             progress=lambda msg: click.echo(msg, err=True))
    click.echo(json.dumps(report, indent=2) if as_json else format_markdown(report))
