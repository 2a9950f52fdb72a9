"""The ``nasdb`` admin command: ``nasdb [--store ROOT] COMMAND`` (ROOT also from $NASDB_STORE).

Errors a user can cause (missing store, unknown task or experiment, bad SQL, bad flag: a
NasdbError, nasdb/errors.py, or a click usage error) print one line, ``error: ...``, to stderr
and exit non-zero; anything else is a bug and shows its traceback. Command groups of other
packages are listed in ``LAZY_COMMANDS`` and imported only when used, so ``nasdb --help``
stays fast and does not import cluster/, predictor/ or search/.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from nasdb.errors import NasdbError

#: Commands defined elsewhere: name -> "module:attribute" (a click.Command or click.Group).
#: Add a line here to plug in a new group; the module is imported only when the command runs
#: or help lists it.
LAZY_COMMANDS: dict[str, str] = {
    "populate": "cluster.populate.cli:populate_command",
    "curves": "cluster.early_stop.cli:curves_group",
    "fit": "predictor.cli:fit_command",
    "evaluate": "predictor.cli:evaluate_command",
    "embeddings": "predictor.cli:embeddings_command",
    "suggest": "predictor.cli:suggest_command",
    "serve": "predictor.cli:serve_command",
    "predictors": "predictor.registry_cli:predictors_group",
    "runs": "nasdb.cli._runs:runs_group",
    "dashboard": "nasdb.cli.dashboard._command:dashboard_command",
    "search": "search.cli:search_command",
    "compare": "search.cli:compare_command",
    "demo": "nasdb.cli._demo:demo_command",
    "import-benchmark": "nasdb.cli._benchmark:import_benchmark_command",
    "benchmark-report": "nasdb.cli._benchmark_report:benchmark_report_command",
}

#: The help line of each lazy command, so that ``nasdb --help`` lists them without importing their
#: modules (torch, Ray: seconds). tests/nasdb/cli/test_cli_conventions.py checks that every command has one.
LAZY_HELP: dict[str, str] = {
    "populate": "Train random architectures per task on Ray actors; rows go to the store.",
    "curves": "Learning-curve prediction and simulated early stopping on stored runs.",
    "fit": "Fit the task-aware predictor with a Ray Train job (Algorithm 1).",
    "evaluate": "Leave-one-task-out Spearman per loss and meta-features setting, or zero-shot percentiles.",
    "embeddings": "PCA and t-SNE pictures of the learned task meta-features z (paper Fig. 4).",
    "suggest": "Suggest an architecture for a task before training any model on it (Algorithm 2).",
    "serve": "Serve suggestions over HTTP with Ray Serve until Ctrl-C.",
    "predictors": "Fitted predictors and their aliases: list, show, promote, unalias, delete.",
    "runs": "Populate, import, search, zero-shot and fit runs recorded in the store.",
    "dashboard": "A local web app: store, runs, predictors, task map, search curves, suggestions.",
    "search": "Search child models of one task with one agent (predictor, rl, tnaml, random).",
    "compare": "RL-NAS, T-NAML, random search, the predictor agent and zero-shot on each test task (Tables 3-4).",
    "demo": "Populate, fit, serve and suggest, end to end on an embedded local Ray.",
    "import-benchmark": "Import a tabular benchmark (hpolib, hpobench, nasbench201) as tasks of the store.",
    "benchmark-report": "Zero-shot percentile and regret against the searches on an imported benchmark.",
}

#: Exceptions that are the user's doing: shown as one line, exit status 1 (anything else is a bug).
USER_ERRORS: tuple[type[BaseException], ...] = (NasdbError,)


def one_line(e: BaseException | str) -> str:
    """The message of ``e`` on one line (KeyError's quoting removed, DuckDB's hints joined)."""
    if isinstance(e, str):
        msg = e
    elif isinstance(e, KeyError) and not isinstance(e, NasdbError) and len(e.args) == 1:
        msg = str(e.args[0])
    else:
        msg = str(e) or type(e).__name__
    if isinstance(e, OSError) and e.filename and e.strerror:
        msg = f"{e.strerror}: {e.filename}"
    return " ".join(part.strip() for part in msg.splitlines() if part.strip())


class CliError(click.ClickException):
    """A user error, printed as ``error: <message>``."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class NasdbGroup(click.Group):
    """A click group that turns user errors into one line and resolves LAZY_COMMANDS on demand."""

    def __init__(self, *args: Any, lazy_commands: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of ``--help``: lazy commands not yet imported show their LAZY_HELP line."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max((len(n) for n in names), default=0)
        rows = []
        for name in names:
            if name not in self.commands and name in LAZY_HELP:
                rows.append((name, click.utils.make_default_short_help(LAZY_HELP[name], limit)))
                continue
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy_commands and name not in self.commands:
            module, _, attr = self.lazy_commands[name].partition(":")
            cmd = getattr(importlib.import_module(module), attr)
            self.add_command(cmd, name)
        return super().get_command(ctx, name)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[Any, Any, list[str]]:
        """Hand an explicit ``nasdb --store ROOT`` to a command that has its own ``--store``.

        Passed as the command's first argument, so that it outranks $NASDB_STORE (click ranks
        an environment variable above ``default_map``) while a ``--store`` given to the command
        itself, parsed later, still wins: command flag > group flag > $NASDB_STORE.
        """
        name, cmd, rest = super().resolve_command(ctx, args)
        root = ctx.params.get("store_root")
        if (cmd is not None and root and ctx.parent is None
                and ctx.get_parameter_source("store_root") is click.core.ParameterSource.COMMANDLINE
                and any(p.name == "store_root" and "--store" in p.opts for p in cmd.params)):
            rest = ["--store", root, *rest]
        return name, cmd, rest

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except USER_ERRORS as e:
            raise CliError(one_line(e)) from e

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            click.echo(f"error: {one_line(e.format_message())}{hint}", err=True)
            _exit(e.exit_code, standalone_mode)
        except CliError as e:
            e.show()
            _exit(e.exit_code, standalone_mode)
        except click.ClickException as e:
            click.echo(f"error: {one_line(e.format_message())}", err=True)
            _exit(e.exit_code, standalone_mode)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            _exit(1, standalone_mode)
        else:
            if standalone_mode:
                sys.exit(rv if isinstance(rv, int) else 0)
            return rv


def _exit(code: int, standalone_mode: bool) -> None:
    if standalone_mode:
        sys.exit(code)
    raise click.exceptions.Exit(code)


@click.group(cls=NasdbGroup, lazy_commands=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nasdb", prog_name="nasdb", message="%(prog)s %(version)s")
@click.option("--store", "store_root", envvar="NASDB_STORE", metavar="ROOT",
              help="Store root: a folder or an fsspec URI (default: $NASDB_STORE).")
@click.pass_context
def main(ctx: click.Context, store_root: str | None) -> None:
    """nasdb: the life-long database of child-model training experiments."""
    ctx.obj = {"store_root": store_root,  # commands with their own --store get it from resolve_command
               "surrogates": predictor_surrogates, "proposers": uncertainty_proposer}


def predictor_surrogates(store_root: str, predictor_id: str | None) -> Any:
    """The predictor agent's predictor for ``nasdb search`` / ``nasdb compare`` (``--predictor``): the
    CLI is the one face that sees both search/ and predictor/, so it wires them (issue 18)."""
    from predictor.surrogate import SurrogateFactory

    return SurrogateFactory(store_root, predictor_id)


def uncertainty_proposer(store: Any, round_number: int) -> Any:
    """A round's proposer for ``nasdb populate --strategy uncertainty``: the ensemble refitted on the
    store's rows so far (predictor/active.py), seeded by the round."""
    from nasdb.store import ExperimentStore
    from predictor.active import UncertaintyProposer

    store = store if isinstance(store, ExperimentStore) else ExperimentStore(store)
    return UncertaintyProposer(store, seed=round_number)


def _register() -> None:
    """Every built-in command, added in one place (other packages: see LAZY_COMMANDS)."""
    from nasdb.cli import _store as _cli_store

    for cmd in _cli_store.COMMANDS:
        main.add_command(cmd)


_register()
