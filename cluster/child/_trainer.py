"""The trainer actor of ``populate``: trains chunks of child models and writes their rows.

Each actor owns its store writer, so result rows go straight from the actor to the store;
the driver only sees a small :class:`ChunkAck` per chunk. A row is durable once the chunk's
ack is sent (the writer flushes after every chunk); experiment ids are deterministic, so a
chunk retried after its actor died skips the ids that already reached the store.

With early stopping (accelerating-nas-performance-prediction-baker.md Sec. 3) the actor is
given the job's shared curve-predictor actor (cluster/early_stop/_actor.py) and trains with one
``ActorEarlyStopper`` per task as the epoch observer: a stopped child's row holds the epochs
it ran, their curve, ``stopped_early`` and the predicted final accuracy.
"""

from __future__ import annotations

import copy
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: Child errors carried back in an ack, at most (the rows hold all of them).
_MAX_ACK_ERRORS = 3


@dataclass(frozen=True)
class WorkItem:
    """One planned experiment: train ``architecture`` on ``task`` with ``seed``."""

    task: str
    index: int  # position in the task's plan
    architecture: tuple[int, ...]
    seed: int
    experiment_id: str


@dataclass
class ChunkAck:
    """What an actor reports for a finished chunk: counts and ids, never the rows."""

    chunk_id: int
    task: str
    worker: str
    device: str = "cpu"  # where the chunk trained
    ok_ids: list[str] = field(default_factory=list)
    failed_ids: list[str] = field(default_factory=list)
    recovered_ok_ids: list[str] = field(default_factory=list)  # already in the store (retry)
    recovered_failed_ids: list[str] = field(default_factory=list)
    best_val_accuracy: float | None = None  # over children trained to the end
    stopped: int = 0  # ok children stopped early
    epochs_saved: int = 0  # epochs the stopped children did not train
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    early_stop_error: str | None = None  # set when this actor had to turn early stopping off
    metrics: dict[str, dict] = field(default_factory=dict)  # filled by an ``on_rows`` hook, e.g. search's

    @property
    def rows(self) -> int:
        return len(self.ok_ids) + len(self.failed_ids) + len(self.recovered_ok_ids) + len(self.recovered_failed_ids)


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:500]


