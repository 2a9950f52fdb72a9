"""Population by strategy and rounds: ``nasdb populate --strategy random|uncertainty --rounds N``.

``random`` is the offline phase as it always was (each task's seeded random stream).
``uncertainty`` (issue 18, item 3) trains in ``rounds``: before each round a proposer is
built from the store as it stands (predictor/active.py refits the ensemble on every row so
far) and picks each task's next chunk, up to ``ceil(per_task * round / rounds)`` rows of the
task by this strategy. Rows record the strategy as their agent ("random" / "uncertainty").
cluster/ does not import predictor/: the proposer factory comes from the caller (the nasdb
CLI wires predictor.active.UncertaintyProposer). A rerun resumes: each round counts the
task's stored rows of the strategy and proposes only what is missing, so no child is trained
twice and the budget holds.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

from cluster.populate._config import PopulateConfig
from cluster.populate._populate import populate
from cluster.populate._progress import PopulateSummary
from nasdb.errors import ArgumentError, UnknownStrategyError

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

STRATEGIES = ("random", "uncertainty")


def check_strategy(strategy: str, rounds: Any) -> int:
    """UnknownStrategyError naming an unknown strategy; ValueError for rounds that are not an integer >= 1."""
    if strategy not in STRATEGIES:
        raise UnknownStrategyError(f"unknown populate strategy {strategy!r}; known: {list(STRATEGIES)}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ArgumentError(f"rounds must be an integer >= 1, got {rounds!r}")
    return rounds


def populate_by_strategy(store: ExperimentStore | str, config: PopulateConfig, *, strategy: str = "random",
                         rounds: int = 1, proposer_factory: Callable[[Any, int], Any] | None = None,
                         **run: Any) -> list[PopulateSummary]:
    """``populate`` by ``strategy``; one summary per round. Round r trains up to
    ``ceil(config.per_task * r / rounds)`` rows per task with the strategy as agent (and, unless
    ``config.run_id`` names one, a new run id). ``proposer_factory(store, round)`` ->
    ``proposer(task, n, stored) -> (n, D)``, rebuilt (refitted) before every uncertainty round.
    ``run``: populate's keyword arguments (progress, address, create_store, ...)."""
    rounds = check_strategy(strategy, rounds)
    per_task = config.per_task
    if strategy == "random":
        return [populate(store, config.replace(per_task=math.ceil(per_task * r / rounds), agent="random"), **run)
                for r in range(1, rounds + 1)]
    if proposer_factory is None:
        raise ArgumentError("the uncertainty strategy needs the predictor, which the nasdb CLI wires: run "
                            "`nasdb populate --strategy uncertainty` (python -m cluster.populate has no predictor)")
    if per_task < rounds:
        raise ArgumentError(f"per-task must be an integer >= rounds ({rounds}), got {per_task!r}")
    out = []
    for r in range(1, rounds + 1):
        out.append(populate(store, config.replace(per_task=math.ceil(per_task * r / rounds), agent="uncertainty"),
                            proposer=proposer_factory(store, r), **run))
    return out


__all__ = ["STRATEGIES", "check_strategy", "populate_by_strategy"]
