"""The offline phase as a Ray job: train many child models per task and store their rows.

Task-aware-performance-prediction.md Sec. 3.2 (Fig. 1a, Algorithm 1 input): for every task,
sample architectures uniformly, train them, and store their performance. Run it on a Ray
cluster with ``ray job submit --working-dir . -- python -m cluster.populate --store ROOT ...``
or locally through ``nasdb populate``. A rerun with the same arguments is a resume: planned
experiments already in the store are skipped. See cluster/populate/_pool.py for fault tolerance.

With ``early_stop`` (accelerating-nas-performance-prediction-baker.md Sec. 3) the driver starts
one curve-predictor actor shared by every trainer actor, seeded with the complete curves the
store already holds for the same task, space and recipe (so a resumed run does not pay the
burn-in again); children predicted, with probability >= Delta, to end below the best so far
stop early and are stored with ``stopped_early``, the epochs they ran and ``predicted_final``.
Such a row is done like any other: the experiment id does not depend on early stopping.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from cluster.child import ChildTrainer, ChunkAck, WorkItem
from cluster.populate._config import PopulateConfig
from cluster.populate._plan import Chunk, make_chunks, plan_task, task_names
from cluster.populate._pool import TrainerPool
from cluster.populate._progress import PopulateSummary, Progress, TaskSummary
from cluster.populate._resources import ResourcePlan, plan_resources
from nasdb.errors import ArgumentError, NasdbError, PoolAborted, StoreError, UnreachableError

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore


def resolve_tasks(tasks: Sequence[str] | str | None = None, suite: str = "digits") -> list[str]:
    """Task names to populate: ``tasks`` (a list or "a,b"; built-in or registered) or all of ``suite``."""
    from nasdb.tasks import builtin_task_names

    if tasks is None:
        return builtin_task_names(suite)  # ValueError naming the known suites
    return task_names(tasks)


def _check_store(store: ExperimentStore | str, *, create: bool = True) -> Any:
    """The store, initialized (or, unless ``create``, required to exist) and proven writable;
    StoreError (one line) if it is not usable."""
    from nasdb.store import ExperimentStore

    root = getattr(store, "uri", store)
    if str(root).startswith("memory://"):
        raise StoreError(f"store {str(root)!r} lives in one process's memory: Ray actors cannot reach it")
    try:
        if not isinstance(store, ExperimentStore):
            store = ExperimentStore(store)
        store.init() if create else store.require()
        probe = store.path(f"_populate-probe-{uuid.uuid4().hex[:8]}")  # init() alone writes nothing when it exists
        store.fs.pipe_file(probe, b"ok")
        store.fs.rm_file(probe)
    except NasdbError:
        raise
    except Exception as e:  # noqa: BLE001 - any filesystem failure means the store is unusable
        raise StoreError(f"store {str(root)!r} is not reachable or not writable: {type(e).__name__}: {e}") from None
    return store


def check_ray_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Fail fast on a Ray address nobody listens on (ray.init would retry for minutes)."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ArgumentError(f"Ray address must look like host:port or ray://host:port, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UnreachableError(f"cannot reach the Ray cluster at {address!r}: {e}") from None


def _failed_record(item: WorkItem, space_id: str, recipe: dict, agent: str, run_id: str, error: str,
                   fingerprints: tuple[str, str]) -> Any:
    """The failed row of a given-up item: the planned id, so ``fingerprints`` (task data, bank) are the plan's."""
    from nasdb.store import ExperimentRecord

    return ExperimentRecord(
        task=item.task, space_id=space_id, architecture=list(item.architecture), seed=item.seed, recipe=recipe,
        agent=agent, run_id=run_id, val_accuracy=float("nan"), test_accuracy=float("nan"), val_curve=[],
        epochs=0, train_seconds=0.0, num_params=0, device="none", worker=f"{run_id}-driver",
        status="failed", error=error, task_fingerprint=fingerprints[0], bank_fingerprint=fingerprints[1],
    )


