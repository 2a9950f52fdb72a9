"""The experiment store: an append-only, lock-free Parquet database read through in-memory DuckDB.

``_store.py`` is the API (:class:`ExperimentStore`); underneath it ``_fs.py`` wraps the file
system, ``_schema.py`` the row schema, ``_writer.py``, ``_read.py`` and ``_queries.py`` the
writes and reads, ``_check.py`` and ``_maint.py`` verification and compaction, ``_sql.py`` the
guards of user SQL. ``testing.py`` holds the naive references the store's tests compare against.
"""

from nasdb.errors import QueryTimeoutError, ReadOnlyQueryError, TaskExistsError
from nasdb.store._artifacts import AREAS, ArtifactArea
from nasdb.store._read import sql_str
from nasdb.store._schema import (EXPERIMENT_SCHEMA, SCHEMA_VERSION, SCHEMA_VERSION_KEY, ExperimentRecord, compute_ids,
                                 experiment_id, records_to_table, table_from_columns)
from nasdb.store._store import ExperimentStore, provenance_fingerprint
from nasdb.store._writer import ExperimentWriter

__all__ = ["AREAS", "EXPERIMENT_SCHEMA", "ArtifactArea", "SCHEMA_VERSION", "SCHEMA_VERSION_KEY", "ExperimentRecord",
           "ExperimentStore", "ExperimentWriter", "QueryTimeoutError", "ReadOnlyQueryError", "TaskExistsError",
           "compute_ids", "experiment_id", "provenance_fingerprint", "records_to_table", "sql_str",
           "table_from_columns"]
