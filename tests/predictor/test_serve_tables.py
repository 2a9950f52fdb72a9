"""The suggestion API on tables of any width (issue 17): JSON tables and CSV uploads over real HTTP on
Ray Serve, and their refusals (a 4xx whose detail names the column; the replica keeps serving).

The store and the ``cells`` predictor are predictor/testing.py ``shared_table_store`` (a digits
task and three sklearn tables); the server helpers are serve_helpers.py's.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import requests
from serve_helpers import AUTH, TOKEN, free_port, healthy
from sklearn.datasets import load_iris
from test_predictor_tables import wine_frame

from predictor.service import ServeLimits
from predictor.testing import TABLE_TRAIN_TASKS, shared_table_store

LIMITS = ServeLimits(max_table_rows=1_000, max_csv_bytes=200_000, max_architectures=20)
CSV = {**AUTH, "Content-Type": "text/csv"}
ARCHS = [[0] * 15, [3, 2, 5, 1, 0, 4, 7, 9, 0, 1, 0, 1, 1, 0, 1]]


@pytest.fixture(scope="module")
def pid_and_server(tmp_path_factory, ray_cluster):
    from ray import serve

    from predictor.server import start_server

    root, pid = shared_table_store(str(tmp_path_factory.getbasetemp()))
    try:
        yield pid, start_server(root, port=free_port(), token=TOKEN, limits=LIMITS, predictor_id=pid, num_cpus=0.5)
    finally:
        serve.shutdown()  # the shared Ray cluster stays up for the next test module


@pytest.fixture(scope="module")
def server(pid_and_server):
    return pid_and_server[1]


@pytest.fixture(scope="module")
def http():
    with requests.Session() as s:
        yield s


def _csv(frame: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    frame.to_csv(buf, index=False)
    return buf.getvalue().encode()


def _table(frame: pd.DataFrame, label: str = "target") -> dict:
    rows = [[None if isinstance(v, float) and np.isnan(v) else v for v in row]
            for row in frame.astype(object).values.tolist()]
    return {"columns": list(frame.columns), "rows": rows, "label": label}


def test_suggest_and_predict_for_a_json_table_and_a_csv_upload(server, http, pid_and_server):
    pid = pid_and_server[0]
    wine = wine_frame()
    by_json = http.post(f"{server.url}/v1/suggest", json={**_table(wine), "k_max_iters": 30}, headers=AUTH, timeout=60)
    assert by_json.status_code == 200, by_json.text
    s = by_json.json()
    assert s["predictor_id"] == pid and s["task"] is None and len(s["architecture"]) == 15
    assert s["nearest_tasks"][0]["task"] == "tab_wine"  # across widths (13 features vs 4, 30, 64)
    assert {n["task"] for n in s["nearest_tasks"]} == set(TABLE_TRAIN_TASKS) and s["far_from_training"] in (True, False)
    by_csv = http.post(f"{server.url}/v1/suggest?label=target&k_max_iters=30", data=_csv(wine), headers=CSV,
                       timeout=60)
    assert by_csv.status_code == 200, by_csv.text
    assert by_csv.json()["nearest_tasks"] == s["nearest_tasks"]  # the same table, the same meta-features
    assert by_csv.json()["architecture"] == s["architecture"]
    scores = http.post(f"{server.url}/v1/predict", json={**_table(wine), "architectures": ARCHS}, headers=AUTH,
                       timeout=60)
    assert scores.status_code == 200, scores.text
    up = http.post(f"{server.url}/v1/predict", params={"label": "target", "architectures": json.dumps(ARCHS)},
                   data=_csv(wine), headers=CSV, timeout=60)
    assert up.status_code == 200, up.text
    assert np.allclose(up.json()["scores"], scores.json()["scores"]) and sorted(up.json()["ranking"]) == [0, 1]
    spec = http.get(f"{server.url}/openapi.json", timeout=30).json()
    assert {"application/json", "text/csv"} <= set(spec["paths"]["/v1/suggest"]["post"]["requestBody"]["content"])
    assert ["columns", "label", "rows"] in [sorted(s["required"]) for s in
                                            spec["components"]["schemas"]["SuggestRequest"]["oneOf"]]


def test_a_json_table_with_text_and_missing_values_is_encoded_like_tasks_add(server, http):
    iris = pd.DataFrame(load_iris().data, columns=["sl", "sw", "pl", "pw"])
    iris["colour"] = ["red", "blue", None][0:1] * 50 + ["blue"] * 50 + [None] * 50
    iris.loc[::9, "sl"] = np.nan
    iris["species"] = np.array(["setosa", "versicolor", "virginica"])[load_iris().target]
    r = http.post(f"{server.url}/v1/suggest", json={**_table(iris, "species"), "k_max_iters": 20}, headers=AUTH,
                  timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["nearest_tasks"][0]["task"] in TABLE_TRAIN_TASKS


def test_a_table_with_more_classes_than_the_predictor_reads_is_answered(server, http):
    """20 classes against a predictor fitted with 10 label slots: folded (predictor/data.py fold_labels)."""
    twenty = pd.concat([wine_frame()] * 2, ignore_index=True).assign(target=lambda d: np.arange(len(d)) % 20)
    r = http.post(f"{server.url}/v1/suggest", json={**_table(twenty), "k_max_iters": 10}, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["architecture"]) == 15 and r.json()["nearest_tasks"]


def _bad_csv() -> list[tuple[str, dict, bytes, int, str]]:
    """(id, query, CSV body, status, text the detail must contain)."""
    wine = wine_frame()
    inf = wine.copy()
    inf.loc[4, "alcohol"] = np.inf
    mixed = wine.assign(hue=wine["hue"].astype(str))
    mixed.loc[2, "hue"] = "pale?"
    latin1 = _csv(wine.head(60).assign(region="x")).replace(b",x\n", b",caf\xe9\n", 1)
    return [("no label parameter", {}, _csv(wine), 422, "label"),
            ("label column missing", {"label": "nope"}, _csv(wine), 422, "label column 'nope' not found"),
            ("constant label", {"label": "target"}, _csv(wine.assign(target="a")), 422,
             "label column 'target' is constant"),
            ("under 50 rows", {"label": "target"}, _csv(wine.head(30)), 422, "30 rows"),
            ("all-missing column", {"label": "target"}, _csv(wine.assign(blank=np.nan)), 422,
             "column 'blank' is all missing"),
            ("mixed types", {"label": "target"}, _csv(mixed), 422, "column 'hue' mixes numbers and text"),
            ("infinite value", {"label": "target"}, _csv(inf), 422, "column 'alcohol' has an infinite value"),
            ("non-UTF-8 text", {"label": "target"}, latin1, 422, "column 'region' has non-UTF-8 text"),
            ("empty body", {"label": "target"}, b"", 422, "empty"),
            ("over the CSV byte limit", {"label": "target"}, b"a,b\n" + b"1,2\n" * 60_000, 413, "bytes"),
            ("k_max_iters zero", {"label": "target", "k_max_iters": 0}, _csv(wine), 422, "k_max_iters"),
            ("predict: architectures not JSON", {"label": "target", "architectures": "[[0"}, _csv(wine), 422,
             "architectures: the query parameter must be a JSON list"),
            ("predict: choice out of range", {"label": "target", "architectures": json.dumps([[0, 12] + [0] * 13])},
             _csv(wine), 422, "architectures[0]: dimension 'layer1'"),
            ("predict: fractional choice", {"label": "target", "architectures": json.dumps([[0.5] + [0] * 14])},
             _csv(wine), 422, "query.architectures[0][0]")]


@pytest.mark.parametrize("case", _bad_csv(), ids=lambda c: c[0])
def test_a_bad_csv_upload_is_a_4xx_naming_the_column(server, http, case):
    name, query, body, status, text = case
    path = "/v1/predict" if name.startswith("predict:") else "/v1/suggest"
    r = http.post(f"{server.url}{path}", params=query, data=body, headers=CSV, timeout=60)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert text in detail and "\n" not in detail, detail
    healthy(http, server)


def _bad_json() -> list[tuple[str, str, dict, int, str]]:
    """(id, path, body, status, text the detail must contain)."""
    wine = _table(wine_frame())
    many = _table(pd.concat([wine_frame()] * 2, ignore_index=True).assign(target=lambda d: np.arange(len(d))))
    mixed = {**wine, "rows": [list(r) for r in wine["rows"]]}
    mixed["rows"][3][0] = "strong"
    return [("label not among the columns", "/v1/suggest", {**wine, "label": "nope"}, 422, "label: column 'nope'"),
            ("table and a task", "/v1/suggest", {**wine, "task": "tab_wine"}, 422, "not several"),
            ("rows missing", "/v1/suggest", {"columns": wine["columns"], "label": "target"}, 422, "`rows` is missing"),
            ("ragged row", "/v1/suggest", {**wine, "rows": wine["rows"][:60] + [[1.0]]}, 422, "rows[60] has 1 values"),
            ("mixed types", "/v1/suggest", mixed, 422, "column 'alcohol' mixes numbers and text"),
            ("over 100 classes", "/v1/suggest", many, 422, "label column 'target' has 356 distinct values"),
            ("too many rows", "/v1/suggest", {**wine, "rows": wine["rows"] * 6}, 413, "rows: 1068 rows"),
            ("duplicate column", "/v1/suggest", {**wine, "columns": ["hue"] + wine["columns"][1:]}, 422,
             "column 'hue' appears more than once"),
            ("all-missing column", "/v1/suggest", {**wine, "rows": [[None] + r[1:] for r in wine["rows"]]}, 422,
             "column 'alcohol' is all missing"),
            ("predict without architectures", "/v1/predict", wine, 422, "architectures")]


@pytest.mark.parametrize("case", _bad_json(), ids=lambda c: c[0])
def test_a_bad_json_table_is_a_4xx_naming_the_column(server, http, case):
    _, path, body, status, text = case
    r = http.post(f"{server.url}{path}", json=body, headers=AUTH, timeout=60)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert text in detail and "\n" not in detail, detail
    healthy(http, server)
