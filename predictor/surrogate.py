"""The predictor as a search agent's surrogate: Algorithm 2's candidates, the ensemble's mean and spread, the ascent.

search/agents/_predictor.py states what a surrogate offers (search/ does not import
predictor/); ``EnsembleSurrogate`` offers it for one task from a ``SuggestionEngine``
(predictor/suggest.py: the same engine, ascent and portfolio as ``nasdb suggest``), and
``SurrogateFactory`` builds one from a store's predictor in whichever process runs the search
(it pickles as a store root and a predictor id: a Ray actor loads the checkpoint itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from predictor.ascent import start_logits
from predictor.config import SuggestConfig
from predictor.suggest import SuggestionEngine

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

#: gradient-ascent steps from a search's best result (Algorithm 2's own run takes k_max_iters)
SEARCH_ASCENT_ITERS = 200


class EnsembleSurrogate:
    """A predictor checkpoint's view of one task: ``candidates``, ``score`` and ``ascend`` (the
    ``search.agents.Surrogate`` protocol). ``z``: the task's meta-features (None without them)."""

    def __init__(self, engine: SuggestionEngine, z: torch.Tensor | None, config: SuggestConfig | None = None, *,
                 ascent_iters: int = SEARCH_ASCENT_ITERS):
        self.engine, self.z, self.config = engine, z, config or SuggestConfig()
        self.ascent_iters = min(int(ascent_iters), self.config.k_max_iters)
        self.predictor_id = engine.predictor_id
        self.space_id = engine.space.space_id
        self._candidates: np.ndarray | None = None

    @classmethod
    def for_task(cls, store: ExperimentStore, task: str, predictor_id: str | None = None,
                 config: SuggestConfig | None = None) -> "EnsembleSurrogate":
        """The store's predictor ``predictor_id`` (default: the registry's default) for ``task`` of the store."""
        from predictor.checkpoint import load_predictor
        from predictor.suggest import engine_for

        engine = engine_for(load_predictor(store, predictor_id), store)
        return cls(engine, engine.task_z_or_embed(store, task), config)

    def candidates(self) -> np.ndarray:
        """Algorithm 2's distinct candidates, best first (row 0 is ``nasdb suggest``'s answer): (C, D)."""
        if self._candidates is None:
            s = self.engine.suggest_z(self.z, self.config)
            self._candidates = np.array([c.architecture for c in s.candidates], dtype=np.int64)
        return self._candidates

    def score(self, architectures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, std = self.engine.score_with_std(np.asarray(architectures, dtype=np.int64), self.z)
        return mean, (std if std is not None else np.zeros_like(mean))

    def ascend(self, starts: np.ndarray) -> np.ndarray:
        logits0 = start_logits(self.engine.space, np.asarray(starts, dtype=np.int64), self.config.start_smoothing)
        result = self.engine.ascent.run(logits0, self.z, step_size=self.config.step_size, max_iters=self.ascent_iters,
                                        tolerance=self.config.tolerance, check_every=self.config.check_every)
        return self.engine.space.discretize(result.u.numpy())  # (S, D)


@dataclass(frozen=True)
class SurrogateFactory:
    """``factory(task)`` -> the ``EnsembleSurrogate`` of predictor ``predictor_id`` (None: the
    registry's default) of the store at ``store_root``; ``suggest``: SuggestConfig fields."""

    store_root: str
    predictor_id: str | None = None
    suggest: dict[str, Any] | None = None

    def __call__(self, task: str) -> EnsembleSurrogate:
        from nasdb.store import ExperimentStore

        store = ExperimentStore(self.store_root)
        config = SuggestConfig.from_dict(self.suggest) if self.suggest else None
        return EnsembleSurrogate.for_task(store, task, self.predictor_id, config)


__all__ = ["EnsembleSurrogate", "SEARCH_ASCENT_ITERS", "SurrogateFactory"]
