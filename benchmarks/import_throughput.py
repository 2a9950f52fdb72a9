"""Rows per second of ``nasdb import-benchmark``: a fresh import, then the idempotent re-import.

Issue 9: a full HPOLib import (4 datasets x 62,208 configurations x 4 seeds = 995,328 rows)
must take well under a couple of minutes on a 2-core machine. Imports into a temporary store
(or --store), then imports again, which must add nothing.

    python benchmarks/import_throughput.py                       # hpolib, every dataset
    python benchmarks/import_throughput.py --benchmark hpobench --max-configurations 5000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nasdb.benchmarks import BENCHMARKS, import_benchmark  # noqa: E402
from nasdb.store import ExperimentStore  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", default="hpolib", choices=sorted(BENCHMARKS))
    p.add_argument("--tasks", default=None, help="Comma-separated datasets (default: all).")
    p.add_argument("--max-configurations", type=int, default=None)
    p.add_argument("--store", default=None, help="Store root (default: a temporary folder, removed afterwards).")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="nasdb-import-") as tmp:
        store = ExperimentStore(args.store or os.path.join(tmp, "store"))
        store.init()
        kw = {"tasks": args.tasks, "max_configurations": args.max_configurations}
        first = import_benchmark(store, args.benchmark, **kw)
        second = import_benchmark(store, args.benchmark, **kw)
        report = {"benchmark": args.benchmark, "rows": first["rows_added"] + first["rows_present"],
                  "import_seconds": first["seconds"], "rows_per_second": round(first["rows_added"] / first["seconds"]),
                  "reimport_seconds": second["seconds"], "reimport_rows_added": second["rows_added"],
                  "stored_rows": store.count(), "cpus": os.cpu_count()}
        store.close()
    print(json.dumps(report, indent=1))
    if second["rows_added"]:
        sys.exit("the second import added rows: it is not idempotent")


if __name__ == "__main__":
    main()
