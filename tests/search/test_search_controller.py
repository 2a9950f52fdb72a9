"""The controller, REINFORCE and the agents against naive references and synthetic rewards (no Ray)."""

from __future__ import annotations

import json
import math
import pickle

import numpy as np
import pytest
import torch

from nasdb.space import Dimension, SearchSpace, default_space
from search.agents import AGENTS, TNAML, create_agent
from search.controller import Controller, ControllerConfig
from search.reinforce import Reinforce, ReinforceConfig, RewardNormalizer, reinforce_loss

SIZES = [7, 12, 2, 3]


def small_space() -> SearchSpace:
    return SearchSpace("toy", [Dimension(f"d{i}", tuple(f"c{j}" for j in range(s))) for i, s in enumerate(SIZES)])


def naive_log_prob(ctrl: Controller, arch: np.ndarray, task: str | None) -> tuple[float, float]:
    """One architecture, one step at a time through LSTMCell-style unrolling of the same weights."""
    c = ctrl.config
    H, L = c.hidden_size, c.num_layers
    h = [torch.zeros(1, H) for _ in range(L)]
    cc = [torch.zeros(1, H) for _ in range(L)]
    x = ctrl.start[None, :]
    task_vec = ctrl.task_table[ctrl.task_index(task)][None, :] if task is not None else None
    logp, ent = 0.0, 0.0
    for t, size in enumerate(ctrl.sizes):
        inp = x if task_vec is None else torch.cat([x, task_vec], dim=-1)
        layer_in = inp
        for l in range(L):
            w_ih, w_hh = getattr(ctrl.lstm, f"weight_ih_l{l}"), getattr(ctrl.lstm, f"weight_hh_l{l}")
            b = getattr(ctrl.lstm, f"bias_ih_l{l}") + getattr(ctrl.lstm, f"bias_hh_l{l}")
            gates = layer_in @ w_ih.T + h[l] @ w_hh.T + b
            i, f, g, o = gates.chunk(4, dim=-1)
            cc[l] = torch.sigmoid(f) * cc[l] + torch.sigmoid(i) * torch.tanh(g)
            h[l] = torch.sigmoid(o) * torch.tanh(cc[l])
            layer_in = h[l]
        out = layer_in + (ctrl.skip(inp) if ctrl.skip is not None else 0)
        p = torch.softmax(ctrl.heads[t](out), dim=-1)[0]
        a = int(arch[t])
        logp += math.log(float(p[a].detach()))
        ent += float(-(p * p.log()).sum().detach())
        x = ctrl.action_embed.weight[ctrl.offsets[t] + a][None, :]
    return logp, ent


@pytest.mark.parametrize("multitask", [False, True])
def test_log_prob_matches_naive_unrolled_reference(multitask):
    cfg = ControllerConfig(task_embedding=25 if multitask else 0, skip_connection=multitask)
    ctrl = Controller(SIZES, cfg, task_names=["a", "b"] if multitask else (), seed=3)
    task = "b" if multitask else None
    gen = torch.Generator().manual_seed(0)
    archs, sample_logp = ctrl.sample(5, task, generator=gen)
    assert archs.shape == (5, len(SIZES)) and archs.dtype == np.int64
    assert np.all(archs < np.array(SIZES)) and np.all(archs >= 0)
    logp, ent = ctrl.log_prob(archs, task)
    np.testing.assert_allclose(logp.detach().numpy(), sample_logp, rtol=1e-5, atol=1e-5)
    for k in range(5):
        ref_lp, ref_ent = naive_log_prob(ctrl, archs[k], task)
        assert logp[k].item() == pytest.approx(ref_lp, abs=1e-5)
        assert ent[k].item() == pytest.approx(ref_ent, abs=1e-5)


def test_uniform_init_gives_a_near_uniform_policy():
    ctrl = Controller(default_space().sizes.tolist())
    probs = ctrl.probabilities(np.zeros((1, 15), dtype=np.int64))
    for p, s in zip(probs, default_space().sizes):
        assert p.shape == (1, s)
        assert np.abs(p - 1.0 / s).max() < 0.05


