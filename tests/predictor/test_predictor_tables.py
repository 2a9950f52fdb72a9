"""The predictor on tasks of any width (issue 17): the data path, the encoder rule, and `nasdb suggest --data`.

A real small store (predictor/testing.py ``shared_table_store``): a digits task (64 features) and
three sklearn tables of the tabular suite (iris 4, wine 13, breast_cancer 30 encoded features),
10 children of 1 epoch each, and a predictor fitted in-process with the ``cells`` meta encoder.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_iris, load_wine

from nasdb.store import ExperimentStore
from predictor.checkpoint import load_predictor
from predictor.config import PredictorConfig
from predictor.config import SuggestConfig
from predictor.data import fold_labels, load_for_config, load_training_data, meta_rows, sample_budget
from predictor.suggest import suggest_for_task
from predictor.testing import (TABLE_TRAIN_TASKS, TRAIN_TASKS, build_tiny_store, fit_tiny_predictor, shared_table_store,
                               shared_tiny_store)


@pytest.fixture(scope="module")
def table_store(tmp_path_factory):
    root, pid = shared_table_store(str(tmp_path_factory.getbasetemp()))
    return ExperimentStore(root), pid


@pytest.fixture(scope="module")
def digits_store(tmp_path_factory):
    root, pid = shared_tiny_store(str(tmp_path_factory.getbasetemp()))
    return ExperimentStore(root), pid


def wine_frame() -> pd.DataFrame:
    df = load_wine(as_frame=True).frame
    df["target"] = df["target"].map({0: "barolo", 1: "grignolino", 2: "barbera"})  # text labels
    return df


# -- the data path and the encoder rule ----------------------------------------------------------------
def test_cells_reads_every_width_and_samples_refuses_a_table_naming_it(table_store):
    store, _ = table_store
    data = load_training_data(store, tasks=TABLE_TRAIN_TASKS, min_experiments=8, meta_encoder="cells", budget=100)
    widths = {n: t.x.shape[1] for n, t in data.tasks.items()}
    assert widths == {"digits_loops": 64, "tab_iris": 4, "tab_wine": 13, "tab_breast_cancer": 30}
    assert all(t.x.shape[0] <= 100 for t in data.tasks.values())
    assert data.snapshot()["tab_wine"]["features"] == 13
    with pytest.raises(ValueError, match=r"task 'tab_iris' has 4 features.*--meta-encoder cells") as e:
        load_training_data(store, tasks=TABLE_TRAIN_TASKS, min_experiments=8, meta_encoder="samples")
    assert "\n" not in str(e.value)
    # without meta-features the samples are never read: any width trains
    load_training_data(store, tasks=TABLE_TRAIN_TASKS, min_experiments=8, use_meta_features=False)


def test_auto_picks_cells_only_when_a_task_is_not_64_wide(table_store, digits_store):
    store, _ = table_store
    data, cfg, why = load_for_config(store, PredictorConfig(batch_size=8), meta_encoder="auto",
                                     tasks=TABLE_TRAIN_TASKS, min_experiments=8)
    assert cfg.meta_encoder == "cells" and why.startswith("auto: 3 task(s) not 64 features wide, e.g. 'tab_")
    with pytest.raises(ValueError, match="--meta-encoder cells"):
        load_for_config(store, PredictorConfig(batch_size=8), meta_encoder="samples", tasks=TABLE_TRAIN_TASKS,
                        min_experiments=8)
    digits, _ = digits_store
    _, cfg, why = load_for_config(digits, PredictorConfig(batch_size=8), meta_encoder="auto", tasks=TRAIN_TASKS,
                                  min_experiments=8)
    assert cfg.meta_encoder == "samples" and why == "auto: every task has 64 features"  # digits unchanged


def test_sample_budget_is_a_seeded_subset_and_cells_bound_rows_by_width():
    x, y = np.arange(5000 * 3, dtype=np.float32).reshape(5000, 3), np.arange(5000) % 4
    a, b = sample_budget(x, y, 1000), sample_budget(x, y, 1000)
    assert a[0].shape == (1000, 3) and np.array_equal(a[0], b[0]) and np.all(np.diff(a[0][:, 0]) > 0)
    assert sample_budget(x, y, 9000)[0] is x
    wide = np.zeros((5000, 1024), dtype=np.float32)
    cells = PredictorConfig(meta_encoder="cells")
    assert meta_rows(wide, y, cells)[0].shape[0] == max(cells.sample_batch_size, (1 << 17) // 1024)
    assert meta_rows(x, y, cells)[0].shape[0] == 4096  # narrow: the budget binds
    assert meta_rows(x, y, PredictorConfig())[0].shape[0] == 4096  # the budget, not the cell bound


# -- nasdb suggest --data on a table -------------------------------------------------------------------------
def test_cli_suggests_for_a_csv_table_and_finds_its_nearest_task(table_store, cli, tmp_path):
    store, pid = table_store
    path = tmp_path / "wine.csv"
    wine_frame().to_csv(path, index=False)
    out = json.loads(cli("--store", store.root, "suggest", "--data", str(path), "--label", "target",
                         "--max-iters", "30", "--json").stdout)
    assert out["predictor_id"] == pid and out["task"] == "user_wine" and len(out["architecture"]) == 15
    assert out["nearest_tasks"][0]["task"] == "tab_wine"  # across widths: z is width-free with cells
    assert {n["task"] for n in out["nearest_tasks"]} == set(TABLE_TRAIN_TASKS)
    assert out["far_from_training"] in (True, False)
    text = cli("--store", store.root, "suggest", "--data", str(path), "--label", "target", "--max-iters", "30").stdout
    assert "nearest training tasks: tab_wine" in text


def test_a_table_with_more_classes_than_the_predictor_reads_is_folded_not_refused(table_store, cli, tmp_path):
    store, pid = table_store
    assert load_predictor(store, pid).config.max_classes == 10
    twenty = pd.concat([_iris()] * 2, ignore_index=True).assign(target=lambda d: np.arange(len(d)) % 20)
    path = tmp_path / "twenty.csv"
    twenty.to_csv(path, index=False)
    out = json.loads(cli("--store", store.root, "suggest", "--data", str(path), "--label", "target",
                         "--max-iters", "10", "--json").stdout)
    assert out["predictor_id"] == pid and len(out["architecture"]) == 15 and np.isfinite(out["score"])
    assert fold_labels(np.array([0, 9, 10, 19]), 10).tolist() == [0, 9, 0, 9]


def test_a_fit_widens_its_label_slots_to_the_task_with_most_classes(tmp_path):
    """tab_males_industry has 12 classes: a fit on it gets 12 label slots instead of refusing it."""
    tasks = ["tab_males_industry", "tab_iris"]
    store = build_tiny_store(str(tmp_path / "store"), tasks, num_architectures=8, epochs=1)
    data, cfg, _ = load_for_config(store, PredictorConfig(batch_size=8, meta_encoder="cells"), tasks=tasks,
                                   min_experiments=8)
    assert cfg.max_classes == 12 and data.tasks["tab_males_industry"].num_classes == 12
    pid = fit_tiny_predictor(store, tasks, num_steps=5, meta_encoder="cells", ensemble_size=2)
    checkpoint = load_predictor(store, pid)
    assert checkpoint.config.max_classes == 12
    suggestion = suggest_for_task(checkpoint, store, "tab_males_industry", SuggestConfig(k_max_iters=5))
    assert len(suggestion.architecture) == 15


def _iris() -> pd.DataFrame:
    return load_iris(as_frame=True).frame


def _bad_tables() -> list[tuple[str, pd.DataFrame, str, str]]:
    """(id, table, label, what the one-line error must name)."""
    iris = _iris()
    constant = iris.assign(target=7)
    many = iris.assign(target=np.arange(len(iris)))
    empty = iris.assign(blank=np.nan)
    mixed = iris.assign(m=[str(v) for v in iris["petal width (cm)"]])
    mixed.loc[3, "m"] = "n/a?"
    inf = iris.copy()
    inf.loc[5, "sepal length (cm)"] = np.inf
    return [("label missing", iris, "nope", "label column 'nope' not found"),
            ("label constant", constant, "target", "label column 'target' is constant"),
            ("over 100 classes", many, "target", "label column 'target' has 150 distinct values"),
            ("under 50 rows", iris.iloc[::4], "target", "38 rows"),
            ("all-missing column", empty, "target", "column 'blank' is all missing"),
            ("mixed types", mixed, "target", "column 'm' mixes numbers and text"),
            ("infinite value", inf, "target", "column 'sepal length (cm)' has an infinite value")]


@pytest.mark.parametrize("case", _bad_tables(), ids=lambda c: c[0])
def test_cli_refuses_a_bad_table_in_one_line_naming_the_column(table_store, cli, tmp_path, case):
    store, _ = table_store
    _, frame, label, text = case
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    result = cli("--store", store.root, "suggest", "--data", str(path), "--label", label, code=1)
    err = result.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and text in err, err
    assert "Traceback" not in result.output


# -- a sent table: only the rows the meta-features read are encoded ---------------------------------------
def _sent_table(frame: pd.DataFrame):
    from predictor.tables import table_from_csv

    return table_from_csv(frame.to_csv(index=False).encode())


def _mixed_wine(copies: int = 3) -> pd.DataFrame:
    """Wine repeated, with missing values, a low- and a high-cardinality text column."""
    df = pd.concat([wine_frame()] * copies, ignore_index=True)
    rng = np.random.default_rng(0)
    df.loc[rng.random(len(df)) < 0.1, "alcohol"] = np.nan
    return df.assign(colour=rng.choice(["red", "white", None], len(df)),
                     lot=[f"l{v}" for v in rng.integers(0, 90, len(df))])


def test_a_sent_table_encodes_only_the_rows_its_meta_features_read_and_suggests_as_before(table_store):
    """request_samples gives the arrays of the whole task's train split cut by meta_rows (the rows
    cut to 400 first, the transform fitted on all train rows), and the suggestion of the cells
    encoder's distinct-cells z is the one of the per-cell loop's z."""
    from predictor.suggest import engine_for
    from predictor.tables import meta_samples, request_samples, task_from_request

    store, pid = table_store
    checkpoint = load_predictor(store, pid)
    cfg = checkpoint.config
    for frame, label in ((_mixed_wine(), "target"), (_digits_frame(), "digit")):
        table = _sent_table(frame)
        x, y = request_samples(table, label, cfg, max_rows=400)
        task = task_from_request(table, label, max_rows=400)
        x0, y0 = meta_rows(*meta_samples(task, cfg), cfg)
        assert len(x) < len(task.samples("train")[0]) and x.dtype == x0.dtype == np.float32
        assert np.array_equal(x, x0) and np.array_equal(y, y0), label
    engine = engine_for(checkpoint, store)
    z = engine.embed(x, y)
    chunk = max(1, 65536 // x.shape[1])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        z_loop = sum(engine.model.embed_task(xt[i:i + chunk], yt[i:i + chunk]) * len(xt[i:i + chunk])
                     for i in range(0, len(x), chunk)) / len(x)
    z_loop = torch.cat([z_loop, z[len(z_loop):]])  # then the same landmarking descriptors
    assert torch.allclose(z, z_loop, rtol=1e-5, atol=1e-6)
    config = SuggestConfig(k_max_iters=50)
    fast, slow = engine.suggest_z(z, config), engine.suggest_z(z_loop, config)
    assert fast.architecture == slow.architecture and fast.score == pytest.approx(slow.score, abs=1e-5)


def test_a_csv_upload_reads_the_same_table_in_large_blocks():
    """table_from_csv parses in CSV_BLOCK_BYTES blocks: a column whose type changes blocks later (an
    integer column that turns float, then text; a blank one that turns text) reads as with Arrow's defaults."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from predictor.tables import CSV_BLOCK_BYTES, table_from_csv

    n = 3 * CSV_BLOCK_BYTES // 60  # rows of about 60 bytes: three blocks
    frame = pd.DataFrame({"a": np.arange(n).astype(str), "b": [""] * n, "c": np.arange(n) % 3, "d": "p" * 45})
    frame.loc[n - 20, "a"], frame.loc[n - 10, "a"], frame.loc[n - 5, "b"] = "2.5", "x", "late"
    data = frame.to_csv(index=False).encode()
    assert len(data) > 2 * CSV_BLOCK_BYTES
    ours = table_from_csv(data)
    default = pacsv.read_csv(pa.BufferReader(data), convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    assert ours.column("a").num_chunks < default.column("a").num_chunks
    assert ours.schema == default.schema and ours.equals(default) and ours.column("a").type == pa.string()


def _digits_frame() -> pd.DataFrame:
    """64 pixel columns in [0, 1] and a label: a table read as an image task."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return pd.DataFrame(d.data[:600] / 16.0, columns=[f"p{j}" for j in range(64)]).assign(digit=d.target[:600])


@pytest.mark.parametrize("case", _bad_tables(), ids=lambda c: c[0])
def test_a_sent_table_is_refused_as_its_whole_task_is(table_store, case):
    from predictor.tables import request_samples, task_from_request

    store, pid = table_store
    _, frame, label, text = case
    table = _sent_table(frame)
    with pytest.raises(ValueError) as whole:
        task_from_request(table, label)
    with pytest.raises(ValueError) as rows:
        request_samples(table, label, load_predictor(store, pid).config)
    assert str(rows.value) == str(whole.value) and text in str(rows.value)


def test_a_samples_predictor_asked_about_a_table_says_to_fit_with_cells(digits_store, cli, tmp_path):
    store, pid = digits_store
    assert load_predictor(store, pid).config.meta_encoder == "samples"
    path = tmp_path / "wine.csv"
    wine_frame().to_csv(path, index=False)
    result = cli("--store", store.root, "suggest", "--data", str(path), "--label", "target", code=1)
    err = result.stderr.strip()
    assert "\n" not in err and "13 features" in err and "--meta-encoder cells" in err, err


def test_cli_fit_picks_cells_by_itself_and_says_why(table_store, cli, tmp_path, ray_cluster):
    import shutil

    store, _ = table_store
    root = str(tmp_path / "store")
    shutil.copytree(store.root, root)  # the fit adds a predictor
    common = ("--workers", "0", "--steps", "20", "--batch-size", "8", "--ensemble-size", "2")  # 0: in process
    out = cli("--store", root, "fit", *common).stdout
    assert "meta_encoder=cells (auto: 3 task(s) not 64 features wide, e.g. 'tab_" in out, out
    assert out.rstrip().endswith("landmarks=on"), out  # auto: landmarks with the cells encoder
    pid = out.split()[1].rstrip(":")
    loaded = load_predictor(ExperimentStore(root), pid)
    assert loaded.config.meta_encoder == "cells" and loaded.model.num_landmarks == 5
    err = cli("--store", root, "fit", "--meta-encoder", "samples", *common, code=1).stderr.strip()
    assert err.startswith("error: task 'tab_") and "--meta-encoder cells" in err and "\n" not in err


def test_cli_loto_evaluates_tables_with_cells(table_store, cli):
    store, _ = table_store
    out = cli("--store", store.root, "evaluate", "--loto", "--meta", "with", "--loss", "l2", "--repeats", "1",
              "--steps", "20", "--batch-size", "8", "--ensemble-size", "2", "--baselines", "none", "--out", "-",
              "--landmark-noise", "silverman", "--json").stdout
    rows = json.loads(out[out.index("["):])
    assert {r["task"] for r in rows} == set(TABLE_TRAIN_TASKS) and {r["meta_encoder"] for r in rows} == {"cells"}
    assert all(r["spearman_mean"] != r["spearman_mean"] or -1 <= r["spearman_mean"] <= 1 for r in rows)  # NaN: flat


def test_cli_loto_holds_out_only_the_named_tasks(table_store, cli, tmp_path):
    store, _ = table_store
    common = ("--store", store.root, "evaluate", "--loto", "--meta", "with", "--loss", "l2", "--repeats", "1",
              "--steps", "10", "--batch-size", "8", "--ensemble-size", "2", "--baselines", "ridge", "--out", "-")
    out = cli(*common, "--held-out", "tab_wine,tab_iris", "--json").stdout
    rows = json.loads(out[out.index("["):])
    assert [r["task"] for r in rows] == [t for t in TABLE_TRAIN_TASKS if t in ("tab_iris", "tab_wine")]
    assert all("ridge_spearman" in r for r in rows)
    err = cli(*common, "--held-out", "tab_nope", code=1).stderr.strip()
    assert "tab_nope" in err and "\n" not in err
    printed = cli(*common[:-1], str(tmp_path / "loto"), "--held-out", "tab_wine").stdout
    assert printed == (tmp_path / "loto" / "loto.md").read_text()  # the report of the fits, not of the flags
    assert '"meta_encoder": "cells"' in printed and "| tab_wine |" in printed
    for flag, bad in (("--landmark-noise", "-1"), ("--landmark-noise", "scott"), ("--landmark-noise", "inf"),
                      ("--uncertainty-gap", "-0.1"), ("--uncertainty-gap", "binomial")):
        err = cli(*common, flag, bad, code=2).stderr.strip()
        assert err.startswith(f"error: Invalid value for '{flag}'") and repr(bad) in err, err
        assert "\n" not in err, err
