"""The batched network: N one-hot children stacked into one, with a hand-written backward pass.

Members are left-aligned by enabled layer (a disabled layer is an identity, i.e. absent). At
slot j the members computing there are stacked into one (N_on, P_j, P_j+1) weight, P_j the
widest member at that slot, each zero-padded; rows are ordered [relu | tanh | pass-through]
so activations run per contiguous segment and members with fewer layers compute nothing.

Exactness: padded units compute act(0) = 0 for relu and tanh, padded weights get exactly
zero gradient, and Adam moves a weight whose gradient has always been zero by exactly zero.
Adam is elementwise, so one Adam over stacked tensors is N independent Adams, given a loss
that is the SUM over members of each member's mean loss. The same facts let members leave a
bucket (:meth:`BucketNetwork.keep_`): slicing rows and padding out of the weights and the Adam state
leaves every remaining member's numbers as they were.

Evaluation (:meth:`BucketNetwork.predict`) runs each member through its own unpadded weight views
instead: its batches are whole validation/test sets, where padding costs more than the per-
member calls save.
"""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Callable, Mapping, Sequence

import torch

from cluster.child._buckets import _profiles
from cluster.child._child import ChildPlan, init_plan
from nasdb.errors import ArgumentError

_ACT = {"relu": torch.relu_, "tanh": torch.tanh_}
_RELU_GRAD = torch.ops.aten.threshold_backward.grad_input  # what autograd uses, here in place
_TANH_GRAD = torch.ops.aten.tanh_backward.grad_input
_LOG_SOFTMAX = torch._log_softmax  # autograd's own forward and backward steps, into buffers
_LOG_SOFTMAX_GRAD = torch._log_softmax_backward_data


