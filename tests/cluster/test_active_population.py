"""Active population (issue 18, item 3): the diverse pick, the uncertainty proposer, rounds, resume, bad input.

The proposer is checked on a store of written rows (no training); one populate run trains
real children (1 epoch, a small built-in task) on the session's Ray cluster with a fixed
proposer, to check the rounds, the agent the rows record and a resume that adds nothing.
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cluster.child import TrainRecipe
from cluster.populate import PopulateConfig, check_strategy, populate_by_strategy
from nasdb.errors import UnknownStrategyError
from nasdb.space import default_space
from nasdb.store import ExperimentRecord, ExperimentStore
from predictor.active import ActiveConfig, UncertaintyProposer, diverse_top

TASK, OTHER, THIRD = "digits_0to5", "digits_mod3", "digits_confusable4"


def naive_diverse_top(archs, spread, n, diversity):
    weight, picked = diversity * np.median(spread), []
    for _ in range(n):
        def gain(i):
            sim = max(((archs[i] == archs[j]).mean() for j in picked), default=0.0)
            return spread[i] - weight * sim
        picked.append(max((i for i in range(len(archs)) if i not in picked), key=lambda i: (gain(i), -i)))
    return picked


def test_diverse_top_matches_a_naive_reference_and_spreads_out():
    rng = np.random.default_rng(0)
    archs, spread = default_space().sample(200, rng), rng.random(200)
    for diversity in (0.0, 1.0, 5.0):
        assert diverse_top(archs, spread, 8, diversity).tolist() == naive_diverse_top(archs, spread, 8, diversity)
    assert diverse_top(archs, spread, 8, 0.0).tolist() == np.argsort(-spread)[:8].tolist()
    twins = np.repeat(archs[:1], 5, axis=0)  # five copies of the most disputed architecture, then the rest
    picked = diverse_top(np.concatenate([twins, archs[1:]]), np.r_[np.full(5, 2.0), spread[1:]], 3, 5.0)
    assert sum(int(i) < 5 for i in picked) == 1  # one copy, not three


def test_bad_strategy_and_rounds_are_named(tmp_path):
    with pytest.raises(UnknownStrategyError, match="unknown populate strategy 'greedy'; known: \\['random', "):
        check_strategy("greedy", 1)
    with pytest.raises(ValueError, match="rounds must be an integer >= 1, got 0"):
        populate_by_strategy(str(tmp_path), PopulateConfig(per_task=4, tasks=[TASK]), strategy="uncertainty", rounds=0)
    with pytest.raises(ValueError, match="the uncertainty strategy needs the predictor"):
        populate_by_strategy(str(tmp_path), PopulateConfig(per_task=4, tasks=[TASK]), strategy="uncertainty", rounds=2)
    with pytest.raises(ValueError, match=r"per-task must be an integer >= rounds \(3\), got 2"):
        populate_by_strategy(str(tmp_path), PopulateConfig(per_task=2, tasks=[TASK]), strategy="uncertainty", rounds=3,
                             proposer_factory=lambda store, r: None)
    ExperimentStore(str(tmp_path / "s")).init()
    from nasdb.cli import main

    for args, match in ((["--rounds", "0"], "rounds must be an integer >= 1, got 0"),
                        (["--strategy", "greedy"], "'greedy' is not one of 'random', 'uncertainty'")):
        res = CliRunner().invoke(main, ["--store", str(tmp_path / "s"), "populate", "--per-task", "2", *args])
        assert res.exit_code != 0 and match in res.output and res.output.strip().count("\n") == 0, res.output


def written_store(root: str) -> ExperimentStore:
    store = ExperimentStore(root)
    store.init()
    space = default_space()
    store.save_space(space)
    rng = np.random.default_rng(1)
    with store.writer("written") as w:
        for t, task in enumerate((OTHER, THIRD)):
            for arch in space.sample(16, rng):
                v = float(0.5 + 0.3 * (arch[0] == t) + 0.05 * rng.random())
                w.append(ExperimentRecord(
                    task=task, space_id=space.space_id, architecture=arch.tolist(), seed=0, recipe={"epochs": 1},
                    agent="random", run_id="written", val_accuracy=v, test_accuracy=v, val_curve=[v], epochs=1,
                    train_seconds=0.1, num_params=10, device="cpu", worker="w"))
    return store


def test_the_uncertainty_proposer_picks_new_distinct_architectures(tmp_path):
    store = written_store(str(tmp_path))
    config = ActiveConfig(pool=256, predictor={"num_steps": 20, "ensemble_size": 3, "batch_size": 8,
                                               "use_meta_features": False})
    proposer = UncertaintyProposer(store, config, seed=1)
    stored = np.array(store.experiments_arrow(OTHER).column("architecture").to_pylist())
    picked = proposer(OTHER, 6, stored)
    assert picked.shape == (6, default_space().num_dimensions)
    assert len({tuple(a) for a in picked}) == 6 and not {tuple(a) for a in picked} & {tuple(a) for a in stored}
    np.testing.assert_array_equal(proposer(OTHER, 6, stored), picked)  # deterministic for a round


def test_rounds_train_the_proposals_record_the_strategy_and_resume_to_nothing(ray_cluster, tmp_path):
    root = str(tmp_path / "store")
    calls = []

    def factory(store, r):
        def propose(task, n, stored):
            calls.append((r, task, n, len(stored)))
            rng = np.random.default_rng(r)
            return default_space().sample(n, rng)
        return propose

    config = PopulateConfig(per_task=3, tasks=[TASK], recipe=TrainRecipe(epochs=1), workers=1)
    kw = dict(strategy="uncertainty", rounds=2, proposer_factory=factory, progress=False)
    summaries = populate_by_strategy(root, config, **kw)
    assert [s.task(TASK).ok for s in summaries] == [2, 1]  # ceil(3 * 1/2) = 2 rows, then 3 in all
    assert calls == [(1, TASK, 2, 0), (2, TASK, 1, 2)]
    rows = ExperimentStore(root).experiments_arrow(TASK).to_pylist()
    assert len(rows) == 3 and {r["agent"] for r in rows} == {"uncertainty"}
    again = populate_by_strategy(root, config, **kw)  # a rerun: nothing missing, nothing proposed or trained
    assert [s.task(TASK).skipped for s in again] == [3, 3] and len(calls) == 2  # a round plans every stored row
    assert ExperimentStore(root).count() == 3
