"""Evaluators by name: ``train`` (real child training on Ray actors) and ``lookup`` (tabulated rows)."""

from __future__ import annotations

from nasdb.errors import EvaluatorAborted, NotTabulatedError
from search.evaluators._base import Evaluation, Evaluator, Trial, architecture_key, child_reward
from search.evaluators._lookup import LookupEvaluator, load_table
from search.evaluators._training import TrainingEvaluator, release_placement_groups, shared_objects

EVALUATORS: dict[str, type[Evaluator]] = {"train": TrainingEvaluator, "lookup": LookupEvaluator}

__all__ = ["EVALUATORS", "Evaluation", "Evaluator", "EvaluatorAborted", "LookupEvaluator", "NotTabulatedError",
           "TrainingEvaluator", "Trial", "architecture_key", "child_reward", "load_table", "release_placement_groups",
           "shared_objects"]