def test_checkpoint_round_trip_with_task_embeddings():
    ctrl = Controller(SIZES, ControllerConfig(task_embedding=25, skip_connection=True), task_names=["a"])
    ctrl.add_task("new", seed=5)
    again = Controller.from_checkpoint(pickle.loads(pickle.dumps(ctrl.checkpoint())))
    archs = np.array([[1, 2, 1, 0], [6, 11, 0, 2]])
    for t in ("a", "new"):
        torch.testing.assert_close(again.log_prob(archs, t)[0], ctrl.log_prob(archs, t)[0])
    assert again.task_names == ["a", "new"]
    with pytest.raises(KeyError, match="no embedding for task 'zzz'"):
        ctrl.log_prob(archs, "zzz")
    with pytest.raises(ValueError, match="already has an embedding"):
        ctrl.add_task("a")


def test_reward_normalizer_matches_the_paper_formulas():
    rng = np.random.default_rng(0)
    rewards = rng.uniform(0.5, 0.9, size=50)
    a = 0.01
    norm = RewardNormalizer(decay=a, scale=True)
    b = s2 = 0.0
    for t, r in enumerate(rewards, start=1):
        b = (1 - a) * b + a * r  # b_t = (1-a) b_{t-1} + a R
        bc = b / (1 - (1 - a) ** t)  # bias correction
        s2 = (1 - a) * s2 + a * (r - bc) ** 2  # s2_t = (1-a) s2_{t-1} + a (R - b_t)^2
        sc = math.sqrt(s2 / (1 - (1 - a) ** t))
        expected = (r - bc) / sc if sc > 1e-8 else 0.0
        assert norm(r) == pytest.approx(expected, rel=1e-9, abs=1e-12)
    single = RewardNormalizer(decay=0.1, scale=False)
    assert single(0.7) == 0.0  # no baseline yet
    assert single(0.9) == pytest.approx(0.2)  # R - b_{t-1}, b_1 = 0.7 after bias correction


def test_reinforce_loss_is_the_policy_gradient_objective():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    ent = torch.tensor([3.0, 4.0], requires_grad=True)
    adv = torch.tensor([0.5, -1.0])
    loss = reinforce_loss(logp, ent, adv, 0.1)
    assert loss.item() == pytest.approx(-((0.5 * -1.0 + 0.1 * 3.0) + (-1.0 * -2.0 + 0.1 * 4.0)) / 2)
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv / 2)
    torch.testing.assert_close(ent.grad, torch.full((2,), -0.05))


def test_task_specific_normalizers_are_separate():
    ctrl = Controller(SIZES, ControllerConfig(task_embedding=8), task_names=["a", "b"])
    rf = Reinforce(ctrl, ReinforceConfig(normalize_advantage=True))
    rf.advantages([0.9, 0.8, 0.95], ["a", "a", "a"])
    rf.advantages([0.1], ["b"])
    assert rf.normalizers["a"].count == 3 and rf.normalizers["b"].count == 1
    assert rf.normalizers["b"].mean == pytest.approx(0.1)


def synthetic_reward(archs: np.ndarray) -> np.ndarray:
    return (archs[:, 0] == 2).astype(np.float64)  # 1 if dimension 0 picks choice 2


@pytest.mark.parametrize("name", ["rl", "tnaml"])
def test_reinforce_raises_the_probability_of_the_rewarded_choice(name):
    agent = create_agent(name, small_space(), {"task": "t", "seed": 1, "learning_rate": 1e-2})
    before = agent.probabilities()[2]
    for _ in range(30):
        archs = agent.ask(4)
        agent.tell(archs, synthetic_reward(archs))
    after = agent.probabilities()[2]
    assert before == pytest.approx(1 / 7, abs=0.05)
    assert after > 0.6, (before, after)


