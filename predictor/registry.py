"""The predictor registry: named aliases ("champion", "staging") over the store's checkpoints.

Like MLflow's registered-model aliases. ``promote(store, ID, "champion")`` points an alias at
a checkpoint; a server that follows the alias (``nasdb serve --predictor champion``) swaps to
the new predictor in place, so promoting is how a fit goes live. Following whatever was
fitted last happens only when asked for by name (``latest``).

Storage: one small JSON file per alias, ``<store>/aliases/<name>.json``::

    {"alias": "champion", "predictor_id": ID, "space_id": S, "promoted_at": ISO time,
     "previous": ID or null, "history": [{"predictor_id": ID, "promoted_at": ...}, ...]}

Each write goes to a temporary name that is then renamed over the alias (the way checkpoint
metadata is committed), so a reader sees the old or the new alias, never half of one. An
alias keeps one search space for life: promoting a predictor of another space to an alias in
use is refused (a server following it could not swap), until the alias is removed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from nasdb.errors import AliasConflictError, ArgumentError, UnknownPredictorError
from nasdb.records import (METADATA_FILE, PREDICTORS_DIR, latest_predictor, list_predictors, predictor_ids,
                           read_metadata)

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

ALIASES_DIR = "aliases"
#: The reference that follows the newest checkpoint of any kind; never an alias name.
LATEST = "latest"
#: The alias a server follows when none is named.
DEFAULT_ALIAS = "champion"
HISTORY_KEPT = 20
_ALIAS = re.compile(r"[a-z][a-z0-9_-]{0,63}")


# -- names and files --------------------------------------------------------------------------------
def check_alias(name: Any) -> str:
    """``name`` if it can be an alias (a lowercase letter, then up to 63 of a-z 0-9 _ -; not 'latest')."""
    if not isinstance(name, str) or not _ALIAS.fullmatch(name) or name == LATEST:
        raise ArgumentError(f"not an alias name: {name!r} (a lowercase letter, then up to 63 of a-z 0-9 _ -; "
                            f"{LATEST!r} is reserved)")
    return name


def _read_alias(store: ExperimentStore, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.artifacts(ALIASES_DIR).get(f"{name}.json"))
    except FileNotFoundError:
        return None


def aliases(store: ExperimentStore) -> dict[str, dict[str, Any]]:
    """Every alias of the store, by name: ``{name: record}`` (see the module docstring)."""
    out = {}
    for name in store.artifacts(ALIASES_DIR).list(folders=False):
        if name.endswith(".json") and _ALIAS.fullmatch(name[:-5]):
            record = _read_alias(store, name[:-5])
            if record is not None:  # None: removed while listing
                out[name[:-5]] = record
    return dict(sorted(out.items()))


def _known(store: ExperimentStore) -> str:
    names = list(aliases(store))
    return f"aliases: {', '.join(names) or 'none'}"


def alias_record(store: ExperimentStore, name: str) -> dict[str, Any]:
    """The record of alias ``name``; UnknownPredictorError naming it when there is none."""
    record = _read_alias(store, check_alias(name))
    if record is None:
        raise UnknownPredictorError(f"no alias {name!r} in the store ({_known(store)})")
    return record


def aliases_of(store: ExperimentStore, predictor_id: str) -> list[str]:
    """The aliases that point at ``predictor_id``."""
    return [name for name, r in aliases(store).items() if r.get("predictor_id") == predictor_id]


# -- resolving a reference ---------------------------------------------------------------------------
def resolve(store: ExperimentStore, ref: str) -> str:
    """The predictor id ``ref`` designates now: an alias, ``latest``, or an id (checked to exist)."""
    return select(store, ref).target(store)


@dataclass(frozen=True)
class Selection:
    """What a server serves: a pinned id, an alias it follows, or the latest checkpoint it follows."""

    kind: str  # "pinned" | "alias" | "latest"
    name: str | None = None  # the id (pinned) or the alias; None for latest

    @property
    def follows(self) -> bool:
        """True when the predictor may change by itself (an alias is promoted, a newer fit lands)."""
        return self.kind != "pinned"

    @property
    def alias(self) -> str | None:
        return self.name if self.kind == "alias" else None

    def target(self, store: ExperimentStore) -> str:
        """The predictor id this selection designates now."""
        if self.kind == "alias":
            return alias_record(store, self.name)["predictor_id"]
        if self.kind == "latest":
            pid = latest_predictor(store)
            if pid is None:
                raise UnknownPredictorError("the store has no predictor yet (fit one first: nasdb fit)")
            return pid
        return self.name

    def describe(self) -> str:
        return {"alias": f"alias {self.name}", "latest": "the latest predictor"}.get(self.kind, f"pinned {self.name}")


def select(store: ExperimentStore, ref: str | None) -> Selection:
    """Parse a ``--predictor`` / ``predictor:`` value.

    None: the ``champion`` alias when the store has one, else the newest checkpoint, pinned
    (never followed). ``latest``: follow the newest checkpoint. An alias name: follow that
    alias. Anything else: that predictor id, pinned. Unknown names fail with one line.
    """
    if ref is None:
        if _read_alias(store, DEFAULT_ALIAS) is not None:
            return Selection("alias", DEFAULT_ALIAS)
        pid = latest_predictor(store)
        if pid is None:
            raise UnknownPredictorError("the store has no predictor yet (fit one first: nasdb fit)")
        return Selection("pinned", pid)
    if not isinstance(ref, str) or not ref:
        raise ArgumentError(f"not a predictor id, alias or {LATEST!r}: {ref!r}")
    if ref == LATEST:
        return Selection("latest")
    if _ALIAS.fullmatch(ref) and _read_alias(store, ref) is not None:
        return Selection("alias", ref)
    if ref in predictor_ids(store):
        read_metadata(store, ref)  # a checkpoint written by a newer nasdb fails here, with its reason
        return Selection("pinned", ref)
    raise UnknownPredictorError(f"no predictor {ref!r} (no such id or alias) in the store ({_known(store)}; "
                                f"{len(predictor_ids(store))} predictors: see nasdb predictors list)")


# -- changing aliases and checkpoints -------------------------------------------------------------
def _checkpoint(store: ExperimentStore, predictor_id: str) -> dict[str, Any]:
    if not isinstance(predictor_id, str) or predictor_id not in predictor_ids(store):
        raise UnknownPredictorError(f"no predictor {predictor_id!r} in the store (see nasdb predictors list)")
    return read_metadata(store, predictor_id)


def promote(store: ExperimentStore, predictor_id: str, alias: str = DEFAULT_ALIAS) -> dict[str, Any]:
    """Point ``alias`` at ``predictor_id`` (creating the alias) and return its new record."""
    check_alias(alias)
    space_id = _checkpoint(store, predictor_id)["space"]["id"]
    if alias in predictor_ids(store):
        raise AliasConflictError(f"alias {alias!r} is also a predictor id in the store; choose another alias")
    current = _read_alias(store, alias)
    if current is not None and current.get("space_id") != space_id:
        raise AliasConflictError(f"alias {alias!r} serves search space {current.get('space_id')} (predictor "
                                 f"{current.get('predictor_id')}), but predictor {predictor_id} is of space "
                                 f"{space_id}: unalias it first or choose another alias")
    now = datetime.now(timezone.utc).isoformat()
    history = [{"predictor_id": predictor_id, "promoted_at": now}] + list((current or {}).get("history", []))
    record = {"alias": alias, "predictor_id": predictor_id, "space_id": space_id, "promoted_at": now,
              "previous": (current or {}).get("predictor_id"), "history": history[:HISTORY_KEPT]}
    # atomic: readers see the old alias or the new one
    store.artifacts(ALIASES_DIR).put(f"{alias}.json", json.dumps(record, indent=1, sort_keys=True).encode())
    return record


def unalias(store: ExperimentStore, alias: str) -> dict[str, Any]:
    """Remove ``alias``; returns the record it had. Servers following it keep their predictor."""
    record = alias_record(store, alias)
    store.artifacts(ALIASES_DIR).delete(f"{alias}.json")
    return record


def check_deletable(store: ExperimentStore, predictor_id: str) -> None:
    """UnknownPredictorError for an unknown id, AliasConflictError while an alias points at it."""
    _checkpoint(store, predictor_id)
    held = aliases_of(store, predictor_id)
    if held:
        raise AliasConflictError(f"predictor {predictor_id} is aliased as {', '.join(held)}: promote another "
                                 f"predictor to it or unalias it first")


def delete_predictor(store: ExperimentStore, predictor_id: str) -> None:
    """Remove a checkpoint; refused while an alias points at it.

    The commit marker (metadata.json) goes first, so an interrupted delete leaves a folder
    every reader already ignores.
    """
    check_deletable(store, predictor_id)
    area = store.artifacts(PREDICTORS_DIR)
    area.delete(f"{predictor_id}/{METADATA_FILE}")
    area.delete(predictor_id)


# -- listing ------------------------------------------------------------------------------------------
def summaries(store: ExperimentStore) -> list[dict[str, Any]]:
    """``list_predictors`` with each predictor's aliases, oldest first."""
    by_pid: dict[str, list[str]] = {}
    for name, r in aliases(store).items():
        by_pid.setdefault(r.get("predictor_id"), []).append(name)
    return [s | {"aliases": by_pid.get(s["predictor_id"], [])} for s in list_predictors(store)]


def details(store: ExperimentStore, ref: str) -> dict[str, Any]:
    """One predictor's full metadata (minus bulky task embeddings), its aliases and how ``ref`` named it."""
    selection = select(store, ref)
    pid = selection.target(store)
    meta = dict(read_metadata(store, pid))
    embeddings = meta.pop("task_embeddings", None)
    meta["task_embeddings"] = f"{len(embeddings)} tasks" if embeddings else None
    return meta | {"aliases": aliases_of(store, pid), "selected_as": selection.describe()}
