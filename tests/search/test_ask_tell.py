"""Ask/tell in the Python API and the Optuna sampler on top of it (issue 18), with real Optuna studies.

The predictor agent runs on a fake linear surrogate (tests/search/test_search_controller.py's), so
these tests need neither a store nor Ray; studies use in-memory and SQLite storage.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_search_controller import LinearSurrogate, small_space

from nasdb.errors import NasdbError, SpaceMismatchError, UnknownAgentError
from search import AskTellSearch

optuna = pytest.importorskip("optuna")
from search.optuna_sampler import NasdbSampler, suggest_architecture  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
SPACE = small_space()


def value_of(arch) -> float:
    return float(SPACE.encode(arch) @ np.random.default_rng(3).normal(size=SPACE.encoding_size))


def searches():
    return [AskTellSearch("predictor", SPACE, "t", surrogate=LinearSurrogate(), random_pool=32),
            AskTellSearch("random", SPACE, "t", seed=1), AskTellSearch("rl", SPACE, "t")]


@pytest.mark.parametrize("search", searches(), ids=lambda s: s.agent.name)
def test_ask_tell_round_trip(search):
    for _ in range(6):
        arch = search.ask()
        assert isinstance(arch, tuple) and len(arch) == SPACE.num_dimensions
        search.tell(arch, value_of(arch))
    assert search.best[1] == max(v for _, v in search.history) and search.agent.num_told == 6
    twin = searches()[[s.agent.name for s in searches()].index(search.agent.name)]
    twin.load_state_dict(search.state_dict())
    assert twin.ask() == search.ask() and twin.history == search.history


def test_ask_tell_bad_input():
    with pytest.raises(UnknownAgentError, match="unknown search agent 'bogus'"):
        AskTellSearch("bogus", SPACE, "t")
    search = AskTellSearch("random", SPACE, "t")
    with pytest.raises(ValueError, match="finite number, got nan"):
        search.tell(search.ask(), float("nan"))
    with pytest.raises(ValueError, match="out of range"):
        search.tell((99, 0, 0, 0), 1.0)
    with pytest.raises(SpaceMismatchError, match="scores search space"):
        AskTellSearch("predictor", SPACE, "t", surrogate=_other_space_surrogate())


def _other_space_surrogate() -> LinearSurrogate:
    s = LinearSurrogate()
    s.space_id = "another"
    return s


def objective(trial) -> float:
    return value_of(suggest_architecture(trial, SPACE))


@pytest.mark.parametrize("storage", ["memory", "sqlite"])
@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_an_optuna_study_takes_its_trials_from_nasdb(tmp_path, storage, direction):
    url = None if storage == "memory" else f"sqlite:///{tmp_path / 'study.db'}"
    search = AskTellSearch("predictor", SPACE, "t", surrogate=LinearSurrogate(), random_pool=32)
    study = optuna.create_study(storage=url, direction=direction, sampler=NasdbSampler(search), study_name="s")
    sign = 1 if direction == "maximize" else -1
    study.optimize(lambda t: sign * objective(t), n_trials=8)
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    archs = [tuple(SPACE.dimensions[i].choices.index(t.params[d.name]) for i, d in enumerate(SPACE.dimensions))
             for t in trials]
    assert archs[0] == tuple(LinearSurrogate().candidates()[0])  # the first trial: the zero-shot suggestion
    assert len(set(archs)) == 8  # the predictor agent never proposes a told architecture again
    assert [a for a, _ in search.history] == archs  # every completed trial told, in order
    assert [v for _, v in search.history] == pytest.approx([value_of(a) for a in archs])  # reward: maximize


def test_a_study_resumed_from_sqlite_tells_its_past_trials_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    first = optuna.create_study(storage=url, study_name="s", direction="maximize",
                                sampler=NasdbSampler(AskTellSearch("random", SPACE, "t")))
    first.optimize(objective, n_trials=5)
    search = AskTellSearch("predictor", SPACE, "t", surrogate=LinearSurrogate(), random_pool=32)
    again = optuna.load_study(study_name="s", storage=url, sampler=NasdbSampler(search))
    again.optimize(objective, n_trials=3)
    assert len(search.history) == 8
    past = {a for a, _ in search.history[:5]}
    assert not past & {a for a, _ in search.history[5:]}  # nothing evaluated before is proposed again


@pytest.mark.parametrize("suggest,match", [
    (lambda t: t.suggest_float("lr", 1e-4, 1e-1), "parameter 'lr' is not a dimension of nasdb search space"),
    (lambda t: t.suggest_categorical(SPACE.dimensions[0].name, ("x", "y")),
     f"parameter '{SPACE.dimensions[0].name}': CategoricalDistribution"),
])
def test_a_distribution_outside_the_space_is_one_clear_error(suggest, match):
    study = optuna.create_study(sampler=NasdbSampler(AskTellSearch("random", SPACE, "t")))
    with pytest.raises(SpaceMismatchError, match=match) as err:
        study.optimize(suggest, n_trials=1)
    assert isinstance(err.value, NasdbError) and "\n" not in str(err.value)
