"""The predictor's click commands (fit, evaluate, suggest, serve), shared by ``python -m predictor.*``
and the ``nasdb`` CLI, so each flag is defined once."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from nasdb.cli.options import copy_to_stdout, is_stdout, out_folder, task_list_option
from nasdb.errors import NasdbError
from predictor.config import (LANDMARK_MODES, LANDMARK_NOISE_RULES, LOSSES, OPTIMIZERS, TARGETS,
                              UNCERTAINTY_GAP_RULES, PredictorConfig, SuggestConfig)

_TARGET = click.option("--target", type=click.Choice(TARGETS), default="auto", show_default=True,
                       help="What the predictor fits per task: raw accuracy, its within-task quantile rank, or "
                            "auto (rank for imported benchmarks, raw otherwise).")
#: predictor.data.ENCODER_CHOICES, spelled out so that the help need not import numpy, pyarrow and scipy
META_ENCODERS = ("auto", "samples", "cells")
_META_ENCODER = click.option(
    "--meta-encoder", type=click.Choice(META_ENCODERS), default="auto", show_default=True,
    help="Meta-features from whole 64-feature rows (samples, the 8x8 digits) or from (value, label) cells of any "
         "width (cells); auto: cells when a task is not 64 features wide, else samples (or a warm start's).")
_LANDMARKS = click.option(
    "--landmarks", type=click.Choice(LANDMARK_MODES), default=None,
    help="With meta-features, rho also reads the task's landmarking descriptors (how well a linear model, 1-NN and "
         "a stump do on it); auto: with the cells meta encoder [auto, or the parent's].")


class _NumberOrRule(click.ParamType):
    """A finite number >= 0 or the name of one of ``rules``."""

    def __init__(self, what: str, rules: tuple[str, ...]):
        self.what, self.rules = what, rules
        self.name = "|".join((what.upper(), *(r.upper() for r in rules)))

    def convert(self, value, param, ctx):
        if value in self.rules:
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = -1.0
        if not 0 <= number < float("inf"):
            self.fail(f"{value!r} is neither a {self.what} >= 0 nor one of {', '.join(self.rules)}", param, ctx)
        return number


_LANDMARK_NOISE = click.option(
    "--landmark-noise", type=_NumberOrRule("std", LANDMARK_NOISE_RULES), default=None,
    help="Std of the Gaussian noise on the standardized landmarking descriptors while training, or silverman "
         "(the kernel bandwidth for the training tasks) [0, or the parent's].")
_UNCERTAINTY_GAP = click.option(
    "--uncertainty-gap", type=_NumberOrRule("gap", UNCERTAINTY_GAP_RULES), default=None,
    help="Ranking losses: target differences below it do not count as a pair; a number for every task (the "
         "paper's 0.01), or validation (each task's accuracy noise on its validation rows, at least 0.01) "
         f"[{PredictorConfig().uncertainty_gap}, or the parent's].")
_INCLUDE_STOPPED = click.option("--include-stopped", is_flag=True,
                                help="Also train on children stopped early (their accuracy is partial).")

_STORE = click.option("--store", "store_root", envvar="NASDB_STORE", required=True,
                      help="Store root: a local path or a filesystem URI [env NASDB_STORE].")
_CTX = {"help_option_names": ["-h", "--help"]}


def _open(store_root: str):
    from nasdb.store import ExperimentStore

    store = ExperimentStore(store_root)
    store.require()
    return store


def _finite(param: click.Parameter, value: float) -> float:
    """A float option's value, refused (as a usage error, before anything starts) if NaN."""
    if value != value:
        raise click.BadParameter(f"{value} is not a number", param=param)
    return value


