"""The experiment store: an append-only, lock-free Parquet database read through in-memory DuckDB.

``_store.py`` is the API (:class:`ExperimentStore`); underneath it ``_fs.py`` wraps the file
system, ``_schema.py`` the row schema, ``_writer.py``, ``_read.py`` and ``_queries.py`` the
writes and reads, ``_check.py`` and ``_maint.py`` verification and compaction, ``_sql.py`` the
guards of user SQL. ``testing.py`` holds the naive references the store's tests compare against.
"""

from nasdb.store._read import sql_str
from nasdb.store._schema import RESERVED_NAME, reserved_message, table_from_columns
from nasdb.store._store import (EXPERIMENT_SCHEMA, SCHEMA_VERSION, ExperimentRecord, ExperimentStore, ExperimentWriter,
                                QueryTimeoutError, ReadOnlyQueryError, TaskExistsError, experiment_id,
                                provenance_fingerprint)

__all__ = ["EXPERIMENT_SCHEMA", "RESERVED_NAME", "SCHEMA_VERSION", "ExperimentRecord", "ExperimentStore",
           "ExperimentWriter", "QueryTimeoutError", "ReadOnlyQueryError", "TaskExistsError", "experiment_id",
           "provenance_fingerprint", "reserved_message", "sql_str", "table_from_columns"]
