"""A fault-tolerant pool of Ray actors that work through a queue of chunks.

Ray's own ``max_restarts`` restarts an actor in place but does not hand back the task that
was running when it died, and ``ray.util.ActorPool`` gives up on a dead actor. This pool
keeps one actor per slot and, when an actor is lost (``ray.kill``, its process killed, its
node gone), starts a replacement in the slot and requeues the in-flight chunk at the front
of the queue. A chunk that keeps failing is halved, so a poison item ends up alone and is
given up after ``max_attempts``, while its neighbours still get trained. Retried work must
be idempotent: the caller's actors skip experiment ids that already reached the store.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import ray
from ray.exceptions import RayActorError

from cluster.child import close_trainers
from cluster.populate._plan import Chunk, split_chunk
from nasdb.errors import ArgumentError, PoolAborted


@dataclass
class ActorSlot:
    """One place in the pool and the actor currently filling it."""

    slot: int
    generation: int
    name: str
    handle: Any
    ready_ref: Any = None  # pending info() call until the actor has started
    info: dict | None = None  # worker, pid, host, device once started
    chunk: Chunk | None = None
    ref: Any = None  # pending train call
    submitted_at: float = 0.0
    timed_out: bool = False

    @property
    def ready(self) -> bool:
        return self.info is not None

    @property
    def busy(self) -> bool:
        return self.ref is not None


@dataclass
class PoolStats:
    actors_started: int = 0
    actors_lost: int = 0
    failed_attempts: int = 0
    chunks_done: int = 0
    items_given_up: int = 0
    errors: list[str] = field(default_factory=list)  # one line per failed attempt, first few


def _same(a: Any, b: Any) -> bool:
    return a is not None and b is not None and a == b


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"[:300]


class TrainerPool:
    """Runs chunks on ``workers`` actor slots, replacing lost actors and retrying their chunks.

    ``make_actor(name)`` creates an actor with ``info()``; ``submit(handle, chunk)`` returns
    the ObjectRef of a call that trains the chunk and resolves to an ack. ``on_ack(ack, pool)``
    runs in the driver after each chunk; ``on_give_up(chunk)`` gets single-item chunks that
    failed ``max_attempts`` times; ``on_note(text)`` hears about losses and retries.
    """

    def __init__(self, make_actor: Callable[[str], Any], submit: Callable[[Any, Chunk], Any], workers: int, *,
                 name_prefix: str = "nasdb-trainer", max_attempts: int = 3, chunk_timeout_s: float | None = None,
                 start_timeout_s: float = 600.0, poll_s: float = 0.5,
                 on_ack: Callable[[Any, "TrainerPool"], None] | None = None,
                 on_give_up: Callable[[Chunk], None] | None = None,
                 on_note: Callable[[str], None] | None = None,
                 on_tick: Callable[[], None] | None = None):
        if workers <= 0:
            raise ArgumentError(f"workers must be > 0, got {workers}")
        if max_attempts <= 0:
            raise ArgumentError(f"max_attempts must be > 0, got {max_attempts}")
        self.make_actor, self.submit, self.workers = make_actor, submit, workers
        self.name_prefix, self.max_attempts = name_prefix, max_attempts
        self.chunk_timeout_s, self.start_timeout_s, self.poll_s = chunk_timeout_s, start_timeout_s, poll_s
        self.on_ack, self.on_give_up = on_ack, on_give_up
        self.on_note, self.on_tick = on_note, on_tick
        self.stats = PoolStats()
        self.slots: list[ActorSlot] = []
        self._queue: deque[Chunk] = deque()
        self._next_chunk_id = 0
        self._start_failures_in_a_row = 0

    # -- public --------------------------------------------------------------------------
    def busy_actors(self) -> list[ActorSlot]:
        """Slots whose actor is training a chunk right now (tests kill one of these)."""
        return [s for s in self.slots if s.busy]

    def run(self, chunks: list[Chunk]) -> PoolStats:
        """Work through ``chunks``; returns when every chunk is acked or given up."""
        self._queue = deque(chunks)
        self._next_chunk_id = max((c.chunk_id for c in chunks), default=-1) + 1
        if not chunks:
            return self.stats
        self.slots = [self._start(i, 0) for i in range(min(self.workers, len(chunks)))]
        last_live = time.monotonic()  # when some actor was last up
        try:
            while self._queue or any(s.busy for s in self.slots):
                self._assign()
                now = time.monotonic()
                if any(s.ready for s in self.slots):
                    last_live = now
                elif now - last_live > self.start_timeout_s:
                    raise PoolAborted(
                        f"no trainer actor could start for {self.start_timeout_s:.0f}s; the cluster has "
                        f"{ray.available_resources()} free"
                    )
                self._check_timeouts()
                pending = [s.ref for s in self.slots if s.busy] + [s.ready_ref for s in self.slots if not s.ready]
                if not pending:
                    time.sleep(self.poll_s)
                    continue
                done, _ = ray.wait(pending, num_returns=1, timeout=self.poll_s)
                for ref in done:
                    self._collect(ref)
                if self.on_tick:
                    self.on_tick()
        finally:
            self.shutdown()
        return self.stats

    def shutdown(self) -> None:
        """Close every live actor's writer (best effort) and kill the actors."""
        close_trainers([s.handle for s in self.slots if s.ready])
        for s in self.slots:
            if not s.ready:
                try:
                    ray.kill(s.handle)
                except Exception:  # noqa: BLE001 - already gone
                    pass

    # -- internals -----------------------------------------------------------------------
    def _start(self, slot: int, generation: int) -> ActorSlot:
        name = f"{self.name_prefix}-{slot}.{generation}"
        handle = self.make_actor(name)
        self.stats.actors_started += 1
        return ActorSlot(slot, generation, name, handle, ready_ref=handle.info.remote())

    def _replace(self, s: ActorSlot) -> None:
        try:
            ray.kill(s.handle)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self.slots[s.slot] = self._start(s.slot, s.generation + 1)

    def _assign(self) -> None:
        for s in self.slots:
            if s.ready and not s.busy and self._queue:
                chunk = self._queue.popleft()
                s.chunk, s.ref = chunk, self.submit(s.handle, chunk)
                s.submitted_at, s.timed_out = time.monotonic(), False

    def _check_timeouts(self) -> None:
        if self.chunk_timeout_s is None:
            return
        now = time.monotonic()
        for s in self.slots:
            if s.busy and not s.timed_out and now - s.submitted_at > self.chunk_timeout_s:
                s.timed_out = True
                ray.kill(s.handle)  # its call now fails with ActorDiedError and the chunk is retried

    def _collect(self, ref: Any) -> None:
        s = next((s for s in self.slots if _same(ref, s.ref) or _same(ref, s.ready_ref)), None)
        if s is None:
            return
        if _same(ref, s.ready_ref):
            self._collect_start(s)
            return
        chunk = s.chunk
        s.chunk, s.ref = None, None
        try:
            ack = ray.get(ref)
        except RayActorError as e:
            self.stats.actors_lost += 1
            why = f"timed out after {self.chunk_timeout_s}s" if s.timed_out else _short(e)
            self._note(f"trainer {s.name} lost ({why}); chunk {chunk.chunk_id} ({len(chunk)} items) requeued")
            self._replace(s)
            self._fail(chunk, f"trainer lost: {why}")
        except Exception as e:  # noqa: BLE001 - the chunk raised inside a live actor
            self._note(f"chunk {chunk.chunk_id} failed on {s.name}: {_short(e)}")
            self._fail(chunk, _short(e))
        else:
            self.stats.chunks_done += 1
            if self.on_ack:
                self.on_ack(ack, self)

    def _collect_start(self, s: ActorSlot) -> None:
        try:
            s.info = ray.get(s.ready_ref)
        except Exception as e:  # noqa: BLE001 - the constructor raised or the actor died starting
            self._start_failures_in_a_row += 1
            self.stats.errors.append(f"{s.name} failed to start: {_short(e)}")
            if self._start_failures_in_a_row >= max(3, 2 * self.workers):
                raise PoolAborted(f"trainer actors keep failing to start; last: {_short(e)}") from None
            self._note(f"trainer {s.name} failed to start ({_short(e)}); starting another")
            self._replace(s)
            return
        s.ready_ref = None
        self._start_failures_in_a_row = 0

    def _fail(self, chunk: Chunk, error: str) -> None:
        chunk.failures += 1
        chunk.errors.append(error)
        self.stats.failed_attempts += 1
        if len(self.stats.errors) < 20:
            self.stats.errors.append(f"chunk {chunk.chunk_id} ({chunk.task}): {error}")
        if self.stats.chunks_done == 0 and self.stats.failed_attempts >= 4 * self.max_attempts:
            raise PoolAborted(f"{self.stats.failed_attempts} attempts failed and none succeeded; last: {error}")
        if len(chunk) == 1:
            if chunk.failures >= self.max_attempts:
                self.stats.items_given_up += 1
                if self.on_give_up:
                    self.on_give_up(chunk)
            else:
                self._queue.appendleft(chunk)
        elif chunk.failures >= min(2, self.max_attempts):  # failed again: isolate the culprit
            halves = split_chunk(chunk, self._next_chunk_id)
            self._next_chunk_id += len(halves)
            self._queue.extendleft(reversed(halves))
        else:  # first loss of a chunk is usually the actor's fault, not the chunk's
            self._queue.appendleft(chunk)

    def _note(self, text: str) -> None:
        if self.on_note:
            self.on_note(text)
