"""``nasdb dashboard``: a local web app over the store (nasdb/cli/dashboard/_app.py), served by uvicorn.

On a loopback host (the default, 127.0.0.1) it needs no token unless ``--token-file`` is
given; bound to any other address it takes the suggestion API's rule
(``predictor.auth.resolve_token_digest``): a token from ``--token-file`` or
$NASDB_API_TOKEN, or it refuses to start.
"""

from __future__ import annotations

from typing import Any

import click

from nasdb.errors import ArgumentError


def token_for(host: str, token_file: str | None) -> str | None:
    """The token digest requests are checked against; None on loopback without a token file."""
    import os

    from predictor.auth import TOKEN_ENV, is_loopback, resolve_token_digest

    if is_loopback(host) and token_file is None:
        return None
    if token_file is None and not os.environ.get(TOKEN_ENV):
        raise ArgumentError(f"no API token configured for --host {host}, which is not loopback: set ${TOKEN_ENV} or pass "
                            f"--token-file (on 127.0.0.1 the dashboard needs none)")
    return resolve_token_digest(token_file=token_file, host=host)


def warm(app: Any) -> None:
    """Run the heavy queries of the first pages once, and build the default predictor's suggestion engine
    (its training tasks' embeddings), so that the first visit reads them from the caches."""
    from nasdb.cli.dashboard import _data as data

    st = app.fastapi.state.store
    try:
        with app.fastapi.state.lock:
            data.overview(st)
            data.runs(st)
            data.curves(st, run_ids=data.search_run_ids(st) or None)
            data.warm_suggestions(st)
    except Exception:  # a page shows the error itself
        pass


@click.command("dashboard")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True, help="TCP port.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; any but loopback needs a token ($NASDB_API_TOKEN or --token-file).")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="File holding the bearer token (also required on loopback when given).")
@click.option("--no-warm", is_flag=True, help="Do not precompute the first pages' queries and the suggestion engine at start.")
@click.pass_context
def dashboard_command(ctx: click.Context, port: int, host: str, token_file: str | None, no_warm: bool) -> None:
    """A local web app: store overview, runs, predictors, the task map, search curves and suggestions."""
    import threading

    import uvicorn

    from nasdb.cli._store import open_store
    from nasdb.cli.dashboard._app import create_app

    digest = token_for(host, token_file)
    store = open_store(ctx)
    app = create_app(store, token_digest=digest)
    if not no_warm:
        threading.Thread(target=warm, args=(app,), name="nasdb-dashboard-warm", daemon=True).start()
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"nasdb dashboard of {store.uri} on http://{shown}:{port}/ "
               f"({'token required' if digest else 'no token: loopback only'}); Ctrl-C stops it", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
