"""``nasdb dashboard``: a local web app over the store (``_command.py``: the click command and its
start-up; ``_app.py``: the routes; ``_data.py``: what each page reads; ``_html.py``: the markup)."""

from nasdb.cli.dashboard._app import create_app
from nasdb.cli.dashboard._command import dashboard_command, token_for, warm

__all__ = ["create_app", "dashboard_command", "token_for", "warm"]
