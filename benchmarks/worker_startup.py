"""What each kind of Ray worker costs to start: the CPU seconds of its imports, in a fresh interpreter.

Every trainer actor, search driver, curve-predictor actor and Serve replica is a new process,
so its imports are paid once per actor start (~115 times in `make test`, twice per search).
Each case runs ``python -c <its imports>`` and reads the child's user+system CPU time. With
``--baseline REV`` the same cases also run on a checkout of REV (a temporary ``git worktree``,
same interpreter and packages), interleaved with this tree's in every repeat; the report gives
the medians and the ratio baseline / this tree.

    python benchmarks/worker_startup.py [--baseline db0339b] [--repeats 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: what each worker kind imports (and builds) before its first call
CASES = {
    "trainer actor": "import ray, torch, cluster.child, cluster.populate",
    # it loads scikit-learn at construction (it refits): the same cost as before, earlier
    "curve-predictor actor": "import ray; from cluster.early_stop import CurvePredictorService; CurvePredictorService()",
    "search driver (RL agent)": ("import ray, torch, search; from nasdb.space import default_space; "
                                 "search.create_agent('rl', default_space(), {'task': 't'}).describe()"),
    "Serve replica": "import ray, torch, predictor.serve",
}


def cpu_seconds(code: str, cwd: str) -> float:
    """User + system CPU seconds of ``python -c code`` run in ``cwd`` (its packages come from there)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True, capture_output=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(trees: dict[str, str], repeats: int) -> dict[str, dict[str, list[float]]]:
    """{case: {tree: [CPU s per repeat]}}; each repeat runs every tree once, in a rotating order."""
    out: dict[str, dict[str, list[float]]] = {case: {t: [] for t in trees} for case in CASES}
    names = list(trees)
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for case, code in CASES.items():
            for t in order:
                out[case][t].append(cpu_seconds(code, trees[t]))
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", default=None, help="a git revision to compare with (e.g. db0339b)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"error: --repeats must be >= 1, got {args.repeats}")
    trees = {"this tree": ROOT}
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            base = os.path.join(tmp, "baseline")
            done = subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", base, args.baseline],
                                  capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"error: --baseline {args.baseline!r}: {done.stderr.strip()}")
            trees = {f"baseline {args.baseline}": base, **trees}
        try:
            runs = measure(trees, args.repeats)
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", base], capture_output=True)
    report = {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "load_average": os.getloadavg(), "repeats": args.repeats,
              "cpu_seconds": runs,
              "median": {c: {t: statistics.median(v) for t, v in per.items()} for c, per in runs.items()}}
    if args.json:
        print(json.dumps(report, indent=2))
        return report
    names = list(trees)
    print(f"CPU seconds to start, median of {args.repeats} ({report['cores']} cores, load "
          f"{report['load_average'][0]:.1f})")
    print("| worker | " + " | ".join(names) + (" | ratio |" if len(names) == 2 else " |"))
    print("|---|" + "---:|" * (len(names) + (len(names) == 2)))
    for case, med in report["median"].items():
        cells = " | ".join(f"{med[t]:.2f}" for t in names)
        ratio = f" | {med[names[0]] / med[names[1]]:.2f}x" if len(names) == 2 else ""
        print(f"| {case} | {cells}{ratio} |")
    return report


if __name__ == "__main__":
    main()
