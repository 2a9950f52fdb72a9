"""`nasdb dashboard` in a real headless browser (Debian's chromium + chromedriver, driven by Selenium).

The app runs under uvicorn on loopback over a copy of the shared tiny store (real rows, a real
fitted predictor, an alias); every page is opened in Chromium and checked for the store's own
content (task names, row counts, the predictor's id). The suggestion form is submitted twice:
picking a task and uploading a CSV; a file that is not a table answers 400 naming the problem.
Access control is checked on the app itself (TestClient): off loopback the suggestion API's
bearer-token rule applies. No browser or driver is downloaded: `make test` installs both with
apt when chromedriver is missing, and Selenium is pointed at /usr/bin/chromedriver.
"""

from __future__ import annotations

import io
import os
import shutil
import time

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from nasdb.cli import main
from nasdb.store import ExperimentStore
from predictor import registry
from predictor.testing import HELD_OUT_TASK, TRAIN_TASKS, shared_tiny_store

CHROMEDRIVER = os.environ.get("NASDB_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("NASDB_CHROMIUM", "/usr/bin/chromium")
TOKEN = "dashboard-token-" + "d" * 24


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root, pid = shared_tiny_store(str(tmp_path_factory.getbasetemp()))
    copy = tmp_path_factory.mktemp("dashboard") / "store"
    shutil.copytree(root, copy)
    st = ExperimentStore(str(copy))
    registry.promote(st, pid, "champion")
    return st, pid


@pytest.fixture(scope="module")
def server(store, uvicorn_in_thread):
    from nasdb.cli.dashboard import create_app

    st, _ = store
    with uvicorn_in_thread(create_app(st)) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    if not os.path.exists(CHROMEDRIVER):
        pytest.skip(f"{CHROMEDRIVER} missing: `make test` installs chromium and chromium-driver with apt")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def _open(browser, url: str) -> str:
    browser.get(url)
    return browser.find_element("tag name", "body").text


def _cells(browser, table_id: str) -> list[list[str]]:
    rows = browser.find_elements("css selector", f"#{table_id} tbody tr")
    return [[td.text for td in r.find_elements("tag name", "td")] for r in rows]


def test_overview_lists_every_task_with_its_row_count(store, server, browser):
    st, _ = store
    text = _open(browser, server + "/")
    assert "Store overview" in text and st.uri in text
    rows = {r[0]: r for r in _cells(browser, "tasks")}
    assert sorted(rows) == sorted(TRAIN_TASKS)
    for task in TRAIN_TASKS:
        assert rows[task][1] == f"{st.count(task, status=None):,}"
    assert len(browser.find_elements("css selector", "svg.boxplot rect")) == len(TRAIN_TASKS)


def test_runs_page_shows_the_populate_rows_and_the_fit(store, server, browser):
    st, pid = store
    _open(browser, server + "/runs")
    runs = {r[0]: r for r in _cells(browser, "runs")}
    assert runs["tiny-store"][5] == f"{st.count(None, status=None):,}"
    assert runs[pid][1] == "fit"
    text = _open(browser, server + "/runs/tiny-store")
    assert "random" in text and "digits_loops" in text


def test_predictors_page_shows_ids_aliases_and_the_report(store, server, browser):
    _, pid = store
    _open(browser, server + "/predictors")
    assert ["champion", pid] == _cells(browser, "aliases")[0][:2]
    assert pid in [r[0] for r in _cells(browser, "predictors")]
    browser.find_element("link text", pid).click()
    text = browser.find_element("tag name", "body").text
    assert f"Predictor {pid}" in text and "final_train_loss" in text
    assert sorted(r[0] for r in _cells(browser, "snapshot")) == sorted(TRAIN_TASKS)


def test_task_map_highlights_a_held_out_task(store, server, browser):
    _open(browser, server + f"/embeddings?highlight={HELD_OUT_TASK}")
    assert browser.find_element("id", "highlighted").text == HELD_OUT_TASK
    img = browser.find_element("id", "taskmap")
    deadline = time.monotonic() + 120
    while not browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img):
        assert time.monotonic() < deadline, "the task map PNG did not load"
        time.sleep(0.2)
    assert browser.execute_script("return arguments[0].naturalWidth", img) > 400


def test_search_curves_draw_best_so_far_per_run(store, server, browser):
    st, _ = store
    _open(browser, server + "/curves")
    rows = _cells(browser, "curves")
    assert {r[1] for r in rows} == set(TRAIN_TASKS) and all(r[0] == "tiny-store" for r in rows)
    assert len(browser.find_elements("css selector", "svg.curves polyline")) == len(TRAIN_TASKS)
    best = st.top_k(TRAIN_TASKS[0], 1).column("val_accuracy")[0].as_py()
    _open(browser, server + f"/curves?task={TRAIN_TASKS[0]}")
    assert float(_cells(browser, "curves")[0][4]) == pytest.approx(best, rel=1e-3)


