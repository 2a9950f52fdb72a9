"""Many one-hot children trained at once: zero-padded, stacked, one bmm per layer slot.

Child models are tiny, so a one-model-at-a-time loop pays framework overhead on every op
(issue 4, "Speed"). Here the children are grouped into *buckets* (cluster/child/_buckets.py)
and each bucket is trained as one batched network (cluster/child/_batched_net.py) with a
hand-written backward pass into preallocated buffers and one fused Adam call per step. Every
member draws its init and its per-epoch mini-batch order from its own seeded generator
exactly as ``train_child`` does, so batched and one-at-a-time runs agree up to float rounding
(tests/cluster/test_child.py).

Members leave their bucket as soon as they fail (a non-finite loss) or an early-stop observer
stops them (cluster/early_stop/_stopper.py): their rows are sliced out of the weights and Adam state,
so the others train on, faster and with the numbers they would have had anyway.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from cluster.child._batched_net import BucketAdam, BucketNetwork
from cluster.child._buckets import CostModel, make_buckets
from cluster.child._child import (ChildPlan, ChildResult, TrainRecipe, check_seed, child_plan, resolve_device,
                                  train_child)
from cluster.child._embeddings import EmbeddingBank, default_bank
from cluster.child._observer import observe_complete, observe_epoch, observer_features
from nasdb.errors import ArgumentError, ObserverError
from nasdb.space import SearchSpace

if TYPE_CHECKING:
    from cluster.early_stop import EpochObserver


class TaskTables:
    """A task's labels, its embedded features per module (evaluation) and zero-padded feature
    tables (training input gathers), on the device, made once per call (and width)."""

    def __init__(self, task: Any, bank: EmbeddingBank, dev: torch.device):
        self.task, self.bank, self.modules, self.dev = task, bank, bank.names, dev
        self.y = {s: torch.from_numpy(task.samples(s)[1]).to(dev) for s in ("train", "val", "test")}  # (n,)
        self._tables: dict[tuple[str, int], torch.Tensor] = {}
        self._features: dict[str, dict[str, torch.Tensor]] = {}

    def features(self, split: str) -> dict[str, torch.Tensor]:  # module -> (n, e)
        if split not in self._features:
            self._features[split] = {m: torch.from_numpy(np.ascontiguousarray(f)).to(self.dev)
                                     for m, f in self.bank.task_features(self.task, split).items()}
        return self._features[split]

    def table(self, split: str, width: int) -> torch.Tensor:  # (modules, n, width)
        if (split, width) not in self._tables:  # a module wider than ``width`` is never read at it
            self._tables[split, width] = torch.from_numpy(self.bank.task_table(self.task, split, width)).to(self.dev)
        return self._tables[split, width]


def _batches(rows: torch.Tensor, grad: torch.Tensor, bs: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch's mini-batches: (flat row indices (N*b,), d loss / d log-probs (N, C, b))."""
    N, n = rows.shape
    C, full = grad.shape[1], n // bs * bs
    r = rows[:, :full].reshape(N, -1, bs).transpose(0, 1).reshape(-1, N * bs)  # (steps, N*bs)
    g = grad[:, :, :full].reshape(N, C, -1, bs).permute(2, 0, 1, 3).contiguous()  # (steps, N, C, bs)
    out = list(zip(r, g))
    if full < n:
        out.append((rows[:, full:].reshape(-1), grad[:, :, full:].contiguous()))
    return out


