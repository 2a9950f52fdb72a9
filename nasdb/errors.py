"""nasdb's exception hierarchy: each message is one line that names the offending value."""

from __future__ import annotations


class NasdbError(Exception):
    """Base class of every error nasdb raises on purpose."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


class UnknownTaskError(NasdbError, KeyError):
    """A task name that is neither built in nor registered in the store."""


class InvalidTaskError(NasdbError, ValueError):
    """Task data that breaks a rule: wrong shape, non-finite values, a single class, an empty split."""


class StoreError(NasdbError):
    """The experiment store is missing, unreachable or malformed."""


class SchemaError(NasdbError, ValueError):
    """A record or file that does not match the experiment schema."""


class TaskHasNoSamplesError(InvalidTaskError):
    """A registered task with metadata and experiments but no samples: an imported tabular benchmark."""


class UnknownBenchmarkError(NasdbError, KeyError):
    """A tabular benchmark name that ``nasdb.benchmarks.BENCHMARKS`` does not know."""


class UnknownPredictorError(NasdbError, KeyError):
    """A predictor id or alias that the store does not hold."""


class AliasConflictError(NasdbError, ValueError):
    """An alias change that would break a rule: another search space, an alias still in use."""


class UnknownAgentError(NasdbError, ValueError):
    """A search agent name that ``search.agents.AGENTS`` does not know."""


class SpaceMismatchError(NasdbError, ValueError):
    """A search and a predictor (or an Optuna distribution) over different search spaces."""


class UnknownStrategyError(NasdbError, ValueError):
    """A populate strategy name that ``cluster.populate.STRATEGIES`` does not know."""
