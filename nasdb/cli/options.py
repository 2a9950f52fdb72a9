"""Conventions shared by every nasdb command line (the ``nasdb`` CLI and ``python -m`` entry points).

- Task lists: one repeatable flag, commas accepted: ``--task a --task b`` = ``--task a,b``
  (``task_list_option``; ``--tasks`` is the same flag).
- ``--out -`` means standard output: a file output goes to stdout; a report folder is written
  to a temporary folder and the report text (markdown or JSON) is what the command prints
  (``output_dir``); a picture goes to stdout as PNG bytes.
- Closed sets of values are ``click.Choice`` (agents, evaluators, benchmarks), spelled out
  here so that listing commands imports neither torch nor Ray; tests/nasdb/cli/test_cli_conventions.py
  checks them against the registries they mirror.

Public (no leading underscore) because predictor/, search/ and cluster/ command modules use it.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from typing import Any, Iterator

import click

STDOUT = "-"
#: search.agents.AGENTS
AGENT_NAMES = ("predictor", "random", "rl", "tnaml")
#: search.evaluators.EVALUATORS
EVALUATOR_NAMES = ("lookup", "train")
#: nasdb.benchmarks.BENCHMARKS
BENCHMARK_NAMES = ("hpobench", "hpolib", "nasbench201")


def split_names(ctx: click.Context | None, param: click.Parameter | None, value: Any) -> tuple[str, ...] | None:
    """A click callback: repeated values and comma-separated ones, flattened, order kept, duplicates dropped.

    None (or nothing given) stays None, so "every task" defaults keep working. An empty name
    (``--task a,,b`` or ``--task ''``) is refused naming the flag.
    """
    if value is None or value == ():
        return None
    values = (value,) if isinstance(value, str) else tuple(value)
    names: list[str] = []
    flag = param.opts[0] if param is not None and param.opts else "value"
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if not part:
                raise click.BadParameter(f"empty name in {v!r}", ctx=ctx, param=param,
                                         param_hint=f"'{flag}'")
            if part not in names:
                names.append(part)
    return tuple(names)


def task_list_option(*decls: str, help: str, **kwargs: Any):
    """A repeatable task-list flag whose values may also be comma-separated (see the module docstring)."""
    return click.option(*decls, multiple=True, callback=split_names, metavar=kwargs.pop("metavar", "T[,T...]"),
                        help=f"{help} Repeatable; commas accepted.", **kwargs)


def choice_list_option(*decls: str, choices: tuple[str, ...], help: str, **kwargs: Any):
    """A repeatable flag over a closed set, commas accepted; an unknown value is refused naming the choices."""
    def check(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[str, ...] | None:
        names = split_names(ctx, param, value)
        for name in names or ():
            if name not in choices:
                raise click.BadParameter(f"{name!r} is not one of {', '.join(map(repr, choices))}", ctx=ctx,
                                         param=param, param_hint=f"'{param.opts[0]}'")
        return names

    return click.option(*decls, multiple=True, callback=check, metavar=f"[{'|'.join(choices)}]",
                        help=f"{help} Repeatable; commas accepted.", **kwargs)


def is_stdout(out: Any) -> bool:
    return out == STDOUT


@contextlib.contextmanager
def output_dir(out: str | None) -> Iterator[str | None]:
    """The folder a report command writes to: ``out`` itself, or for ``-`` a temporary folder that is
    removed afterwards (the command prints its report to stdout either way)."""
    if not is_stdout(out):
        yield out
        return
    tmp = tempfile.mkdtemp(prefix="nasdb-out-")
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def out_folder(out: str | None, default: str) -> str:
    """The report folder of a command: ``out``, else ``default``; for ``-`` a temporary folder removed
    when the command ends (inside a click command; the report itself is printed to stdout)."""
    if not is_stdout(out):
        return out or default
    ctx = click.get_current_context()
    return ctx.with_resource(output_dir(STDOUT))


def copy_to_stdout(path: str) -> None:
    """Stream a file's bytes to standard output (``--out -`` of a command that writes one file)."""
    sys.stdout.flush()
    with open(path, "rb") as f:
        shutil.copyfileobj(f, sys.stdout.buffer)
    sys.stdout.buffer.flush()
