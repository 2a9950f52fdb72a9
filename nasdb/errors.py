"""nasdb's exception hierarchy, all of it: every error nasdb raises on purpose is a NasdbError.

Each message is one line that names the rule and the offending value. A subclass also inherits
the built-in exception its callers have always caught (ValueError, KeyError, ...), so that
``except ValueError`` keeps working. The CLI prints a NasdbError as one line and exits 1; any
other exception is a bug and shows its traceback.
"""

from __future__ import annotations


class NasdbError(Exception):
    """Base class of every error nasdb raises on purpose."""

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return str(self.args[0]) if self.args else self.__class__.__name__


# -- input that breaks a rule -------------------------------------------------------------------
class ArgumentError(NasdbError, ValueError):
    """An argument or flag value that breaks a rule (out of range, of the wrong kind, inconsistent)."""


class ConfigError(ArgumentError):
    """A settings dataclass (PredictorConfig, TrainRecipe, EarlyStopConfig, ...) with a field that breaks a rule."""


class NotFoundError(NasdbError, KeyError):
    """A name (a loss, a column, an agent, a run) that nasdb does not know."""


class MissingFileError(NasdbError, FileNotFoundError):
    """A file or folder the user named that does not exist."""


class UnreachableError(NasdbError, ConnectionError):
    """A Ray cluster (or another service) that cannot be reached at the address given."""


# -- tasks ----------------------------------------------------------------------------------------
class UnknownTaskError(NasdbError, KeyError):
    """A task name that is neither built in nor registered in the store."""


class InvalidTaskError(NasdbError, ValueError):
    """Task data that breaks a rule: wrong shape, non-finite values, a single class, an empty split."""


class TaskHasNoSamplesError(InvalidTaskError):
    """A registered task with metadata and experiments but no samples: an imported tabular benchmark."""


class TaskExistsError(InvalidTaskError):
    """A task name already taken by a registered or a built-in task."""


class UnknownBenchmarkError(NasdbError, KeyError):
    """A tabular benchmark name that ``nasdb.benchmarks.BENCHMARKS`` does not know."""


# -- the store ------------------------------------------------------------------------------------
class StoreError(NasdbError):
    """The experiment store is missing, unreachable or malformed."""


class SchemaError(NasdbError, ValueError):
    """A record or file that does not match the experiment schema."""


class QueryError(NasdbError, ValueError):
    """A user's SQL query that DuckDB refuses (a syntax error, an unknown column, a bad cast)."""


class ReadOnlyQueryError(NasdbError, ValueError):
    """A query that is not one read-only statement."""


class QueryTimeoutError(NasdbError, TimeoutError):
    """A query stopped because it ran past its time limit."""


class ExportExistsError(NasdbError, FileExistsError):
    """An export target that already holds data, without ``overwrite``."""


# -- training on Ray ------------------------------------------------------------------------------
class InsufficientResourcesError(NasdbError, ValueError):
    """The Ray cluster cannot hold the trainer actors asked for."""


class UnknownStrategyError(NasdbError, ValueError):
    """A populate strategy name that ``cluster.populate.STRATEGIES`` does not know."""


class PoolAborted(NasdbError):
    """The pool cannot make progress: actors fail to start, or every attempt fails."""


class ObserverError(NasdbError, RuntimeError):
    """The early-stop observer raised or answered malformed: its caller's fault, not the
    child's, so it propagates out of training instead of failing the children."""


# -- search ---------------------------------------------------------------------------------------
class NotTabulatedError(NasdbError, KeyError):
    """The lookup table has no row for a requested (task, architecture)."""


class EvaluatorAborted(NasdbError):
    """Every attempt to train a child fails: the trainer actors cannot start or keep dying."""


class UnknownAgentError(NasdbError, ValueError):
    """A search agent name that ``search.agents.AGENTS`` does not know."""


class SpaceMismatchError(NasdbError, ValueError):
    """A search and a predictor (or an Optuna distribution) over different search spaces."""


# -- predictors -----------------------------------------------------------------------------------
class UnknownPredictorError(NasdbError, KeyError):
    """A predictor id or alias that the store does not hold."""


class AliasConflictError(NasdbError, ValueError):
    """An alias change that would break a rule: another search space, an alias still in use."""


class PayloadTooLargeError(ArgumentError):
    """A request above a configured server limit (HTTP 413)."""
