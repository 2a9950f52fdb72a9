"""Which rows were trained on the data their task holds now: the fingerprint check of ``nasdb verify``.

Since schema v3 every row records ``task_fingerprint`` (``Task.fingerprint()`` of the samples it
was trained on, or an imported benchmark's provenance) and ``bank_fingerprint`` (the embedding
bank's, null where no bank was used); both are part of the experiment id. A row is

- ``verified`` when its fingerprints equal the task's current data and the current bank,
- ``stale`` when one differs (the task's data or the bank changed since: such rows describe
  other data, and the predictor's training skips them by default, predictor/data.py),
- ``unverified`` when it has no fingerprint (written before v3): kept and read as before.

The current bank fingerprint comes from the caller (``current_bank()``, nasdb does not import
cluster/), asked only when some row has a bank fingerprint.
"""

from __future__ import annotations

from typing import Any, Callable

import pyarrow.compute as pc

from nasdb.errors import NasdbError

STATES = ("verified", "unverified", "stale")


def row_state(stored_task: str | None, stored_bank: str | None, task_now: str | None,
              bank_now: Callable[[], str]) -> str:
    """``verified``, ``unverified`` or ``stale`` for one row's (task, bank) fingerprints."""
    if stored_task is None and stored_bank is None:
        return "unverified"
    if stored_task is not None and stored_task != task_now:
        return "stale"
    if stored_bank is not None and stored_bank != bank_now():
        return "stale"
    return "verified"


def check_fingerprints(store: Any, current_bank: Callable[[], str]) -> dict[str, Any]:
    """Count every task's rows by state (all statuses). Returns ``{"rows", "verified", "unverified",
    "stale", "bank", "tasks": [{"task", "rows", "verified", "unverified", "stale", "current",
    "stale_fingerprints": {"task": [...], "bank": [...]}, "error"}]}``; ``error`` (else None) says
    why a task's current data is unknown (its samples are gone): its fingerprinted rows count stale."""
    table = store.experiments_arrow(None, status=None, columns=["task", "task_fingerprint", "bank_fingerprint"])
    groups = table.group_by(["task", "task_fingerprint", "bank_fingerprint"], use_threads=False).aggregate(
        [("task", "count")])
    bank: list[str] = []

    def bank_now() -> str:
        if not bank:
            bank.append(current_bank())
        return bank[0]

    tasks: dict[str, dict[str, Any]] = {}
    for task, tfp, bfp, n in zip(*(groups.column(c).to_pylist()
                                   for c in ("task", "task_fingerprint", "bank_fingerprint", "task_count"))):
        entry = tasks.get(task)
        if entry is None:
            entry = tasks[task] = {"task": task, "rows": 0, **{s: 0 for s in STATES}, "current": None,
                                   "stale_fingerprints": {"task": [], "bank": []}, "error": None}
            try:
                entry["current"] = store.task_fingerprint(task)
            except NasdbError as e:
                entry["error"] = str(e)
        state = row_state(tfp, bfp, entry["current"], bank_now)
        entry["rows"] += n
        entry[state] += n
        if state == "stale":
            kind, fp = ("task", tfp) if tfp is not None and tfp != entry["current"] else ("bank", bfp)
            if fp not in entry["stale_fingerprints"][kind]:
                entry["stale_fingerprints"][kind].append(fp)
    out = [tasks[t] for t in sorted(tasks)]
    return {"rows": sum(e["rows"] for e in out), **{s: sum(e[s] for e in out) for s in STATES},
            "bank": bank[0] if bank else None, "tasks": out}


def stale_mask(task_fingerprints: Any, bank_fingerprints: Any, task_now: str, bank_now: Callable[[], str]) -> Any:
    """Boolean numpy mask of the stale rows among arrow columns of fingerprints (null: not stale)."""
    import numpy as np

    tfp = task_fingerprints.combine_chunks() if hasattr(task_fingerprints, "combine_chunks") else task_fingerprints
    bfp = bank_fingerprints.combine_chunks() if hasattr(bank_fingerprints, "combine_chunks") else bank_fingerprints
    stale = pc.fill_null(pc.not_equal(tfp, task_now), False).to_numpy(zero_copy_only=False).astype(bool)
    if bfp.null_count < len(bfp):
        stale |= pc.fill_null(pc.not_equal(bfp, bank_now()), False).to_numpy(zero_copy_only=False).astype(bool)
    return np.asarray(stale, dtype=bool)
