"""Progress of a populate run (rows per task, rows/s, ETA) and its final summary table.

A tqdm bar when the stream is a terminal; otherwise one log line every ``interval_s``
seconds, which is what ``ray job logs`` shows for a job started with ``ray job submit``.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import IO, Any

from nasdb.errors import NotFoundError


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


@dataclass
class TaskSummary:
    """One task's line of the summary: planned = skipped + ok + failed, and missing = 0 when complete."""

    task: str
    planned: int
    skipped: int = 0  # already in the store before this run
    ok: int = 0
    failed: int = 0
    best_val_accuracy: float | None = None  # over the rows this run trained to the end
    missing: int = 0  # planned ids with no row in the store after the run
    stopped: int = 0  # ok rows stopped early (early stopping on), part of ``ok``
    epochs_saved: int = 0  # epochs the stopped children did not train

    @property
    def trained(self) -> int:
        return self.ok + self.failed


@dataclass
class PopulateSummary:
    """What a populate run did, per task and in total."""

    run_id: str
    tasks: list[TaskSummary]
    wall_seconds: float  # the whole call: checks, Ray start, embedding bank, actors, training
    workers: int
    device: str
    pool_seconds: float = 0.0  # from starting the actors to the last ack
    actors_lost: int = 0
    retried_attempts: int = 0
    gave_up: list[str] = field(default_factory=list)  # "task/experiment_id: error"
    aborted: str | None = None
    early_stop: dict | None = None  # the EarlyStopConfig's settings when early stopping was on
    early_stop_status: dict[str, dict] = field(default_factory=dict)  # per task: curves held, fits, reference

    @property
    def rows_stopped(self) -> int:
        return sum(t.stopped for t in self.tasks)

    @property
    def epochs_saved(self) -> int:
        return sum(t.epochs_saved for t in self.tasks)

    @property
    def rows_trained(self) -> int:
        return sum(t.trained for t in self.tasks)

    @property
    def rows_per_second(self) -> float:
        """Rows trained per wall-clock second of the whole call."""
        return self.rows_trained / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def pool_rows_per_second(self) -> float:
        """Rows trained per second of the actor pool (what a longer run approaches)."""
        return self.rows_trained / self.pool_seconds if self.pool_seconds > 0 else 0.0

    @property
    def complete(self) -> bool:
        return self.aborted is None and all(t.missing == 0 for t in self.tasks)

    def task(self, name: str) -> TaskSummary:
        for t in self.tasks:
            if t.task == name:
                return t
        raise NotFoundError(f"task {name!r} is not in this run's summary")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(rows_trained=self.rows_trained, rows_per_second=self.rows_per_second,
                 pool_rows_per_second=self.pool_rows_per_second, complete=self.complete,
                 rows_stopped=self.rows_stopped, epochs_saved=self.epochs_saved)
        return d

    def format_table(self) -> str:
        es = self.early_stop is not None
        head = ("task", "planned", "skipped", "ok", "failed") + (("stopped",) if es else ()) + ("best val",)

        def row(name: str, planned: int, skipped: int, ok: int, failed: int, stopped: int, best: Any) -> tuple:
            return ((name, str(planned), str(skipped), str(ok), str(failed)) + ((str(stopped),) if es else ())
                    + ("-" if best is None else f"{best:.4f}",))

        rows = [row(t.task, t.planned, t.skipped, t.ok, t.failed, t.stopped, t.best_val_accuracy)
                for t in self.tasks]
        best = [t.best_val_accuracy for t in self.tasks if t.best_val_accuracy is not None]
        rows.append(row("total", *(sum(getattr(t, f) for t in self.tasks)
                                   for f in ("planned", "skipped", "ok", "failed", "stopped")),
                        max(best) if best else None))
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

        def fmt(r: tuple[str, ...]) -> str:
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

        rule = "-" * len(fmt(head))
        lines = [fmt(head), rule, *map(fmt, rows[:-1]), rule, fmt(rows[-1])]
        if self.rows_trained == 0 and not self.aborted:
            lines.append(f"run {self.run_id}: nothing to train, every planned experiment is in the store "
                         f"({format_seconds(self.wall_seconds)})")
        else:
            lines.append(
                f"run {self.run_id}: {self.rows_trained} rows trained in {format_seconds(self.wall_seconds)} "
                f"({self.rows_per_second:.2f} rows/s; {self.pool_rows_per_second:.2f} rows/s over the "
                f"{format_seconds(self.pool_seconds)} the {self.workers} {self.device} workers ran)"
                + (f"; {self.actors_lost} actors lost, {self.retried_attempts} attempts retried"
                   if self.retried_attempts else "")
            )
        if es:
            lines.append(self._early_stop_line())
        if self.gave_up:
            lines.append(f"{len(self.gave_up)} experiments given up after repeated failures (recorded as failed):")
            lines += [f"  {g}" for g in self.gave_up[:10]]
        if self.aborted:
            lines.append(f"ABORTED: {self.aborted} (rerun the same command to resume)")
        elif not self.complete:
            lines.append(f"INCOMPLETE: {sum(t.missing for t in self.tasks)} planned experiments have no row")
        return "\n".join(lines)

    def _early_stop_line(self) -> str:
        """Stopped children and epochs saved (Baker Sec. 3's speedup counts epochs), and the predictor."""
        epochs = int(self.early_stop.get("num_epochs") or 0)
        trained_ok = sum(t.ok for t in self.tasks)
        full = epochs * trained_ok
        saved = f" of {full} ({100.0 * self.epochs_saved / full:.0f}%)" if full else ""
        curves = ", ".join(f"{task} {s.get('num_complete', 0)} complete curves"
                           + ("" if s.get("ready") else " (still in burn-in)")
                           for task, s in sorted(self.early_stop_status.items()))
        return (f"early stopping: {self.rows_stopped} of {trained_ok} children stopped early, "
                f"{self.epochs_saved} epochs saved{saved}" + (f"; predictor: {curves}" if curves else ""))