def populate(store: ExperimentStore | str, config: PopulateConfig, *, progress: bool = True,
             address: str | None = None, on_chunk_done: Callable[[ChunkAck, TrainerPool], None] | None = None,
             trainer_cls: type = ChildTrainer, create_store: bool = True,
             proposer: Callable[[str, int, np.ndarray], np.ndarray] | None = None) -> PopulateSummary:
    """Train ``config.per_task`` uniformly sampled architectures per task on a pool of Ray actors.

    ``config`` holds every setting of the run (PopulateConfig: tasks, recipe, workers, seed, ...);
    the keyword arguments are how and where it runs. ``store`` is an ExperimentStore or its root
    (created if missing, unless ``create_store`` is False: the CLI's choice, so a mistyped path is
    refused). Every input is checked before any actor starts. Uses the running Ray instance, else
    ``ray.init(address)`` (``RAY_ADDRESS`` or a new local cluster), shut down at the end;
    Ray is not started at all when every planned experiment is already in the store. Planned ids
    include the fingerprints of each task's data and of the embedding bank (schema v3), so rows
    trained on other data (or written before v3, without fingerprints) do not count as done.
    ``on_chunk_done(ack, pool)`` runs in the driver after every chunk (tests kill actors there);
    ``trainer_cls`` replaces the actor class (tests: a subclass that fails on purpose).
    ``proposer(task, n, stored)`` (active population, cluster/populate/_active.py): the task's plan
    is its rows of ``config.agent`` so far plus ``n`` more architectures the proposer picks, none
    of the task's ``stored`` (M, D) architectures.
    """
    from cluster.child import default_bank
    from nasdb.space import default_space

    t0 = time.monotonic()
    if not isinstance(config, PopulateConfig):
        raise ArgumentError(f"config must be a PopulateConfig, got {type(config).__name__}")
    store = _check_store(store, create=create_store)
    names = resolve_tasks(config.tasks, config.suite)
    loaded = {name: store.task(name) for name in names}  # UnknownTaskError / InvalidTaskError now
    run_id = config.run_id or f"populate-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    recipe, early_stop = config.recipe, config.early_stop

    space, recipe_dict = default_space(), recipe.to_dict()
    bank_fp = default_bank().fingerprint()  # part of every id (schema v3), as the task data's fingerprint
    summaries, todo, planned = [], [], {}
    for name in names:
        fingerprints = {"task_fingerprint": loaded[name].fingerprint(), "bank_fingerprint": bank_fp}
        if proposer is None:
            items = plan_task(space, name, config.per_task, seed=config.seed, recipe=recipe_dict, **fingerprints)
        else:
            items = _proposed(store, space, name, config.per_task, proposer, config.agent, config.seed, recipe_dict,
                              fingerprints)
        done = store.done_ids(name, status="ok" if config.retry_failed else None)
        pending = [i for i in items if i.experiment_id not in done]
        planned[name] = {i.experiment_id for i in items}
        summaries.append(TaskSummary(name, planned=len(items), skipped=len(items) - len(pending)))
        todo += pending
    es_settings = None if early_stop is None else early_stop.to_dict()
    if not todo:
        return PopulateSummary(run_id, summaries, time.monotonic() - t0, workers=0, device="none",
                               early_stop=es_settings)
    chunks = make_chunks(todo, config.batch_size_models)

    import ray

    started_ray = not ray.is_initialized()
    if started_ray:
        check_ray_address(address or os.environ.get("RAY_ADDRESS"))
        try:
            ray.init(address=address)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
            raise UnreachableError(f"cannot start or reach Ray at {where}: {str(e).strip().splitlines()[0]}") from None
    try:
        res = plan_resources(ray.cluster_resources(), config.workers, config.gpus_per_worker, config.cpus_per_worker)
        store.save_space(space)
        job = _Job(store, space, recipe_dict, res, agent=config.agent, run_id=run_id, trainer_cls=trainer_cls,
                   retry_failed=config.retry_failed, max_attempts=config.max_attempts,
                   chunk_timeout_s=config.chunk_timeout_s,
                   on_chunk_done=on_chunk_done, progress=Progress(summaries, enabled=progress),
                   early_stop=early_stop)
        job.run(chunks, {name: loaded[name] for name in {c.task for c in chunks}})
    finally:
        if started_ray:
            ray.shutdown()
    for s in summaries:  # the store, not the acks, has the last word on what is missing
        s.missing = len(planned[s.task] - store.done_ids(s.task))
    stats, device = job.pool.stats, "+".join(sorted(job.devices)) or res.device
    return PopulateSummary(
        run_id=run_id, tasks=summaries, wall_seconds=time.monotonic() - t0, workers=min(res.workers, len(chunks)),
        device=device, pool_seconds=job.pool_seconds, actors_lost=stats.actors_lost,
        retried_attempts=stats.failed_attempts, gave_up=job.gave_up, aborted=job.aborted,
        early_stop=es_settings, early_stop_status=job.early_stop_status,
    )


