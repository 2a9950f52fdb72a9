"""Bucketing for the batched trainer: which one-hot children train together in one network.

Buckets come from greedy merging under a per-step cost model (:class:`CostModel`): a merge
saves one bucket's op overheads and pays the padding compute of both. On a GPU, launch
overhead dominates and nearly everything merges; on a CPU, compute dominates and mostly
identical or narrow architectures merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from cluster.child._child import ChildPlan

_GREEDY_MAX = 384  # distinct profiles merged greedily at once; larger calls are pre-split


@dataclass(frozen=True)
class CostModel:
    """Seconds per training step of a bucket: ``step`` + ``slot`` per layer slot + ``segment``
    per activation segment or pass-through group + ``member`` per member + ``member_slot`` per
    member computing at a slot + ``elem`` per padded weight + ``act`` per padded activation."""

    step: float
    slot: float
    segment: float
    member: float
    member_slot: float
    elem: float
    act: float
    max_models: int = 512

    @classmethod
    def for_device(cls, device: torch.device, batch_size: int) -> "CostModel":
        if device.type == "cpu":  # one core, torch 2.13, measured on the project's 2-core dev machine
            return cls(step=4e-5, slot=1e-5, segment=6e-6, member=1.1e-5, member_slot=2.5e-6,
                       elem=(0.065 * batch_size + 0.3) * 1e-9, act=0.2e-9 * batch_size)
        # a GPU: ~10 us per kernel launch dominates; arithmetic is nearly free at these sizes
        return cls(step=2e-4, slot=6e-5, segment=3e-5, member=2e-8, member_slot=1e-8,
                   elem=6.0 * batch_size / 2e13 + 2e-12, act=2e-12 * batch_size, max_models=256)


@dataclass
class _Stats:
    """What a bucket's cost depends on, for one bucket or (leading axis) many."""

    prof: np.ndarray  # (..., K+2) padded widths: embedding, slots (carried when passing), classes
    on: np.ndarray  # (..., K) members computing at each slot
    relu: np.ndarray  # (..., K) bool: some member uses relu there
    tanh: np.ndarray  # (..., K)
    count: np.ndarray  # (...,) members
    depth: np.ndarray  # (...,) deepest member's enabled layers

    def cost(self, cm: CostModel) -> np.ndarray:
        live = np.arange(self.on.shape[-1]) < self.depth[..., None]  # (..., K) slots the bucket has
        segments = (self.relu.astype(int) + self.tanh + (self.on < self.count[..., None])) * live
        mm = self.on * self.prof[..., :-2] * self.prof[..., 1:-1]  # (..., K): slot j is P_j x P_j+1
        last = np.take_along_axis(self.prof, self.depth[..., None], -1)[..., 0]
        acts = (self.count[..., None] * self.prof[..., 1:-1] * live).sum(-1)
        return (cm.step + cm.slot * self.depth + cm.segment * segments.sum(-1) + cm.member * self.count
                + cm.member_slot * (self.on * live).sum(-1) + cm.act * acts
                + cm.elem * (mm.sum(-1) + self.count * last * self.prof[..., -1]))

    def pair(self, a: int) -> "_Stats":
        """Bucket ``a`` merged with every bucket."""
        return _Stats(np.maximum(self.prof[a], self.prof), self.on[a] + self.on, self.relu[a] | self.relu,
                      self.tanh[a] | self.tanh, self.count[a] + self.count, np.maximum(self.depth[a], self.depth))

    def take(self, idx: Any) -> "_Stats":
        return _Stats(self.prof[idx], self.on[idx], self.relu[idx], self.tanh[idx], self.count[idx], self.depth[idx])

    def put(self, a: int, other: "_Stats") -> None:
        for name in ("prof", "on", "relu", "tanh", "count", "depth"):
            getattr(self, name)[a] = getattr(other, name)


def _profiles(plans: Sequence[ChildPlan], num_classes: int, K: int | None = None) -> np.ndarray:
    """Per plan: widths along K+2 slots, a member's last width carried through slots it passes."""
    K = max(len(p.layers) for p in plans) if K is None else K
    prof = np.zeros((len(plans), K + 2), dtype=np.int64)
    for n, p in enumerate(plans):
        prof[n, : len(p.widths)] = p.widths
        prof[n, len(p.widths): K + 1] = p.widths[-1]
        prof[n, K + 1] = num_classes
    return prof


def _plan_stats(plans: Sequence[ChildPlan], num_classes: int) -> _Stats:
    K = max(len(p.layers) for p in plans)
    depth = np.array([len(p.layers) for p in plans], dtype=np.int64)
    acts = np.array([[a for *_, a, _ in p.layers] + [""] * (K - len(p.layers)) for p in plans]).reshape(len(plans), K)
    return _Stats(_profiles(plans, num_classes, K), (np.arange(K) < depth[:, None]).astype(np.int64),
                  acts == "relu", acts == "tanh", np.ones(len(plans), dtype=np.int64), depth)


def _greedy(st: _Stats, members: list[list[int]], cm: CostModel) -> list[list[int]]:
    """Merge the pair of buckets that saves the most per step until no merge saves anything."""
    M = len(members)
    cost, alive = st.cost(cm), np.ones(M, dtype=bool)
    save = np.stack([cost[a] + cost - st.pair(a).cost(cm) for a in range(M)])  # (M, M)
    save[np.eye(M, dtype=bool) | ((st.count[:, None] + st.count[None, :]) > cm.max_models)] = -np.inf
    while True:
        a, b = np.unravel_index(np.argmax(save), save.shape)
        if save[a, b] <= 0:
            break
        st.put(a, st.pair(a).take(b))
        members[a] += members[b]
        alive[b] = False
        cost[a] = st.take([a]).cost(cm)[0]
        row = np.where(alive & (st.count[a] + st.count <= cm.max_models), cost[a] + cost - st.pair(a).cost(cm), -np.inf)
        row[a] = -np.inf
        save[a, :] = save[:, a] = row
        save[b, :] = save[:, b] = -np.inf
    return [sorted(members[i]) for i in range(M) if alive[i]]


def make_buckets(plans: Sequence[ChildPlan], num_classes: int, cm: CostModel) -> list[list[int]]:
    """Group plan indices into buckets that are cheap to train together (see CostModel)."""
    st = _plan_stats(plans, num_classes)
    groups: dict[tuple, list[int]] = {}
    for n in range(len(plans)):  # members with identical stats always share a bucket
        groups.setdefault((int(st.depth[n]), *st.prof[n], *st.relu[n], *st.tanh[n]), []).append(n)
    members = list(groups.values())
    st = st.take([m[0] for m in members])
    st.count = np.array([len(m) for m in members], dtype=np.int64)
    st.on = st.on * st.count[:, None]
    order = np.lexsort((st.prof.sum(1), st.depth))  # pre-split huge calls so the greedy pass stays cheap
    out = []
    for lo in range(0, len(order), _GREEDY_MAX):
        part = order[lo: lo + _GREEDY_MAX]
        out += _greedy(st.take(part), [list(members[i]) for i in part], cm)
    return out

