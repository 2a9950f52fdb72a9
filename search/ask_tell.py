"""Ask/tell search in the Python API: nasdb proposes the next architecture, the caller evaluates it.

    from predictor.surrogate import SurrogateFactory
    from search import AskTellSearch

    search = AskTellSearch("predictor", space, "my_task", surrogate=SurrogateFactory(root)("my_task"))
    arch = search.ask()            # a tuple of choice indices
    search.tell(arch, 0.93)        # its validation accuracy (higher is better)

Any agent of ``search.agents.AGENTS`` drives it (Optuna's ``Study.ask`` / ``Study.tell`` in
shape; search/optuna_sampler.py puts an Optuna study on top). ``tell`` also takes results of
architectures this search did not propose (an earlier study's trials): the predictor and
random agents use them as they are; RL-NAS and T-NAML learn from them off-policy.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from nasdb.errors import ArgumentError
from nasdb.space import SearchSpace
from search.agents import SearchAgent, Surrogate, agent_class, create_agent


class AskTellSearch:
    """One search driven by its caller. ``agent``: a name (built over ``space`` for ``task``
    with ``args`` and, for "predictor", ``surrogate``) or a ready ``SearchAgent``."""

    def __init__(self, agent: str | SearchAgent, space: SearchSpace | None = None, task: str | None = None, *,
                 surrogate: Surrogate | None = None, **args: Any):
        if isinstance(agent, SearchAgent):
            if space is not None or task is not None or surrogate is not None or args:
                raise ArgumentError("a ready agent brings its own space, task and arguments; pass only the agent")
            self.agent = agent
        else:
            agent_class(agent)  # UnknownAgentError naming it
            if not isinstance(space, SearchSpace):
                raise TypeError(f"space must be a nasdb SearchSpace, got {type(space).__name__}")
            self.agent = create_agent(agent, space, {"task": task, **args}, surrogate=surrogate)
        self.history: list[tuple[tuple[int, ...], float]] = []

    @property
    def space(self) -> SearchSpace:
        return self.agent.space

    @property
    def task(self) -> str:
        return self.agent.task

    def ask(self) -> tuple[int, ...]:
        """The next architecture to evaluate (choice indices, one per dimension of ``space``)."""
        return tuple(int(v) for v in self.agent.ask(1)[0])

    def tell(self, architecture: Sequence[int], value: float) -> None:
        """Report ``architecture``'s value (higher is better; a failed evaluation: leave it untold)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ArgumentError(f"a told value must be a finite number, got {value!r}")
        arch = tuple(int(v) for v in self.space.validate(architecture))
        self.agent.tell([arch], [float(value)])
        self.history.append((arch, float(value)))

    @property
    def best(self) -> tuple[tuple[int, ...], float] | None:
        """The best architecture told so far and its value (the first of ties), None before any."""
        return max(self.history, key=lambda h: h[1]) if self.history else None

    def describe(self) -> dict[str, Any]:
        return self.agent.describe()

    def state_dict(self) -> dict[str, Any]:
        return {"agent": self.agent.state_dict(), "history": [[list(a), v] for a, v in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.history = [(tuple(int(v) for v in a), float(v)) for a, v in state["history"]]


__all__ = ["AskTellSearch"]
