"""The read-only guard for user SQL (``ExperimentStore.query`` and ``nasdb query``).

Two layers. This module refuses, before anything runs, every statement that is not a single
read (by its first keyword, by DuckDB's own parser, and by forbidden keywords/functions
outside string literals). The connection that runs it is then sandboxed by DuckDB itself
(``allowed_paths`` = the store's valid files, ``enable_external_access=false``,
``lock_configuration=true``), so even a statement the guard missed cannot touch another file.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from typing import Any, Callable, TypeVar

from nasdb.errors import ArgumentError, QueryTimeoutError, ReadOnlyQueryError

T = TypeVar("T")

#: First keywords of the statements a read-only query may be.
ALLOWED_FIRST = ("SELECT", "WITH", "DESCRIBE", "DESC", "SHOW", "EXPLAIN", "SUMMARIZE", "FROM", "VALUES", "TABLE")
#: Keywords that write, reach outside the store, or change the session.
FORBIDDEN_KEYWORDS = (
    "COPY", "ATTACH", "DETACH", "INSTALL", "LOAD", "FORCE", "EXPORT", "IMPORT", "PRAGMA", "SET", "RESET",
    "CREATE", "INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "CALL", "CHECKPOINT", "VACUUM", "USE",
    "TRUNCATE", "MERGE", "GRANT", "REVOKE", "BEGIN", "COMMIT", "ROLLBACK", "PREPARE", "EXECUTE",
    "DEALLOCATE", "UPSERT",
)
#: Table/scalar functions that read or list files, or reach the environment (the sandbox blocks
#: them too; refusing them here gives a clear message instead of a permission error).
FORBIDDEN_FUNCTIONS = re.compile(
    r"\b(read_\w+|\w+_scan|glob|parquet_\w+|sniff_csv|getenv|query|query_table|duckdb_secrets|"
    r"duckdb_extensions|duckdb_settings|current_setting|load_extension|install_extension)\s*\(",
    re.IGNORECASE,
)

_TOKEN = re.compile(
    r"""(?P<line>--[^\n]*)|(?P<block>/\*.*?\*/)|(?P<str>'(?:[^']|'')*')|(?P<ident>"(?:[^"]|"")*")|"""
    r"""(?P<dollar>\$(?P<tag>\w*)\$.*?\$(?P=tag)\$)""",
    re.DOTALL,
)


def _strip(sql: str) -> str:
    """``sql`` with comments removed and string literals / quoted identifiers blanked."""
    out, pos = [], 0
    for m in _TOKEN.finditer(sql):
        out.append(sql[pos:m.start()])
        if m.group("str") is not None or m.group("dollar") is not None:
            out.append("''")
        elif m.group("ident") is not None:
            out.append('"x"')
        else:
            out.append(" ")
        pos = m.end()
    out.append(sql[pos:])
    text = "".join(out)
    if "'" in text.replace("''", "") or text.count('"') % 2 or "/*" in text:
        raise ReadOnlyQueryError("query has an unterminated string, identifier or comment")
    return text


def check_read_only(sql: str) -> str:
    """Return ``sql`` without a trailing semicolon if it is one read-only statement; else raise."""
    if not isinstance(sql, str) or not sql.strip():
        raise ReadOnlyQueryError("query is empty")
    text = _strip(sql).strip()
    body = text.rstrip(";").rstrip()
    if ";" in body:
        raise ReadOnlyQueryError("query holds more than one statement; run one statement at a time")
    words = [w.upper() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", body)]
    if not words or words[0] not in ALLOWED_FIRST:
        first = words[0] if words else body[:20]
        raise ReadOnlyQueryError(
            f"query must be a read (start with {', '.join(ALLOWED_FIRST)}), got a statement starting with {first!r}"
        )
    bad = next((w for w in words if w in FORBIDDEN_KEYWORDS), None)
    if bad:
        raise ReadOnlyQueryError(f"query is read-only: {bad} is not allowed")
    m = FORBIDDEN_FUNCTIONS.search(body)
    if m:
        raise ReadOnlyQueryError(f"query is read-only: function {m.group(1)}() is not allowed (query the "
                                 "experiments / experiments_raw views)")
    return sql.strip().rstrip(";").rstrip()


def check_parsed(conn, sql: str) -> None:
    """Second opinion from DuckDB's parser: exactly one SELECT/EXPLAIN statement."""
    import duckdb

    statements = conn.extract_statements(sql)
    if len(statements) != 1:
        raise ReadOnlyQueryError(f"query holds {len(statements)} statements; run exactly one")
    kind = statements[0].type
    if kind not in (duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN):
        raise ReadOnlyQueryError(f"query is read-only: a {kind.name} statement is not allowed")


def check_timeout(timeout: float | None) -> float | None:
    """``timeout`` if it is None or a positive, finite number of seconds; else ValueError naming it."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
        raise ArgumentError(f"query timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def run_interruptible(run: Callable[[], T], connection: Callable[[], Any], timeout: float | None) -> T:
    """``run()`` in a worker thread, stopped by Ctrl-C or after ``timeout`` seconds.

    DuckDB does not check for signals while it executes, so a query run on the main thread
    ignores Ctrl-C until it ends (issue 15: still running 585 s after SIGINT). Here the main
    thread waits in short steps, and on KeyboardInterrupt or the deadline calls
    ``connection().interrupt()`` (repeatedly, in case the statement had not started yet) until
    the worker returns; then re-raises KeyboardInterrupt or raises QueryTimeoutError.
    """
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            result["value"] = run()
        except BaseException as e:  # handed to the waiting thread
            result["error"] = e

    worker = threading.Thread(target=work, name="nasdb-query", daemon=True)
    worker.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    stop: BaseException | None = None
    while worker.is_alive():
        try:
            worker.join(0.05)
        except KeyboardInterrupt as e:
            stop = e
        if stop is None and deadline is not None and time.monotonic() > deadline:
            stop = QueryTimeoutError(f"query ran past its time limit of {timeout:g} s and was stopped "
                                     f"(raise it with --timeout SECONDS)")
        if stop is not None and worker.is_alive():
            conn = connection()
            if conn is not None:
                with contextlib.suppress(Exception):  # already closed: the worker is returning
                    conn.interrupt()
    if stop is not None:
        raise stop
    if "error" in result:
        raise result["error"]
    return result["value"]
