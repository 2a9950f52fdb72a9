"""The conventions every nasdb command follows (nasdb/cli/options.py, issue 20).

--version; a fast --help that imports neither torch nor Ray; click choices for closed sets
that match the registries they mirror; one task-list convention (repeatable, commas
accepted); ``--out -`` for stdout; store URIs printed with their scheme. Real commands
through click's runner or a subprocess, on real stores.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from importlib.metadata import version

import click
import pytest
from click.testing import CliRunner

from nasdb.cli import options as cli_options
from nasdb.cli import LAZY_COMMANDS, LAZY_HELP, main

HEAVY = ("torch", "ray", "duckdb", "pyarrow", "pandas", "sklearn")


def _run(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args))
    assert (result.exit_code == 0) == ok, (result.output, result.stderr)
    return result


def test_version():
    assert _run("--version").output == f"nasdb {version('nasdb')}\n"


def test_help_lists_every_command_without_importing_heavy_modules():
    code = ("import sys\nfrom nasdb.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.strip().endswith("HEAVY []"), out
    assert set(LAZY_COMMANDS) == set(LAZY_HELP)
    for name in LAZY_COMMANDS:
        assert f"\n  {name} " in out


def test_closed_sets_match_their_registries():
    from nasdb.benchmarks import BENCHMARKS
    from search.agents import AGENTS
    from search.evaluators import EVALUATORS

    assert cli_options.AGENT_NAMES == tuple(sorted(AGENTS))
    assert cli_options.EVALUATOR_NAMES == tuple(sorted(EVALUATORS))
    assert cli_options.BENCHMARK_NAMES == tuple(sorted(BENCHMARKS))


@pytest.mark.parametrize("args,flag", [
    (["search", "--store", "x", "--agent", "nope", "--task", "t", "--budget", "1"], "'--agent'"),
    (["search", "--store", "x", "--agent", "rl", "--task", "t", "--budget", "1", "--evaluator", "nope"],
     "'--evaluator'"),
    (["compare", "--store", "x", "--tasks", "a", "--agents", "rl,nope"], "'--agent'"),
    (["benchmark-report", "--store", "x", "--benchmark", "nope"], "'--benchmark'"),
    (["populate", "--store", "x", "--tasks", "a,,b"], "'--task'"),
])
def test_bad_choices_and_empty_names_are_one_line(args, flag):
    result = _run(*args, ok=False)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Invalid value for") and flag in lines[0], result.output


def test_task_lists_are_repeatable_with_commas():
    @click.command()
    @cli_options.task_list_option("--task", "--tasks", "tasks", help="Tasks.")
    def cmd(tasks):
        click.echo(json.dumps(tasks))

    runner = CliRunner()
    out = runner.invoke(cmd, ["--task", "a,b", "--tasks", "c", "--task", "a"]).output
    assert json.loads(out) == ["a", "b", "c"]
    assert json.loads(runner.invoke(cmd, []).output) is None


def test_import_benchmark_takes_the_task_list_convention(tmp_path):
    root = str(tmp_path / "store")
    _run("--store", root, "init")
    out = _run("--store", root, "import-benchmark", "hpobench", "--task", "car", "--tasks", "kc1,car",
               "--max-configurations", "2", "--json").output
    assert sorted(t["task"] for t in json.loads(out)["tasks"]) == ["hpobench.car", "hpobench.kc1"]


def test_out_dash_is_stdout(tmp_path):
    root = str(tmp_path / "store")
    _run("--store", root, "init")
    _run("--store", root, "import-benchmark", "hpobench", "--task", "car", "--max-configurations", "3")
    result = _run("--store", root, "export", "--format", "csv", "--out", "-")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 15 and {r["task"] for r in rows} == {"hpobench.car"}
    assert result.stderr == "exported 15 rows to stdout (csv)\n"
    assert not (tmp_path / "-").exists()

    @click.command()
    @click.option("--out")
    def report(out):
        folder = cli_options.out_folder(out, str(tmp_path / "default"))
        with open(f"{folder}/report.md", "w") as f:
            f.write("# report\n")
        click.echo(folder)

    folder = CliRunner().invoke(report, ["--out", "-"]).output.strip()
    assert folder != "-" and not (tmp_path / "-").exists()
    import os

    assert not os.path.exists(folder)  # the temporary folder is gone once the command ends


def test_uris_are_printed_with_their_scheme():
    out = _run("--store", "memory://nasdb-conventions", "init").output
    assert out.startswith("initialized store at memory://"), out
