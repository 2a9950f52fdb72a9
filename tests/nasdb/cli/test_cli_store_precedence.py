"""Which store a command touches: its own --store > `nasdb --store` > $NASDB_STORE, for every command.

Each command runs in-process with an explicit store that does not exist yet and a conflicting
$NASDB_STORE; it either creates the explicit store or fails naming it, and never creates, reads
or names the environment's. The arguments make every command stop early (no Ray job runs).
"""

from __future__ import annotations

import os

import click
import pytest
from click.testing import CliRunner

from nasdb.cli import main

#: Every command (group subcommands spelled out) with arguments that make it reach the store and stop.
COMMANDS: dict[str, list[str]] = {
    "init": [], "stats": [], "top": ["--task", "digits10_small"], "query": ["SELECT 1"], "show": ["abc"],
    "export": ["--format", "csv", "--out", "{tmp}/x.csv"], "compact": [], "verify": [],
    "tasks list": [], "tasks show": ["digits10_small"], "tasks add": ["t1", "--from", "{tmp}/t1.csv", "--label", "y"],
    "populate": ["--tasks", "digits10_small", "--per-task", "1", "--address", "127.0.0.1:1"],
    "fit": [], "evaluate": ["--loto"], "embeddings": [], "suggest": ["--task", "digits10_small"],
    "serve": ["--allow-unauthenticated", "--host", "127.0.0.1"],
    "search": ["--agent", "random", "--task", "digits10_small", "--budget", "1", "--evaluator", "lookup"],
    "compare": ["--tasks", "digits10_small", "--budget", "1", "--evaluator", "lookup"], "curves evaluate": [],
    "import-benchmark": ["hpolib", "--tasks", "naval_propulsion"], "benchmark-report": ["--benchmark", "hpolib"],
    "demo": [],  # run on a store path that is a file: fails at once, naming it
    "predictors list": [], "predictors show": ["abc"], "predictors delete": ["abc"],
    "predictors promote": ["abc"], "predictors unalias": ["staging"], "runs list": [], "runs show": ["abc"],
    "dashboard": ["--port", "1"],  # a missing store fails before anything binds
}


def _run(args: list[str], env_store: str):
    return CliRunner().invoke(main, args, env={"NASDB_STORE": env_store})


def _leaf_commands(group: click.Group, prefix: str = "") -> set[str]:
    ctx = click.Context(group)
    out = set()
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        out |= _leaf_commands(cmd, f"{prefix}{name} ") if isinstance(cmd, click.Group) else {prefix + name}
    return out


def test_every_command_is_listed():
    missing = _leaf_commands(main) - set(COMMANDS)
    assert not missing, f"add arguments for {sorted(missing)} to COMMANDS"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_group_store_beats_the_environment(command, tmp_path):
    if command not in _leaf_commands(main):
        pytest.skip(f"no command {command!r} in this build")
    explicit, env = str(tmp_path / "explicit"), str(tmp_path / "from-env")
    if command == "demo":
        (tmp_path / "explicit").write_text("not a folder")
    with open(tmp_path / "t1.csv", "w") as f:
        f.write("a,y\n0.5,1\n")
    args = [a.format(tmp=tmp_path) for a in COMMANDS[command]]
    r = _run(["--store", explicit, *command.split(), *args], env)
    out = r.output or ""
    assert env not in out, out
    assert not os.path.exists(env), f"{command} created the $NASDB_STORE store"
    assert explicit in out or os.path.isdir(explicit), f"{command} did not touch the --store store: {out!r}"


@pytest.mark.parametrize("command", ["populate", "fit", "search", "suggest", "import-benchmark"])
def test_command_store_beats_group_store_and_environment(command, tmp_path):
    mine, group, env = (str(tmp_path / n) for n in ("mine", "group", "env"))
    r = _run(["--store", group, command, "--store", mine, *COMMANDS[command]], env)
    out = r.output or ""
    assert group not in out and env not in out, out
    assert not os.path.exists(group) and not os.path.exists(env)
    assert mine in out or os.path.isdir(mine), out


def test_environment_alone_is_used(tmp_path):
    env = str(tmp_path / "env")
    for args in (["stats"], ["fit"]):
        r = _run(args, env)
        assert r.exit_code == 1 and f"no nasdb store at {env!r}" in r.output, r.output
