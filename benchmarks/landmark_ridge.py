"""Do landmarking meta-features say which architectures suit a table? A LOTO probe with ridge (issue 17).

The predictor's learned meta-features add little on the tabular suite (README, "The predictor on
the tabular suite"): from a few dozen training tables a DeepSets encoder has little to learn
from. Landmarking (Pfahringer, Bensusan & Giraud-Carrier, ICML 2000) describes a dataset by
how well cheap learners do on it; if such descriptors carry transferable signal, a linear
model whose architecture coefficients depend on them should rank a held-out table's
architectures better than one without them. Per table, from its training split:
log rows, log encoded features, log classes, and the 3-fold accuracy above the majority class
of logistic regression, 1-nearest-neighbour and a depth-1 tree. These are the probe's own
descriptors, kept as its report (benchmarks/results/landmark_ridge_tabular60.json) measured
them; the predictor's (predictor/landmarks.py ``task_landmarks``) grew out of them and differ
in two ways: no log rows (a request's row count differs from the fit's) and ridge in place of
logistic regression (40x faster on wide many-class tables).

Leave-one-task-out over ``--tasks``: ridge on the one-hot encoding ``u`` alone (the ``ridge``
baseline of predictor/baselines.py), on ``[u, d]``, and on ``[u, d, s * u (x) d]`` (the
descriptors ``d`` standardized over the tasks) for every ``s`` and ``alpha`` of a fixed grid —
every grid point is reported, none is chosen on the held-out tasks. Targets: within-task
quantile ranks of each distinct architecture's mean validation accuracy, judged by Spearman
against that mean, as in ``nasdb evaluate --loto``.

    python benchmarks/landmark_ridge.py --store S [--tasks T,...] [--out reports/landmark_ridge.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nasdb.store import ExperimentStore  # noqa: E402
from nasdb.tabular_suite import TABULAR_SPECS  # noqa: E402
from predictor.baselines import unique_architectures  # noqa: E402
from nasdb.ranks import quantile_rank  # noqa: E402
from predictor.data import load_training_data  # noqa: E402

SCALES = (1.0, 0.3, 0.1)
ALPHAS = (1.0, 10.0, 100.0)
DESCRIPTORS = ["log_rows", "log_features", "log_classes", "logreg_over_majority", "1nn_over_majority",
               "stump_over_majority"]


def landmarks(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    """The task's descriptors (DESCRIPTORS) from its training split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.tree import DecisionTreeClassifier

    majority = np.bincount(y).max() / len(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class with fewer members than folds
        scores = [cross_val_score(m, x, y, cv=3).mean() - majority
                  for m in (LogisticRegression(max_iter=300), KNeighborsClassifier(1), DecisionTreeClassifier(max_depth=1))]
    return np.array([np.log(len(y)), np.log(x.shape[1]), np.log(num_classes), *scores])


def design(u: np.ndarray, d: np.ndarray | None, scale: float) -> np.ndarray:
    """Ridge's input: ``u``; with ``d``, ``[u, d, scale * u (x) d]`` (scale 0: no interactions)."""
    if d is None:
        return u
    dd = np.repeat(d[None], len(u), axis=0)
    parts = [u, dd] + ([scale * (u[:, :, None] * dd[:, None, :]).reshape(len(u), -1)] if scale else [])
    return np.hstack(parts)


def loto(rows: dict, desc: dict | None, scale: float, alpha: float) -> dict[str, float]:
    """Spearman per held-out task of ridge fitted on the other tasks' within-task ranks."""
    from sklearn.linear_model import Ridge

    out = {}
    for held in rows:
        train = [n for n in rows if n != held]
        x = np.vstack([design(rows[n][0], desc[n] if desc else None, scale) for n in train])
        y = np.concatenate([quantile_rank(rows[n][1]) for n in train])
        model = Ridge(alpha=alpha).fit(x, y)
        u, acc = rows[held]
        out[held] = float(spearmanr(model.predict(design(u, desc[held] if desc else None, scale)), acc).statistic)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", required=True)
    ap.add_argument("--tasks", default=",".join(sorted(TABULAR_SPECS)), help="[the tabular suite]")
    ap.add_argument("--out", default="reports/landmark_ridge.json")
    args = ap.parse_args(argv)
    if not Path(args.store, "store.json").is_file():
        ap.error(f"--store {args.store!r} is not a nasdb store (no store.json)")
    start = time.time()
    store = ExperimentStore(args.store)
    data = load_training_data(store, tasks=args.tasks.split(","), meta_encoder="cells", budget=256)
    rows = {n: unique_architectures(t) for n, t in data.tasks.items()}
    raw = {}
    for n in rows:
        x, y = store.task(n).samples("train")
        raw[n] = landmarks(np.asarray(x, dtype=np.float64), np.asarray(y), int(store.task(n).num_classes))
    table = np.array(list(raw.values()))
    mu, sd = table.mean(axis=0), table.std(axis=0) + 1e-9
    desc = {n: (v - mu) / sd for n, v in raw.items()}
    results = {"u": {str(a): loto(rows, None, 0.0, a) for a in ALPHAS},
               "u+d": {str(a): loto(rows, desc, 0.0, a) for a in ALPHAS},
               **{f"u*d s={s}": {str(a): loto(rows, desc, s, a) for a in ALPHAS} for s in SCALES}}
    for model, by_alpha in results.items():
        print(model, "  ".join(f"alpha={a}: {np.mean(list(v.values())):.3f}" for a, v in by_alpha.items()))
    report = {"store": args.store, "tasks": list(rows), "descriptors": DESCRIPTORS,
              "landmarks": {n: v.round(4).tolist() for n, v in raw.items()}, "spearman": results,
              "mean": {m: {a: float(np.mean(list(v.values()))) for a, v in by_a.items()} for m, by_a in results.items()},
              "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
              "seconds": round(time.time() - start, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out} ({len(rows)} tasks, {report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
