"""``nasdb suggest``: a suggestion for a task of the store or a data file, optionally trained for real.

With ``train=True`` the suggested architecture is trained on the task with the default child
recipe (cluster.child.train_child) and the row goes into the store with agent ``zero-shot``,
so a suggestion is judged by its real test accuracy next to every other agent's rows
(task-aware-performance-prediction.md Sec. 5.3, Tables 3-4: the proposed method trains no
child model on the test task before suggesting).
"""

from __future__ import annotations

import json
import math
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasdb.errors import ArgumentError
from predictor.checkpoint import load_predictor
from predictor.suggest import SuggestConfig, Suggestion, engine_for

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

AGENT = "zero-shot"


def _task_name_for_file(path: str | Path) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem).strip("._") or "task"
    return f"user_{stem}"[:64]


def load_cli_task(store: ExperimentStore, *, task: str | None = None, data: str | Path | None = None,
                  label: str | None = None, name: str | None = None) -> Any:
    """The task of ``--task NAME`` or ``--data FILE --label COL`` (exactly one), as a nasdb Task."""
    from nasdb.tasks import task_from_file

    if (task is None) == (data is None):
        raise ArgumentError("give exactly one of --task NAME or --data FILE (with --label COL)")
    if task is not None:
        if label is not None:
            raise ArgumentError("--label goes with --data, not with --task")
        return store.task(task)
    if label is None:
        raise ArgumentError(f"--data {str(data)!r} needs --label COL naming the label column")
    return task_from_file(name or _task_name_for_file(data), data, label)


def record_from_result(task: str, space: Any, architecture: Any, seed: int, recipe: Any, result: Any, *,
                       agent: str, run_id: str, worker: str, device: str = "cpu", task_fingerprint: str | None = None,
                       bank_fingerprint: str | None = None) -> Any:
    """The store row of one trained child (a failed training stays a row with status "failed"); the
    fingerprints of the task data and embedding bank it was trained on go into the row and its id."""
    from nasdb.store import ExperimentRecord

    status, error = result.status, result.error
    if status == "ok" and not (math.isfinite(result.val_accuracy) and math.isfinite(result.test_accuracy)):
        status, error = "failed", "non-finite accuracy"
    return ExperimentRecord(
        task=task, space_id=space.space_id, architecture=[int(a) for a in architecture], seed=int(seed),
        recipe=recipe.to_dict(), agent=agent, run_id=run_id, val_accuracy=float(result.val_accuracy),
        test_accuracy=float(result.test_accuracy), val_curve=[float(v) for v in result.val_curve],
        epochs=int(result.epochs), train_seconds=float(result.train_seconds), num_params=int(result.num_params),
        device=device, worker=worker, status=status, error=error, task_fingerprint=task_fingerprint,
        bank_fingerprint=bank_fingerprint)


def train_suggestion(store: ExperimentStore, task: Any, suggestion: Suggestion, space: Any, *, recipe: Any = None,
                     seed: int = 0) -> dict[str, Any]:
    """Train the suggested architecture on ``task`` and append its row (agent ``zero-shot``).

    A user task from a file is registered in the store first (a row must name a task the store
    can load); a name already registered is reused only when it holds the same data.
    """
    from cluster.child import TrainRecipe, default_bank, train_child

    recipe = recipe or TrainRecipe()
    if task.source == "user":
        _register(store, task)
    bank = default_bank()
    result = train_child(task, space, suggestion.architecture, recipe=recipe, seed=seed, bank=bank)
    record = record_from_result(task.name, space, suggestion.architecture, seed, recipe, result, agent=AGENT,
                                run_id=f"zero-shot-{suggestion.predictor_id}", worker=f"suggest-{socket.gethostname()}",
                                task_fingerprint=task.fingerprint(), bank_fingerprint=bank.fingerprint())
    store.save_space(space)
    with store.writer(f"zero-shot-{task.name}") as writer:
        writer.append(record)
    return {"experiment_id": record.experiment_id, "status": record.status, "error": record.error,
            "val_accuracy": _json_float(record.val_accuracy), "test_accuracy": _json_float(record.test_accuracy),
            "epochs": record.epochs, "train_seconds": record.train_seconds, "num_params": record.num_params,
            "recipe": recipe.to_dict(), "seed": seed}