class Progress:
    """Counts rows per task as acks arrive and shows them (bar or periodic lines)."""

    def __init__(self, summaries: list[TaskSummary], *, enabled: bool = True, stream: IO[str] | None = None,
                 interval_s: float = 10.0, bar: bool | None = None):
        self.tasks = {t.task: t for t in summaries}
        self.total = sum(t.planned - t.skipped for t in summaries)
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._last_line = self.started
        use_bar = (bar if bar is not None else _isatty(self.stream)) and enabled
        self._bar = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, file=self.stream, unit="row", dynamic_ncols=True, desc="populate")

    @property
    def done(self) -> int:
        return sum(t.trained for t in self.tasks.values())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def rate(self) -> float:
        elapsed = self.elapsed()
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta_seconds(self) -> float:
        if self.done >= self.total:
            return 0.0
        rate = self.rate()
        return (self.total - self.done) / rate if rate > 0 else float("inf")

    def add(self, task: str, *, ok: int = 0, failed: int = 0, best_val: float | None = None, stopped: int = 0,
            epochs_saved: int = 0) -> None:
        t = self.tasks[task]
        t.ok += ok
        t.failed += failed
        t.stopped += stopped
        t.epochs_saved += epochs_saved
        if best_val is not None and (t.best_val_accuracy is None or best_val > t.best_val_accuracy):
            t.best_val_accuracy = best_val
        if self._bar is not None:
            self._bar.update(ok + failed)
            self._bar.set_postfix_str(self._active_tasks(), refresh=False)

    def tick(self) -> None:
        """Print a log line when ``interval_s`` passed since the last (no bar only)."""
        now = time.monotonic()
        if self.enabled and self._bar is None and now - self._last_line >= self.interval_s:
            self._last_line = now
            self._write(self.line())

    def note(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(f"populate: {text}", file=self.stream)
        else:
            self._write(f"populate: {text}")

    def line(self) -> str:
        if self.done == 0 and self.total:
            waited = format_seconds(self.elapsed())
            return f"populate: 0/{self.total} rows, waiting for the first chunk ({waited} so far)"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        stopped = sum(t.stopped for t in self.tasks.values())
        return (f"populate: {self.done}/{self.total} rows ({pct:.0f}%), {self.rate():.2f} rows/s, "
                f"ETA {format_seconds(self.eta_seconds())}" + (f", {stopped} stopped early" if stopped else "")
                + (f" | {active}" if (active := self._active_tasks()) else ""))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._write(self.line())

    def _active_tasks(self) -> str:
        parts = [f"{t.task} {t.skipped + t.trained}/{t.planned}" for t in self.tasks.values()
                 if 0 < t.trained < t.planned - t.skipped]
        return ", ".join(parts[:6]) + (" ..." if len(parts) > 6 else "")

    def _write(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
