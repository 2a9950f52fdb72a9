"""An Optuna sampler whose trials come from a nasdb search (needs the ``optuna`` extra).

    sampler = NasdbSampler(AskTellSearch("predictor", space, task, surrogate=...))
    study = optuna.create_study(direction="maximize", sampler=sampler, storage="sqlite:///s.db")
    study.optimize(lambda trial: evaluate(suggest_architecture(trial, space)), n_trials=30)

The objective suggests each dimension of the nasdb space as
``trial.suggest_categorical(dimension.name, dimension.choices)`` (``suggest_architecture``
does it; the same distributions as ``nasdb export --format optuna``). The sampler asks the
search for an architecture when a trial starts (``before_trial``), answers each parameter
from it (``sample_independent``), and tells the search the trial's value when it completes
(negated for a study that minimizes). A parameter outside the space, or a distribution other
than the dimension's, raises ``SpaceMismatchError`` naming it. A sampler over a study with
completed trials (SQLite storage, a new process) tells the search those first.
"""

from __future__ import annotations

from typing import Any, Sequence

from nasdb.errors import ArgumentError, NasdbError, SpaceMismatchError
from nasdb.export_optuna import space_distributions
from nasdb.space import SearchSpace
from search.ask_tell import AskTellSearch

try:
    import optuna
    from optuna.samplers import BaseSampler
    from optuna.trial import TrialState
except ImportError:  # pragma: no cover - exercised only without the extra
    raise NasdbError("the Optuna sampler needs optuna: pip install 'nasdb[optuna]'") from None


def suggest_architecture(trial: "optuna.Trial", space: SearchSpace) -> tuple[int, ...]:
    """Suggest every dimension of ``space`` on ``trial``; -> the architecture (choice indices)."""
    return tuple(d.choices.index(trial.suggest_categorical(d.name, d.choices)) for d in space.dimensions)


class NasdbSampler(BaseSampler):
    """Optuna's ``BaseSampler`` over an ``AskTellSearch``: one architecture per trial (single objective)."""

    def __init__(self, search: AskTellSearch):
        if not isinstance(search, AskTellSearch):
            raise TypeError(f"search must be a search.AskTellSearch, got {type(search).__name__}")
        self.search = search
        self._distributions = space_distributions(search.space)
        self._asked: dict[int, tuple[int, ...]] = {}  # trial number -> its architecture
        self._told: set[int] = set()
        self._caught_up = False

    def infer_relative_search_space(self, study: "optuna.Study", trial: Any) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: "optuna.Study", trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return {}

    def before_trial(self, study: "optuna.Study", trial: Any) -> None:
        if len(study.directions) != 1:
            raise ArgumentError(f"NasdbSampler searches one objective, the study has {len(study.directions)}")
        if not self._caught_up:
            self._tell_completed(study)
        self._asked[trial.number] = self.search.ask()

    def sample_independent(self, study: "optuna.Study", trial: Any, param_name: str,
                           param_distribution: Any) -> Any:
        expected = self._distributions.get(param_name)
        if expected is None:
            raise SpaceMismatchError(f"parameter {param_name!r} is not a dimension of nasdb search space "
                                     f"{self.search.space.name!r} ({', '.join(self._distributions)})")
        if param_distribution != expected:
            raise SpaceMismatchError(f"parameter {param_name!r}: {param_distribution} does not match the nasdb "
                                     f"dimension's {expected}")
        arch = self._asked.get(trial.number)
        if arch is None:  # a trial this sampler did not see start (enqueued elsewhere)
            arch = self._asked.setdefault(trial.number, self.search.ask())
        d = self.search.space.index(param_name)
        return self.search.space.dimensions[d].choices[arch[d]]

    def after_trial(self, study: "optuna.Study", trial: Any, state: Any, values: Sequence[float] | None) -> None:
        arch = self._asked.pop(trial.number, None)
        if state != TrialState.COMPLETE or not values:
            return  # a failed or pruned trial is not told (its architecture is not proposed again)
        arch = arch if arch is not None else self._architecture(trial.params)
        if arch is not None:
            self.search.tell(arch, self._reward(study, values[0]))
            self._told.add(trial.number)

    # -- helpers ---------------------------------------------------------------------------------
    def _reward(self, study: "optuna.Study", value: float) -> float:
        return float(value) if study.direction == optuna.study.StudyDirection.MAXIMIZE else -float(value)

    def _architecture(self, params: dict[str, Any]) -> tuple[int, ...] | None:
        try:
            return tuple(d.choices.index(params[d.name]) for d in self.search.space.dimensions)
        except (KeyError, ValueError):
            return None  # a trial over other parameters: nothing to tell

    def _tell_completed(self, study: "optuna.Study") -> None:
        """Tell the search the study's completed trials it has not seen (a study resumed from storage)."""
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            arch = self._architecture(t.params)
            if t.number not in self._told and arch is not None and t.values:
                self.search.tell(arch, self._reward(study, t.values[0]))
                self._told.add(t.number)
        self._caught_up = True


__all__ = ["NasdbSampler", "suggest_architecture"]