def _register(store: ExperimentStore, task: Any) -> None:
    if task.name in store.registered_tasks():
        if store.task(task.name).fingerprint() != task.fingerprint():
            raise ArgumentError(f"task {task.name!r} is already registered in the store with other data; "
                                f"rename the file or register it under another name")
        return
    store.save_task(task)


def _json_float(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _sample_less(store: ExperimentStore, task: str) -> bool:
    """Whether ``task`` is a registered task without samples (an imported tabular benchmark); reads metadata only."""
    return task in store.registered_tasks() and store.task_metadata(task).get("source") == "benchmark"


def suggest_for_cli(store: ExperimentStore, *, task: str | None = None, data: str | Path | None = None,
                    label: str | None = None, predictor_id: str | None = None, train: bool = False,
                    config: SuggestConfig | None = None, recipe: Any = None, seed: int = 0,
                    name: str | None = None) -> dict[str, Any]:
    """Everything ``nasdb suggest`` prints, as one JSON-able dict.

    Keys: ``task``, ``source`` ("store" or the file), the suggestion's fields (predictor_id,
    architecture, description, score, candidates, nearest_tasks, far_from_training, ...), and
    with ``train=True`` a ``trained`` dict with the real val/test accuracy of the row written.
    A task without samples (an imported benchmark) takes a predictor without meta-features and
    cannot be trained: its configurations' values are in the table (``nasdb benchmark-report``).
    """
    if task is not None and _sample_less(store, task):
        if train:
            raise ArgumentError(f"task {task!r} is an imported tabular benchmark: there is nothing to train, the value "
                                f"of every configuration is in the table (see nasdb benchmark-report)")
        the_task = None
    else:
        the_task = load_cli_task(store, task=task, data=data, label=label, name=name)
    checkpoint = load_predictor(store, predictor_id)
    engine = engine_for(checkpoint, store)
    if task is not None:
        z = engine.task_z_or_embed(store, task)
    else:  # a table of any width: its preprocessing as for `nasdb tasks add` (predictor/tables.py)
        from predictor.tables import meta_samples

        x, y = meta_samples(the_task, checkpoint.config) if engine.use_meta_features else (None, None)
        z = engine.embed(x, y, where=f"--data {str(data)!r}")
    suggestion = engine.suggest_z(z, config)
    out = {"task": task if the_task is None else the_task.name, "source": "store" if task is not None else str(data),
           "in_training_set": (task if the_task is None else the_task.name) in checkpoint.tasks,
           **suggestion.to_dict()}
    if train:
        out["trained"] = train_suggestion(store, the_task, suggestion, checkpoint.space, recipe=recipe, seed=seed)
    return out


def held_out_suggestions(store: ExperimentStore, held_out: str, data: Any, config: Any, *, repeats: int = 1,
                         suggest_config: SuggestConfig | None = None,
                         on_fit: Any = None) -> list[dict[str, Any]]:
    """Zero-shot suggestions for a held-out task (Sec. 5.3 on a table): per repeat, fit without it, suggest.

    ``data``: a ``predictor.data.TrainingData`` holding ``held_out`` and the training tasks
    (for an imported benchmark, loaded with ``use_meta_features=False``); repeat ``r`` fits
    in-process (Algorithm 1, no Ray) with seed ``config.seed + r`` on every task but
    ``held_out`` and runs Algorithm 2 (meta-features of the held-out task's samples when the
    predictor has them). No child model of ``held_out`` is trained or read. Returns one dict
    per repeat: seed, architecture, description, score, candidates (distinct ascent results, best
    first: the suggestion and its runner-ups), fit and suggest seconds, final train loss.
    ``on_fit(repeat, engine, z)`` is called with each repeat's engine (a search reuses the fit).
    """
    import time

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ArgumentError(f"`repeats >= 1` must hold, but got repeats={repeats!r}.")
    out = []
    for r in range(repeats):
        cfg = config.replace(seed=config.seed + r)
        start = time.perf_counter()
        engine, z, history = fit_held_out(store, held_out, data, cfg)
        start += history.seconds
        if on_fit is not None:
            on_fit(r, engine, z)
        s = engine.suggest_z(z, suggest_config)
        out.append({"task": held_out, "seed": cfg.seed, "architecture": s.architecture, "description": s.description,
                    "score": s.score, "candidates": [c.architecture for c in s.candidates],
                    "final_train_loss": history.final_loss, "fit_seconds": history.seconds,
                    "suggest_seconds": time.perf_counter() - start})
    return out


def fit_held_out(store: ExperimentStore, held_out: str, data: Any, config: Any) -> tuple[Any, Any, Any]:
    """Fit in-process on every task of ``data`` but ``held_out``; -> (SuggestionEngine, z of held_out, FitHistory).

    The engine is Algorithm 2 over the fitted predictor (an unsaved checkpoint named
    ``loto-<task>-seed<seed>``); ``z`` is the held-out task's meta-features from its samples,
    None for a predictor without them. No child model of ``held_out`` is read.
    """
    from predictor.checkpoint import PredictorCheckpoint
    from predictor.fit import fit_in_process
    from predictor.suggest import SuggestionEngine

    if held_out not in data.tasks:
        raise ArgumentError(f"held-out task {held_out!r} is not in the training data ({', '.join(data.task_names)})")
    train, target = data.without(held_out), data.tasks[held_out]
    model, history = fit_in_process(train, config)
    checkpoint = PredictorCheckpoint(
        predictor_id=f"loto-{held_out}-seed{config.seed}", model=model, config=config, space=data.space,
        metadata={"tasks": train.task_names, "data_snapshot": train.snapshot(), "excluded_tasks": [held_out]})
    engine = SuggestionEngine(checkpoint, store, data=train)
    z = engine.embed(target.x, target.y) if config.use_meta_features else None
    return engine, z, history


def format_suggestion(result: dict[str, Any], *, as_json: bool = False) -> str:
    """Human-readable text (or JSON with ``as_json``) of ``suggest_for_cli``'s result."""
    if as_json:
        return json.dumps(result, indent=2, sort_keys=True)
    lines = [f"task {result['task']} (predictor {result['predictor_id']})"]
    if result.get("in_training_set"):
        lines.append("  note: this task is one of the predictor's training tasks")
    near = ", ".join(f"{n['task']} ({n['distance']:.3f})" for n in result["nearest_tasks"][:3])
    if near:
        lines.append(f"  nearest training tasks: {near}")
    if result.get("far_from_training"):
        lines.append(f"  WARNING: the task lies far from every training task (distance > "
                     f"{result['far_threshold']:.3f}); the suggestion is an extrapolation")
    desc = " ".join(f"{k}={v}" for k, v in result["description"].items())
    lines.append(f"  suggested: {desc}")
    spread = "" if result.get("std") is None else f" ± {result['std']:.4f} (lower bound {result['lcb']:.4f})"
    lines.append(f"  architecture: {result['architecture']}  predicted score {result['score']:.4f}{spread}"
                 f"  [{result.get('pick_source', 'ascent')}]")
    lines.append(f"  gradient ascent: {result['iterations']} steps, {len(result['candidates'])} distinct candidates, "
                 f"{result['seconds']:.2f}s")
    for c in result["candidates"][1:4]:
        spread = "" if c.get("std") is None else f" ± {c['std']:.4f}"
        lines.append(f"    runner-up {c['architecture']} score {c['score']:.4f}{spread} [{c.get('source', 'ascent')}] "
                     f"(from {c['start_task'] or 'global top'})")
    trained = result.get("trained")
    if trained:
        if trained["status"] == "ok":
            lines.append(f"  trained ({trained['epochs']} epochs, {trained['train_seconds']:.1f}s): "
                         f"val accuracy {trained['val_accuracy']:.4f}, test accuracy {trained['test_accuracy']:.4f}")
        else:
            lines.append(f"  training failed: {trained['error']}")
        lines.append(f"  stored as experiment {trained['experiment_id']} (agent {AGENT})")
    return "\n".join(lines)


__all__ = ["AGENT", "fit_held_out", "format_suggestion", "held_out_suggestions", "load_cli_task", "record_from_result",
           "suggest_for_cli", "train_suggestion"]
