"""Search agents by name: ``AGENTS`` and ``create_agent`` (Optuna-style: one private module each)."""

from __future__ import annotations

from typing import Any

from nasdb.errors import ArgumentError, UnknownAgentError
from nasdb.space import SearchSpace
from search.agents._base import SearchAgent
from search.agents._predictor import PredictorAgent, Surrogate
from search.agents._random import RandomSearch
from search.agents._rl import RLNAS, ControllerAgent
from search.agents._tnaml import PRETRAIN_SOURCES, TNAML

AGENTS: dict[str, type[SearchAgent]] = {"predictor": PredictorAgent, "random": RandomSearch, "rl": RLNAS,
                                        "tnaml": TNAML}


def agent_class(name: str) -> type[SearchAgent]:
    try:
        return AGENTS[name]
    except KeyError:
        raise UnknownAgentError(f"unknown search agent {name!r}; known: {sorted(AGENTS)}") from None


def create_agent(name: str, space: SearchSpace, args: dict[str, Any] | None = None, *,
                 surrogate: Surrogate | None = None) -> SearchAgent:
    """Build an agent from its ``describe()`` form: ``create_agent(**agent.describe(), space=space)``.

    ``surrogate``: the predictor agent's predictor (not part of a description: it is rebuilt
    from the described predictor id by whoever wires the search); refused by the others."""
    cls = agent_class(name)
    args = dict(args or {})
    try:
        task = args.pop("task")
    except KeyError:
        raise ArgumentError(f"agent {name!r} needs a 'task' argument") from None
    if surrogate is not None:
        if cls is not PredictorAgent:
            raise ArgumentError(f"a surrogate applies to the 'predictor' agent only, not {name!r}")
        args["surrogate"] = surrogate
    try:
        return cls(space, task, **args)
    except TypeError as e:
        raise ArgumentError(f"bad arguments for agent {name!r}: {e}") from None


__all__ = ["AGENTS", "ControllerAgent", "PRETRAIN_SOURCES", "PredictorAgent", "RLNAS", "RandomSearch", "SearchAgent",
           "Surrogate", "TNAML", "agent_class", "create_agent"]
