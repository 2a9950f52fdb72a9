"""Search agents by name: ``AGENTS`` and ``create_agent`` (Optuna-style: one private module each)."""

from __future__ import annotations

from typing import Any

from nasdb.space import SearchSpace
from search.agents._base import SearchAgent
from search.agents._random import RandomSearch
from search.agents._rl import ControllerAgent, RLNAS
from search.agents._tnaml import PRETRAIN_SOURCES, TNAML

AGENTS: dict[str, type[SearchAgent]] = {"random": RandomSearch, "rl": RLNAS, "tnaml": TNAML}


def agent_class(name: str) -> type[SearchAgent]:
    try:
        return AGENTS[name]
    except KeyError:
        raise ValueError(f"unknown search agent {name!r}; known: {sorted(AGENTS)}") from None


def create_agent(name: str, space: SearchSpace, args: dict[str, Any] | None = None) -> SearchAgent:
    """Build an agent from its ``describe()`` form: ``create_agent(**agent.describe(), space=space)``."""
    cls = agent_class(name)
    args = dict(args or {})
    try:
        task = args.pop("task")
    except KeyError:
        raise ValueError(f"agent {name!r} needs a 'task' argument") from None
    try:
        return cls(space, task, **args)
    except TypeError as e:
        raise ValueError(f"bad arguments for agent {name!r}: {e}") from None


__all__ = ["AGENTS", "ControllerAgent", "PRETRAIN_SOURCES", "RLNAS", "RandomSearch", "SearchAgent", "TNAML",
           "agent_class", "create_agent"]
