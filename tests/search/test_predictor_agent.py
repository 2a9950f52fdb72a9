"""The predictor agent (issue 18): its acquisition against naive references, its search, resume and bad input.

A fake surrogate (a linear scorer) drives the agent on a small space; a real predictor, fitted
on two tasks of test_search_run's fully tabulated toy benchmark, drives ``run_search`` and
``nasdb search --agent predictor`` through the lookup evaluator (no Ray).
"""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import norm
from test_search_run import TASKS, TOY, Interrupt, tabulate

from nasdb.errors import SpaceMismatchError, UnknownAgentError
from nasdb.space import Dimension, SearchSpace
from nasdb.store import ExperimentStore
from search import AcquisitionConfig, create_agent, run_search
from search.acquisition import ResidualGP, acquisition_values, hamming, normal_scores

SPACE = SearchSpace("six", [Dimension(f"d{i}", tuple("abcd")) for i in range(6)])


class LinearSurrogate:
    """``score = onehot @ w`` with a constant spread; candidates: the best of a random sample."""

    predictor_id = "linear"

    def __init__(self, space: SearchSpace = SPACE, seed: int = 0, space_id: str | None = None):
        self.space, self.w = space, np.random.default_rng(seed).normal(size=space.encoding_size)
        self.space_id = space_id or space.space_id

    def score(self, architectures):
        mean = self.space.encode_many(np.asarray(architectures)) @ self.w
        return mean, np.full(len(mean), 0.1)

    def candidates(self):
        pool = self.space.sample(200, 1)
        return pool[np.argsort(-self.score(pool)[0], kind="stable")[:5]]

    def ascend(self, starts):
        return np.asarray(starts)


def true_value(archs, seed=1):
    return SPACE.encode_many(np.asarray(archs)) @ np.random.default_rng(seed).normal(size=SPACE.encoding_size)


# -- the acquisition against naive references ---------------------------------------------------
def test_residual_gp_matches_the_textbook_formulas():
    rng = np.random.default_rng(0)
    x, xs = SPACE.sample(12, rng), SPACE.sample(7, rng)
    f, y, fs, spread = rng.normal(size=12), normal_scores(rng.normal(size=12)), rng.normal(size=7), rng.random(7)
    gp = ResidualGP.fit(f, y, x, prior_weight=2.0)
    a, b = np.linalg.lstsq(np.vstack([np.c_[np.ones(12), f], np.sqrt(2.0) * np.eye(2)]),
                           np.r_[y, 0.0, np.sqrt(2.0)], rcond=None)[0]  # ridge toward (0, 1)
    assert (gp.a, gp.b) == (pytest.approx(a), pytest.approx(b))
    k = lambda p, q: gp.sf2 * np.exp(-hamming(p, q) / gp.length)  # noqa: E731
    inv = np.linalg.inv(k(x, x) + gp.sf2 * gp.noise * np.eye(12))
    mean = a + b * fs + k(xs, x) @ inv @ (y - a - b * f)
    var = gp.sf2 - np.einsum("ij,jk,ik->i", k(xs, x), inv, k(xs, x)) + (b * spread) ** 2
    got_mean, got_std = gp.predict(fs, spread, xs)
    np.testing.assert_allclose(got_mean, mean, atol=1e-8)
    np.testing.assert_allclose(got_std, np.sqrt(var), atol=1e-8)


def test_expected_improvement_and_ucb_match_their_formulas():
    mean, std = np.array([0.0, 1.0, 2.0]), np.array([1.0, 0.5, 0.1])
    ei = (mean - 1.2) * norm.cdf((mean - 1.2) / std) + std * norm.pdf((mean - 1.2) / std)
    np.testing.assert_allclose(acquisition_values(AcquisitionConfig(acquisition="ei", xi=0.2), mean, std, 1.0), ei)
    np.testing.assert_allclose(acquisition_values(AcquisitionConfig(beta=2.0), mean, std, 1.0), mean + 2 * std)
    assert normal_scores(np.array([3.0, 1.0, 2.0, 2.0])).tolist() == pytest.approx(
        norm.ppf([0.875, 0.125, 0.5, 0.5]).tolist())


