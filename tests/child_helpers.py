"""Helpers shared by the child-training tests (test_child.py, test_child_early_stop.py)."""

import numpy as np

from nasdb.space import EMBEDDING_MODULES


def arch(space, embedding="identity", layers=()):
    """Architecture from ``[("relu", 64), ...]`` (enabled layers; the rest off)."""
    names = list(space.dimensions[1].choices)
    a = np.zeros(space.num_dimensions, dtype=np.int64)
    a[space.index("embedding")] = EMBEDDING_MODULES.index(embedding)
    for j, (act, w) in enumerate(layers, start=1):
        a[space.index(f"layer{j}")] = names.index(f"{act}{w}")
        a[space.index(f"enable{j}")] = 1
    return a