def run_standalone(command: click.Command, argv: list[str] | None, prog_name: str) -> int:
    """Run ``command`` as ``python -m ...``: user errors (NasdbError) become one line and exit status 1."""
    try:
        command.main(args=argv, prog_name=prog_name, standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        click.echo(f"error: {e.format_message()}", err=True)
        return e.exit_code
    except NasdbError as e:  # anything else is a bug: its traceback shows
        click.echo(f"error: {e}", err=True)
        return 1
    return 0


def _script(command: click.Command, prog_name: str, *, log: bool = True):
    """The ``main(argv)`` of a ``python -m`` script that runs ``command`` (logging at INFO with ``log``)."""
    def main(argv: list[str] | None = None) -> int:
        if log:
            logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return run_standalone(command, argv, prog_name)

    main.__doc__ = f"``{prog_name}``: the same command as ``nasdb {command.name}``."
    return main


def _kv(**values) -> dict:
    return {k: v for k, v in values.items() if v is not None}


@click.command("fit", context_settings=_CTX)
@_STORE
@click.option("--loss", type=click.Choice(LOSSES), default=None,
              help=f"Training loss [default: {PredictorConfig().loss}, or the parent's].")
@task_list_option("--exclude-task", "exclude", help="Leave these tasks out.")
@task_list_option("--task", "--tasks", "tasks", help="Train only on these tasks.")
@click.option("--workers", type=int, default=2, show_default=True,
              help="Data-parallel Ray Train workers (0: Ray Train's local mode, in this process).")
@click.option("--steps", type=int, default=None, help="Optimizer steps per worker.")
@click.option("--no-meta-features", is_flag=True,
              help="Ablation: no task meta-features (z absent); needed for imported benchmarks (no samples).")
@_TARGET
@_INCLUDE_STOPPED
@_META_ENCODER
@_LANDMARKS
@_LANDMARK_NOISE
@_UNCERTAINTY_GAP
@click.option("--warm-start", metavar="PREDICTOR_ID", default=None, help="Continue from a previous checkpoint.")
@click.option("--seed", type=int, default=None)
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None)
@click.option("--learning-rate", type=float, default=None)
@click.option("--batch-size", type=int, default=None, help="Experiments per mini-batch.")
@click.option("--ensemble-size", type=int, default=None,
              help=f"Ensemble members K (their spread is the uncertainty) [{PredictorConfig().ensemble_size}].")
@click.option("--space-id", default=None, help="Search space to train on when the store holds several.")
@click.option("--json", "as_json", is_flag=True, help="Print the checkpoint metadata as JSON.")
def fit_command(store_root, loss, exclude, tasks, workers, steps, no_meta_features, target, include_stopped,
                meta_encoder, landmarks, landmark_noise, uncertainty_gap, warm_start, seed, optimizer, learning_rate,
                batch_size, ensemble_size, space_id, as_json):
    """Fit the task-aware predictor on the store with a Ray Train job (Algorithm 1).

    The checkpoint goes to <store>/predictors/<id>/ with its metadata; --warm-start continues
    from an earlier checkpoint when new tasks arrive instead of starting over.
    """
    from predictor.checkpoint import read_metadata
    from predictor.train import fit_predictor

    store = _open(store_root)
    base = (PredictorConfig.stored(read_metadata(store, warm_start)["predictor"]["args"]) if warm_start
            else PredictorConfig())
    changes = _kv(loss=loss, num_steps=steps, seed=seed, optimizer=optimizer, learning_rate=learning_rate,
                  batch_size=batch_size, ensemble_size=ensemble_size, landmarks=landmarks,
                  landmark_noise=landmark_noise, uncertainty_gap=uncertainty_gap)
    if no_meta_features:
        changes["use_meta_features"] = False
    config = base.replace(**changes, target=target, include_stopped=include_stopped)
    pid = fit_predictor(store, config, exclude_tasks=exclude or (), tasks=tasks or None, workers=workers,
                        warm_start=warm_start, space_id=space_id, meta_encoder=meta_encoder)
    metadata = read_metadata(store, pid)
    if as_json:
        click.echo(json.dumps(metadata, indent=2, sort_keys=True))
        return
    m = metadata["metrics"]
    rho = m.get("mean_train_spearman")
    click.echo(f"predictor {pid}: loss={metadata['loss']} tasks={len(metadata['tasks'])} "
               f"final_train_loss={m['final_train_loss']:.4f} "
               f"mean_train_spearman={'nan' if rho is None else format(rho, '.3f')}")
    args = metadata["predictor"]["args"]
    if args.get("use_meta_features", True):
        why = metadata.get("meta_encoder_choice")
        landmarks = "on" if PredictorConfig.stored(args).uses_landmarks else "off"
        click.echo(f"meta_encoder={args.get('meta_encoder', 'samples')}{f' ({why})' if why else ''} "
                   f"landmarks={landmarks}")


@click.command("evaluate", context_settings=_CTX)
@_STORE
@click.option("--loto", is_flag=True, help="Leave-one-task-out ranking evaluation (the default mode).")
@click.option("--zero-shot", is_flag=True,
              help="Per held-out task: fit without it, suggest, train the suggestion and report its percentile among "
                   "the task's stored architectures, next to the baseline picks.")
@click.option("--baselines", default=None, metavar="NAMES",
              help="Comma-separated baselines (predictor/baselines.py), or none [--loto: gbm,ridge; "
                   "--zero-shot: portfolio,gbm].")
@click.option("--loss", "losses", multiple=True, type=click.Choice(LOSSES),
              help="Loss to evaluate (repeatable) [--loto: all; --zero-shot: the predictor's default].")