@pytest.mark.parametrize("bad,match", [({"acquisition": "pi"}, "unknown acquisition 'pi'"),
                                       ({"residual": "rf"}, "unknown residual model 'rf'"),
                                       ({"beta": -1.0}, "beta >= 0"), ({"random_pool": 1.5}, "random_pool"),
                                       ({"prior_weight": 0}, "prior_weight > 0")])
def test_acquisition_config_names_the_bad_value(bad, match):
    with pytest.raises(ValueError, match=match):
        AcquisitionConfig(**bad)


# -- the agent -------------------------------------------------------------------------------------
def test_first_child_is_the_suggestion_and_none_repeats():
    surrogate = LinearSurrogate()
    agent = create_agent("predictor", SPACE, {"task": "t", "random_pool": 16}, surrogate=surrogate)
    first = agent.ask(3)
    assert tuple(first[0]) == tuple(surrogate.candidates()[0])
    seen = {tuple(a) for a in first}
    agent.tell(first, true_value(first))
    for _ in range(20):
        arch = agent.ask(1)
        assert tuple(arch[0]) not in seen
        seen.add(tuple(arch[0]))
        agent.tell(arch, true_value(arch))
    assert agent.describe()["args"]["predictor"] == "linear"


@pytest.mark.parametrize("acquisition", ["ucb", "ei"])
def test_conditioning_finds_what_a_wrong_predictor_misses(acquisition):
    """The surrogate knows nothing of the task (an unrelated linear scorer); the residual GP learns the
    task from its own results and beats random search by far, the frozen ensemble does not."""
    best = {}
    for residual in ("gp", "none"):
        agent = create_agent("predictor", SPACE, {"task": "t", "acquisition": acquisition, "residual": residual},
                             surrogate=LinearSurrogate(seed=5))
        found = []
        for _ in range(30):
            arch = agent.ask(1)
            found.append(float(true_value(arch)[0]))
            agent.tell(arch, found[-1:])
        best[residual] = max(found)
    optimum = true_value(SPACE.sample(4096, 0)).max()
    randoms = [true_value(SPACE.sample(30, s)).max() for s in range(20)]
    assert best["gp"] >= optimum - 1e-9 > np.mean(randoms)
    assert best["gp"] > best["none"]


def test_space_mismatch_and_missing_surrogate_are_refused():
    with pytest.raises(SpaceMismatchError, match="scores search space other, but task 't' is searched in space"):
        create_agent("predictor", SPACE, {"task": "t"}, surrogate=LinearSurrogate(space_id="other"))
    with pytest.raises(ValueError, match="agent 'predictor' needs a surrogate"):
        create_agent("predictor", SPACE, {"task": "t"})
    with pytest.raises(ValueError, match="described with predictor 'p1' got a surrogate of 'linear'"):
        create_agent("predictor", SPACE, {"task": "t", "predictor": "p1"}, surrogate=LinearSurrogate())
    with pytest.raises(ValueError, match="a surrogate applies to the 'predictor' agent only, not 'rl'"):
        create_agent("rl", SPACE, {"task": "t"}, surrogate=LinearSurrogate())
    with pytest.raises(UnknownAgentError, match="unknown search agent 'bayes'"):
        create_agent("bayes", SPACE, {"task": "t"})


# -- a real predictor through run_search and the CLI ----------------------------------------------
@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from predictor.testing import fit_tiny_predictor

    root = str(tmp_path_factory.mktemp("bench"))
    store = tabulate(root)
    torch.manual_seed(0)
    pid = fit_tiny_predictor(store, TASKS[1:], num_steps=60, use_meta_features=False, ensemble_size=2)
    return root, pid


