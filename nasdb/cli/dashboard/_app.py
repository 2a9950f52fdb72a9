"""``nasdb dashboard``'s web app: the store, runs, predictors, the task map, search curves and suggestions.

A FastAPI app (served by uvicorn, see nasdb/cli/dashboard/_command.py) whose pages are server-rendered
HTML with inline CSS and SVG: no asset comes from a CDN. ``/docs`` is Swagger UI from the
``fastapi-offline`` package's bundled files. Access control is the suggestion API's own
(predictor/auth.py): off loopback every request but ``/health`` and ``/login`` needs
``Authorization: Bearer <token>``; a browser signs in once at ``/login``, which keeps the
token in an HttpOnly cookie that is turned into that header before the check.

Reads go through one ``ExperimentStore`` whose ``query`` results are cached until the store's
files change (``CachedStore``), under one lock (a DuckDB connection serves one thread at a time).
Bad input (an upload that is not a table, an unknown task or predictor) is a 4xx naming it.
"""

from __future__ import annotations

import json
import threading
from html import escape
from typing import Any
from urllib.parse import quote

from fastapi import File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from nasdb.cli.dashboard import _data as data, _html as h
from nasdb.errors import ArgumentError

#: An upload larger than this is refused (413) before it is read.
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
COOKIE = "nasdb_token"
PUBLIC = frozenset({"/health", "/login"})