def _proposed(store: ExperimentStore, space: Any, task: str, per_task: int, proposer: Callable, agent: str, seed: int,
              recipe: dict, fingerprints: dict) -> list[WorkItem]:
    """The task's rows of ``agent`` so far (as work items: done) plus ``per_task`` minus their count
    new architectures from ``proposer``; a rerun after an interruption proposes only what is missing."""
    rows = store.experiments_arrow(task, status=None).select(["agent", "space_id", "architecture", "seed",
                                                             "experiment_id"]).to_pylist()
    mine = {r["experiment_id"]: r for r in rows if r["agent"] == agent and r["space_id"] == space.space_id}
    items = [WorkItem(task, i, tuple(r["architecture"]), int(r["seed"]), eid) for i, (eid, r) in enumerate(
        sorted(mine.items()))]
    if len(items) < per_task:
        stored = np.array([r["architecture"] for r in rows if r["space_id"] == space.space_id],
                          dtype=np.int64).reshape(-1, space.num_dimensions)
        archs = np.asarray(proposer(task, per_task - len(items), stored), dtype=np.int64)
        items += plan_task(space, task, len(archs), seed=seed, recipe=recipe, architectures=archs,
                           first_index=len(items), **fingerprints)
    return items


class _Job:
    """One populate run on a live Ray cluster: the pool, its callbacks and the give-up rows."""

    def __init__(self, store: ExperimentStore, space: Any, recipe: dict, res: ResourcePlan, *, agent: str, run_id: str,
                 trainer_cls: type, retry_failed: bool, max_attempts: int, chunk_timeout_s: float | None,
                 on_chunk_done: Callable | None, progress: Progress, early_stop: Any = None):
        import ray

        self.store, self.space, self.recipe, self.res = store, space, recipe, res
        self.agent, self.run_id, self.on_chunk_done, self.progress = agent, run_id, on_chunk_done, progress
        self.retry_failed = retry_failed
        self.gave_up: list[str] = []
        self.devices: set[str] = set()  # where chunks actually trained
        self.pool_seconds = 0.0
        self.aborted: str | None = None
        self._driver_writer = None
        self.early_stop = early_stop  # EarlyStopConfig or None
        self.early_stop_status: dict[str, dict] = {}  # per task, from the curve predictor at the end
        self._curve_actor = None
        self._es_warned: set[str] = set()
        self._remote_cls = ray.remote(trainer_cls)
        self.pool = TrainerPool(self._make_actor, self._submit, res.workers, name_prefix=f"nasdb-trainer-{run_id}",
                                max_attempts=max_attempts, chunk_timeout_s=chunk_timeout_s, on_ack=self._on_ack,
                                on_give_up=self._on_give_up, on_note=progress.note, on_tick=progress.tick)

    def run(self, chunks: list[Chunk], tasks: dict[str, Any]) -> None:
        """Ship the embedding bank and the tasks once through the object store, then train."""
        import ray

        from cluster.child import default_bank

        t0 = time.monotonic()
        self._bank_ref = ray.put(default_bank())  # fitted once here, identical on every actor
        self._task_refs = {name: ray.put(task) for name, task in tasks.items()}
        self._fingerprints = {name: (task.fingerprint(), default_bank().fingerprint()) for name, task in tasks.items()}
        self.progress.note(f"embedding bank ready in {time.monotonic() - t0:.1f}s")
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        if nodes > 1 and "://" not in self.store.uri:
            self.progress.note(f"warning: {nodes} nodes write to the local path {self.store.uri!r}: it must be "
                               "a shared filesystem mounted there on every node (else use an s3:// or gs:// URI)")
        n = sum(len(c) for c in chunks)
        skipped = sum(t.skipped for t in self.progress.tasks.values())
        workers = min(self.res.workers, len(chunks))
        self.progress.note(f"run {self.run_id}: {n} experiments to train in {len(chunks)} chunks on {workers} "
                           f"{self.res.device} workers ({skipped} already in the store)")
        t1 = time.monotonic()
        try:
            if self.early_stop is not None:
                self._start_curve_predictor(sorted(tasks))
            self.pool.run(chunks)
        except PoolAborted as e:
            self.aborted = str(e)
            self.progress.note(f"aborted: {e}")
        finally:
            self.pool_seconds = time.monotonic() - t1
            self._stop_curve_predictor()
            self.progress.close()
            if self._driver_writer is not None:
                self._driver_writer.close()

    def _make_actor(self, name: str) -> Any:
        worker = f"{self.run_id}-{name.rsplit('-', 1)[-1]}"  # unique per actor: writers never share a file
        return self._remote_cls.options(
            name=name, num_cpus=self.res.num_cpus, num_gpus=self.res.num_gpus, max_restarts=0,
        ).remote(self.store.uri, self.space.to_json(), self.recipe, worker=worker, agent=self.agent,
                 run_id=self.run_id, threads=self.res.threads, use_gpu=self.res.num_gpus > 0,
                 retry_failed=self.retry_failed, bank=self._bank_ref, task_refs=self._task_refs,
                 **({} if self._curve_actor is None else {"early_stop": self._curve_actor}))

    def _start_curve_predictor(self, tasks: list[str]) -> None:
        """One curve-predictor actor for the job (no CPU reserved: it refits between trainer
        epochs), seeded per task with the store's complete curves of this space and recipe."""
        import ray

        from cluster.early_stop import curve_predictor_actor, load_full_curves, load_other_curves, with_prior

        where = {"recipe": self.recipe, "space_id": self.space.space_id}
        pooling = bool(self.early_stop.pool_curves)  # other tasks' curves: each task's stopper starts sooner
        stored = load_other_curves(self.store, **where) if pooling else {}  # every task's, in one query
        prior = list(stored.values())
        self._curve_actor = curve_predictor_actor(self.early_stop, prior=prior, num_cpus=0)
        ray.get(self._curve_actor.get_config.remote(), timeout=300)  # started before any trainer asks it
        seeds = {}
        for task in tasks:
            try:  # the job's own tasks' curves are in that query's answer already
                cs = stored[task] if pooling else load_full_curves(self.store, task, **where)
            except (KeyError, ValueError):  # no complete curve of this task yet
                continue
            arch = ray.get(self._curve_actor.arch_prior.remote(task))  # its trainers' features end with it
            features = cs.features if arch is None else with_prior(cs, arch).features
            seeds[task] = self._curve_actor.report_complete.remote(task, cs.curves, features)
        held = dict(zip(seeds, ray.get(list(seeds.values()))))
        c = self.early_stop
        self.progress.note(f"early stopping on (Delta={c.confidence:g}, delta={c.delta:g}, burn-in {c.burn_in} "
                           f"complete curves, {c.pool_burn_in} with a prior); seeded from the store: "
                           + (", ".join(f"{t} {n}" for t, n in held.items()) or "none")
                           + f"; prior: {sum(cs.num_curves for cs in prior)} curves of {len(prior)} tasks")

    def _stop_curve_predictor(self) -> None:
        if self._curve_actor is None:
            return
        import ray

        try:
            self.early_stop_status = ray.get(self._curve_actor.status.remote(), timeout=30)
        except Exception as e:  # noqa: BLE001 - the rows are in the store; the status is a nicety
            self.progress.note(f"early stopping: no status from the curve predictor ({type(e).__name__})")
        try:
            ray.kill(self._curve_actor)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._curve_actor = None

    @staticmethod
    def _submit(handle: Any, chunk: Chunk) -> Any:
        return handle.train_chunk.remote(chunk.task, chunk.items, chunk.chunk_id, chunk.failures > 0)

    def _on_ack(self, ack: ChunkAck, pool: TrainerPool) -> None:
        if ack.device not in self.devices:
            self.devices.add(ack.device)
            if self.res.num_gpus > 0 and ack.device == "cpu":
                self.progress.note(f"warning: {ack.worker} holds {self.res.num_gpus:g} GPU but torch sees no CUDA "
                                   "device there: it trains on CPU")
        if ack.early_stop_error and ack.worker not in self._es_warned:
            self._es_warned.add(ack.worker)
            self.progress.note(f"warning: {ack.worker}: {ack.early_stop_error}")
        self.progress.add(ack.task, ok=len(ack.ok_ids) + len(ack.recovered_ok_ids),
                          failed=len(ack.failed_ids) + len(ack.recovered_failed_ids), best_val=ack.best_val_accuracy,
                          stopped=ack.stopped, epochs_saved=ack.epochs_saved)
        if self.on_chunk_done is not None:
            self.on_chunk_done(ack, pool)

    def _on_give_up(self, chunk: Chunk) -> None:
        """Record a chunk that failed ``max_attempts`` times as failed rows, so the run ends."""
        if self._driver_writer is None:
            self._driver_writer = self.store.writer(f"{self.run_id}-driver")
        error = f"gave up after {chunk.failures} failed attempts; last: {chunk.errors[-1]}"
        present = self.store.done_ids(chunk.task, status="ok" if self.retry_failed else None)  # written after all?
        ok_ids = self.store.done_ids(chunk.task, status="ok")
        ok = sum(item.experiment_id in ok_ids for item in chunk.items)
        failed = len(chunk.items) - ok
        for item in chunk.items:
            if item.experiment_id in present:
                continue
            self._driver_writer.append(_failed_record(item, self.space.space_id, self.recipe, self.agent,
                                                      self.run_id, error, self._fingerprints[chunk.task]))
            self.gave_up.append(f"{item.task}/{item.experiment_id}: {error}")
        self._driver_writer.flush()
        self.progress.add(chunk.task, ok=ok, failed=failed)