class GuardedObserver:
    """Wraps a trainer's epoch observer so that a broken curve predictor (its actor died, or it
    rejected a call) turns early stopping off for this actor instead of failing children: the
    rows are then complete, only the saving is lost. ``error`` says why it was turned off."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.error: str | None = None
        self.ready = False  # the last rule fetched can stop children (burn-in is over)

    def _off(self, e: BaseException) -> None:
        if self.error is None:
            self.error = f"early stopping turned off on this trainer: {_error_text(e)}"

    def decide_many(self, curves: Any, features: Any) -> Any:
        from cluster.early_stop import StopDecision

        if self.error is None:
            try:
                return self.inner.decide_many(curves, features)
            except Exception as e:  # noqa: BLE001 - see the class docstring
                self._off(e)
        n, tau = np.shape(curves)
        return StopDecision(tau, np.zeros(n, dtype=bool), np.full(n, math.nan), np.full(n, math.nan))

    def static_features(self, space: Any, architectures: Any, num_params: Any, recipe: Any) -> np.ndarray:
        """The inner observer's static features; the model features alone once it is off (it then
        stops nothing, so no model reads them)."""
        from cluster.child._observer import observer_features
        from cluster.early_stop import model_features

        if self.error is None:
            try:
                return observer_features(self.inner, space, architectures, num_params, recipe)
            except Exception as e:  # noqa: BLE001
                self._off(e)
        return model_features(space, architectures, num_params, recipe)

    def report_complete(self, curves: Any, features: Any) -> None:
        if self.error is None:
            try:
                self.inner.report_complete(curves, features)
            except Exception as e:  # noqa: BLE001
                self._off(e)

    def refresh(self, timeout: float) -> None:
        """Fetch the predictor's newest stop rule, waiting up to ``timeout`` seconds (epochs refresh
        it without waiting, at most once a second: a whole chunk of tiny children may take less)."""
        if self.error is None:
            try:
                rule = self.inner.refresh(block=True, timeout=timeout)
                self.ready = rule is not None and rule.ready
            except Exception as e:  # noqa: BLE001
                self._off(e)

    def flush(self, timeout: float | None = None) -> None:
        if self.error is None:
            try:
                self.inner.flush(timeout=timeout)
            except Exception as e:  # noqa: BLE001
                self._off(e)


class ChildTrainer:
    """Trains chunks of one task's architectures at once; a plain class, made remote by the pool.

    ``threads`` bounds torch's intra-op threads (1 per CPU the actor holds); ``device`` is
    "cuda" only when Ray gave the actor a GPU and torch sees one, else "cpu". With
    ``retry_failed`` a retried chunk skips only ids that have an ok row. ``bank`` is the
    fitted embedding bank (default: fit ``default_bank()`` here, ~10 s per process);
    ``task_refs`` maps task names to ObjectRefs of tasks the driver already loaded (others
    are loaded with ``store.task``), so a replacement actor starts in about a second.
    ``early_stop`` is the handle of the job's curve-predictor actor (None: train every child to
    the end); :meth:`close` waits until the complete curves this actor reported reached it.
    ``on_rows(items, results, ack)``, a picklable function, runs after a chunk's rows are
    flushed: the extension point for what a caller needs in the ack besides the counts.
    """

    def __init__(self, store_root: str, space_json: str, recipe: dict, *, worker: str, agent: str,
                 run_id: str, threads: int = 1, use_gpu: bool = False, retry_failed: bool = False,
                 bank: Any = None, task_refs: dict[str, Any] | None = None, early_stop: Any = None,
                 on_rows: Callable[[list[WorkItem], list, ChunkAck], None] | None = None):
        import torch

        from cluster.child._child import TrainRecipe
        from nasdb.space import SearchSpace
        from nasdb.store import ExperimentStore

        torch.set_num_threads(max(1, int(threads)))
        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        self.worker = worker
        self.agent = agent
        self.run_id = run_id
        self.retry_failed = retry_failed
        self.store = ExperimentStore(store_root)
        self.space = SearchSpace.from_json(space_json)
        self.recipe_dict = dict(recipe)
        self.recipe = TrainRecipe.from_dict(self.recipe_dict)
        self._writer_seq = 0
        self.writer = self._new_writer()
        self._tasks: dict[str, Any] = {}
        self._task_refs = dict(task_refs or {})
        self.bank = bank
        self._bank_fp: str | None = None  # the bank's fingerprint, computed once
        self.early_stop = early_stop
        self.on_rows = on_rows
        self._observers: dict[str, GuardedObserver] = {}  # task -> its ActorEarlyStopper, guarded
        self._warm_up()

    def _new_writer(self):
        name = self.worker if self._writer_seq == 0 else f"{self.worker}.{self._writer_seq}"
        self._writer_seq += 1
        # Flushing is explicit, once per chunk (an ack means the chunk's rows are published).
        return self.store.writer(name, flush_rows=1_000_000, flush_seconds=None)

    # -- remote methods ------------------------------------------------------------------
    def info(self) -> dict:
        """Where this actor runs; the pool calls it first, which also waits for __init__."""
        return {"worker": self.worker, "pid": os.getpid(), "host": socket.gethostname(), "device": self.device}

    def train_chunk(self, task_name: str, items: list[WorkItem], chunk_id: int, check_store: bool) -> ChunkAck:
        """Train ``items`` (all of ``task_name``), write one row each, flush, and ack.

        ``check_store`` (set on retries) first drops the ids a previous attempt already wrote.
        """
        start = time.perf_counter()
        ack = ChunkAck(chunk_id, task_name, self.worker, self.device)
        if check_store:
            items = self._drop_present(task_name, items, ack)
        if items:
            task = self._task(task_name)
            results = self._train(task, items)
            observer = self._observers.get(task_name)
            ack.early_stop_error = observer.error if observer is not None else None
            try:
                self._write(items, results, ack, task.fingerprint())
            except BaseException:
                self.writer = self._new_writer()  # drop the failed attempt's buffered rows: the retry rewrites them
                raise
            if self.on_rows is not None:
                self.on_rows(items, results, ack)
        ack.seconds = time.perf_counter() - start
        return ack

    def lookup(self, experiment_id: str) -> dict | None:
        """The stored row of ``experiment_id`` (for a retried item whose row a lost attempt wrote), or None."""
        try:
            return self.store.experiment(experiment_id)
        except KeyError:
            return None

    def close(self) -> None:
        """Send the last complete curves to the curve predictor (best effort), then close the writer."""
        try:
            for observer in self._observers.values():
                observer.flush(timeout=60)
        finally:
            self.writer.close()

    # -- internals -----------------------------------------------------------------------
    @staticmethod
    def _warm_up() -> None:
        """Pay torch's one-time optimizer import (seconds) before the pool hands out a chunk."""
        import torch

        from cluster.child._child import make_adam

        make_adam([torch.zeros(1, requires_grad=True)], 1e-3)

    def _task(self, name: str):
        if name not in self._tasks:
            if name in self._task_refs:
                import ray

                # A private copy: object-store arrays are read-only, which torch.from_numpy warns about.
                self._tasks[name] = copy.deepcopy(ray.get(self._task_refs[name]))
            else:
                self._tasks[name] = self.store.task(name)
        return self._tasks[name]

    def _observer(self, task_name: str) -> Any:
        """The epoch observer of ``task_name``'s children: None without early stopping."""
        if self.early_stop is None:
            return None
        if task_name not in self._observers:
            from cluster.early_stop import ActorEarlyStopper

            self._observers[task_name] = GuardedObserver(ActorEarlyStopper(self.early_stop, task_name))
            self._observers[task_name].refresh(timeout=30)  # a seeded predictor stops from the first chunk on
        return self._observers[task_name]

    def _drop_present(self, task_name: str, items: list[WorkItem], ack: ChunkAck) -> list[WorkItem]:
        present = self.store.done_ids(task_name, status="ok" if self.retry_failed else None)
        wanted = {i.experiment_id for i in items}
        if not present & wanted:
            return items
        ok = self.store.done_ids(task_name, status="ok")
        for i in items:
            if i.experiment_id in present:
                (ack.recovered_ok_ids if i.experiment_id in ok else ack.recovered_failed_ids).append(i.experiment_id)
        return [i for i in items if i.experiment_id not in present]

    def _bank_fingerprint(self) -> str:
        if self._bank_fp is None:
            if self.bank is None:
                from cluster.child._embeddings import default_bank

                self.bank = default_bank()
            self._bank_fp = self.bank.fingerprint()
        return self._bank_fp

    def _train(self, task, items: list[WorkItem]) -> list:
        from cluster.child._batched import train_children
        from cluster.child._child import ChildResult, train_child
        from cluster.child._embeddings import default_bank

        if self.bank is None:
            self.bank = default_bank()

        archs = np.array([i.architecture for i in items], dtype=np.int64)  # (N, D)
        seeds = np.array([i.seed for i in items], dtype=np.int64)  # (N,)
        observer = self._observer(items[0].task)
        extra = {} if observer is None else {"observer": observer}
        if observer is not None:  # the newest rule at each chunk's start; wait briefly only during the burn-in
            observer.refresh(timeout=0.0 if observer.ready else 0.2)
        try:
            results = train_children(task, self.space, archs, recipe=self.recipe, seeds=seeds, device=self.device,
                                     bank=self.bank, **extra)
            if len(results) == len(items):
                return results
        except Exception:  # one bad child must not sink its chunk: fall back to one at a time
            pass
        out = []
        for item in items:
            t0 = time.perf_counter()
            try:
                out.append(train_child(task, self.space, np.array(item.architecture), recipe=self.recipe,
                                       seed=item.seed, device=self.device, bank=self.bank, **extra))
            except Exception as e:  # recorded as a failed experiment, the chunk goes on
                out.append(ChildResult.failed(_error_text(e), seconds=time.perf_counter() - t0))
        return out

    def _write(self, items: list[WorkItem], results: list, ack: ChunkAck, task_fingerprint: str) -> None:
        """One row per item, recording the fingerprints of the task data and embedding bank it was
        trained on (part of the id: a plan made for other data does not match, and is refused)."""
        from nasdb.store import ExperimentRecord

        bank_fingerprint = self._bank_fingerprint()
        records = []
        for item, res in zip(items, results):
            status, error = res.status, res.error
            if status == "ok" and not (math.isfinite(res.val_accuracy) and math.isfinite(res.test_accuracy)):
                status, error = "failed", "non-finite accuracy"
            stopped, predicted = stop_fields(res)
            rec = ExperimentRecord(
                task=item.task, space_id=self.space.space_id, architecture=list(item.architecture),
                seed=item.seed, recipe=self.recipe_dict, agent=self.agent, run_id=self.run_id,
                val_accuracy=float(res.val_accuracy), test_accuracy=float(res.test_accuracy),
                val_curve=[float(v) for v in res.val_curve], epochs=int(res.epochs),
                train_seconds=float(res.train_seconds), num_params=int(res.num_params),
                device=self.device, worker=self.worker, status=status, error=error,
                stopped_early=stopped, predicted_final=predicted, task_fingerprint=task_fingerprint,
                bank_fingerprint=bank_fingerprint,
            )
            if rec.experiment_id != item.experiment_id:  # the plan and the row must agree, or resume breaks
                raise RuntimeError(f"experiment id mismatch for {item}: row has {rec.experiment_id} (trained on task "
                                   f"data {task_fingerprint}, embedding bank {bank_fingerprint}: not what was planned)")
            records.append(rec)
            if status == "ok":
                ack.ok_ids.append(item.experiment_id)
                if stopped:
                    ack.stopped += 1
                    ack.epochs_saved += max(0, self.recipe.epochs - rec.epochs)
                elif ack.best_val_accuracy is None or rec.val_accuracy > ack.best_val_accuracy:
                    ack.best_val_accuracy = rec.val_accuracy
            else:
                ack.failed_ids.append(item.experiment_id)
                if len(ack.errors) < _MAX_ACK_ERRORS:
                    ack.errors.append(str(error))
        self.writer.extend(records)
        self.writer.flush()


def stop_fields(res: Any) -> tuple[bool, float | None]:
    """``(stopped_early, predicted_final)`` of a child result; a non-finite prediction is stored as null."""
    stopped = bool(getattr(res, "stopped_early", False))
    predicted = getattr(res, "predicted_final", None)
    if predicted is None or not math.isfinite(float(predicted)):
        return stopped, None
    return stopped, float(predicted)


def close_trainers(handles: list[Any], timeout_s: float = 30.0) -> None:
    """Flush and close each trainer's writer (best effort), then kill the actors."""
    import ray

    closing = []
    for handle in handles:
        try:
            closing.append(handle.close.remote())
        except Exception:  # noqa: BLE001 - already dead
            pass
    if closing:
        ray.wait(closing, num_returns=len(closing), timeout=timeout_s)
    for handle in handles:
        try:
            ray.kill(handle)
        except Exception:  # noqa: BLE001 - already gone
            pass
