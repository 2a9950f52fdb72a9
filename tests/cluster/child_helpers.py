"""Helpers shared by the child-training tests (test_child.py, test_child_early_stop.py)."""

import numpy as np

from cluster.child import BucketNetwork, CostModel, child_plan
from nasdb.space import EMBEDDING_MODULES

#: Every merge saves a whole step and costs nothing: ``make_buckets`` puts all children in ONE bucket.
ONE_BUCKET = CostModel(step=1.0, slot=0.0, segment=0.0, member=0.0, member_slot=0.0, elem=0.0, act=0.0)


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
    """Make ``architecture`` start from NaN weights in every bucket it trains in, so that (with
    ``cost_model=ONE_BUCKET``) one member diverges at epoch 1 inside a shared bucket."""
    poisoned = child_plan(space, architecture, bank)
    real_init = BucketNetwork.__init__

    def init(net, plans, gens, num_classes, dev):
        real_init(net, plans, gens, num_classes, dev)
        for n, plan in enumerate(plans):
            if plan == poisoned:
                for w, b in net.member_weights(n):  # views of the bucket's stacked weights
                    w.mul_(float("nan"))

    monkeypatch.setattr(BucketNetwork, "__init__", init)
