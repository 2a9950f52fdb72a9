"""The task suite: built-in tasks, user-task registration and its refusals, arrow round trip."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nasdb.errors import InvalidTaskError, UnknownTaskError
from nasdb.tasks import (
    FEATURE_DIM,
    SOURCE_LOADERS,
    SPLITS,
    SUITES,
    Task,
    builtin_split_indices,
    builtin_task_names,
    load_builtin_task,
    mnist_to_8x8,
    task_from_arrays,
    task_from_file,
)

NAMES = builtin_task_names()


@pytest.fixture(scope="module")
def tasks() -> dict[str, Task]:
    return {name: load_builtin_task(name) for name in NAMES}


def _user_data(n_per_class: int = 20, labels=("cat", "dog", "emu"), seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n_per_class * len(labels), FEATURE_DIM))
    y = np.repeat(np.array(labels, dtype=object), n_per_class)
    return x, y


def _write_csv(path, x, y, label="label", columns=None):
    columns = columns or [f"f{i}" for i in range(x.shape[1])]
    lines = [",".join(columns + [label])]
    lines += [",".join([repr(float(v)) for v in row] + [str(t)]) for row, t in zip(x, y)]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- built-in suite ---------------------------------------------------------------------------
def test_suite_is_varied():
    assert SUITES["digits"] == tuple(NAMES) and len(NAMES) >= 12
    with pytest.raises(ValueError, match="unknown task suite 'nope'.*digits"):
        builtin_task_names("nope")


def test_suite_spans_classes_sizes_and_sources(tasks):
    classes = {t.num_classes for t in tasks.values()}
    assert min(classes) == 2 and max(classes) == 10 and len(classes) >= 5
    train_sizes = [t.sizes()["train"] for t in tasks.values()]
    assert min(train_sizes) < 400 and max(train_sizes) >= 2000
    assert {t.source for t in tasks.values()} == {"digits", "mnist"}
    assert all(t.description for t in tasks.values())


@pytest.mark.parametrize("name", NAMES)
def test_builtin_task_is_sane(tasks, name):
    task = tasks[name]
    assert task.name == name and task.feature_dim == FEATURE_DIM
    for split in SPLITS:
        x, y = task.samples(split)
        assert x.dtype == np.float32 and x.shape == (len(y), FEATURE_DIM)
        assert y.dtype == np.int64
        assert 0.0 <= x.min() and x.max() <= 1.0
        # every class in every split, and no class nearly absent
        counts = np.bincount(y, minlength=task.num_classes)
        assert len(counts) == task.num_classes and counts.min() >= 0.05 * len(y)
    assert task.sizes()["val"] >= 150 and task.sizes()["test"] >= 150


@pytest.mark.parametrize("name", NAMES)
def test_builtin_splits_are_disjoint_and_match_source(tasks, name):
    idx = builtin_split_indices(name)
    assert sum(len(v) for v in idx.values()) == len(np.unique(np.concatenate(list(idx.values()))))
    assert {k: len(v) for k, v in idx.items()} == tasks[name].sizes()
    # the rows really are those source rows (sources may hold duplicate images, so compare by index)
    x_src, _ = SOURCE_LOADERS[tasks[name].source]()
    for split in SPLITS:
        np.testing.assert_array_equal(tasks[name].samples(split)[0], x_src[idx[split]])


def test_builtin_tasks_are_deterministic(tasks):
    from nasdb.tasks import _builtin_indices

    for name in ("digits10_small", "mnist_parity"):
        _builtin_indices.cache_clear()
        again = load_builtin_task(name)
        assert again.fingerprint() == tasks[name].fingerprint()
        for split in SPLITS:
            np.testing.assert_array_equal(again.samples(split)[0], tasks[name].samples(split)[0])
            np.testing.assert_array_equal(again.samples(split)[1], tasks[name].samples(split)[1])
    assert len({t.fingerprint() for t in tasks.values()}) == len(tasks)


def test_groupings_map_digits_to_labels(tasks):
    _, digit = SOURCE_LOADERS["digits"]()
    idx = builtin_split_indices("digits_parity")["train"]
    np.testing.assert_array_equal(tasks["digits_parity"].y_train, digit[idx] % 2)
    idx = builtin_split_indices("digits_mod3")["val"]
    np.testing.assert_array_equal(tasks["digits_mod3"].y_val, digit[idx] % 3)
    idx = builtin_split_indices("digits_loops")["test"]
    np.testing.assert_array_equal(tasks["digits_loops"].y_test, np.array([1, 0, 0, 0, 1, 0, 1, 0, 2, 1])[digit[idx]])


def test_unknown_builtin_task():
    with pytest.raises(UnknownTaskError, match="unknown built-in task 'nope'; built-in tasks: digits10"):
        load_builtin_task("nope")


def test_mnist_conversion_resembles_sklearn_digits():
    """Same orientation and ink: class-mean images of both sources correlate strongly."""
    xd, yd = SOURCE_LOADERS["digits"]()
    xm, ym = SOURCE_LOADERS["mnist"]()
    assert abs(xm.mean() - xd.mean()) < 0.05
    corr = [np.corrcoef(xd[yd == k].mean(0), xm[ym == k].mean(0))[0, 1] for k in range(10)]
    assert min(corr) > 0.7, corr
    # a blank image stays blank; a filled square fills the centre blocks
    img = np.zeros((2, 28, 28))
    img[1, 4:24, 4:24] = 255
    out = mnist_to_8x8(img)
    assert out[0].sum() == 0 and out[1].reshape(8, 8)[:, 3:5].min() == 1.0


# -- user tasks -------------------------------------------------------------------------------
def test_task_from_arrays_maps_labels_in_sorted_order():
    x, y = _user_data(labels=("zebra", "ant", "mole"))
    task = task_from_arrays("my-task_1.0", x, y, seed=3)
    assert task.source == "user" and task.num_classes == 3
    assert sum(task.sizes().values()) == len(x)
    assert task.sizes() == {"train": 36, "val": 12, "test": 12}
    assert "'ant', 'mole', 'zebra'" in task.description
    # "ant" -> 0, "mole" -> 1, "zebra" -> 2: recover each row's label through its features
    lookup = {row.tobytes(): label for row, label in zip(x.astype(np.float32), y)}
    for split in SPLITS:
        xs, ys = task.samples(split)
        assert set(np.unique(ys)) == {0, 1, 2}
        assert [lookup[r.tobytes()] for r in xs] == [("ant", "mole", "zebra")[k] for k in ys]
    again = task_from_arrays("my-task_1.0", x, y, seed=3)
    assert again.fingerprint() == task.fingerprint()
    assert task_from_arrays("my-task_1.0", x, y, seed=4).fingerprint() != task.fingerprint()


def test_task_from_arrays_accepts_integer_labels():
    x, _ = _user_data(labels=(0, 1))
    task = task_from_arrays("ints", x, np.repeat([7, 3], 20))
    assert task.num_classes == 2 and set(task.y_train) == {0, 1}


def test_task_from_csv_and_parquet_agree(tmp_path):
    x, y = _user_data()
    csv = _write_csv(tmp_path / "t.csv", x, y, label="kind")
    table = pa.table({**{f"f{i}": x[:, i] for i in range(FEATURE_DIM)}, "kind": list(y)})
    pq.write_table(table, tmp_path / "t.parquet")
    a = task_from_file("from_csv", csv, label="kind")
    b = task_from_file("from_parquet", str(tmp_path / "t.parquet"), label="kind")
    c = task_from_arrays("from_arrays", x, y)
    assert a.fingerprint() == b.fingerprint() == c.fingerprint()
    assert a.num_classes == 3 and a.source == "user"


def test_label_column_may_sit_anywhere(tmp_path):
    x, y = _user_data()
    cols = {f"f{i}": x[:, i] for i in range(32)} | {"y": list(y)} | {f"f{i}": x[:, i] for i in range(32, 64)}
    pq.write_table(pa.table(cols), tmp_path / "mid.parquet")
    task = task_from_file("mid", tmp_path / "mid.parquet", label="y")
    assert task.fingerprint() == task_from_arrays("mid", x, y).fingerprint()


# -- refusals ---------------------------------------------------------------------------------
def test_refuses_wrong_feature_count(tmp_path):
    x, y = _user_data()
    with pytest.raises(InvalidTaskError, match="task 'bad': expected 64 features .* got 63"):
        task_from_arrays("bad", x[:, :63], y)
    csv = _write_csv(tmp_path / "t.csv", x[:, :63], y)  # a file of another width is a table task
    task = task_from_file("table", csv, label="label")
    assert task.transform is not None and task.feature_dim == 63


def test_refuses_non_finite_values(tmp_path):
    x, y = _user_data()
    x[5, 7] = np.inf
    with pytest.raises(InvalidTaskError, match="non-finite value inf in column 7 at row 5"):
        task_from_arrays("bad", x, y)
    x[5, 7] = np.nan
    with pytest.raises(InvalidTaskError, match="non-finite value nan in column 7 at row 5"):
        task_from_arrays("bad", x, y)
    csv = _write_csv(tmp_path / "nan.csv", x, y)  # a missing value makes it a table task
    assert task_from_file("table", csv, label="label").transform.columns[7].indicator
    x[5, 7] = -np.inf
    csv = _write_csv(tmp_path / "inf.csv", x, y)
    with pytest.raises(InvalidTaskError, match="column 'f7' has an infinite value \\(-inf\\) at row 5"):
        task_from_file("bad", csv, label="label")


def test_refuses_values_outside_feature_range():
    x, y = _user_data()
    x[2, 3] = 16.0
    with pytest.raises(InvalidTaskError, match="value 16 in column 3 at row 2 is outside \\[0, 1\\]"):
        task_from_arrays("bad", x, y)


def test_refuses_non_numeric_column(tmp_path):
    x, y = _user_data()
    table = pa.table({**{f"f{i}": x[:, i] for i in range(FEATURE_DIM)}, "label": list(y)})
    table = table.set_column(4, "f4", pa.array(["a"] * len(x)))
    pq.write_table(table, tmp_path / "s.parquet")  # a text column makes it a table task
    assert task_from_file("table", tmp_path / "s.parquet", label="label").transform.columns[4].kind == "onehot"
    with pytest.raises(InvalidTaskError, match="features must be numeric"):
        task_from_arrays("bad", np.full((60, FEATURE_DIM), "a"), y)


def test_refuses_missing_label_column(tmp_path):
    x, y = _user_data()
    csv = _write_csv(tmp_path / "t.csv", x, y, label="target")
    with pytest.raises(InvalidTaskError, match="label column 'label' not found; available columns: 'f0', 'f1'.*65 in all"):
        task_from_file("bad", csv, label="label")


def test_refuses_single_class(tmp_path):
    x, _ = _user_data()
    with pytest.raises(InvalidTaskError, match="task 'bad': a single class 'only'"):
        task_from_arrays("bad", x, ["only"] * len(x))


def test_refuses_empty_split():
    x, y = _user_data()
    y = y.copy()
    y[:2] = "rare"  # two samples cannot fill train, val and test
    with pytest.raises(InvalidTaskError, match="class 'rare' has 2 sample\\(s\\), too few .* at least 3"):
        task_from_arrays("bad", x, y)


def test_refuses_missing_labels():
    x, y = _user_data()
    y = y.copy()
    y[4] = None
    with pytest.raises(InvalidTaskError, match="missing label at row 4"):
        task_from_arrays("bad", x, y)


def test_refuses_mismatched_lengths():
    x, y = _user_data()
    with pytest.raises(InvalidTaskError, match="labels must have shape \\(60,\\)"):
        task_from_arrays("bad", x, y[:-1])


def test_refuses_empty_and_unreadable_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(InvalidTaskError, match="empty.csv' is empty"):
        task_from_file("bad", empty, label="label")
    header = tmp_path / "header.csv"
    header.write_text(",".join([f"f{i}" for i in range(64)] + ["label"]) + "\n")
    with pytest.raises(InvalidTaskError, match="header but no rows"):
        task_from_file("bad", header, label="label")
    with pytest.raises(InvalidTaskError, match="file not found: '.*missing.parquet'"):
        task_from_file("bad", tmp_path / "missing.parquet", label="label")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not a parquet file at all")
    with pytest.raises(InvalidTaskError, match="cannot read '.*junk.parquet'"):
        task_from_file("bad", junk, label="label")
    with pytest.raises(InvalidTaskError, match="unsupported file type '.json'"):
        task_from_file("bad", tmp_path / "t.json", label="label")
    with pytest.raises(InvalidTaskError, match="task 'bad': no samples"):
        task_from_arrays("bad", np.zeros((0, FEATURE_DIM)), [])


@pytest.mark.parametrize("name", ["", "a/b", "../up", "..", "x" * 65, "sp ace", 3])
def test_refuses_bad_names(name):
    x, y = _user_data()
    with pytest.raises(InvalidTaskError, match="invalid task name"):
        task_from_arrays(name, x, y)


def test_errors_are_one_line(tmp_path):
    x, y = _user_data()
    with pytest.raises(InvalidTaskError) as info:
        task_from_file("bad", tmp_path / "junk.parquet", label="label")
    assert "\n" not in str(info.value)


def test_task_validates_its_arrays():
    x = np.zeros((4, FEATURE_DIM), np.float32)
    y = np.array([0, 1, 0, 1])
    ok = dict(x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y, num_classes=2, source="user")
    Task(name="ok", **ok)
    with pytest.raises(InvalidTaskError, match="task 't': y_val has label 2 at row 1, outside \\[0, 2\\)"):
        Task(name="t", **(ok | {"y_val": np.array([0, 2, 0, 1])}))
    with pytest.raises(InvalidTaskError, match="the test split is empty"):
        Task(name="t", **(ok | {"x_test": x[:0], "y_test": y[:0]}))
    with pytest.raises(InvalidTaskError, match="x_train must have shape \\(n, 64\\), got \\(4, 3\\)"):
        Task(name="t", **(ok | {"x_train": x[:, :3]}))
    with pytest.raises(InvalidTaskError, match="train split holds a single class"):
        Task(name="t", **(ok | {"y_train": np.zeros(4, np.int64)}))
    with pytest.raises(InvalidTaskError, match="source must be one of"):
        Task(name="t", **(ok | {"source": "web"}))
    with pytest.raises(ValueError, match="split must be one of"):
        Task(name="ok", **ok).samples("dev")


# -- arrow round trip -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["digits_loops", "mnist10_small", "user"])
def test_arrow_round_trip_is_exact(tasks, name, tmp_path):
    task = tasks[name] if name in tasks else task_from_arrays(name, *_user_data(), description="d")
    table = task.to_arrow()
    assert table.schema.field("features").type == pa.list_(pa.float32())
    assert table.schema.field("label").type == pa.int64() and table.num_rows == sum(task.sizes().values())
    pq.write_table(table, tmp_path / "t.parquet")
    back = Task.from_arrow(task.name, pq.read_table(tmp_path / "t.parquet"), num_classes=task.num_classes,
                           source=task.source, description=task.description)
    assert back.fingerprint() == task.fingerprint() and back.metadata() == task.metadata()
    for split in SPLITS:
        for a, b in zip(task.samples(split), back.samples(split)):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_from_arrow_refuses_malformed_tables(tasks):
    table = tasks["digits_loops"].to_arrow()
    with pytest.raises(InvalidTaskError, match="lacks column\\(s\\) \\['label'\\]"):
        Task.from_arrow("t", table.drop_columns(["label"]), num_classes=3, source="digits")
    bad = table.set_column(0, "split", pa.array(["dev"] * table.num_rows))
    with pytest.raises(InvalidTaskError, match="unknown values \\['dev'\\]"):
        Task.from_arrow("t", bad, num_classes=3, source="digits")


def test_metadata(tasks):
    meta = tasks["mnist10"].metadata()
    assert meta == {"name": "mnist10", "source": "mnist", "description": "all 10 MNIST digits at 8x8",
                    "num_classes": 10, "feature_dim": 64,
                    "sizes": {"train": 3000, "val": 1000, "test": 1000},
                    "fingerprint": tasks["mnist10"].fingerprint()}