class CachedStore:
    """``store`` whose ``query`` results are kept until its experiment files change (count or bytes per task)."""

    def __init__(self, store: Any, max_entries: int = 64):
        self._store, self._max = store, max_entries
        self._cache: dict[tuple[str, str], Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def signature(self) -> str:
        return json.dumps(self._store.storage(), sort_keys=True)

    def query(self, sql: str, **kw: Any) -> Any:
        key = (self.signature(), sql)
        if key not in self._cache:
            if len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = self._store.query(sql, **kw)
        return self._cache[key]


class CookieToken:
    """ASGI shim before ``RequestGuard``: the sign-in cookie becomes a bearer header; a browser without one is
    sent to /login instead of getting a bare 401."""

    def __init__(self, app: Any, guard: Any, *, required: bool):
        self.app, self.guard, self.required = app, guard, required

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.required:
            headers = list(scope.get("headers", []))
            if not any(k.lower() == b"authorization" for k, _ in headers):
                cookie = _cookie(headers, COOKIE)
                if cookie:
                    headers.append((b"authorization", b"Bearer " + cookie.encode("latin-1", "replace")))
                    scope = {**scope, "headers": headers}
            accept = b" ".join(v for k, v in headers if k.lower() == b"accept")
            if (scope["path"] not in PUBLIC and scope["method"] == "GET" and b"text/html" in accept
                    and not self.guard.authorized(scope["headers"])):
                response = RedirectResponse(f"/login?next={quote(scope['path'])}", status_code=303)
                return await response(scope, receive, send)
        return await self.guard(scope, receive, send)


def _cookie(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    for k, v in headers:
        if k.lower() == b"cookie":
            for part in v.decode("latin-1").split(";"):
                key, _, value = part.strip().partition("=")
                if key == name and value:
                    return value
    return None


def create_app(store: Any, *, token_digest: str | None = None) -> Any:
    """The dashboard app over ``store`` (an ``ExperimentStore``); ``token_digest`` from ``resolve_token_digest``."""
    from fastapi_offline import FastAPIOffline

    from nasdb.cli._main import one_line
    from nasdb.errors import NasdbError, UnknownPredictorError, UnknownTaskError
    from predictor.auth import RequestGuard

    st = CachedStore(store)
    lock = threading.RLock()
    app = FastAPIOffline(title="nasdb dashboard", version="1",
                         description="The store, runs, predictors, task map, search curves and suggestions.")
    uri = store.uri
    app.state.store, app.state.lock = st, lock

    def html(title: str, body: str, active: str) -> HTMLResponse:
        return HTMLResponse(h.page(title, body, active=active, store=uri))

    def fail(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": message}, status_code=status)
        active = "/" + request.url.path.strip("/").split("/")[0] if request.url.path != "/" else "/"
        return HTMLResponse(h.error_page(status, message, active=active, store=uri), status_code=status)

    async def user_error(request: Request, e: Exception) -> Response:
        status = 404 if isinstance(e, (UnknownPredictorError, UnknownTaskError)) else 400
        return fail(request, status, one_line(e))

    app.add_exception_handler(NasdbError, user_error)

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(next: str = "/") -> HTMLResponse:
        body = (f"<form class='card inline' method=post action=/login><input type=hidden name=next "
                f"value='{escape(next)}'><label>API token<input type=password name=token size=40></label>"
                f"<button type=submit>Sign in</button></form><p class=muted>The token of $NASDB_API_TOKEN or "
                f"--token-file, as for <code>nasdb serve</code>.</p>")
        return html("Sign in", body, "/login")

    @app.post("/login", include_in_schema=False)
    def login(token: str = Form(...), next: str = Form("/")) -> Response:
        local = next.startswith("/") and not next.startswith("//") and "\\" not in next  # no open redirect
        target = next if local else "/"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, token.strip(), httponly=True, samesite="strict")
        return response

    # -- the store --------------------------------------------------------------------------------------
    @app.get("/api/overview", tags=["store"])
    def api_overview() -> dict[str, Any]:
        """Per task: rows, ok, failed, runs, validation-accuracy quantiles (0, 5, 25, 50, 75, 95, 100 %)."""
        with lock:
            return data.overview(st)

    @app.get("/", response_class=HTMLResponse, tags=["pages"])
    def overview_page() -> HTMLResponse:
        with lock:
            o = data.overview(st)
        tasks = [{**t, "best_val": t["q"][-1] if t["q"] else None, "median_val": t["q"][3] if t["q"] else None}
                 for t in o["tasks"]]
        body = (h.stats([("rows", o["rows"]), ("ok rows", o["ok"]), ("tasks", len(tasks))])
                + "<h2>Tasks</h2>" + h.table(tasks, ["task", "rows", "ok", "failed", "runs", "median_val", "best_val",
                                                      "best_test", "last_row"],
                                              links={"task": "/curves?task={}"}, table_id="tasks")
                + "<h2>Validation accuracy per task</h2><p class=muted>box: quartiles, line: median, whiskers: "
                  "5% and 95% of the ok rows</p>" + h.box_plots(tasks))
        return html("Store overview", body, "/")

    # -- runs -------------------------------------------------------------------------------------------
    @app.get("/api/runs", tags=["runs"])
    def api_runs() -> list[dict[str, Any]]:
        """Every run, newest first (``nasdb runs list --json``)."""
        with lock:
            return json.loads(json.dumps(data.runs(st), default=str))

    @app.get("/runs", response_class=HTMLResponse, tags=["pages"])
    def runs_page() -> HTMLResponse:
        with lock:
            rows = data.runs(st)
        for r in rows:
            r["task_list"] = r["tasks"] if len(r["tasks"]) <= 3 else f"{len(r['tasks'])} tasks"
        body = h.table(rows, ["run_id", "kind", "status", "start", "end", "rows", "task_list", "failures", "agent",
                              "command"], links={"run_id": "/runs/{}"}, table_id="runs")
        return html("Runs", body, "/runs")

    @app.get("/runs/{run_id}", response_class=HTMLResponse, tags=["pages"])
    def run_page(run_id: str, request: Request) -> Response:
        with lock:
            run = next((r for r in data.runs(st) if r["run_id"] == run_id), None)
        if run is None:
            return fail(request, 404, f"no run {run_id!r} in the store; see /runs")
        rows = [{"field": k, "value": v} for k, v in run.items()]
        link = f"<p><a href='/curves?run={quote(run_id)}'>best-so-far curve of this run</a></p>"
        return html(f"Run {run_id}", h.table(rows, ["field", "value"], table_id="run") + link, "/runs")

    # -- predictors -------------------------------------------------------------------------------------
    @app.get("/api/predictors", tags=["predictors"])
    def api_predictors() -> list[dict[str, Any]]:
        """Every predictor, newest first, with its aliases (``nasdb predictors list --json``)."""
        with lock:
            return data.predictors(st)

    @app.get("/predictors", response_class=HTMLResponse, tags=["pages"])
    def predictors_page() -> HTMLResponse:
        with lock:
            rows, al = data.predictors(st), data.aliases(st)
        for r in rows:
            metrics = r.get("metrics") or {}
            loto = metrics.get("loto") if isinstance(metrics.get("loto"), dict) else {}
            r.update(n_tasks=len(r.get("tasks") or []), loto_spearman=loto.get("mean_spearman"),
                     train_spearman=metrics.get("mean_train_spearman"), alias=r["aliases"])
        aliases = [{"alias": k, "predictor_id": v.get("predictor_id"), "previous": v.get("previous"),
                    "promoted_at": v.get("promoted_at")} for k, v in sorted(al.items())]
        body = ("<h2>Aliases</h2>" + h.table(aliases, ["alias", "predictor_id", "previous", "promoted_at"],
                                              links={"predictor_id": "/predictors/{}"}, table_id="aliases")
                + "<h2>Predictors</h2>" + h.table(rows, ["predictor_id", "created_at", "loss", "use_meta_features",
                                                         "space_id", "n_tasks", "loto_spearman", "train_spearman",
                                                         "alias"],
                                                  links={"predictor_id": "/predictors/{}"}, table_id="predictors"))
        return html("Predictors", body, "/predictors")

    @app.get("/predictors/{ref}", response_class=HTMLResponse, tags=["pages"])
    def predictor_page(ref: str) -> HTMLResponse:
        with lock:
            d = data.predictor_details(st, ref)
        pid = d["predictor_id"]
        metrics = d.get("metrics") or {}
        flat = [{"metric": k, "value": json.dumps(v, default=str) if isinstance(v, (dict, list)) else v}
                for k, v in sorted(metrics.items())]
        snap = [{"task": k, **v} for k, v in sorted((d.get("data_snapshot") or {}).items()) if isinstance(v, dict)]
        facts = [{"field": k, "value": d.get(k)} for k in ("predictor_id", "created_at", "loss", "use_meta_features",
                                                            "excluded_tasks", "warm_start_parent", "selected_as")]
        facts.append({"field": "aliases", "value": d.get("aliases")})
        body = (h.table(facts, ["field", "value"], table_id="facts") + "<h2>Report: metrics</h2>"
                + h.table(flat, ["metric", "value"], table_id="metrics")
                + "<h2>Data snapshot (rows it was fitted on)</h2>"
                + h.table(snap, ["task", "ok", "failed", "stale", "samples", "target"], table_id="snapshot")
                + (f"<p><a href='/embeddings?predictor={quote(pid)}'>task map of this predictor</a></p>"
                   if d.get("use_meta_features", True) else ""))
        return html(f"Predictor {pid}", body, "/predictors")

    # -- the task map (paper Fig. 4) --------------------------------------------------------------------
    @app.get("/embeddings", response_class=HTMLResponse, tags=["pages"])
    def embeddings_page(request: Request, predictor: str | None = None, highlight: str | None = None) -> Response:
        with lock:
            listed = data.predictors(st)
            if not listed:
                return html("Task map", "<p class=muted>no predictor yet: fit one (nasdb fit)</p>", "/embeddings")
            d = data.predictor_details(st, predictor or "latest")
            if not d.get("use_meta_features", True):
                return html("Task map", f"<p class=muted>predictor {escape(d['predictor_id'])} was fitted without "
                                        "meta-features: it has no task embedding z to map</p>", "/embeddings")
            candidates = data.held_out_tasks(st, d)
        chosen = highlight if highlight is not None else (candidates[0] if candidates else "")
        if chosen and chosen not in candidates and chosen not in (d.get("tasks") or []):
            with lock:
                st.task(chosen)  # an unknown task: 404 naming it
        src = f"/embeddings.png?predictor={quote(d['predictor_id'])}&highlight={quote(chosen)}"
        form = ("<form class='card inline' method=get>"
                f"<label>predictor{h.select('predictor', [p['predictor_id'] for p in listed], d['predictor_id'])}"
                f"</label><label>held-out task (starred){h.select('highlight', candidates, chosen, blank='none')}"
                "</label><button type=submit>Show</button></form>")
        body = (form + f"<p>Training tasks: {escape(', '.join(d.get('tasks') or []))}. "
                f"Highlighted: <b id=highlighted>{escape(chosen or 'none')}</b>.</p>"
                f"<img id=taskmap alt='PCA of the task meta-features z' src='{escape(src)}' width=800>")
        return html("Task map: meta-features z, PCA (paper Fig. 4)", body, "/embeddings")

    @app.get("/embeddings.png", tags=["predictors"])
    def embeddings_png(predictor: str | None = None, highlight: str = "") -> Response:
        """PNG: PCA of z from 10 sample batches per task; ``highlight`` (comma-separated) starred."""
        with lock:
            png = data.embeddings_png(st, predictor, [t for t in highlight.split(",") if t])
        return Response(png, media_type="image/png")

    # -- search curves ----------------------------------------------------------------------------------
    @app.get("/api/curves", tags=["runs"])
    def api_curves(task: str | None = None, run: str | None = None) -> list[dict[str, Any]]:
        """Best-so-far validation accuracy per (run, task): the points where it improves, and the last child."""
        with lock:
            return data.curves(st, task=task or None, run_ids=[run] if run else None)

    @app.get("/curves", response_class=HTMLResponse, tags=["pages"])
    def curves_page(task: str | None = None, run: str | None = None) -> HTMLResponse:
        with lock:
            if task and task not in st.task_names():
                st.task(task)  # unknown: 404 naming it
            tasks = [t["task"] for t in data.overview(st)["tasks"]]
            searches = data.search_run_ids(st)
            run_ids = [run] if run else (searches if not task and searches else None)
            series = data.curves(st, task=task or None, run_ids=run_ids)
        for s in series:
            s["name"] = f"{s['run_id']} · {s['task']}" if not task else s["run_id"]
            s["best"] = s["points"][-1][1] if s["points"] else None
        form = ("<form class='card inline' method=get>"
                f"<label>task{h.select('task', tasks, task, blank='all')}</label>"
                f"<label>run<input name=run value='{escape(run or '')}' size=40></label>"
                "<button type=submit>Show</button></form>")
        scope = "searches" if run_ids and not run else "the largest runs"
        body = (form + f"<p class=muted>Showing {escape(scope if not run else run)}"
                f"{' on ' + escape(task) if task else ''}: best validation accuracy so far, children in the order "
                "they were stored.</p>" + h.line_chart(series)
                + h.table(series, ["run_id", "task", "agent", "children", "best"], links={"run_id": "/runs/{}"},
                          table_id="curves"))
        return html("Search curves", body, "/curves")

    # -- suggestions ------------------------------------------------------------------------------------
    def _suggest(task: str, label: str, predictor: str, upload: UploadFile | None) -> dict[str, Any]:
        csv_bytes = upload.file.read(MAX_UPLOAD_BYTES + 1) if upload is not None and upload.filename else None
        if csv_bytes is not None and len(csv_bytes) > MAX_UPLOAD_BYTES:
            raise ArgumentError(f"the upload is larger than {MAX_UPLOAD_BYTES} bytes")
        if csv_bytes is None and not task:
            raise ArgumentError("pick a task or upload a CSV file")
        if csv_bytes is not None and task:
            raise ArgumentError("give a task or a CSV file, not both")
        with lock:
            return data.suggest(st, task=task or None, csv_bytes=csv_bytes,
                                filename=upload.filename if upload is not None else None, label=label or None,
                                predictor=predictor or None)

    @app.post("/api/suggest", tags=["suggest"])
    def api_suggest(task: str = Form(""), label: str = Form(""), predictor: str = Form(""),
                    file: UploadFile | None = File(None)) -> dict[str, Any]:
        """Algorithm 2 for a task of the store or an uploaded CSV (with its label column): ``nasdb suggest --json``."""
        return _suggest(task, label, predictor, file)

    @app.get("/suggest", response_class=HTMLResponse, tags=["pages"])
    def suggest_form() -> HTMLResponse:
        with lock:
            tasks = st.task_names()
            preds = [p["predictor_id"] for p in data.predictors(st)]
            names = sorted(data.aliases(st)) + preds
        body = ("<form class=card method=post action=/suggest enctype=multipart/form-data>"
                f"<p><label>a task of the store{h.select('task', tasks, blank='(none: upload a file)')}</label></p>"
                "<p><b>or</b> a table, CSV with a header row (an 8x8 digits table: 64 columns in [0, 1] and a label; "
                "or any table of numeric, boolean and text columns)</p>"
                "<p><label>CSV file<input type=file name=file id=file accept='.csv,text/csv'></label></p>"
                "<p><label>label column<input name=label id=label size=20></label></p>"
                f"<p><label>predictor{h.select('predictor', names, blank='default (champion, else the newest)')}"
                "</label></p><button type=submit id=go>Suggest</button></form>")
        return html("Suggest an architecture", body, "/suggest")

    @app.post("/suggest", response_class=HTMLResponse, tags=["pages"])
    def suggest_page(task: str = Form(""), label: str = Form(""), predictor: str = Form(""),
                     file: UploadFile | None = File(None)) -> HTMLResponse:
        r = _suggest(task, label, predictor, file)
        arch = [{"dimension": k, "choice": v} for k, v in r["description"].items()]
        near = [(n["task"], float(n["distance"])) for n in r["nearest_tasks"]]
        spread = f" ± {r['std']:.4f}" if r.get("std") is not None else ""
        warn = ("<p class=err>the task lies far from every training task: the suggestion is an extrapolation</p>"
                if r.get("far_from_training") else "")
        body = (h.stats([("task", r["task"]), ("predicted score", f"{r['score']:.4f}{spread}"),
                         ("predictor", r["predictor_id"])])
                + warn + f"<p>architecture <code id=architecture>{escape(str(r['architecture']))}</code></p>"
                + h.table(arch, ["dimension", "choice"], table_id="suggestion")
                + "<h2>Nearest training tasks</h2>"
                + h.table([{"task": n, "distance": d} for n, d in near], ["task", "distance"], table_id="nearest")
                + h.bars(near) + "<p><a href=/suggest>another suggestion</a></p>")
        return html("Suggestion", body, "/suggest")

    guard = RequestGuard(app, expected_digest=token_digest, max_body_bytes=MAX_UPLOAD_BYTES + 65536,
                         public_paths=PUBLIC)
    asgi = CookieToken(app, guard, required=token_digest is not None)
    asgi.fastapi = app
    return asgi
