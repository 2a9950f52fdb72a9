"""Many one-hot child models trained at once: zero-padded, stacked, one bmm per layer slot.

Child models are tiny, so a one-model-at-a-time loop pays framework overhead on every op
(issue 4, "Speed"). Here a *bucket* of N children is trained as one batched network with a
hand-written backward pass into preallocated buffers and one fused Adam call per step.
Members are left-aligned by enabled layer (a disabled layer is an identity, i.e. absent). At
slot j the members computing there are stacked into one (N_on, P_j, P_j+1) weight, P_j the
widest member at that slot, each zero-padded; rows are ordered [relu | tanh | pass-through]
so activations run per contiguous segment and members with fewer layers compute nothing.

Exactness: padded units compute act(0) = 0 for relu and tanh, padded weights get exactly
zero gradient, and Adam moves a weight whose gradient has always been zero by exactly zero.
Adam is elementwise, so one Adam over stacked tensors is N independent Adams, given a loss
that is the SUM over members of each member's mean loss. Every member draws its init and its
per-epoch mini-batch order from its own seeded generator exactly as ``train_child`` does, so
batched and one-at-a-time runs agree up to float rounding (tests/test_child.py).

Buckets come from greedy merging under a per-step cost model (:class:`CostModel`): a merge
saves one bucket's op overheads and pays the padding compute of both. On a GPU, launch
overhead dominates and nearly everything merges; on a CPU, compute dominates and mostly
identical or narrow architectures merge.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cluster.child import ChildPlan, ChildResult, TrainRecipe, init_plan, make_adam
from cluster.embeddings import EmbeddingBank

_GREEDY_MAX = 384  # distinct profiles merged greedily at once; larger calls are pre-split


# -- bucketing -----------------------------------------------------------------------------
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


# -- the batched network -------------------------------------------------------------------
_ACT = {"relu": torch.relu_, "tanh": torch.tanh_}
_RELU_GRAD = torch.ops.aten.threshold_backward.grad_input  # what autograd uses, here in place
_TANH_GRAD = torch.ops.aten.tanh_backward.grad_input


class _Bucket:
    """N children as one network with a hand-written backward pass (no autograd graph).

    Slot j's input is ordered ``order[j]`` = [relu members | tanh members | passing members];
    the computing members' weights form one (N_on, P_j, P_j+1) tensor (one bmm per slot), the
    activation runs per contiguous segment. The classifier's input and the logits are in
    ``order[-1]``. Writing the backward by hand into preallocated buffers (:class:`_Step`;
    checked against autograd in tests/test_child.py) drops the graph bookkeeping, allocation
    and copies that dominate tiny models' steps.
    """

    def __init__(self, plans: Sequence[ChildPlan], gens: Sequence[torch.Generator], num_classes: int,
                 dev: torch.device):
        N, K = len(plans), max(len(p.layers) for p in plans)
        self.N, self.K, self.dev, self.plans = N, K, dev, list(plans)
        self.P = [int(p) for p in _profiles(plans, num_classes).max(0)]  # (K+2,) padded widths
        self.segments: list[list[tuple[str, int, int]]] = []  # per slot: (activation, first row, end row)
        self.n_on: list[int] = []  # per slot: members computing there (rows [0, n_on))
        self.order: list[list[int]] = []
        row: list[dict[int, int]] = []  # per slot: member -> its row
        for j in range(K):
            acts = {a: [n for n, p in enumerate(plans) if len(p.layers) > j and p.layers[j][2] == a]
                    for a in ("relu", "tanh")}
            on = acts["relu"] + acts["tanh"]
            self.order.append(on + [n for n, p in enumerate(plans) if len(p.layers) <= j])
            nr = len(acts["relu"])
            self.segments.append([s for s in (("relu", 0, nr), ("tanh", nr, len(on))) if s[2] > s[1]])
            self.n_on.append(len(on))
            row.append({n: i for i, n in enumerate(on)})
        self.order.append(self.order[-1] if K else list(range(N)))  # the classifier's input order
        self.row = row + [{n: i for i, n in enumerate(self.order[-1])}]
        widths = [(self.n_on[j], self.P[j], self.P[j + 1]) for j in range(K)] + [(N, self.P[K], num_classes)]
        W = [torch.zeros(s) for s in widths]  # per slot and classifier: (N_on, P_j, P_j+1)
        B = [torch.zeros(s[0], 1, s[2]) for s in widths]  # (N_on, 1, P_j+1)
        for n, (plan, gen) in enumerate(zip(plans, gens)):
            for j, (w, b) in enumerate(init_plan(plan, num_classes, gen)):  # train_child's draws, in order
                slot = j if j < len(plan.layers) else K
                W[slot][self.row[slot][n], : w.shape[1], : w.shape[0]] = w.T
                B[slot][self.row[slot][n], 0, : b.shape[0]] = b
        self.W, self.B = [w.to(dev) for w in W], [b.to(dev) for b in B]
        self.gW, self.gB = [torch.zeros_like(w) for w in self.W], [torch.zeros_like(b) for b in self.B]
        # slot j's input order from slot j-1's output order (None: the same order)
        self.perm = [None] + [self._perm(self.order[j - 1], self.order[j]) for j in range(1, K)]
        self.unperm = [None] + [self._perm(self.order[j], self.order[j - 1]) for j in range(1, K)]
        self._steps: dict[tuple[int, bool], _Step] = {}

    def _perm(self, src: list[int], dst: list[int]) -> torch.Tensor | None:
        if src == dst:
            return None
        where = {n: i for i, n in enumerate(src)}
        return torch.tensor([where[n] for n in dst], device=self.dev)

    def parameters(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Parameters and their gradient buffers, in matching order."""
        return self.W + self.B, self.gW + self.gB

    def member_weights(self, n: int, grads: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Member n's unpadded (weight (out, in), bias) per enabled layer, then the classifier,
        as ``ChildNetwork`` holds them; with ``grads``, their gradient buffers (for tests)."""
        W, B = (self.gW, self.gB) if grads else (self.W, self.B)
        ws = self.plans[n].widths + (B[self.K].shape[-1],)
        slots = list(range(len(self.plans[n].layers))) + [self.K]
        return [(W[j][self.row[j][n], :a, :b].T, B[j][self.row[j][n], 0, :b])
                for j, a, b in zip(slots, ws[:-1], ws[1:])]

    def step_buffers(self, b: int, train: bool = True) -> "_Step":
        if (b, train) not in self._steps:
            self._steps[b, train] = _Step(self, b, train)
        return self._steps[b, train]


class _Step:
    """One step's buffers for batch size b and every view of them, made once per bucket."""

    def __init__(self, net: _Bucket, b: int, train: bool = True):
        N, K, P, dev = net.N, net.K, net.P, net.dev

        def buf(width: int) -> torch.Tensor:  # every region is written before it is read
            return torch.empty(N, b, width, device=dev)

        self.net, self.split = net, None  # split: which evaluation inputs ``x`` holds
        self.x = buf(P[0])  # slot 0's input, gathered in order[0]
        self.x_flat = self.x.view(N * b, P[0])
        inp, out, d_inp, d_out = [self.x], [], [None], []
        for j in range(K):
            if j:
                inp.append(out[j - 1] if net.perm[j] is None else buf(P[j]))
                d_inp.append(None)  # filled below once d_out exists
            out.append(buf(P[j + 1]))  # (N, b, P_j+1)
            out[j][net.n_on[j]:, :, min(P[j], P[j + 1]):] = 0.0  # passing members' padding
            d_out.append(buf(P[j + 1]) if train else None)
        for j in range(1, K if train else 0):  # d loss / d input of slot j; aliases d_out[j-1] if unpermuted
            d_inp[j] = d_out[j - 1] if net.perm[j] is None else buf(P[j])
        self.inp, self.out, self.d_inp, self.d_out = inp, out, d_inp, d_out
        self.head_in = out[K - 1] if K else self.x  # (N, b, P_K)
        self.head_in_t = self.head_in.transpose(1, 2)
        self.logits = buf(net.B[K].shape[-1])  # (N, b, C)
        self.slots = []
        for j in range(K):
            on, w = net.n_on[j], min(P[j], P[j + 1])  # a passing member's true width fits both
            h, z = inp[j][:on], out[j][:on]  # (N_on, b, P_j), (N_on, b, P_j+1)
            dz = None if d_out[j] is None else d_out[j][:on]
            dh = None if d_inp[j] is None else d_inp[j][:on]
            segs = [(a, z[s:e], None if dz is None else dz[s:e]) for a, s, e in net.segments[j]]
            passing = None
            if on < N:  # (in, out, d out, d in, d in's padding) of the passing members
                passing = (inp[j][on:, :, :w], out[j][on:, :, :w], None if dz is None else d_out[j][on:, :, :w],
                           None if dh is None else d_inp[j][on:, :, :w],
                           None if dh is None or w == P[j] else d_inp[j][on:, :, w:])
            self.slots.append((h, h.transpose(1, 2), z, dz, dh, net.W[j].transpose(1, 2), segs, passing))

    def forward(self) -> torch.Tensor:
        """Logits (N, C, b) of the batch in ``x``; activations stay in the buffers for backward."""
        net = self.net
        for j, (h, _, z, _, _, _, segs, passing) in enumerate(self.slots):
            if net.perm[j] is not None:
                torch.index_select(self.out[j - 1], 0, net.perm[j], out=self.inp[j])
            torch.baddbmm(net.B[j], h, net.W[j], out=z)  # (N_on, b, P_j+1) = b + h @ W
            for a, zs, _ in segs:
                _ACT[a](zs)
            if passing is not None:
                passing[1].copy_(passing[0])  # identity; padded columns stay zero
        torch.baddbmm(net.B[net.K], self.head_in, net.W[net.K], out=self.logits)
        return self.logits.transpose(1, 2)  # (N, C, b): see ChildNetwork.forward for why C comes first

    def backward(self, dlogits: torch.Tensor) -> None:
        """Gradients of sum(loss) w.r.t. every parameter, given d loss / d logits (N, C, b)."""
        net, K = self.net, self.net.K
        dlogits = dlogits.transpose(1, 2)  # (N, b, C)
        torch.bmm(self.head_in_t, dlogits, out=net.gW[K])  # (N, P_K, C)
        torch.sum(dlogits, 1, keepdim=True, out=net.gB[K])
        if K:
            torch.bmm(dlogits, net.W[K].transpose(1, 2), out=self.d_out[K - 1])  # (N, b, P_K)
        for j in reversed(range(K)):
            _, h_t, _, dz, dh, w_t, segs, passing = self.slots[j]
            for a, zs, dzs in segs:  # d loss / d pre-activation, in place; both read the output
                if a == "relu":
                    _RELU_GRAD(dzs, zs, 0, grad_input=dzs)
                else:
                    _TANH_GRAD(dzs, zs, grad_input=dzs)
            torch.bmm(h_t, dz, out=net.gW[j])
            torch.sum(dz, 1, keepdim=True, out=net.gB[j])
            if j == 0:
                break
            torch.bmm(dz, w_t, out=dh)
            if passing is not None:
                passing[3].copy_(passing[2])
                if passing[4] is not None:  # aliased buffers: clear what slot j-1 wrote last step
                    passing[4].zero_()
            if net.unperm[j] is not None:
                torch.index_select(self.d_inp[j], 0, net.unperm[j], out=self.d_out[j - 1])


# -- training ------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _fused_adam_works(device: torch.device) -> bool:
    """Whether this torch has the fused Adam kernel for this device (CPU: torch >= 2.4)."""
    z = torch.zeros(1, device=device)
    try:
        torch._fused_adam_([z], [z.clone()], [z.clone()], [z.clone()], [], [torch.ones((), device=device)],
                           lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)
    except (AttributeError, RuntimeError, NotImplementedError, TypeError):
        return False
    return True


class _Adam:
    """torch's fused Adam kernel called directly: the update ``make_adam`` (train_child's
    optimizer) makes, without torch.optim's per-step Python bookkeeping; else torch.optim."""

    def __init__(self, params: list[torch.Tensor], grads: list[torch.Tensor], lr: float):
        self.params, self.grads, self.lr = params, grads, lr
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = [torch.zeros((), device=params[0].device)] * len(params)  # one shared step count
        self.fallback = None
        if not _fused_adam_works(params[0].device):
            for p, g in zip(params, grads):
                p.grad = g
            self.fallback = make_adam(params, lr)

    def step(self) -> None:
        if self.fallback is not None:
            self.fallback.step()
            return
        self.steps[0].add_(1.0)
        torch._fused_adam_(self.params, self.grads, self.m, self.v, [], self.steps, lr=self.lr, beta1=0.9,
                           beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)


class _TaskData:
    """A task's labels and zero-padded feature tables on the device, made once per call and width."""

    def __init__(self, task: Any, bank: EmbeddingBank, dev: torch.device):
        self.task, self.bank, self.modules, self.dev = task, bank, bank.names, dev
        self.y = {s: torch.from_numpy(task.samples(s)[1]).to(dev) for s in ("train", "val", "test")}  # (n,)
        self._tables: dict[tuple[str, int], torch.Tensor] = {}

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


@torch.no_grad()
def _train_bucket(data: _TaskData, plans: Sequence[ChildPlan], seeds: Sequence[int], recipe: TrainRecipe,
                  dev: torch.device, C: int) -> list[ChildResult]:
    """Train one bucket for the recipe's epochs; result i belongs to plans[i]."""
    start, N = time.perf_counter(), len(plans)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    net = _Bucket(plans, gens, C, dev)
    first = torch.tensor(net.order[0], device=dev)  # members in the network's input order
    last = torch.tensor(net.order[-1], device=dev)  # ... and in its output order
    mod = torch.tensor([data.modules.index(p.embedding) for p in plans], device=dev)  # (N,)
    P0 = net.P[0]
    opt = _Adam(*net.parameters(), recipe.learning_rate)  # backward() writes the gradient buffers
    y_train = data.y["train"]
    n = len(y_train)
    flat = data.table("train", P0).reshape(-1, P0)  # (modules * n, P0)
    alive = torch.ones(N, dtype=torch.bool, device=dev)  # in output order
    failed_at = [0] * N  # per output position
    curves: list[torch.Tensor] = []
    bs = recipe.batch_size
    inv_b = torch.full((n,), 1.0 / bs, device=dev)  # each sample's 1/b (the last batch may be short)
    inv_b[n // bs * bs:] = 1.0 / max(1, n % bs)
    logp_grad = torch.ops.aten._log_softmax_backward_data  # autograd's own step for log_softmax

    def accuracy(split: str) -> torch.Tensor:  # (N,) in output order
        y = data.y[split]
        step = net.step_buffers(len(y), train=False)  # forward buffers reused every epoch
        if step.split != split:  # the input stays put between evaluations of one split
            torch.index_select(data.table(split, P0), 0, mod[first], out=step.x)
            step.split = split
        return (step.forward().argmax(1) == y).float().mean(1)

    for epoch in range(1, recipe.epochs + 1):
        perm = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(dev)  # (N, n)
        rows = (perm + mod[:, None] * n)[first]  # (N, n) rows of ``flat``, input order
        # d(sum over live members of their mean loss) / d log-probs: -onehot / b (output order)
        grad = torch.zeros(N, C, n, device=dev).scatter_(1, y_train[perm[last]][:, None, :], -1.0)
        grad.mul_(inv_b).mul_(alive[:, None, None])  # (N, C, n)
        nll = {b: torch.zeros(N, C, b, device=dev) for b in {bs, n % bs} if b}  # sums of -onehot/b * log p
        for idx, g in _batches(rows, grad, bs):
            b = g.shape[-1]
            step = net.step_buffers(b)
            torch.index_select(flat, 0, idx, out=step.x_flat)  # (N, b, P0)
            logp = torch.log_softmax(step.forward(), 1)  # (N, C, b)
            nll[b].addcmul_(g, logp)
            step.backward(logp_grad(g, logp, 1, logp.dtype))  # (N, C, b): (softmax - onehot) / b
            opt.step()
        loss_sum = sum(v.sum((1, 2)) for v in nll.values())  # (N,): finite iff every loss was
        bad = (~torch.isfinite(loss_sum) & alive).cpu()
        for i in torch.nonzero(bad).flatten().tolist():
            failed_at[i] = epoch
        alive &= ~bad.to(dev)
        curves.append(accuracy("val"))
        if not bool(alive.any()):
            break
    test = accuracy("test").cpu().tolist()
    curve = torch.stack(curves, 1).cpu().tolist()  # (N, epochs), output order
    share = (time.perf_counter() - start) / N
    out: list[ChildResult | None] = [None] * N
    for i, m in enumerate(net.order[-1]):
        params = plans[m].num_params(C)
        if failed_at[i]:
            out[m] = ChildResult.failed(f"diverged: non-finite loss at epoch {failed_at[i]}",
                                        val_curve=curve[i][: failed_at[i] - 1], seconds=share, num_params=params)
        else:
            out[m] = ChildResult(curve[i], curve[i][-1], test[i], len(curve[i]), share, params)
    return out  # type: ignore[return-value]


def train_batched(task: Any, plans: Sequence[ChildPlan], seeds: Sequence[int], recipe: TrainRecipe,
                  dev: torch.device, bank: EmbeddingBank,
                  fallback: Callable[[int], ChildResult] | None = None) -> list[ChildResult]:
    """Bucket the plans and train each bucket. A bucket that raises (say, out of GPU memory)
    is retried one child at a time with ``fallback(i)``, else its children fail with the error."""
    cm = CostModel.for_device(dev, recipe.batch_size)
    data = _TaskData(task, bank, dev)
    results: list[ChildResult | None] = [None] * len(plans)
    for bucket in make_buckets(plans, task.num_classes, cm):
        start = time.perf_counter()
        try:
            res = _train_bucket(data, [plans[i] for i in bucket], [seeds[i] for i in bucket], recipe, dev,
                                task.num_classes)
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