@click.option("--repeats", type=int, default=None, help="Fits per task and setting [3]; --zero-shot fits once.")
@click.option("--seeds", type=int, default=2, show_default=True,
              help="--zero-shot: training seeds of each pick that is not a stored architecture.")
@click.option("--meta", type=click.Choice(["both", "with", "without"]), default="both", show_default=True,
              help="Meta-features settings to compare (--zero-shot: both means with).")
@click.option("--no-meta-features", is_flag=True, help="Same as --meta without (imported benchmarks have no samples).")
@_TARGET
@_INCLUDE_STOPPED
@_META_ENCODER
@_LANDMARKS
@_LANDMARK_NOISE
@_UNCERTAINTY_GAP
@task_list_option("--task", "--tasks", "tasks", help="Only these tasks [every task in the store].")
@task_list_option("--held-out", "held_out", help="Hold out only these tasks, each fit still training on "
                                                  "all the others [each task in turn].")
@click.option("--steps", type=int, default=None, help="Optimizer steps per fit.")
@click.option("--batch-size", type=int, default=None, help="Experiments per mini-batch.")
@click.option("--ensemble-size", type=int, default=None, help="Ensemble members K [5].")
@click.option("--processes", type=int, default=1, show_default=True, help="Parallel fitting processes.")
@click.option("--out", "out_dir", default=None, help="Report folder (CSV + markdown) [reports/loto, reports/zero-shot].")
@click.option("--json", "as_json", is_flag=True, help="Print the report rows as JSON.")
def evaluate_command(store_root, loto, zero_shot, baselines, losses, repeats, seeds, meta, no_meta_features, target,
                     include_stopped, meta_encoder, landmarks, landmark_noise, uncertainty_gap, tasks, held_out, steps,
                     batch_size, ensemble_size, processes, out_dir, as_json):
    """Spearman and Pearson per held-out task for each loss, with and without meta-features
    (paper Table 2, ranking paper Table 1), next to each task's seed-to-seed noise ceiling and the
    task-agnostic baselines; or, with --zero-shot, the percentile of Algorithm 2's suggestion."""
    from predictor.config import PredictorConfig

    if loto and zero_shot:
        raise click.UsageError("--loto and --zero-shot are two reports: pass one")
    if no_meta_features and meta == "with":
        raise click.UsageError("--no-meta-features contradicts --meta with")
    if processes < 1:
        raise click.BadParameter(f"must be >= 1, got {processes}", param_hint="--processes")
    store = _open(store_root)
    config = PredictorConfig(**_kv(num_steps=steps, batch_size=batch_size, ensemble_size=ensemble_size,
                                   landmarks=landmarks, landmark_noise=landmark_noise,
                                   uncertainty_gap=uncertainty_gap),
                             target=target, include_stopped=include_stopped)
    if zero_shot:
        from predictor.evaluate_zero_shot import DEFAULT_BASELINES, evaluate_zero_shot

        if repeats not in (None, 1):
            raise click.BadParameter(f"--zero-shot fits once per task, got {repeats}", param_hint="--repeats")
        if len(losses) > 1:
            raise click.UsageError(f"--zero-shot evaluates one predictor: pass at most one --loss, got {list(losses)}")
        config = config.replace(**_kv(loss=losses[0] if losses else None),
                                use_meta_features=not (no_meta_features or meta == "without"))
        folder = out_folder(out_dir, "reports/zero-shot")
        rows = evaluate_zero_shot(store, folder, config=config, tasks=tasks or None,
                                  processes=processes, seeds=seeds, meta_encoder=meta_encoder,
                                  baselines=DEFAULT_BASELINES if baselines is None else baselines,
                                  held_out=held_out or None)
        _echo_report(rows, as_json, Path(folder, "zero_shot.md"))
        return
    from predictor.baselines import RANKERS
    from predictor.evaluate import evaluate_loto

    settings = {"both": (True, False), "with": (True,), "without": (False,)}["without" if no_meta_features else meta]
    folder = out_folder(out_dir, "reports/loto")
    rows = evaluate_loto(store, losses=losses or LOSSES, repeats=3 if repeats is None else repeats,
                         meta_features=settings, out_dir=folder, config=config, tasks=tasks or None,
                         processes=processes, meta_encoder=meta_encoder,
                         baselines=RANKERS if baselines is None else baselines, held_out=held_out or None)
    _echo_report(rows, as_json, Path(folder, "loto.md"))


def _echo_report(rows: list[dict], as_json: bool, markdown: Path) -> None:
    """Print an evaluation's rows as JSON, or the markdown report it wrote, which names the
    configuration its fits used (the encoder and label width resolved for the store, not the flags)."""
    click.echo(json.dumps(rows, indent=1, default=str) if as_json else markdown.read_text(), nl=as_json)


