"""Training evaluator: each trial trains a real child model on a Ray trainer actor.

The actors are populate's ``ChildTrainer`` (cluster/child/_trainer.py), so search rows are written
by the same code, to the same store, as the offline phase, tagged with this run's agent and
run id. ``TrainerPool`` (cluster/populate/_pool.py) is not used: it runs a fixed list of chunks to the
end, while a search decides its next architecture only after a result returns. This module
keeps ``parallel`` actors busy with one trial, or one search batch (one call of the batched
trainer, one flush), each and, like the pool, replaces an actor that is lost and retries its
chunk (idempotent: the retry skips an id that already reached the store).
With early stopping the actors share the search run's curve-predictor actor (``early_stop``):
a child predicted to end below the best so far stops and comes back with ``stopped_early``
and ``predicted_final`` (accelerating-nas-performance-prediction-baker.md Sec. 3).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from cluster.child import ChildTrainer, ChunkAck, WorkItem, close_trainers, stop_fields
from cluster.populate import shortfall
from nasdb.errors import ArgumentError, EvaluatorAborted, InsufficientResourcesError
from nasdb.space import SearchSpace
from search.evaluators._base import Evaluation, Evaluator, Trial


_BANK: dict[str, Any] = {}  # {ray session key: ObjectRef of the fitted embedding bank}


def shared_objects(store, tasks: list[str]) -> dict[str, Any]:
    """ObjectRefs the trainer actors start from: the embedding bank (fitted once per process and
    Ray session, ~10 s) and the tasks, so that an actor starts in about a second (as in populate).

    Pass the dict (not the refs themselves) through actor arguments, so Ray keeps them refs."""
    import ray

    from cluster.child import default_bank

    ctx = ray.get_runtime_context()
    key = f"{ctx.get_node_id()}:{ctx.get_job_id()}"
    if key not in _BANK:
        _BANK.clear()
        _BANK[key] = ray.put(default_bank())
    return {"bank": _BANK[key], "tasks": {t: ray.put(store.task(t)) for t in tasks}}


def child_metrics(items: list[WorkItem], results: list, ack: ChunkAck) -> None:
    """The trainer's ``on_rows`` hook: the ack also carries each child's accuracies (the search needs them)."""
    for i, r in zip(items, results):
        stopped, predicted = stop_fields(r)
        ack.metrics[i.experiment_id] = {
            "val_accuracy": float(r.val_accuracy), "test_accuracy": float(r.test_accuracy),
            "train_seconds": float(r.train_seconds), "error": r.error, "stopped_early": stopped,
            "predicted_final": predicted, "epochs": int(r.epochs)}


@dataclass
class _Slot:
    index: int
    generation: int
    handle: Any
    trials: list[Trial] | None = None  # the chunk in training: one trial (submit) or a search batch
    batch: bool = False  # submitted by submit_batch (comes back from batch_results)
    ref: Any = None
    attempts: int = 0


class TrainingEvaluator(Evaluator):
    """Trains each trial's child (or each batch's children, at once) with ``recipe`` on one of
    ``parallel`` Ray actors.

    Needs a running Ray instance (``ray.init``). ``agent`` and ``run_id`` tag the rows. A trial
    or batch whose actor is lost is retried up to ``max_attempts`` times, then comes back "failed".
    ``shared`` (from ``shared_objects``) lets the actors skip fitting the embedding bank.
    ``early_stop``: the handle of a curve-predictor actor (cluster/early_stop/_actor.py) the actors
    share, or None to train every child to the end. The actors' resources are reserved first, as
    one placement group (a bundle per actor, which a replacement actor reuses): if the cluster
    cannot hold it within ``start_timeout_s`` (Ray would keep the actors pending forever, e.g.
    while a Serve replica holds CPUs), InsufficientResourcesError names the shortfall.
    """

    name = "train"

    def __init__(self, store, space: SearchSpace, *, recipe: dict, agent: str, run_id: str, parallel: int = 1,
                 cpus_per_trainer: float = 1.0, gpus_per_trainer: float | None = None, max_attempts: int = 3,
                 shared: dict[str, Any] | None = None, early_stop: Any = None, start_timeout_s: float = 60.0):
        super().__init__(parallel)
        import ray

        from cluster.populate import plan_resources

        if not ray.is_initialized():
            raise RuntimeError("the training evaluator needs a running Ray instance (ray.init)")
        if int(max_attempts) != max_attempts or max_attempts < 1:
            raise ArgumentError(f"max_attempts must be an integer >= 1, got {max_attempts!r}")
        self.plan = plan_resources(ray.cluster_resources(), parallel, gpus_per_trainer, cpus_per_trainer)
        self.store, self.space, self.recipe = store, space, dict(recipe)
        self.agent, self.run_id, self.max_attempts = agent, run_id, int(max_attempts)
        self.shared = shared or {}
        self.early_stop = early_stop
        self.start_timeout_s = float(start_timeout_s)
        self._session = uuid.uuid4().hex[:6]  # writers of a resumed run must not reuse file names
        self._remote = ray.remote(ChildTrainer)
        self._pg = self._reserve()
        self._slots = [self._start(i, 0) for i in range(self.parallel)]
        self._failures, self._successes = 0, 0

    # -- actors ------------------------------------------------------------------------
    def _start(self, index: int, generation: int) -> _Slot:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        worker = f"{self.run_id}-{self._session}-{index}.{generation}"
        in_bundle = PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=index)
        handle = self._remote.options(num_cpus=self.plan.num_cpus, num_gpus=self.plan.num_gpus, max_restarts=0,
                                      scheduling_strategy=in_bundle).remote(
            self.store.uri, self.space.to_json(), self.recipe, worker=worker, agent=self.agent,
            run_id=self.run_id, threads=self.plan.threads, use_gpu=self.plan.num_gpus > 0,
            bank=self.shared.get("bank"), task_refs=self.shared.get("tasks"), on_rows=child_metrics,
            **({} if self.early_stop is None else {"early_stop": self.early_stop}))
        return _Slot(index, generation, handle)

    def _reserve(self) -> Any:
        """A placement group of one bundle per actor, ready within the start timeout, else
        InsufficientResourcesError naming what is missing (measured before asking)."""
        import ray
        from ray.util.placement_group import placement_group, remove_placement_group

        bundle = {k: v for k, v in (("CPU", self.plan.num_cpus), ("GPU", self.plan.num_gpus)) if v > 0}
        available = ray.available_resources()
        pg = placement_group([dict(bundle) for _ in range(self.parallel)], strategy="PACK",
                             name=f"{placement_group_prefix(self.run_id)}{self._session}")
        if not ray.wait([pg.ready()], timeout=self.start_timeout_s)[0]:
            remove_placement_group(pg)
            why = shortfall(self.plan, available) or (f"{self.parallel} trainers of {bundle} do not fit on the "
                                                      f"nodes ({available.get('CPU', 0.0):g} CPUs available in all)")
            raise InsufficientResourcesError(
                f"{why}: the trainer actors could not be placed within the {self.start_timeout_s:g}s start timeout; "
                f"free resources, lower --parallel or raise --start-timeout")
        return pg

    def _replace(self, slot: _Slot) -> _Slot:
        import ray

        try:
            ray.kill(slot.handle)
        except Exception:  # noqa: BLE001 - already gone
            pass
        new = self._start(slot.index, slot.generation + 1)
        self._slots[slot.index] = new
        return new

    # -- evaluator ---------------------------------------------------------------------
    @property
    def num_pending(self) -> int:
        return sum(len(s.trials) for s in self._slots if s.trials is not None)

    @property
    def num_busy(self) -> int:
        return sum(s.trials is not None for s in self._slots)

    def _submit(self, trial: Trial) -> None:
        self._assign([trial], batch=False, check_store=False)

    def _submit_batch(self, trials: list[Trial], resume: bool) -> None:
        """The whole batch to one actor: one call of the batched trainer (cluster.child.train_children:
        with early stopping, stopped members leave their bucket at once) and one flush."""
        if len({t.task for t in trials}) != 1:
            raise ArgumentError(f"a batch trains children of one task, got {sorted({t.task for t in trials})}")
        self._assign(trials, batch=True, check_store=resume)

    def _assign(self, trials: list[Trial], batch: bool, check_store: bool) -> None:
        slot = next(s for s in self._slots if s.trials is None)
        slot.trials, slot.batch, slot.attempts = trials, batch, 0
        self._send(slot, check_store)

    def _send(self, slot: _Slot, check_store: bool) -> None:
        items = [WorkItem(t.task, t.index, tuple(int(v) for v in t.architecture), int(t.seed), t.experiment_id)
                 for t in slot.trials]
        slot.ref = slot.handle.train_chunk.remote(slot.trials[0].task, items, slot.trials[0].index, check_store)
        slot.attempts += 1

    def results(self) -> list[Evaluation]:
        return [ev for chunk in self._done_chunks(batch=False) for ev in chunk]

    def batch_results(self) -> list[list[Evaluation]]:
        return self._done_chunks(batch=True)

    def _done_chunks(self, batch: bool) -> list[list[Evaluation]]:
        """Block until at least one chunk submitted as a trial (``batch`` False) or as a batch is
        done; -> the done ones, each in its trials' order (a retried chunk is not done yet)."""
        import ray

        out: list[list[Evaluation]] = []
        while not out:
            busy = {s.ref: s for s in self._slots if s.trials is not None and s.batch == batch}
            if not busy:
                break
            done, _ = ray.wait(list(busy), num_returns=1)
            for ref in done:
                evs = self._collect(busy[ref], ref)
                if evs is not None:
                    out.append(evs)
        return out

    def _collect(self, slot: _Slot, ref: Any) -> list[Evaluation] | None:
        """The chunk's evaluations, or None when it was sent again (its actor lost or the call raised)."""
        import ray
        from ray.exceptions import RayActorError

        trials = slot.trials
        try:
            ack: ChunkAck = ray.get(ref)
        except RayActorError as e:  # the actor died: a new one retries the chunk
            text = str(e).strip()
            error = f"trainer actor lost: {text.splitlines()[-1][:200] if text else type(e).__name__}"
            attempts, batch = slot.attempts, slot.batch
            slot = self._replace(slot)
            slot.trials, slot.attempts, slot.batch = trials, attempts, batch
            return self._retry_or_fail(slot, error)
        except Exception as e:  # noqa: BLE001 - the call raised inside a live actor
            return self._retry_or_fail(slot, f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}")
        slot.trials, slot.ref = None, None
        self._successes += 1
        return [self._evaluation(slot, ack, t) for t in trials]

    @staticmethod
    def _evaluation(slot: _Slot, ack: ChunkAck, trial: Trial) -> Evaluation:
        """``trial``'s evaluation from its chunk's ack (or, if an earlier attempt wrote it, its stored row)."""
        import ray

        metrics = ack.metrics.get(trial.experiment_id)
        if metrics is None:  # recovered: an earlier attempt already wrote the row
            row = ray.get(slot.handle.lookup.remote(trial.experiment_id))
            if row is None:
                return Evaluation.failed(trial, "row missing after a retried attempt")
            return Evaluation.from_row(trial, row)
        status = "ok" if trial.experiment_id in ack.ok_ids else "failed"
        return Evaluation.of(trial, status=status, **metrics)

    def _retry_or_fail(self, slot: _Slot, error: str) -> list[Evaluation] | None:
        """Send the slot's chunk again (the store checked first: no child trains twice), or after
        ``max_attempts`` give its trials up as failed."""
        self._failures += 1
        if self._successes == 0 and self._failures >= 4 * self.max_attempts:
            raise EvaluatorAborted(f"{self._failures} training attempts failed and none succeeded; last: {error}")
        if slot.attempts < self.max_attempts:
            self._send(slot, check_store=True)
            return None
        trials, slot.trials, slot.ref = slot.trials, None, None
        return [Evaluation.failed(t, f"gave up after {slot.attempts} attempts; last: {error}") for t in trials]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "args": {"parallel": self.parallel, "recipe": self.recipe,
                                            "device": self.plan.device}}

    def close(self) -> None:
        from ray.util.placement_group import remove_placement_group

        close_trainers([s.handle for s in self._slots])
        self._slots = []
        if self._pg is not None:
            remove_placement_group(self._pg)
            self._pg = None


def placement_group_prefix(run_id: str) -> str:
    """Name prefix of the trainers' placement groups of search ``run_id``."""
    return f"nasdb-trainers-{run_id}-"


def release_placement_groups(run_id: str) -> int:
    """Remove the trainers' placement groups that search ``run_id`` left behind; -> how many.

    An evaluator removes its own group on close, but a search driver actor that dies (killed,
    crashed) never closes it, and Ray frees a placement group only when the job that made it
    ends: the trainers' CPUs would stay reserved for the rest of a long-lived job.
    """
    import ray
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    prefix, removed = placement_group_prefix(run_id), 0
    for pg_id, info in ray.util.placement_group_table().items():
        if str(info.get("name", "")).startswith(prefix) and info.get("state") != "REMOVED":
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(bytes.fromhex(pg_id))))
            removed += 1
    return removed