class BucketNetwork:
    """N children as one network with a hand-written backward pass (no autograd graph).

    Slot j's input is ordered ``order[j]`` = [relu members | tanh members | passing members];
    the computing members' weights form one (N_on, P_j, P_j+1) tensor (one bmm per slot), the
    activation runs per contiguous segment. The classifier's input and the logits are in
    ``order[-1]``. Writing the backward by hand into preallocated buffers (:class:`_Step`;
    checked against autograd in tests/cluster/test_child.py) drops the graph bookkeeping, allocation
    and copies that dominate tiny models' steps.
    """

    def __init__(self, plans: Sequence[ChildPlan], gens: Sequence[torch.Generator], num_classes: int,
                 dev: torch.device):
        self.dev, self.C = dev, int(num_classes)
        self._layout(plans)
        W = [torch.zeros(s) for s in self.shapes]  # per slot and classifier: (N_on, P_j, P_j+1)
        B = [torch.zeros(s[0], 1, s[2]) for s in self.shapes]  # (N_on, 1, P_j+1)
        for n, (plan, gen) in enumerate(zip(plans, gens)):
            for j, (w, b) in enumerate(init_plan(plan, num_classes, gen)):  # train_child's draws, in order
                slot = j if j < len(plan.layers) else self.K
                W[slot][self.row[slot][n], : w.shape[1], : w.shape[0]] = w.T
                B[slot][self.row[slot][n], 0, : b.shape[0]] = b
        self.W, self.B = [w.to(dev) for w in W], [b.to(dev) for b in B]
        self.gW, self.gB = [torch.zeros_like(w) for w in self.W], [torch.zeros_like(b) for b in self.B]

    def _layout(self, plans: Sequence[ChildPlan]) -> None:
        """Where each member computes: slot orders, rows, activation segments, padded widths."""
        N, K = len(plans), max(len(p.layers) for p in plans)
        self.N, self.K, self.plans = N, K, list(plans)
        self.P = [int(p) for p in _profiles(plans, self.C).max(0)]  # (K+2,) padded widths
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
        self.shapes = [(self.n_on[j], self.P[j], self.P[j + 1]) for j in range(K)] + [(N, self.P[K], self.C)]
        # slot j's input order from slot j-1's output order (None: the same order)
        self.perm = [None] + [self._perm(self.order[j - 1], self.order[j]) for j in range(1, K)]
        self.unperm = [None] + [self._perm(self.order[j], self.order[j - 1]) for j in range(1, K)]
        self._steps: dict[int, _Step] = {}
        self._views: dict[int, list[tuple[str | None, torch.Tensor, torch.Tensor]]] = {}

    def _perm(self, src: list[int], dst: list[int]) -> torch.Tensor | None:
        if src == dst:
            return None
        where = {n: i for i, n in enumerate(src)}
        return torch.tensor([where[n] for n in dst], device=self.dev)

    def keep_(self, members: Sequence[int]) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
        """Keep only ``members`` (old member indices; member i of the result is ``members[i]``):
        their weights' rows move, padding no member needs any more is sliced off, gradient
        buffers and step buffers start anew. Returns the map of other per-parameter state
        (Adam's moments, in :meth:`parameters` order) from the old layout to the new one."""
        if not members:
            raise ArgumentError("a bucket must keep at least one member")
        old_rows, old_K = self.row, self.K
        self._layout([self.plans[m] for m in members])

        def regroup(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
            assert len(tensors) == 2 * (old_K + 1), len(tensors)
            ws, bs = [], []
            for j, (_, a, b) in enumerate(self.shapes):  # the classifier moves from slot old_K to K
                src = old_K if j == self.K else j
                idx = torch.tensor([old_rows[src][members[n]] for n in self._slot_members(j)], device=self.dev)
                ws.append(tensors[src].index_select(0, idx)[:, :a, :b].contiguous())  # (N_on, P_j, P_j+1)
                bs.append(tensors[old_K + 1 + src].index_select(0, idx)[:, :, :b].contiguous())  # (N_on, 1, P_j+1)
            return ws + bs

        new = regroup(self.W + self.B)
        self.W, self.B = new[: self.K + 1], new[self.K + 1:]
        self.gW, self.gB = [torch.zeros_like(w) for w in self.W], [torch.zeros_like(b) for b in self.B]
        return regroup

    def _slot_members(self, j: int) -> list[int]:
        """Members owning the rows of slot j's weights (j == K: the classifier), row order."""
        return self.order[-1] if j == self.K else self.order[j][: self.n_on[j]]

    def parameters(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Parameters and their gradient buffers, in matching order."""
        return self.W + self.B, self.gW + self.gB

    def _member_blocks(self, n: int) -> list[tuple[str | None, int, int, int, int]]:
        """Member n's (activation, slot, row, in width, out width) per enabled layer, then the
        classifier (activation None): where its unpadded weights sit."""
        plan = self.plans[n]
        ws = plan.widths + (self.C,)
        acts = [a for *_, a, _ in plan.layers] + [None]
        slots = list(range(len(plan.layers))) + [self.K]
        return [(act, j, self.row[j][n], a, b) for act, j, a, b in zip(acts, slots, ws[:-1], ws[1:])]

    def member_weights(self, n: int, grads: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Member n's unpadded (weight (out, in), bias) per enabled layer, then the classifier,
        as ``ChildNetwork`` holds them; with ``grads``, their gradient buffers (for tests)."""
        W, B = (self.gW, self.gB) if grads else (self.W, self.B)
        return [(W[j][r, :a, :b].T, B[j][r, 0, :b]) for _, j, r, a, b in self._member_blocks(n)]

    def step_buffers(self, b: int) -> "_Step":
        if b not in self._steps:
            self._steps[b] = _Step(self, b)
        return self._steps[b]

    def _member_layers(self, n: int) -> list[tuple[str | None, torch.Tensor, torch.Tensor]]:
        """Member n's (activation, unpadded weight view (in, out), bias view (out,)) per enabled
        layer, then the classifier (activation None); views stay valid while it trains."""
        if n not in self._views:
            self._views[n] = [(act, self.W[j][r, :a, :b], self.B[j][r, 0, :b])
                              for act, j, r, a, b in self._member_blocks(n)]
        return self._views[n]

    def predict(self, features: Mapping[str, torch.Tensor], members: Sequence[int]) -> torch.Tensor:
        """Predicted classes (len(members), n) of ``members`` for evaluation inputs (module ->
        (n, e)), each through its own unpadded layers: evaluation batches are large, so exact
        per-member matmuls beat padded batched ones (and compute what ``train_child`` does)."""
        n = len(next(iter(features.values())))
        out = torch.empty(len(members), n, dtype=torch.long, device=self.dev)
        for i, m in enumerate(members):
            *layers, (_, w, b) = self._member_layers(m)
            h = features[self.plans[m].embedding]  # (n, e)
            for act, wj, bj in layers:
                h = _ACT[act](torch.addmm(bj, h, wj))  # (n, w_j)
            torch.argmax(torch.addmm(b, h, w), 1, out=out[i])  # logits (n, C)
        return out


class _Step:
    """One training step's buffers for batch size b, and the step's ops bound to them.

    The forward and backward passes are lists of calls with every argument (buffers, views,
    weights) bound once per bucket, so a step runs them without re-deriving anything.
    """

    def __init__(self, net: BucketNetwork, b: int):
        N, K, P, C, dev = net.N, net.K, net.P, net.C, net.dev

        def buf(*shape: int) -> torch.Tensor:  # every region is written before it is read
            return torch.empty(*shape, device=dev)

        self.net = net
        self.x = buf(N, b, P[0])  # slot 0's input, gathered in order[0]
        self.x_flat = self.x.view(N * b, P[0])
        inp, out, d_inp, d_out = [self.x], [], [None], []
        for j in range(K):
            if j:
                inp.append(out[j - 1] if net.perm[j] is None else buf(N, b, P[j]))
                d_inp.append(None)  # filled below once d_out exists
            out.append(buf(N, b, P[j + 1]))  # (N, b, P_j+1)
            out[j][net.n_on[j]:, :, min(P[j], P[j + 1]):] = 0.0  # passing members' padding
            d_out.append(buf(N, b, P[j + 1]))
        for j in range(1, K):  # d loss / d input of slot j; aliases d_out[j-1] if unpermuted
            d_inp[j] = d_out[j - 1] if net.perm[j] is None else buf(N, b, P[j])
        head_in = out[K - 1] if K else self.x  # (N, b, P_K)
        logits, self.logp, self.dlogits = buf(N, b, C), buf(N, C, b), buf(N, C, b)
        self.logits = logits.transpose(1, 2)  # (N, C, b): see ChildNetwork.forward for why C comes first
        self._forward = self._forward_ops(inp, out, head_in, logits)
        self._backward = self._backward_ops(inp, out, d_inp, d_out, head_in)

    def _forward_ops(self, inp: list, out: list, head_in: torch.Tensor, logits: torch.Tensor) -> list[Callable]:
        net, P, ops = self.net, self.net.P, []
        for j in range(net.K):
            on, w = net.n_on[j], min(P[j], P[j + 1])  # a passing member's true width fits both
            if net.perm[j] is not None:
                ops.append(partial(torch.index_select, out[j - 1], 0, net.perm[j], out=inp[j]))
            z = out[j][:on]  # (N_on, b, P_j+1) = b + h @ W
            ops.append(partial(torch.baddbmm, net.B[j], inp[j][:on], net.W[j], out=z))
            ops += [partial(_ACT[a], z[s:e]) for a, s, e in net.segments[j]]
            if on < net.N:  # identity; padded columns stay zero
                ops.append(partial(out[j][on:, :, :w].copy_, inp[j][on:, :, :w]))
        ops.append(partial(torch.baddbmm, net.B[net.K], head_in, net.W[net.K], out=logits))
        return ops

    def _backward_ops(self, inp: list, out: list, d_inp: list, d_out: list, head_in: torch.Tensor) -> list[Callable]:
        net, P, K = self.net, self.net.P, self.net.K
        dlogits = self.dlogits.transpose(1, 2)  # (N, b, C)
        ops = [partial(torch.bmm, head_in.transpose(1, 2), dlogits, out=net.gW[K]),  # (N, P_K, C)
               partial(torch.sum, dlogits, 1, keepdim=True, out=net.gB[K])]
        if K:
            ops.append(partial(torch.bmm, dlogits, net.W[K].transpose(1, 2), out=d_out[K - 1]))  # (N, b, P_K)
        for j in reversed(range(K)):
            on, w = net.n_on[j], min(P[j], P[j + 1])
            z, dz = out[j][:on], d_out[j][:on]
            for a, s, e in net.segments[j]:  # d loss / d pre-activation, in place; both read the output
                if a == "relu":
                    ops.append(partial(_RELU_GRAD, dz[s:e], z[s:e], 0, grad_input=dz[s:e]))
                else:
                    ops.append(partial(_TANH_GRAD, dz[s:e], z[s:e], grad_input=dz[s:e]))
            ops.append(partial(torch.bmm, inp[j][:on].transpose(1, 2), dz, out=net.gW[j]))
            ops.append(partial(torch.sum, dz, 1, keepdim=True, out=net.gB[j]))
            if j == 0:
                break
            ops.append(partial(torch.bmm, dz, net.W[j].transpose(1, 2), out=d_inp[j][:on]))
            if on < net.N:
                ops.append(partial(d_inp[j][on:, :, :w].copy_, d_out[j][on:, :, :w]))
                if w < P[j]:  # aliased buffers: clear what slot j-1 wrote last step
                    ops.append(d_inp[j][on:, :, w:].zero_)
            if net.unperm[j] is not None:
                ops.append(partial(torch.index_select, d_inp[j], 0, net.unperm[j], out=d_out[j - 1]))
        return ops

    def forward(self) -> torch.Tensor:
        """Logits (N, C, b) of the batch in ``x``; activations stay in the buffers for backward."""
        for op in self._forward:
            op()
        return self.logits

    def backward(self, dlogits: torch.Tensor | None = None) -> None:
        """Gradients of sum(loss) w.r.t. every parameter, given d loss / d logits (N, C, b) (by
        default: what :meth:`train` left in ``self.dlogits``)."""
        if dlogits is not None:
            self.dlogits.copy_(dlogits)
        for op in self._backward:
            op()

    def train(self, rows: torch.Tensor, features: torch.Tensor, grad: torch.Tensor, nll: torch.Tensor) -> None:
        """Forward and backward of one mini-batch: the inputs are ``features[rows]`` (N*b flat
        rows), ``grad`` (N, C, b) is d loss / d log-probs (-onehot / b); ``nll`` accumulates
        grad * log-probs (the loss, to check it stayed finite)."""
        torch.index_select(features, 0, rows, out=self.x_flat)  # (N, b, P0)
        self.forward()
        _LOG_SOFTMAX(self.logits, 1, False, out=self.logp)  # (N, C, b)
        nll.addcmul_(grad, self.logp)
        _LOG_SOFTMAX_GRAD(grad, self.logp, 1, self.logp.dtype, out=self.dlogits)  # (softmax - onehot) / b
        self.backward()


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


class BucketAdam:
    """Adam over a bucket's parameters: torch's fused kernel called directly (the update
    ``make_adam``, train_child's optimizer, makes, without torch.optim's per-step Python
    bookkeeping), else the same update written out. Owns its moments, so members can leave."""

    def __init__(self, params: list[torch.Tensor], grads: list[torch.Tensor], lr: float):
        self.params, self.grads, self.lr = params, grads, lr
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t, self.steps = torch.zeros((), device=params[0].device), 0  # steps taken, shared by every member
        self.fused = _fused_adam_works(params[0].device)

    def regroup_(self, params: list[torch.Tensor], grads: list[torch.Tensor],
                 regroup: Callable[[list[torch.Tensor]], list[torch.Tensor]]) -> None:
        """Follow the bucket after :meth:`BucketNetwork.keep_`: new parameters, moments regrouped."""
        self.params, self.grads = params, grads
        self.m, self.v = regroup(self.m), regroup(self.v)

    def step(self) -> None:
        self.steps += 1
        self.t.fill_(self.steps)
        if self.fused:
            torch._fused_adam_(self.params, self.grads, self.m, self.v, [], [self.t] * len(self.params),
                               lr=self.lr, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False,
                               maximize=False)
            return
        t = self.steps
        step_size, root = self.lr / (1 - 0.9 ** t), (1 - 0.999 ** t) ** 0.5
        for p, g, m, v in zip(self.params, self.grads, self.m, self.v):  # torch.optim.Adam's update
            m.lerp_(g, 0.1)
            v.mul_(0.999).addcmul_(g, g, value=0.001)
            p.addcdiv_(m, v.sqrt().div_(root).add_(1e-8), value=-step_size)