def test_run_search_with_a_real_predictor_resumes_the_same_stream(bench, tmp_path):
    """An interrupted run, resumed, proposes exactly what an uninterrupted one does (two copies of the store)."""
    from predictor.surrogate import SurrogateFactory

    root, pid = bench
    ref_root, cut_root = str(tmp_path / "ref"), str(tmp_path / "cut")
    shutil.copytree(root, ref_root)
    shutil.copytree(root, cut_root)
    kw = dict(evaluator="lookup", checkpoint_every=2, run_id="r1")
    ref = run_search(ref_root, "predictor", TASKS[0], 9, surrogate=SurrogateFactory(ref_root, pid), **kw)
    assert ref.agent["name"] == "predictor" and ref.agent["args"]["predictor"] == pid
    archs = [e.architecture for e in ref.evaluations]
    assert len(set(archs)) == 9  # no child twice
    factory = SurrogateFactory(cut_root, pid)
    assert list(archs[0]) == factory(TASKS[0]).candidates()[0].tolist()  # the zero-shot suggestion first

    def stop(ev, n):
        if n == 5:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_search(cut_root, "predictor", TASKS[0], 9, on_evaluation=stop, surrogate=factory, **kw)
    resumed = run_search(cut_root, "predictor", TASKS[0], 9, surrogate=factory, **kw)
    assert resumed.sessions == 2
    assert [e.architecture for e in resumed.evaluations] == archs


def test_a_plan_ships_its_predictor_by_pickle(bench):
    """A training search runs the plan in a Ray actor: the surrogate travels as store root and predictor id."""
    from predictor.surrogate import SurrogateFactory
    from search import plan_search

    root, pid = bench
    plan = plan_search(root, "predictor", TASKS[0], 5, evaluator="lookup", surrogate=SurrogateFactory(root, pid))
    twin = pickle.loads(pickle.dumps(plan))
    agent = twin.make_agent(TOY)
    assert agent.describe() == plan.agent and agent.surrogate.predictor_id == pid


def test_plan_refuses_a_missing_predictor_and_another_space(bench):
    from predictor.surrogate import SurrogateFactory
    from search import plan_search

    root, pid = bench
    with pytest.raises(ValueError, match="agent 'predictor' needs a surrogate"):
        plan_search(root, "predictor", TASKS[0], 5, evaluator="lookup")
    with pytest.raises(SpaceMismatchError, match=f"predictor '{pid}' scores search space {TOY.space_id}"):
        plan_search(root, "predictor", TASKS[0], 5, evaluator="lookup", space_id=_other_space(root),
                    surrogate=SurrogateFactory(root, pid))


def _other_space(root: str) -> str:
    other = SearchSpace("other", [Dimension("a", ("x", "y"))])
    ExperimentStore(root).save_space(other)
    return other.space_id


def test_nasdb_search_agent_predictor(bench):
    from nasdb.cli import main

    root, pid = bench
    runner = CliRunner()
    args = ["--store", root, "search", "--agent", "predictor", "--task", TASKS[0], "--budget", "4",
            "--evaluator", "lookup", "--quiet", "--json"]
    result = runner.invoke(main, [*args, "--predictor", pid])
    assert result.exit_code == 0, result.output
    assert '"name": "predictor"' in result.output and pid in result.output
    bad = runner.invoke(main, [*args, "--predictor", "nope"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1 and "'nope'" in bad.output, bad.output
    rl = runner.invoke(main, ["--store", root, "search", "--agent", "rl", "--task", TASKS[0], "--budget", "2",
                              "--evaluator", "lookup", "--predictor", pid])
    assert rl.exit_code == 1 and "--predictor applies to the predictor agent only, not rl" in rl.output
    ei = runner.invoke(main, [*args, "--predictor", pid, "--acquisition", "ei", "--beta", "2"])
    assert ei.exit_code == 0 and '"acquisition": "ei"' in ei.output and '"beta": 2.0' in ei.output, ei.output
