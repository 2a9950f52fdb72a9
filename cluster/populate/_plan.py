"""The populate plan: which (task, architecture, seed) experiments to run, cut into chunks.

Architectures are drawn uniformly at random (the paper's "random one-hot architecture
encodings", task-aware-performance-prediction.md Sec. 3.2, Fig. 1a) from a stream seeded by
(seed, task) alone, so adding a task leaves the other tasks' plans as they were and raising
``per_task`` extends a task's plan without changing its first architectures.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from cluster.child import WorkItem
from nasdb.errors import ArgumentError, ConfigError
from nasdb.space import SearchSpace

#: Architectures drawn from the stream per step; any value gives the same plan.
_DRAW_BLOCK = 256


@dataclass
class Chunk:
    """Work items of ONE task, trained together by one actor (train_children)."""

    chunk_id: int
    task: str
    items: list[WorkItem]
    failures: int = 0  # failed attempts so far (actor lost or chunk raised)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.items:
            raise ConfigError(f"chunk {self.chunk_id} of task {self.task!r} has no work items")
        others = {i.task for i in self.items} - {self.task}
        if others:
            raise ConfigError(f"chunk {self.chunk_id} of task {self.task!r} holds items of {sorted(others)}")

    def __len__(self) -> int:
        return len(self.items)


def task_stream_seed(seed: int, task: str) -> list[int]:
    """Entropy of a task's architecture stream: the run seed plus a stable hash of the name."""
    digest = hashlib.sha256(task.encode()).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]


def sample_task_architectures(space: SearchSpace, task: str, n: int, seed: int) -> np.ndarray:
    """The first ``n`` distinct architectures of the task's stream, shape ``(n, num_dimensions)``.

    Repeats are dropped (two equal architectures would be one experiment), and the stream is
    consumed block by block, so the result is a prefix of the result for any larger ``n``.
    """
    if n < 0:
        raise ArgumentError(f"number of architectures must be >= 0, got {n}")
    rng = np.random.default_rng(task_stream_seed(seed, task))
    seen: set[tuple[int, ...]] = set()
    out: list[np.ndarray] = []
    while len(out) < n:
        for arch in space.sample(_DRAW_BLOCK, rng):  # (_DRAW_BLOCK, D)
            key = tuple(int(v) for v in arch)
            if key not in seen:
                seen.add(key)
                out.append(arch)
                if len(out) == n:
                    break
    return np.stack(out) if out else np.zeros((0, space.num_dimensions), dtype=np.int64)


def plan_task(space: SearchSpace, task: str, per_task: int, *, seed: int, recipe: dict,
              task_fingerprint: str | None = None, bank_fingerprint: str | None = None,
              architectures: np.ndarray | None = None, first_index: int = 0) -> list[WorkItem]:
    """The task's ``per_task`` work items with their deterministic experiment ids.

    ``architectures`` (N, D): train these instead of the task's random stream (active
    population), numbered from ``first_index``.

    The ids include the fingerprints of the task's data and of the embedding bank the trainers
    will use (``Task.fingerprint()``, ``EmbeddingBank.fingerprint()``): the trainer derives the
    same id from what it actually trained on, so a plan for other data is refused, not mixed in.
    """
    from nasdb.store import experiment_id

    archs = sample_task_architectures(space, task, per_task, seed) if architectures is None else architectures
    items = []
    for index, arch in enumerate(archs, start=first_index):
        arch_t = tuple(int(v) for v in arch)
        eid = experiment_id(task, space.space_id, list(arch_t), seed, recipe, task_fingerprint=task_fingerprint,
                            bank_fingerprint=bank_fingerprint)
        items.append(WorkItem(task, index, arch_t, int(seed), eid))
    return items


def make_chunks(items: Iterable[WorkItem], chunk_size: int, *, first_id: int = 0) -> list[Chunk]:
    """Cut work items into chunks of at most ``chunk_size`` items, never mixing tasks.

    A task's items are spread evenly over ``ceil(n / chunk_size)`` chunks (50 items by 16:
    13, 13, 12, 12 rather than 16, 16, 16, 2), so no chunk is a tiny, poorly batched tail.
    """
    if chunk_size <= 0:
        raise ArgumentError(f"chunk size (models trained together) must be > 0, got {chunk_size}")
    by_task: dict[str, list[WorkItem]] = {}
    for item in items:
        by_task.setdefault(item.task, []).append(item)
    chunks: list[Chunk] = []
    for task, task_items in by_task.items():
        n_chunks = -(-len(task_items) // chunk_size)
        base, extra = divmod(len(task_items), n_chunks)
        start = 0
        for k in range(n_chunks):
            size = base + (k < extra)
            chunks.append(Chunk(first_id + len(chunks), task, task_items[start:start + size]))
            start += size
    return chunks


def split_chunk(chunk: Chunk, next_id: int) -> list[Chunk]:
    """Halve a failing chunk so repeated failures isolate the item that causes them."""
    if len(chunk) < 2:
        return [chunk]
    mid = len(chunk) // 2
    return [
        Chunk(next_id, chunk.task, chunk.items[:mid], chunk.failures, list(chunk.errors)),
        Chunk(next_id + 1, chunk.task, chunk.items[mid:], chunk.failures, list(chunk.errors)),
    ]


def task_names(tasks: Sequence[str] | str, *, error: type[Exception] = ArgumentError) -> list[str]:
    """Task names from a list or "a,b": first-seen order, without repeats or blanks; ``error`` if none is left."""
    names = dedupe_tasks(tasks.split(",") if isinstance(tasks, str) else list(tasks))
    if not names:
        raise error("no task names given (--tasks is empty)")
    return names


def dedupe_tasks(tasks: Sequence[str]) -> list[str]:
    """Task names in first-seen order without repeats or blanks."""
    seen: list[str] = []
    for t in tasks:
        t = t.strip()
        if t and t not in seen:
            seen.append(t)
    return seen
