"""The ``nasdb`` command: the one face that sees every wing (store, cluster, predictor, search).

``_main.py`` is the click group and its error handling, ``options.py`` the conventions every
command follows, ``_format.py`` tables and JSON on stdout; one module per command group:
``_store.py`` (store tools), ``_runs.py``, ``_benchmark.py``, ``_benchmark_report.py``,
``_demo.py`` and the web ``dashboard/``. The other packages' command groups (``cluster.populate.cli``,
``predictor.cli``, ``search.cli``, ...) are imported only when used (``LAZY_COMMANDS``).
"""

from nasdb.cli._format import echo_json, echo_pairs, echo_table
from nasdb.cli._main import LAZY_COMMANDS, LAZY_HELP, CliError, NasdbGroup, main, one_line

__all__ = ["LAZY_COMMANDS", "LAZY_HELP", "CliError", "NasdbGroup", "echo_json", "echo_pairs", "echo_table", "main",
           "one_line"]
