"""Active population: train next the architectures the ensemble disagrees on most (issue 18, item 3).

``nasdb populate --strategy uncertainty --rounds N`` (cluster/populate/_active.py) refits the
ensemble on the store's rows before each round and asks an ``UncertaintyProposer`` for each
task's next chunk: from a pool of random architectures not yet stored for the task, the ones
with the largest spread of the K members' scores (the deep ensemble's epistemic uncertainty,
Lakshminarayanan et al. 2017), picked greedily with a diversity term so a chunk is not a set of
near-copies: each pick maximizes ``spread - diversity * median(spread) * similarity to the
closest pick so far`` (similarity = share of equal dimensions; Brinker 2003's diversity-
weighted batch selection).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from nasdb.errors import ArgumentError, ConfigError
from nasdb.space import unique_rows
from predictor.config import PredictorConfig

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore


@dataclass(frozen=True)
class ActiveConfig:
    """``pool``: random candidates per task and round; ``diversity``: weight of the similarity penalty
    (0: the top spreads, however alike); ``predictor``: PredictorConfig fields of each round's refit."""

    pool: int = 4096
    diversity: float = 1.0
    predictor: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 1:
            raise ConfigError(f"`pool` must be an integer >= 1, but got pool={self.pool!r}.")
        if isinstance(self.diversity, bool) or not isinstance(self.diversity, (int, float)) or \
                not np.isfinite(self.diversity) or self.diversity < 0:
            raise ConfigError(f"`diversity >= 0` must hold, but got diversity={self.diversity!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diverse_top(architectures: np.ndarray, spread: np.ndarray, n: int, diversity: float) -> np.ndarray:
    """Rows of ``architectures`` (P, D) picked greedily by spread (P,) minus the similarity penalty: (n,)."""
    n = min(int(n), len(architectures))
    weight = diversity * float(np.median(spread)) if len(spread) else 0.0
    closest = np.zeros(len(architectures))  # similarity to the closest pick so far
    picked: list[int] = []
    for _ in range(n):
        gain = spread - weight * closest
        gain[picked] = -np.inf
        i = int(np.argmax(gain))
        picked.append(i)
        closest = np.maximum(closest, (architectures == architectures[i]).mean(axis=1))
    return np.array(picked, dtype=np.int64)


class UncertaintyProposer:
    """``proposer(task, n, taken)`` -> (n, D) architectures not in ``taken`` (M, D), most disputed first.

    Fits the ensemble in-process on every task of ``store`` with at least MIN_EXPERIMENTS ok rows
    (Algorithm 1), once, at construction: one round's refit (a new task with none yet is scored
    through its meta-features alone). ``seed`` seeds the fit and the candidate pools."""

    def __init__(self, store: ExperimentStore, config: ActiveConfig | None = None, *, seed: int = 0):
        from predictor.checkpoint import PredictorCheckpoint
        from predictor.data import MIN_EXPERIMENTS, load_for_config
        from predictor.fit import fit_in_process
        from predictor.suggest import SuggestionEngine

        self.store, self.config, self.seed = store, config or ActiveConfig(), int(seed)
        cfg = PredictorConfig(**{"seed": self.seed, **(self.config.predictor or {})})
        names = [r["task"] for r in store.task_stats().to_pylist()]
        fit_on = [n for n in names if store.count(n, status="ok") >= MIN_EXPERIMENTS]
        data, cfg, _ = load_for_config(store, cfg, tasks=fit_on)
        model, self.history = fit_in_process(data, cfg)
        checkpoint = PredictorCheckpoint(predictor_id=f"active-seed{self.seed}", model=model, config=cfg,
                                         space=data.space, metadata={"tasks": data.task_names,
                                                                     "data_snapshot": data.snapshot()})
        self.engine = SuggestionEngine(checkpoint, store, data=data)
        self.space = data.space

    def __call__(self, task: str, n: int, taken: Sequence[Sequence[int]]) -> np.ndarray:
        rng = np.random.default_rng([self.seed, len(taken), int(n)])
        pool = unique_rows(self.space.sample(self.config.pool, rng))  # (P, D)
        known = {tuple(int(v) for v in a) for a in taken}
        pool = pool[np.array([tuple(a) not in known for a in pool.tolist()], dtype=bool)]
        if n <= 0 or not len(pool):
            return np.zeros((0, self.space.num_dimensions), dtype=np.int64)
        _, spread = self.engine.score_with_std(pool, self.engine.task_z_or_embed(self.store, task))
        if spread is None:
            raise ArgumentError("uncertainty population needs an ensemble (ensemble_size >= 2), got a single predictor")
        return pool[diverse_top(pool, spread, n, self.config.diversity)]


__all__ = ["ActiveConfig", "UncertaintyProposer", "diverse_top"]
