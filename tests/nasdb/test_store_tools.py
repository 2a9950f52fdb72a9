"""The store's raw files in other tools: pandas, pyarrow.dataset, DuckDB and Polars (issue 20).

``task`` is both a file column and the ``task=<name>`` folder key; files write it
dictionary-encoded, the type pandas and pyarrow give the key, so the tools merge the two.
Each README recipe runs here on a real store (a small HPOBench import) that holds duplicate
rows (a retried write, and a failed attempt stored before its ok retry), and must keep what
nasdb keeps: the ok row, then the earliest. A file in the older layout (a
plain string ``task``) stays readable by nasdb and by the recipes for older stores.
"""

from __future__ import annotations

import datetime as dt
import glob
import os

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from nasdb.benchmarks import import_benchmark
from nasdb.store import ExperimentStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = ExperimentStore(str(tmp_path_factory.mktemp("tools") / "store"))
    st.init()
    import_benchmark(st, "hpobench", tasks=["car", "kc1"], max_configurations=4)
    again = st.experiments_arrow("hpobench.car", status=None).slice(0, 3)  # a retried write: 3 rows twice
    with st.writer("retry") as w:
        w.append_table(again.drop_columns(["worker"]) if "worker" in again.column_names else again)
    ok = st.experiments_arrow("hpobench.kc1", status=None).slice(0, 2)  # a failed attempt, an hour before its ok row
    failed = ok.set_column(ok.schema.get_field_index("created_at"), "created_at",
                           pc.subtract(ok["created_at"], pa.scalar(dt.timedelta(hours=1))))
    failed = failed.set_column(failed.schema.get_field_index("status"), "status", pa.array(["failed"] * 2))
    with st.writer("failed-first") as w:
        w.append_table(failed.drop_columns(["worker"]))
    assert st.count(None, status="ok") == st.count(None, status=None)  # nasdb keeps the ok rows
    return st


DUPLICATES = 3 + 2


def _experiments(st) -> str:
    return os.path.join(st.root, "experiments")


def test_files_write_task_as_the_hive_key_type(store):
    for path in glob.glob(f"{_experiments(store)}/*/*.parquet"):
        assert pq.read_schema(path).field("task").type == pa.dictionary(pa.int32(), pa.string())


def test_pandas(store):
    df = pd.read_parquet(_experiments(store))
    assert len(df) == store.count(None, status=None) + DUPLICATES  # raw files: the retried rows twice
    unique = (df.assign(_bad=df["status"] != "ok").sort_values(["_bad", "created_at"])
              .drop_duplicates(["task", "experiment_id"]).drop(columns="_bad"))
    assert len(unique) == (unique["status"] == "ok").sum() == store.count(None, status=None)
    assert sorted(unique["task"].astype(str).unique()) == ["hpobench.car", "hpobench.kc1"]


def test_pyarrow_dataset(store):
    t = ds.dataset(_experiments(store), format="parquet").to_table()
    assert t.num_rows == store.count(None, status=None) + DUPLICATES
    t = t.append_column("_bad", pc.not_equal(t["status"], "ok")).sort_by([("_bad", "ascending"), ("created_at", "ascending")])
    t = t.append_column("_i", pa.array(range(t.num_rows)))
    first = t.group_by(["task", "experiment_id"], use_threads=False).aggregate([("_i", "min")])
    t = t.take(first["_i_min"]).drop_columns(["_bad", "_i"])
    assert t.num_rows == pc.sum(pc.equal(t["status"], "ok")).as_py() == store.count(None, status=None)
    hive = ds.dataset(_experiments(store), partitioning=ds.HivePartitioning.discover(infer_dictionary=True))
    kc1 = hive.to_table(filter=ds.field("task") == "hpobench.kc1")  # raw rows: the 2 failed attempts too
    assert kc1.num_rows == store.count("hpobench.kc1", status=None) + 2


def test_duckdb(store):
    sql = (f"SELECT count(*) FROM (SELECT * FROM read_parquet('{_experiments(store)}/*/*.parquet', "
           "hive_partitioning = true) QUALIFY row_number() OVER (PARTITION BY task, experiment_id "
           "ORDER BY (status <> 'ok'), created_at) = 1)")
    assert duckdb.sql(sql).fetchall() == [(store.count(None, status=None),)]


def test_polars(store):
    pl = pytest.importorskip("polars")
    df = pl.read_parquet(f"{_experiments(store)}/**/*.parquet")
    unique = df.sort(pl.col("status") != "ok", "created_at").unique(["task", "experiment_id"], keep="first")
    assert unique.height == unique.filter(pl.col("status") == "ok").height == store.count(None, status=None)


def test_a_file_of_the_older_layout_stays_readable(store, tmp_path):
    """Before this change files held ``task`` as a plain string; nasdb reads both kinds, and the
    README's recipes for such a store (pandas without hive partitioning, pyarrow.dataset) work."""
    old = tmp_path / "old"
    st = ExperimentStore(str(old))
    st.init()
    table = store.experiments_arrow("hpobench.kc1", status=None)
    folder = old / "experiments" / "task=hpobench.kc1"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-old-0.parquet")  # what the writer wrote before
    with st.writer("new") as w:
        w.append_table(store.experiments_arrow("hpobench.car", status=None))
    assert st.count(None, status=None) == store.count(None, status=None)
    assert len(pd.read_parquet(old / "experiments", partitioning=None)) == st.count(None, status=None)
    assert ds.dataset(str(old / "experiments")).count_rows() == st.count(None, status=None)
