"""Fit trainer actors to a Ray cluster: fractional GPUs when Ray reports GPUs, else CPUs.

Checked before any actor starts, so a job that asks for more than the cluster has fails at
once with what was asked and what is there, instead of waiting forever for placement. A job
that fits the cluster but not what is free now (``wait_for_resources``) waits a bounded time
for the resources, then fails naming the shortfall.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from nasdb.checks import positive_float
from nasdb.errors import ArgumentError, InsufficientResourcesError

#: Trainer actors per GPU when Ray reports GPUs and neither workers nor a GPU share is given.
DEFAULT_WORKERS_PER_GPU = 4


@dataclass(frozen=True)
class ResourcePlan:
    """How many trainer actors run and what each one asks Ray for."""

    workers: int
    num_cpus: float
    num_gpus: float
    threads: int  # torch intra-op threads per actor
    cluster_cpus: float
    cluster_gpus: float

    @property
    def device(self) -> str:
        return "gpu" if self.num_gpus > 0 else "cpu"


def _floor4(x: float) -> float:
    return math.floor(x * 10_000 + 1e-6) / 10_000  # Ray resolves resources to 1e-4


def check_worker_shares(cpus_per_worker: float, gpus_per_worker: float | None) -> None:
    """ValueError naming a CPU or GPU share per actor that no cluster could grant (checked before Ray starts)."""
    positive_float("cpus per worker", cpus_per_worker)
    if gpus_per_worker is not None and (
            isinstance(gpus_per_worker, bool) or not isinstance(gpus_per_worker, (int, float))
            or not 0 <= gpus_per_worker < math.inf or (gpus_per_worker > 1 and gpus_per_worker % 1)):
        raise ArgumentError(f"gpus per worker must be 0, a fraction of 1 or a whole number, got {gpus_per_worker}")


def plan_resources(cluster: dict[str, float], workers: int | None = None, gpus_per_worker: float | None = None,
                   cpus_per_worker: float = 1.0) -> ResourcePlan:
    """Fit the actors to ``cluster`` (``ray.cluster_resources()``), or say why they cannot fit.

    On GPUs each actor takes a fraction of one GPU (several child-model batches share it);
    on CPUs each takes ``cpus_per_worker`` CPUs. ``workers=None`` fills the cluster.
    """
    cpus, gpus = float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0))
    has = f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs"
    if workers is not None and workers <= 0:
        raise ArgumentError(f"workers must be > 0, got {workers}")
    check_worker_shares(cpus_per_worker, gpus_per_worker)
    use_gpu = gpus > 0 if gpus_per_worker is None else gpus_per_worker > 0
    if not use_gpu:
        if cpus < cpus_per_worker:
            raise InsufficientResourcesError(f"one worker needs {cpus_per_worker:g} CPUs, but {has}")
        workers = workers if workers is not None else int(cpus // cpus_per_worker)
        if workers * cpus_per_worker > cpus + 1e-9:
            raise InsufficientResourcesError(
                f"asked for {workers} workers x {cpus_per_worker:g} CPUs = {workers * cpus_per_worker:g} CPUs, "
                f"but {has}; "
                f"pass --workers {int(cpus // cpus_per_worker)} or fewer"
            )
        return ResourcePlan(workers, cpus_per_worker, 0.0, max(1, int(cpus_per_worker)), cpus, gpus)
    if gpus <= 0:
        raise InsufficientResourcesError(f"asked for {gpus_per_worker:g} GPUs per worker, but {has}")
    if workers is None:
        workers = int(gpus / gpus_per_worker + 1e-9) if gpus_per_worker else int(gpus * DEFAULT_WORKERS_PER_GPU)
    if gpus_per_worker is None:  # pack the actors evenly: a fractional share never spans two devices
        per_gpu = math.ceil(workers / gpus)
        share = 1.0 if per_gpu <= 1 else _floor4(1.0 / per_gpu)
    else:
        share = gpus_per_worker
    fit = int(gpus) * int(1.0 / share + 1e-9) if share <= 1 else int(gpus // share)
    if workers <= 0 or workers > fit:
        raise InsufficientResourcesError(
            f"asked for {workers} workers x {share:g} GPUs, but {has} and holds at most {fit} such workers "
            "(a fractional GPU share never spans two devices)"
        )
    num_cpus = min(cpus_per_worker, _floor4(cpus / workers)) if cpus > 0 else 0.0
    return ResourcePlan(workers, num_cpus, share, max(1, int(num_cpus)), cpus, gpus)


def shortfall(res: ResourcePlan, available: dict[str, float], workers: int | None = None) -> str | None:
    """What ``workers`` actors of ``res`` need that ``available`` (``ray.available_resources()``)
    lacks, as ``"needs 2 CPUs for 2 trainers, 1.5 available"``; None when they fit."""
    n = res.workers if workers is None else workers
    parts = []
    for key, each in (("CPU", res.num_cpus), ("GPU", res.num_gpus)):
        need, have = n * each, float(available.get(key, 0.0))
        if need > have + 1e-9:
            parts.append(f"needs {need:g} {key}s for {n} trainer{'s' if n != 1 else ''}, {_floor4(have):g} available")
    return "; ".join(parts) or None


def wait_for_resources(res: ResourcePlan, timeout_s: float, *, workers: int | None = None, poll_s: float = 0.5,
                       on_wait: Callable[[str], None] | None = None) -> None:
    """Wait until the cluster's *available* resources hold the actors, at most ``timeout_s``.

    Total resources (``plan_resources``) say whether a job can ever run; available ones say
    whether it can run now: CPUs held by a Serve replica or another job's actors are not free,
    and an actor that cannot be placed waits in Ray's queue forever, silently. This turns that
    wait into InsufficientResourcesError naming the shortfall. ``on_wait(text)`` hears about
    the wait every ~10 s.
    """
    import ray

    t0 = time.monotonic()
    last_note = t0
    while True:
        missing = shortfall(res, ray.available_resources(), workers)
        if missing is None:
            return
        now = time.monotonic()
        if now - t0 >= timeout_s:
            raise InsufficientResourcesError(
                f"{missing}: the trainer actors could not start within the {timeout_s:g}s start timeout "
                f"(other actors or Serve replicas hold the rest of the cluster's {res.cluster_cpus:g} CPUs); "
                f"free them, lower --parallel or raise --start-timeout")
        if on_wait is not None and now - last_note >= 10.0:
            last_note = now
            on_wait(f"waiting for resources: {missing} ({now - t0:.0f}s of {timeout_s:g}s)")
        time.sleep(min(poll_s, max(0.0, timeout_s - (now - t0))))