def _submit(browser) -> str:
    """Submit the suggestion form and wait for the answer page (the suggestion or the error)."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.find_element("id", "go").click()
    WebDriverWait(browser, 180).until(lambda d: d.title.startswith(("Suggestion", "Error")))
    return browser.find_element("tag name", "body").text


def _nearest(browser) -> list[str]:
    return [r[0] for r in _cells(browser, "nearest")]


def test_suggest_for_a_picked_task(server, browser):
    from selenium.webdriver.support.ui import Select

    _open(browser, server + "/suggest")
    Select(browser.find_element("id", "task")).select_by_value(HELD_OUT_TASK)
    text = _submit(browser)
    assert "Suggestion" in text and HELD_OUT_TASK in text
    assert len(_cells(browser, "suggestion")) == 15  # one row per search-space dimension
    assert sorted(_nearest(browser)) == sorted(TRAIN_TASKS)


def _digits_csv(st, path) -> None:
    x, y = st.task(HELD_OUT_TASK).samples("train")
    buf = io.StringIO()
    buf.write(",".join([f"pixel{i}" for i in range(64)] + ["digit"]) + "\n")
    for xi, yi in zip(x, y):
        buf.write(",".join(f"{v:.5f}" for v in xi) + f",{int(yi)}\n")
    path.write_text(buf.getvalue())


def test_suggest_for_an_uploaded_csv_and_a_bad_upload(store, server, browser, tmp_path):
    st, _ = store
    good, bad = tmp_path / "my_digits.csv", tmp_path / "broken.csv"
    _digits_csv(st, good)
    bad.write_bytes(b"\x00\x01 not, a\ntable")
    _open(browser, server + "/suggest")
    browser.find_element("id", "file").send_keys(str(good))
    browser.find_element("id", "label").send_keys("digit")
    assert "user_my_digits" in _submit(browser)
    assert sorted(_nearest(browser)) == sorted(TRAIN_TASKS)
    _open(browser, server + "/suggest")
    browser.find_element("id", "file").send_keys(str(bad))
    browser.find_element("id", "label").send_keys("digit")
    assert _submit(browser).startswith("nasdb")
    assert browser.title.startswith("Error 400")
    message = browser.find_element("id", "error").text
    assert "cannot read 'broken.csv'" in message and "parse error" in message  # names the upload, not a temp file


def test_docs_come_from_bundled_assets(server, browser):
    _open(browser, server + "/docs")
    deadline = time.monotonic() + 60
    while not browser.find_elements("css selector", ".swagger-ui .info .title"):
        assert time.monotonic() < deadline, "Swagger UI did not render"
        time.sleep(0.2)
    assert "nasdb dashboard" in browser.find_element("css selector", ".swagger-ui .info .title").text
    scripts = [s.get_attribute("src") for s in browser.find_elements("tag name", "script") if s.get_attribute("src")]
    links = [s.get_attribute("href") for s in browser.find_elements("css selector", "link[rel=stylesheet]")]
    assert scripts and all(u.startswith(server) for u in scripts + links)


# -- without a browser: bad input and the token rule ------------------------------------------------
@pytest.fixture(scope="module")
def client(store):
    from fastapi.testclient import TestClient

    from nasdb.cli.dashboard import create_app
    from predictor.auth import token_digest

    return TestClient(create_app(store[0], token_digest=token_digest(TOKEN)))


def test_bad_uploads_are_4xx_naming_the_problem(store):
    from fastapi.testclient import TestClient

    from nasdb.cli.dashboard import create_app

    c = TestClient(create_app(store[0]))
    cases = [({"label": "y"}, ("e.csv", b"", "text/csv"), "is empty"),
             ({"label": "y"}, ("a.csv", b"a,b\n1,2\n3,4\n", "text/csv"), "label column 'y' not found"),
             ({}, ("a.csv", b"a,b\n1,2\n", "text/csv"), "label column"),
             ({"task": "nope"}, None, "unknown task 'nope'"),
             ({"task": HELD_OUT_TASK, "predictor": "nope"}, None, "no predictor 'nope'"),
             ({}, None, "pick a task or upload")]
    for form, upload, words in cases:
        r = c.post("/api/suggest", data=form, files={"file": upload} if upload else None)
        assert 400 <= r.status_code < 500 and words in r.json()["detail"], (form, r.status_code, r.text)


def test_off_loopback_the_bearer_token_rule_applies(client, monkeypatch):
    from nasdb.cli.dashboard import token_for

    assert client.get("/api/overview").status_code == 401
    page = client.get("/", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert client.get("/api/overview", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert client.get("/health").status_code == 200
    signed = client.post("/login", data={"token": TOKEN, "next": "/runs"}, follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/runs"
    assert client.get("/runs", headers={"accept": "text/html"}).status_code == 200  # the cookie stands for the header
    for elsewhere in ("//evil.example/", "/\\evil.example/", "https://evil.example/"):
        r = client.post("/login", data={"token": TOKEN, "next": elsewhere}, follow_redirects=False)
        assert r.headers["location"] == "/"
    client.cookies.clear()
    monkeypatch.delenv("NASDB_API_TOKEN", raising=False)
    assert token_for("127.0.0.1", None) is None
    with pytest.raises(ValueError, match="no API token configured"):
        token_for("0.0.0.0", None)


def test_the_cli_refuses_an_open_address_without_a_token(store, monkeypatch):
    monkeypatch.delenv("NASDB_API_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["--store", store[0].root, "dashboard", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 1 and result.output.startswith("error: no API token configured")
    assert result.output.count("\n") == 1


def test_cached_pages_follow_new_rows(store, tmp_path):
    """Query results are kept only while the store's files stay the same: a write shows on the next load."""
    from fastapi.testclient import TestClient

    from nasdb.cli.dashboard import create_app

    st = ExperimentStore(str(tmp_path / "store"))
    shutil.copytree(store[0].root, st.root)
    c = TestClient(create_app(st))
    before = {t["task"]: t["rows"] for t in c.get("/api/overview").json()["tasks"]}
    assert c.get("/api/overview").json()["rows"] == sum(before.values())  # served from the cache
    rows = st.experiments_arrow(TRAIN_TASKS[0]).slice(0, 2)
    seeds = rows.column("seed").to_numpy() + 1000  # new experiments: same architectures, other seeds
    rows = rows.set_column(rows.schema.get_field_index("seed"), "seed", pa.array(seeds, type=pa.int64()))
    with st.writer("more") as w:
        w.append_table(rows.drop_columns(["worker", "experiment_id"]))
    after = {t["task"]: t["rows"] for t in c.get("/api/overview").json()["tasks"]}
    assert after == {**before, TRAIN_TASKS[0]: before[TRAIN_TASKS[0]] + 2}


