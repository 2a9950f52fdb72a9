"""The predictor agent: zero-shot first, then an acquisition over candidates conditioned on the task's results.

Its first child is the predictor's zero-shot suggestion (Algorithm 2,
task-aware-performance-prediction.md Sec. 3.3); each next child maximizes an acquisition
(search/acquisition.py: UCB or EI on the ensemble's mean and spread, corrected by a residual
GP on the task's own results) over candidates: Algorithm 2's candidates (gradient-ascent
results from several starts, the starts, the portfolio), the ascent from the task's best
result so far, the one-change neighbours of its best results and a fresh random pool. An
architecture already told or in flight is never proposed again.

search/ does not import predictor/: the agent takes a ``Surrogate`` (predictor/surrogate.py's
``EnsembleSurrogate`` is one; the nasdb CLI wires it from ``--predictor``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from nasdb.errors import ArgumentError, SpaceMismatchError
from nasdb.space import SearchSpace, unique_rows
from search.acquisition import AcquisitionConfig, acquisition_values, posterior
from search.agents._base import SearchAgent


@runtime_checkable
class Surrogate(Protocol):
    """A performance predictor for one task, as the predictor agent uses it. Scores are on the
    predictor's own scale (higher is better); the agent standardizes them over its candidates."""

    predictor_id: str
    space_id: str

    def candidates(self) -> np.ndarray:
        """Algorithm 2's distinct candidates for the task, best first (row 0: the suggestion): (C, D)."""

    def score(self, architectures: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ensemble's mean score and spread of architectures (N, D): (N,), (N,)."""

    def ascend(self, starts: np.ndarray) -> np.ndarray:
        """Gradient ascent from discrete starts (S, D), each result discretized: (S, D)."""


def neighbours(space: SearchSpace, architectures: np.ndarray) -> np.ndarray:
    """Every architecture one changed dimension away from a row of ``architectures`` (N, D): (M, D)."""
    out = []
    for arch in architectures:
        for d, size in enumerate(space.sizes):
            block = np.repeat(arch[None, :], size - 1, axis=0)  # (size - 1, D)
            block[:, d] = [c for c in range(size) if c != arch[d]]
            out.append(block)
    return np.concatenate(out) if out else np.zeros((0, space.num_dimensions), dtype=np.int64)


class PredictorAgent(SearchAgent):
    """Predictor-guided search (issue 18). ``surrogate``: a ``Surrogate`` over ``space``;
    ``predictor``: the id it must have (a rebuilt agent is checked against its description);
    other keyword arguments: ``AcquisitionConfig`` fields."""

    name = "predictor"

    def __init__(self, space: SearchSpace, task: str, *, surrogate: Surrogate | None = None, seed: int = 0,
                 predictor: str | None = None, **acquisition: Any):
        super().__init__(space, task, seed=seed)
        if surrogate is None or not isinstance(surrogate, Surrogate):
            raise ArgumentError("agent 'predictor' needs a surrogate (predictor.surrogate.SurrogateFactory; "
                                "`nasdb search --agent predictor --predictor ID` wires one)")
        if surrogate.space_id != space.space_id:
            raise SpaceMismatchError(f"predictor {surrogate.predictor_id!r} scores search space {surrogate.space_id}, "
                                     f"but task {task!r} is searched in space {space.space_id}")
        if predictor is not None and predictor != surrogate.predictor_id:
            raise ArgumentError(f"agent described with predictor {predictor!r} got a surrogate of "
                                f"{surrogate.predictor_id!r}")
        self.surrogate, self.config = surrogate, AcquisitionConfig(**acquisition)
        self._rng = np.random.default_rng(self.seed)
        self._archs: list[tuple[int, ...]] = []  # told, in order
        self._rewards: list[float] = []
        self._pending: set[tuple[int, ...]] = set()  # asked, not yet told
        self._ascended: dict[tuple[int, ...], np.ndarray] = {}  # ascent start -> its result (deterministic)

    def args(self) -> dict[str, Any]:
        return {**super().args(), "predictor": self.surrogate.predictor_id, **self.config.to_dict()}

    # -- ask / tell ------------------------------------------------------------------------
    def _ask(self, n: int, task: str) -> np.ndarray:
        out = []
        for _ in range(n):
            arch = self.next_architecture()
            self._pending.add(arch)
            out.append(arch)
        return np.array(out, dtype=np.int64).reshape(n, self.space.num_dimensions)

    def _tell(self, architectures: np.ndarray, rewards: np.ndarray, task: str) -> None:
        for arch, r in zip(architectures, rewards):
            key = tuple(int(v) for v in arch)
            self._pending.discard(key)
            self._archs.append(key)
            self._rewards.append(float(r))

    def next_architecture(self) -> tuple[int, ...]:
        """The next child: the suggestion while nothing is known, else the acquisition's argmax."""
        taken = set(self._archs) | self._pending
        suggestion = tuple(int(v) for v in self.surrogate.candidates()[0])
        if not self._archs and suggestion not in taken:
            return suggestion
        pool = self.candidate_pool(taken)
        if not len(pool):  # every candidate taken (a tiny space): any architecture not yet taken, else any
            rest = [a for a in map(tuple, self.space.sample(64, self._rng).tolist()) if a not in taken]
            return rest[0] if rest else tuple(int(v) for v in self.space.sample(1, self._rng)[0])
        return tuple(int(v) for v in pool[int(np.argmax(self.acquisition(pool)))])

    # -- candidates and their acquisition -----------------------------------------------------
    def _best(self, k: int) -> np.ndarray:
        order = sorted(range(len(self._rewards)), key=lambda i: (-self._rewards[i], i))[:k]
        return np.array([self._archs[i] for i in order], dtype=np.int64).reshape(-1, self.space.num_dimensions)

    def candidate_pool(self, taken: set[tuple[int, ...]]) -> np.ndarray:
        """Distinct candidates not in ``taken``: (P, D)."""
        parts = [np.asarray(self.surrogate.candidates(), dtype=np.int64),
                 self.space.sample(self.config.random_pool, self._rng),
                 neighbours(self.space, self._best(self.config.neighbours_of))]
        starts = [s for s in map(tuple, self._best(self.config.ascend_from).tolist()) if s not in self._ascended]
        if starts:
            for s, found in zip(starts, self.surrogate.ascend(np.array(starts, dtype=np.int64))):
                self._ascended[s] = np.asarray(found, dtype=np.int64)
        parts += [self._ascended[s][None, :] for s in map(tuple, self._best(self.config.ascend_from).tolist())]
        pool = unique_rows(np.concatenate(parts).reshape(-1, self.space.num_dimensions))
        keep = [tuple(row) not in taken for row in pool.tolist()]
        return pool[np.array(keep, dtype=bool)] if len(pool) else pool

    def acquisition(self, pool: np.ndarray) -> np.ndarray:
        """The acquisition value of each candidate (P, D) given every result told so far: (P,)."""
        observed = np.array(self._archs, dtype=np.int64).reshape(-1, self.space.num_dimensions)
        mean, spread = self.surrogate.score(np.concatenate([pool, observed]))  # (P + n,)
        mean, spread = np.asarray(mean, dtype=np.float64), np.asarray(spread, dtype=np.float64)
        center, scale = mean[:len(pool)].mean(), mean[:len(pool)].std() or 1.0
        f, s = (mean - center) / scale, spread / scale
        mu, sigma, best = posterior(self.config, f[:len(pool)], s[:len(pool)], pool, f[len(pool):],
                                    np.array(self._rewards), observed)
        return acquisition_values(self.config, mu, sigma, best)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "rng": self._rng.bit_generator.state, "archs": [list(a) for a in self._archs],
                "rewards": list(self._rewards)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._rng.bit_generator.state = state["rng"]
        self._archs = [tuple(int(v) for v in a) for a in state["archs"]]
        self._rewards = [float(r) for r in state["rewards"]]
        self._pending = set()  # what was in flight is asked again or told by the driver's reconcile