@click.command("embeddings", context_settings=_CTX)
@_STORE
@click.option("--predictor", "predictor_id", default=None, help="Predictor id [the latest].")
@task_list_option("--extra-task", "extra", help="Also plot these tasks, starred (e.g. a held-out one).")
@click.option("--batches", type=int, default=10, show_default=True, help="Random sample batches per task.")
@click.option("--out", "out_dir", default="reports/embeddings", show_default=True,
              help="Output folder; - writes the PCA picture to stdout as PNG.")
def embeddings_command(store_root, predictor_id, extra, batches, out_dir):
    """PCA and t-SNE pictures of the learned task meta-features z, 10 sample batches per task (paper Fig. 4)."""
    from predictor.embeddings_plot import plot_predictor_embeddings

    paths = plot_predictor_embeddings(_open(store_root), out_folder(out_dir, "reports/embeddings"), predictor_id,
                                      extra_tasks=extra or (), n_batches=batches)
    if is_stdout(out_dir):
        copy_to_stdout(str(paths[0]))
        return
    for path in paths:
        click.echo(str(path))


@click.command("suggest", context_settings=_CTX)
@_STORE
@click.option("--task", default=None, help="A task of the store (built-in or registered).")
@click.option("--data", type=click.Path(dir_okay=False), default=None, help="A CSV or Parquet file of a new task.")
@click.option("--label", default=None, help="The label column of --data.")
@click.option("--predictor", "predictor_id", default=None, help="Predictor id [the latest].")
@click.option("--train", is_flag=True, help="Train the suggestion and store its row (agent zero-shot).")
@click.option("--max-iters", "k_max_iters", type=int, default=None, help=f"Gradient-ascent steps [{SuggestConfig().k_max_iters}].")
@click.option("--kappa", type=float, default=None,
              help=f"Pick the candidate with the best mean - kappa * std, std of its gap to the portfolio pick "
                   f"[{SuggestConfig().kappa}].")
@click.option("--json", "as_json", is_flag=True, help="Print the suggestion as JSON.")
def suggest_command(store_root, task, data, label, predictor_id, train, k_max_iters, kappa, as_json):
    """Suggest an architecture for a task before training any model on it (Algorithm 2)."""
    from predictor.zero_shot import format_suggestion, suggest_for_cli

    config = SuggestConfig(**_kv(k_max_iters=k_max_iters, kappa=kappa))
    result = suggest_for_cli(_open(store_root), task=task, data=data, label=label, predictor_id=predictor_id,
                             train=train, config=config)
    click.echo(format_suggestion(result, as_json=as_json))


@click.command("serve", context_settings=_CTX)
@_STORE
@click.option("--port", type=click.IntRange(1, 65_535), default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Bind address of the HTTP proxy.")
@click.option("--replicas", type=click.IntRange(1, 1_024), default=1, show_default=True)
@click.option("--predictor", "predictor_id", default=None, metavar="ID|ALIAS|latest",
              help="A predictor id (pinned), an alias to follow (swaps when promoted), or 'latest' (follows new "
                   "fits) [the champion alias, else the newest predictor, pinned].")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the bearer token [else $NASDB_API_TOKEN].")
@click.option("--allow-unauthenticated", is_flag=True, help="No token: only allowed on a loopback host.")
@click.option("--refresh-seconds", type=click.FloatRange(min=0, max=86_400), default=0.0, show_default=True,
              callback=lambda ctx, param, v: _finite(param, v),
              help="Check the followed alias or 'latest' this often (0: an alias every 2 s, 'latest' never).")
def serve_command(store_root, port, host, replicas, predictor_id, token_file, allow_unauthenticated, refresh_seconds):
    """Serve suggestions over HTTP with Ray Serve until Ctrl-C (POST /v1/suggest, /v1/predict)."""
    from predictor.server import run_server

    def ready(info) -> None:
        click.echo(f"serving predictor {info.predictor_id}{f' ({predictor_id})' if predictor_id else ''} at {info.url} ({info.replicas} replica(s), "
                   f"{'token required' if info.authenticated else 'no token'}); OpenAPI at {info.url}/openapi.json")

    run_server(store_root, on_ready=ready, port=port, host=host, replicas=replicas, predictor_id=predictor_id,
               token_file=token_file, allow_unauthenticated=allow_unauthenticated, refresh_seconds=refresh_seconds)


fit_main = _script(fit_command, "python -m predictor.train")
evaluate_main = _script(evaluate_command, "python -m predictor.evaluate")
embeddings_main = _script(embeddings_command, "python -m predictor.embeddings_plot", log=False)