class _BucketRun:
    """One bucket in training: its members (``ids``: the result index of each), their
    generators, curves, seconds and results. Members leave as they fail or are stopped."""

    def __init__(self, data: TaskTables, plans: Sequence[ChildPlan], seeds: Sequence[int], recipe: TrainRecipe,
                 dev: torch.device, C: int):
        self.data, self.plans, self.recipe, self.dev, self.C = data, list(plans), recipe, dev, C
        self.ids = list(range(len(plans)))
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.net = BucketNetwork(plans, self.gens, C, dev)
        self.opt = BucketAdam(*self.net.parameters(), recipe.learning_rate)  # backward() writes the gradient buffers
        self.mod = torch.tensor([data.modules.index(p.embedding) for p in plans], device=dev)  # (N,)
        n, bs = len(data.y["train"]), recipe.batch_size
        self.inv_b = torch.full((n,), 1.0 / bs, device=dev)  # each sample's 1/b (the last batch may be short)
        self.inv_b[n // bs * bs:] = 1.0 / max(1, n % bs)
        self.curves: list[list[float]] = [[] for _ in plans]
        self.seconds = [0.0] * len(plans)
        self.results: list[ChildResult | None] = [None] * len(plans)

    def charge(self, ids: Sequence[int], seconds: float) -> None:
        """Split ``seconds`` of bucket time evenly over the members ``ids`` (result indices)."""
        for i in ids:
            self.seconds[i] += seconds / len(ids)

    def train_epoch(self) -> np.ndarray:
        """One epoch of every member; (N,) bool, member order: whether its loss stayed finite."""
        net, y, bs, C, dev = self.net, self.data.y["train"], self.recipe.batch_size, self.C, self.dev
        N, n, P0 = net.N, len(y), net.P[0]
        first = torch.tensor(net.order[0], device=dev)  # members in the network's input order
        last = torch.tensor(net.order[-1], device=dev)  # ... and in its output order
        flat = self.data.table("train", P0).reshape(-1, P0)  # (modules * n, P0)
        perm = torch.stack([torch.randperm(n, generator=g) for g in self.gens]).to(dev)  # (N, n)
        rows = (perm + self.mod[:, None] * n)[first]  # (N, n) rows of ``flat``, input order
        # d(sum over members of their mean loss) / d log-probs: -onehot / b (output order)
        grad = torch.zeros(N, C, n, device=dev).scatter_(1, y[perm[last]][:, None, :], -1.0).mul_(self.inv_b)
        nll = {b: torch.zeros(N, C, b, device=dev) for b in {bs, n % bs} if b}  # sums of -onehot/b * log p
        for idx, g in _batches(rows, grad, bs):
            net.step_buffers(g.shape[-1]).train(idx, flat, g, nll[g.shape[-1]])
            self.opt.step()
        loss_sum = sum(v.sum((1, 2)) for v in nll.values())  # (N,): finite iff every loss was
        finite = np.empty(N, dtype=bool)
        finite[net.order[-1]] = torch.isfinite(loss_sum).cpu().numpy()
        return finite

    def accuracy(self, split: str, members: Sequence[int] | None = None) -> np.ndarray:
        """(M,) accuracy on ``split`` of every member, or of ``members`` (member indices)."""
        members = range(self.net.N) if members is None else members
        pred = self.net.predict(self.data.features(split), members)  # (M, n)
        return (pred == self.data.y[split]).float().mean(1).cpu().numpy()

    def leave(self, members: Sequence[int]) -> None:
        """Drop ``members`` (member indices) from the bucket; the others train on unchanged."""
        gone = {int(m) for m in members}
        keep = [m for m in range(self.net.N) if m not in gone]
        if gone and keep:
            regroup = self.net.keep_(keep)
            self.opt.regroup_(*self.net.parameters(), regroup)
            self.gens, self.mod = [self.gens[m] for m in keep], self.mod[keep]
        self.ids = [self.ids[m] for m in keep]

    def fail(self, members: Sequence[int], epoch: int) -> None:
        """``members`` diverged in ``epoch``: failed results with the healthy epochs' curve."""
        for m in members:
            i = self.ids[m]
            self.results[i] = ChildResult.failed(f"diverged: non-finite loss at epoch {epoch}",
                                                 val_curve=self.curves[i], num_params=self.plans[i].num_params(self.C))
        self.leave(members)

    def observe(self, observer: EpochObserver, features: np.ndarray) -> None:
        """Ask ``observer`` who stops now; those get their test accuracy at this point and leave."""
        ids = self.ids
        stop, predicted = observe_epoch(observer, np.array([self.curves[i] for i in ids]), features[ids])
        members = np.flatnonzero(stop).tolist()
        if not members:
            return
        for m, acc in zip(members, self.accuracy("test", members)):
            i = ids[m]
            self.results[i] = ChildResult.stopped(self.curves[i], float(acc), self.plans[i].num_params(self.C),
                                                  float(predicted[m]))
        self.leave(members)

    def finish(self) -> list[int]:
        """Test accuracy and results of the members that ran every epoch; returns their ids."""
        for i, acc in zip(self.ids, self.accuracy("test")):
            c = self.curves[i]
            self.results[i] = ChildResult(c, c[-1], float(acc), len(c), 0.0, self.plans[i].num_params(self.C))
        return self.ids


@torch.no_grad()
def _train_bucket(data: TaskTables, plans: Sequence[ChildPlan], seeds: Sequence[int], recipe: TrainRecipe,
                  dev: torch.device, C: int, observer: EpochObserver | None = None,
                  features: np.ndarray | None = None) -> list[ChildResult]:
    """Train one bucket; result i belongs to plans[i]. With an ``observer`` (and ``features``,
    one row per plan), it decides after each epoch but the last who stops, and hears of the
    members that ran every epoch."""
    start = time.perf_counter()
    run = _BucketRun(data, plans, seeds, recipe, dev, C)
    for epoch in range(1, recipe.epochs + 1):
        ids = run.ids
        run.fail(np.flatnonzero(~run.train_epoch()), epoch)
        if run.ids:
            for i, acc in zip(run.ids, run.accuracy("val")):
                run.curves[i].append(float(acc))
            if observer is not None and epoch < recipe.epochs:
                run.observe(observer, features)
        run.charge(ids, time.perf_counter() - start)
        start = time.perf_counter()
        if not run.ids:
            break
    complete = list(run.ids)
    if complete:
        run.finish()
        run.charge(complete, time.perf_counter() - start)
    for r, s in zip(run.results, run.seconds):
        r.train_seconds = s
    if observer is not None and complete:
        observe_complete(observer, np.array([run.curves[i] for i in complete]), features[complete])
    return run.results  # type: ignore[return-value]


def train_batched(task: Any, plans: Sequence[ChildPlan], seeds: Sequence[int], recipe: TrainRecipe,
                  dev: torch.device, bank: EmbeddingBank, fallback: Callable[[int], ChildResult] | None = None,
                  observer: EpochObserver | None = None, features: np.ndarray | None = None,
                  cost_model: CostModel | None = None) -> list[ChildResult]:
    """Bucket the plans and train each bucket. A bucket that raises (say, out of GPU memory)
    is retried one child at a time with ``fallback(i)``, else its children fail with the error;
    an :class:`ObserverError` (the observer's fault, not the children's) propagates.
    ``observer`` and ``features`` (N, F), one row per plan, and ``cost_model``: see ``train_children``."""
    if observer is not None and (features is None or len(features) != len(plans)):
        raise ArgumentError(f"an observer needs features with one row per plan ({len(plans)}), "
                            f"got {None if features is None else np.shape(features)}")
    cm = CostModel.for_device(dev, recipe.batch_size) if cost_model is None else cost_model
    data = TaskTables(task, bank, dev)
    results: list[ChildResult | None] = [None] * len(plans)
    for bucket in make_buckets(plans, task.num_classes, cm):
        start = time.perf_counter()
        try:
            res = _train_bucket(data, [plans[i] for i in bucket], [seeds[i] for i in bucket], recipe, dev,
                                task.num_classes, observer, None if features is None else features[bucket])
        except ObserverError:
            raise
        except Exception as e:
            if fallback is not None:
                res = [fallback(i) for i in bucket]
            else:
                err, share = f"{type(e).__name__}: {e}".splitlines()[0][:500], time.perf_counter() - start
                res = [ChildResult.failed(err, seconds=share / len(bucket), num_params=plans[i].num_params(
                    task.num_classes)) for i in bucket]
        for i, r in zip(bucket, res):
            results[i] = r
    return results  # type: ignore[return-value]


def train_children(task: Any, space: SearchSpace, architectures: Any, *, recipe: TrainRecipe = TrainRecipe(),
                   seeds: Any = None, device: Any = "cpu", bank: EmbeddingBank | None = None,
                   observer: "EpochObserver | None" = None, cost_model: CostModel | None = None) -> list[ChildResult]:
    """Train many one-hot children at once (the fast path); result i belongs to architecture i.

    Same recipe, init and mini-batch order as ``train_child(..., seed=seeds[i])``, so results
    match it up to float rounding. ``seeds`` defaults to 0 for every child. A child's
    ``train_seconds`` is its share of its bucket's time. A bucket that raises as a whole is
    retried with ``train_child`` per child. 3.2-3.6x the children per core-hour of a
    ``train_child`` loop on the 2-core dev CPU (benchmarks/child_throughput.py); far more on a GPU.

    ``observer``: as in ``train_child``, asked once per bucket and epoch about the bucket's
    children still training; a stopped child leaves its bucket at once (the others train on
    unchanged), and ``report_complete`` is called once per bucket.

    ``cost_model``: how children are grouped into buckets (:func:`make_buckets`; None: the one
    measured for the device). Results do not depend on it beyond float rounding.
    """
    if not isinstance(recipe, TrainRecipe):
        raise ArgumentError(f"recipe must be a TrainRecipe, got {type(recipe).__name__}")
    if cost_model is not None and not isinstance(cost_model, CostModel):
        raise ArgumentError(f"cost_model must be a CostModel, got {type(cost_model).__name__}")
    archs = np.asarray(architectures)
    if archs.ndim != 2 or archs.shape[1] != space.num_dimensions:
        raise ArgumentError(f"architectures must have shape (N, {space.num_dimensions}), got {archs.shape}")
    seeds = np.zeros(len(archs), dtype=np.int64) if seeds is None else np.asarray(seeds)
    if seeds.shape != (len(archs),):
        raise ArgumentError(f"seeds must have shape ({len(archs)},), got {seeds.shape}")
    seeds = [check_seed(s.item() if isinstance(s, np.generic) else s) for s in seeds]
    dev = resolve_device(device)
    bank = bank if bank is not None else default_bank()
    plans = [child_plan(space, a, bank) for a in archs]
    if not plans:
        return []
    features = None
    if observer is not None:
        features = observer_features(observer, space, archs, [p.num_params(task.num_classes) for p in plans],
                                     recipe.to_dict())

    def one_at_a_time(i: int) -> ChildResult:  # for a bucket that failed as a whole
        return train_child(task, space, archs[i], recipe=recipe, seed=seeds[i], device=dev, bank=bank,
                           observer=observer)

    return train_batched(task, plans, seeds, recipe, dev, bank, one_at_a_time, observer, features, cost_model)
