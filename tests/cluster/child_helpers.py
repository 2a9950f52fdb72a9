"""Helpers shared by the child-training tests (test_child.py, test_child_early_stop.py)."""

import numpy as np

import cluster.child._batched as batched
import cluster.child._batched_net as batched_net
from cluster.child import child_plan
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


def poison_one_member(monkeypatch, space, bank, architecture) -> None:
    """Make ``architecture`` start from NaN weights and put every child in one bucket, so that
    one member diverges at epoch 1 inside a shared bucket."""
    poisoned = child_plan(space, architecture, bank)
    real_init = batched_net.init_plan

    def init(plan, num_classes, gen):
        params = real_init(plan, num_classes, gen)
        return [(w * float("nan"), b) for w, b in params] if plan == poisoned else params

    monkeypatch.setattr(batched_net, "init_plan", init)
    monkeypatch.setattr(batched, "make_buckets", lambda plans, c, cm: [list(range(len(plans)))])
