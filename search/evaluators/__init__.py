"""Evaluators by name: ``train`` (real child training on Ray actors) and ``lookup`` (tabulated rows)."""

from __future__ import annotations

from search.evaluators._base import Evaluation, Evaluator, Trial
from search.evaluators._lookup import LookupEvaluator, NotTabulatedError
from search.evaluators._training import (EvaluatorAborted, SearchTrainer, TrainingEvaluator, release_placement_groups,
                                        shared_objects)

EVALUATORS: dict[str, type[Evaluator]] = {"train": TrainingEvaluator, "lookup": LookupEvaluator}


def evaluator_class(name: str) -> type[Evaluator]:
    try:
        return EVALUATORS[name]
    except KeyError:
        raise ValueError(f"unknown evaluator {name!r}; known: {sorted(EVALUATORS)}") from None


__all__ = ["EVALUATORS", "Evaluation", "Evaluator", "EvaluatorAborted", "LookupEvaluator", "NotTabulatedError",
           "SearchTrainer", "TrainingEvaluator", "Trial", "evaluator_class", "release_placement_groups",
           "shared_objects"]