def test_an_uploaded_table_of_any_width_with_a_cells_predictor(store, tmp_path):
    """The generic path: a table of numeric, text and boolean columns, read by a width-invariant predictor."""
    from fastapi.testclient import TestClient

    from nasdb.cli.dashboard import create_app
    from predictor.testing import fit_tiny_predictor

    st = ExperimentStore(str(tmp_path / "store"))
    shutil.copytree(store[0].root, st.root)
    pid = fit_tiny_predictor(st, TRAIN_TASKS, num_steps=30, meta_encoder="cells")
    rng = np.random.default_rng(0)
    lines = ["size,colour,flag,kind"] + [f"{rng.normal():.3f},{rng.choice(['red', 'green', 'blue'])},"
                                         f"{rng.random() < 0.5},{rng.integers(0, 3)}" for _ in range(120)]
    r = TestClient(create_app(st)).post("/api/suggest", data={"label": "kind", "predictor": pid},
                                        files={"file": ("shop.csv", "\n".join(lines).encode(), "text/csv")})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["task"] == "user_shop" and out["source"] == "shop.csv" and out["predictor_id"] == pid
    assert sorted(n["task"] for n in out["nearest_tasks"]) == sorted(TRAIN_TASKS)
    assert len(out["architecture"]) == 15


def test_curves_show_searches_first(store, tmp_path):
    """With search runs in the store (folders under search/), the curves page shows them, not the populate."""
    import json

    from fastapi.testclient import TestClient

    from nasdb.cli.dashboard import create_app

    st = ExperimentStore(str(tmp_path / "store"))
    shutil.copytree(store[0].root, st.root)
    run_id = "random-digits_loops-0123abcd"
    os.makedirs(os.path.join(st.root, "search", run_id))
    with open(os.path.join(st.root, "search", run_id, "run.json"), "w") as f:
        json.dump({"agent": {"name": "random"}, "evaluator": {"name": "train"}, "task": "digits_loops", "budget": 3}, f)
    rows = st.experiments_arrow("digits_loops").slice(0, 3)
    rows = rows.set_column(rows.schema.get_field_index("seed"), "seed", pa.array([7, 7, 7], type=pa.int64()))
    rows = rows.set_column(rows.schema.get_field_index("run_id"), "run_id", pa.array([run_id] * 3))
    with st.writer("search") as w:
        w.append_table(rows.drop_columns(["worker", "experiment_id"]))
    c = TestClient(create_app(st))
    page = c.get("/curves").text
    assert f">{run_id}<" in page and "Showing searches" in page and ">tiny-store<" not in page
    (curve,) = c.get(f"/api/curves?run={run_id}").json()
    assert curve["children"] == 3 and curve["best"] == max(rows.column("val_accuracy").to_pylist())
    assert curve["points"][-1] == [3, curve["best"]]
    runs = {r["run_id"]: r for r in c.get("/api/runs").json()}
    assert runs[run_id]["kind"] == "search" and runs[run_id]["rows"] == 3
