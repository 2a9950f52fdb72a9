"""Random search: every dimension drawn uniformly and independently (T-NAML Sec. 4's RS baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nasdb.space import SearchSpace
from search.agents._base import SearchAgent


class RandomSearch(SearchAgent):
    """The floor every learned search strategy must beat; ``tell`` only counts results."""

    name = "random"

    def __init__(self, space: SearchSpace, task: str, *, seed: int = 0):
        super().__init__(space, task, seed=seed)
        self._rng = np.random.default_rng(self.seed)

    def _ask(self, n: int, task: str) -> np.ndarray:
        return self.space.sample(n, self._rng)

    def _tell(self, architectures: np.ndarray, rewards: np.ndarray, task: str) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._rng.bit_generator.state = state["rng"]