def test_tnaml_pretraining_transfers_a_prior_to_a_new_task():
    space = small_space()
    agent = TNAML(space, "target", seed=0, pretrain_tasks=["p1", "p2"], learning_rate=1e-2, pretrain_epochs=2)
    rng = np.random.default_rng(0)
    rows = {t: (a := space.sample(60, rng), synthetic_reward(a)) for t in ("p1", "p2")}
    assert agent.pretrain_rows(rows) == 2 * 120
    assert agent.probabilities(task="p1")[2] > 0.5
    assert not agent.transferred
    archs = agent.ask(2)  # first use of the target: transfer adds its embedding
    assert agent.transferred and agent.controller.task_names == ["p1", "p2", "target"]
    assert agent.probabilities()[2] > 0.3  # the prior carries over through the shared weights
    agent.tell(archs, [0.5, 0.6])
    with pytest.raises(ValueError, match="after transfer"):
        agent.tell(archs, [0.5, 0.6], task="p1")


# -- the contract every agent keeps (one suite, parametrized over the registry) -----------------
class LinearSurrogate:
    """The predictor agent's stand-in predictor (tests/search/test_predictor_agent.py has the real one)."""

    predictor_id = "linear"

    def __init__(self):
        self.space = small_space()
        self.space_id = self.space.space_id
        self.w = np.random.default_rng(0).normal(size=self.space.encoding_size)

    def score(self, architectures):
        mean = self.space.encode_many(np.asarray(architectures)) @ self.w
        return mean, np.full(len(mean), 0.1)

    def candidates(self):
        return self.space.sample(3, 0)

    def ascend(self, starts):
        return np.asarray(starts)


def surrogate_of(name: str) -> LinearSurrogate | None:
    return LinearSurrogate() if name == "predictor" else None


@pytest.fixture(params=sorted(AGENTS))
def agent(request):
    args = {"task": "t", "seed": 4}
    if request.param == "tnaml":
        args["pretrain_tasks"] = ["p"]
    return create_agent(request.param, small_space(), args, surrogate=surrogate_of(request.param))


def test_agent_contract_ask_tell_state(agent):
    space = agent.space
    first = agent.ask(3)
    assert first.shape == (3, space.num_dimensions) and first.dtype == np.int64
    for a in first:
        space.validate(a)
    agent.tell(first[:2], [0.3, 0.4])  # results may come back in part and in any order
    agent.tell(first[2:], [0.1])
    assert agent.num_told == 3
    state = pickle.loads(pickle.dumps(agent.state_dict()))
    desc = json.loads(json.dumps(agent.describe()))
    twin = create_agent(desc["name"], space, desc["args"], surrogate=surrogate_of(desc["name"]))
    twin.load_state_dict(state)
    np.testing.assert_array_equal(twin.ask(5), agent.ask(5))
    assert pickle.loads(pickle.dumps(agent)).describe() == agent.describe()  # Ray ships agents by pickle


def test_agent_contract_bad_input(agent):
    with pytest.raises(ValueError, match="got 2 architectures but 1 rewards"):
        agent.tell(agent.ask(2), [0.5])
    with pytest.raises(ValueError, match="out of range"):
        agent.tell([[99, 0, 0, 0]], [0.5])
    with pytest.raises(ValueError, match="finite"):
        agent.tell(agent.ask(1), [float("nan")])
    with pytest.raises(ValueError, match=">= 1"):
        agent.ask(0)
    with pytest.raises(ValueError, match="not task 'other'"):
        agent.ask(1, task="other")
    other = create_agent("rl" if agent.name != "rl" else "random", agent.space, {"task": "t"})
    with pytest.raises(ValueError, match="does not match"):
        other.load_state_dict(agent.state_dict())


def test_unknown_agent_and_bad_arguments():
    with pytest.raises(ValueError,
                       match="unknown search agent 'bogus'; known: \\['predictor', 'random', 'rl', 'tnaml'\\]"):
        create_agent("bogus", small_space(), {"task": "t"})
    with pytest.raises(ValueError, match="include the target task 't'"):
        create_agent("tnaml", small_space(), {"task": "t", "pretrain_tasks": ["t"]})
    with pytest.raises(ValueError, match="bad arguments for agent 'rl'"):
        create_agent("rl", small_space(), {"task": "t", "nope": 1})
