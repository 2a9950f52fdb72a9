"""Landmarking meta-features: how well three cheap learners do on a task, beside the learned z (issue 17).

Landmarking (Pfahringer, Bensusan & Giraud-Carrier, ICML 2000) describes a dataset by the
accuracy of simple learners on it. On the tabular suite the DeepSets z learned from a few
dozen tables transfers little, while these descriptors do: a ridge model whose architecture
coefficients depend on them ranked held-out tables' architectures better than ridge without
them at every setting tried (README, "What does carry over"; benchmarks/landmark_ridge.py).
So rho reads them beside z (``PredictorConfig.landmarks``; by default with the ``cells``
encoder, i.e. for tables: on the digits they cost more in the zero-shot pick than they add).

Every descriptor is free of the number of rows it is handed, so the same task gives the same
descriptors whether the fit read its whole train split or the service read the few hundred
rows a wide table's meta-features keep (predictor/data.py meta_rows): the learners read a
seeded subset of at most ``LANDMARK_ROWS`` rows, the width and the classes are the task's.
Like the learned z, they do not depend on the order of the samples or of the features: the
rows are put in a canonical order (:func:`canonical_order`) before the subset and the folds
are drawn, and the three learners treat features alike.
"""

from __future__ import annotations

import warnings

import numpy as np

#: The descriptors, in order: log encoded width, log classes, and the 3-fold accuracy above the
#: majority class of a linear classifier, 1-nearest-neighbour and a depth-1 tree. The linear one
#: is ridge regression on the one-hot labels (closed form): logistic regression, the probe's,
#: took 2.2 s on 256 rows x 2,000 columns x 100 classes, ridge 0.05 s.
LANDMARKS = ("log_features", "log_classes", "linear_over_majority", "nn1_over_majority", "stump_over_majority")
#: Rows the learners read (a seeded subset above it): the fewest any path hands in (sample_batch_size).
LANDMARK_ROWS = 256
LANDMARK_FOLDS = 3
LANDMARK_SEED = 0


def task_landmarks(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The task's descriptors (``LANDMARKS``) from its training samples ``x (N, F), y (N,)``: -> (5,) float32."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    y = np.asarray(y, dtype=np.int64)
    classes = len(np.unique(y))
    order = canonical_order(x, y)
    if len(y) > LANDMARK_ROWS:
        order = order[np.sort(np.random.default_rng(LANDMARK_SEED).choice(len(y), LANDMARK_ROWS, replace=False))]
    x, y = x[order], y[order]
    majority = np.bincount(y).max() / len(y)
    gains = [_cv_accuracy(make, x, y) - majority for make in _LEARNERS]
    return np.array([np.log(x.shape[1]), np.log(max(classes, 1)), *gains], dtype=np.float32)


def silverman_bandwidth(tasks: int, dims: int) -> float:
    """Silverman's rule-of-thumb kernel bandwidth for ``tasks`` points in ``dims`` standardized
    dimensions, (4 / ((d + 2) n))^(1 / (d + 4)): the noise std ``landmark_noise="silverman"`` adds.

    Training with input noise is Tikhonov regularization of rho's response to the descriptors
    (Bishop, Neural Computation 1995): rho then fits the training tasks smoothed by a Gaussian
    kernel, so a new table's scores follow its neighbours' instead of an extrapolation between
    a few dozen points. The rule sizes that kernel for the density of the training tasks, and it
    narrows as tasks are added (0.60 for 59 tables, 0.66 for 23, in units of the tasks' spread).
    """
    return float((4.0 / ((dims + 2) * max(tasks, 1))) ** (1.0 / (dims + 4)))


def canonical_order(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """An order of the rows that depends on their contents only, not on the order of the rows or of
    the features: by a sum over the row's features of a fixed nonlinear hash of each value, plus
    its label (two rows tie only when one's values are a permutation of the other's): -> (N,)."""
    key = np.sin(x * 12.9898 + 78.233).sum(axis=1) + 0.7071 * y
    return np.argsort(key, kind="stable")


def _linear():
    from sklearn.linear_model import RidgeClassifier

    return RidgeClassifier(alpha=1.0)


def _nn1():
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=1)


def _stump():
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(max_depth=1, random_state=LANDMARK_SEED)


_LEARNERS = (_linear, _nn1, _stump)


def _cv_accuracy(make, x: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of ``make()`` over ``LANDMARK_FOLDS`` seeded folds (every sample predicted once).

    A fold whose training part holds one class predicts that class (a classifier refuses to fit
    it); with fewer samples than folds, every sample is its own fold's test set.
    """
    n = len(y)
    folds = np.random.default_rng(LANDMARK_SEED).permutation(n) % min(LANDMARK_FOLDS, n)
    correct = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. an ill-conditioned ridge solve: its accuracy still counts
        for k in np.unique(folds):
            test, train = folds == k, folds != k
            if not train.any():
                continue
            if len(np.unique(y[train])) < 2:
                pred = np.full(int(test.sum()), y[train][0])
            else:
                pred = make().fit(x[train], y[train]).predict(x[test])
            correct += int((pred == y[test]).sum())
    return correct / n


__all__ = ["LANDMARKS", "LANDMARK_ROWS", "canonical_order", "silverman_bandwidth", "task_landmarks"]
