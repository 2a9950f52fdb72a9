"""The child network of the paper and its training loop, all of it in this one file.

task-aware-performance-prediction.md Sec. 3.4: an embedding module soft-selected by gamma
among frozen modules (cluster/child/_embeddings.py), 7 parametrized layers, each a softmax (alpha)
over 12 base layers {8..256} x {relu, tanh} zero-padded to the widest, each behind an enable
gate (beta; disabled = identity), then a softmax classifier. Training follows Sec. 5.1
(Adam, 20 epochs) with a learning rate suited to our 8x8 tasks (see TrainRecipe).

A ONE-HOT architecture builds and computes only its chosen branches (no padding); a RELAXED
one (per-block softmax weights u, length ``space.encoding_size``) builds the full supernet.
``train_children`` trains many one-hot children at once (cluster/child/_batched.py).

Embedding modules are frozen, so their outputs are computed once per task
(``EmbeddingBank.task_features``) and the networks consume those features.

Threads: tiny networks train fastest with one torch thread per process (two threads on a
busy 2-core machine can be 10x slower); this module leaves ``torch.set_num_threads`` to the
caller (the Ray trainer sets 1 per CPU it holds).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasdb.settings import from_settings
from nasdb.space import SearchSpace, parse_layer_choice

from cluster.child._embeddings import EmbeddingBank, default_bank
from cluster.child._observer import observe_complete, observe_epoch, observer_features
from nasdb.errors import ArgumentError, ConfigError, ObserverError

if TYPE_CHECKING:
    from cluster.early_stop import EpochObserver

OPTIMIZERS = ("adam",)
ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


@dataclass(frozen=True)
class TrainRecipe:
    """How one child model is trained: 20 epochs of Adam as in the paper (Sec. 5.1), with lr
    1e-3 (not the early version's 1e-4) and batch 32 for our 8x8 tasks. Measured on 48 random
    architectures x 2 seeds on digits10_small / digits_confusable4 / mnist10_small / mnist_2to9:
    batch 32, lr 1e-3 gives seed-to-seed Spearman 0.92 / 0.79 / 0.87 / 0.88 (the noise ceiling
    of any predictor) at mean val acc 0.80 / 0.93 / 0.84 / 0.91; batch 64, lr 3e-3 trains a
    little further (0.84 / 0.94 / 0.86 / 0.92) but ranks less stably (0.87 / 0.77 / 0.85 /
    0.82); lr 1e-4 leaves children far from trained (mean 0.37 on digits10_small). One child
    takes 0.1-1 s on one core (300-3000 training images)."""

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = "adam"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ConfigError(f"TrainRecipe.{name} must be an int >= 1, got {v!r}")
            object.__setattr__(self, name, int(v))
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"TrainRecipe.learning_rate must be a finite float > 0, got {lr!r}")
        object.__setattr__(self, "learning_rate", float(lr))
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"TrainRecipe.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainRecipe":
        return from_settings(cls, d, "TrainRecipe fields")


@dataclass
class ChildResult:
    """Outcome of training one child. Failed children have NaN accuracies and the error; a child
    an early-stop observer stopped has the accuracies at its stopping point and the predicted
    final accuracy (None when the observer made no prediction)."""

    val_curve: list[float]  # per-epoch validation accuracy
    val_accuracy: float  # final (last epoch run) validation accuracy
    test_accuracy: float
    epochs: int  # epochs actually run (healthy epochs for a failed child)
    train_seconds: float  # wall time; in train_children, the child's share of its bucket's time
    num_params: int  # trainable parameters (frozen embeddings excluded)
    status: str = "ok"  # "ok" | "failed"
    error: str | None = None
    stopped_early: bool = False
    predicted_final: float | None = None

    @classmethod
    def failed(cls, error: str, *, val_curve: Sequence[float] = (), seconds: float = 0.0,
               num_params: int = 0) -> "ChildResult":
        return cls(list(val_curve), float("nan"), float("nan"), len(val_curve), seconds, num_params,
                   status="failed", error=error)

    @classmethod
    def stopped(cls, val_curve: Sequence[float], test_accuracy: float, num_params: int, predicted_final: float,
                seconds: float = 0.0) -> "ChildResult":
        """A child stopped early after ``len(val_curve)`` epochs; a NaN prediction becomes None."""
        curve = [float(v) for v in val_curve]
        predicted = float(predicted_final) if math.isfinite(predicted_final) else None
        return cls(curve, curve[-1], float(test_accuracy), len(curve), seconds, num_params, stopped_early=True,
                   predicted_final=predicted)


# -- architectures -------------------------------------------------------------------------
@dataclass(frozen=True)
class SpaceLayout:
    """Where a child-network space keeps gamma, alpha_j and beta_j, and what each choice means."""

    embeddings: tuple[str, ...]
    layers: tuple[tuple[tuple[str, int], ...], ...]  # per layer: (activation, width) per choice
    embedding_dim: int  # index of the "embedding" dimension
    layer_dims: tuple[int, ...]
    gate_dims: tuple[int, ...]
    blocks: tuple[slice, ...]  # the space's encoding blocks

    @property
    def max_width(self) -> int:
        return max(w for choices in self.layers for _, w in choices)


@lru_cache(maxsize=16)
def space_layout(space: SearchSpace) -> SpaceLayout:
    """Read a child-network space: dimensions ``embedding``, ``layer1..L``, ``enable1..L``."""
    names = [d.name for d in space.dimensions]
    num_layers = sum(n.startswith("layer") for n in names)
    expected = {"embedding"} | {f"layer{j}" for j in range(1, num_layers + 1)} | {
        f"enable{j}" for j in range(1, num_layers + 1)}
    if set(names) != expected:
        raise ArgumentError(f"space {space.name!r} is not a child-network space: dimensions {names}, "
                            f"expected embedding, layer1..layer{num_layers}, enable1..enable{num_layers}")
    layer_dims = tuple(space.index(f"layer{j}") for j in range(1, num_layers + 1))
    gate_dims = tuple(space.index(f"enable{j}") for j in range(1, num_layers + 1))
    for g in gate_dims:
        if space.dimensions[g].choices != ("off", "on"):
            raise ArgumentError(f"dimension {names[g]!r} must have choices ('off', 'on'), "
                                f"got {space.dimensions[g].choices}")
    layers = tuple(tuple(parse_layer_choice(c) for c in space.dimensions[i].choices) for i in layer_dims)
    for i, choices in zip(layer_dims, layers):
        bad = [a for a, _ in choices if a not in ACTIVATIONS]
        if bad:
            raise ArgumentError(f"dimension {names[i]!r}: unknown activation {bad[0]!r}; known {sorted(ACTIVATIONS)}")
    return SpaceLayout(space.dimensions[space.index("embedding")].choices, layers, space.index("embedding"),
                       layer_dims, gate_dims, space.blocks)


@dataclass(frozen=True)
class ChildPlan:
    """A one-hot architecture as it is computed: the embedding and the ENABLED layers only."""

    embedding: str
    embedding_dim: int
    layers: tuple[tuple[int, int, str, int], ...]  # (layer index, choice index, activation, width)

    @property
    def widths(self) -> tuple[int, ...]:
        """Feature widths along the network, ``(embedding_dim, w_1, ..., w_k)``."""
        return (self.embedding_dim,) + tuple(w for *_, w in self.layers)

    def num_params(self, num_classes: int) -> int:
        ws = self.widths + (num_classes,)
        return sum(a * b + b for a, b in zip(ws[:-1], ws[1:]))


def child_plan(space: SearchSpace, architecture: Any, bank: EmbeddingBank) -> ChildPlan:
    """The computed form of ``architecture`` (validated; ValueError names the bad dimension)."""
    arch = space.validate(architecture)
    lay = space_layout(space)
    emb = lay.embeddings[arch[lay.embedding_dim]]
    if emb not in bank:
        raise ArgumentError(f"embedding module {emb!r} is not in the bank {list(bank.names)}")
    layers = tuple((j, int(arch[d]), *lay.layers[j][arch[d]])
                   for j, (d, g) in enumerate(zip(lay.layer_dims, lay.gate_dims)) if arch[g] == 1)
    return ChildPlan(emb, bank.dims[emb], layers)


def check_relaxed_weights(space: SearchSpace, weights: Any) -> np.ndarray:
    """Per-block softmax weights u: shape (encoding_size,), finite, >= 0, each block sums to 1."""
    u = np.asarray(weights, dtype=np.float64)
    if u.shape != (space.encoding_size,):
        raise ArgumentError(f"relaxed_weights must have shape ({space.encoding_size},), got {u.shape}")
    for d, block in zip(space.dimensions, space.blocks):
        b = u[block]
        if not np.all(np.isfinite(b)) or np.any(b < 0) or abs(b.sum() - 1.0) > 1e-4:
            raise ArgumentError(f"dimension {d.name!r}: relaxed weights must be finite, >= 0 and sum to 1, "
                                f"got {b.round(6).tolist()}")
    return u.astype(np.float32)


def init_linear(fan_out: int, fan_in: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), drawn from ``generator``."""
    bound = 1.0 / math.sqrt(fan_in)
    w = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound  # (out, in)
    b = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound  # (out,)
    return w, b


def init_plan(plan: ChildPlan, num_classes: int, generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Initial (weight, bias) of each enabled layer, then the classifier; the batched trainer
    draws the very same tensors in the same order, so batched and one-at-a-time runs agree."""
    ws = plan.widths + (num_classes,)
    return [init_linear(b, a, generator) for a, b in zip(ws[:-1], ws[1:])]


# -- the network ---------------------------------------------------------------------------
class ChildNetwork(nn.Module):
    """Embedding mix -> L gated parametrized layers -> classifier (Sec. 3.4, Fig. 3).

    Exactly one of ``architecture`` (one-hot: only the chosen branches exist) and
    ``relaxed_weights`` (u: the full supernet, every branch reads the zero-padded width-D
    stream, D = widest embedding or base layer) is given. Inputs are precomputed embedded
    features, see :meth:`select_features`.
    """

    def __init__(self, space: SearchSpace, num_classes: int, bank: EmbeddingBank, *, architecture: Any = None,
                 relaxed_weights: Any = None, generator: torch.Generator | None = None):
        super().__init__()
        if (architecture is None) == (relaxed_weights is None):
            raise ArgumentError("give exactly one of architecture (one-hot) and relaxed_weights (relaxed)")
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
            raise ArgumentError(f"num_classes must be an int >= 2, got {num_classes!r}")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self.layout, self.bank_names, self.num_classes = space_layout(space), bank.names, int(num_classes)
        missing = [e for e in self.layout.embeddings if e not in bank]
        if missing:
            raise ArgumentError(f"embedding module(s) {missing} of space {space.name!r} are not in the bank "
                                f"{list(bank.names)}")
        self.relaxed = relaxed_weights is not None
        if not self.relaxed:
            self.plan = child_plan(space, architecture, bank)
            params = init_plan(self.plan, self.num_classes, gen)
            self.weights = nn.ParameterList([nn.Parameter(w) for w, _ in params])  # (out, in) each
            self.biases = nn.ParameterList([nn.Parameter(b) for _, b in params])
            return
        u = torch.from_numpy(check_relaxed_weights(space, relaxed_weights))
        self.register_buffer("u", u)  # (encoding_size,)
        self.emb_dims = [bank.dims[e] for e in self.layout.embeddings]
        self.width = max(max(self.emb_dims), self.layout.max_width)  # D
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for choices in self.layout.layers:
            for _, w in choices:  # branch i of layer j at flat index j * len(choices) + i
                wt, b = init_linear(w, self.width, gen)
                self.weights.append(nn.Parameter(wt))  # (w, D)
                self.biases.append(nn.Parameter(b))
        wt, b = init_linear(self.num_classes, self.width, gen)
        self.head_w, self.head_b = nn.Parameter(wt), nn.Parameter(b)  # (C, D), (C,)

    def select_features(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """The network's input from ``EmbeddingBank.task_features``: one-hot (N, e) of the chosen
        module; relaxed (N, M, E) every module of the space, zero-padded to the widest E."""
        if not self.relaxed:
            return features[self.plan.embedding]
        mods = [features[e] for e in self.layout.embeddings]
        out = np.zeros((len(mods[0]), len(mods), max(self.emb_dims)), dtype=np.float32)  # (N, M, E)
        for m, f in enumerate(mods):
            out[:, m, : f.shape[1]] = f
        return out

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self._relaxed(x) if self.relaxed else self._one_hot(x)  # (B, C)
        # The same mean cross-entropy as F.cross_entropy(logits, targets), over a (1, C, B) view:
        # torch's CPU log_softmax is ~10x faster over a middle dim than over a last dim of 10.
        loss = None if targets is None else F.cross_entropy(logits.t()[None], targets[None])
        return logits, loss

    def _one_hot(self, x: torch.Tensor) -> torch.Tensor:
        h = x  # (B, e)
        for (_, _, act, _), w, b in zip(self.plan.layers, self.weights, self.biases):
            h = ACTIVATIONS[act](F.linear(h, w, b))  # (B, w_j)
        return F.linear(h, self.weights[-1], self.biases[-1])  # (B, C)

    def _relaxed(self, x: torch.Tensor) -> torch.Tensor:
        lay, u, D = self.layout, self.u, self.width
        gamma = u[lay.blocks[lay.embedding_dim]]  # (M,)
        h = F.pad(torch.einsum("m,bme->be", gamma, x), (0, D - x.shape[-1]))  # (B, D)
        for j, choices in enumerate(lay.layers):
            alpha = u[lay.blocks[lay.layer_dims[j]]]  # (12,)
            p_off, p_on = u[lay.blocks[lay.gate_dims[j]]]
            if float(p_on) == 0.0:
                continue  # gate fully off: identity, skip the branches
            mixed = torch.zeros_like(h)  # (B, D)
            for i, (act, w) in enumerate(choices):
                if float(alpha[i]) == 0.0:
                    continue  # a zero-weight branch adds exactly nothing
                k = j * len(choices) + i
                o = ACTIVATIONS[act](F.linear(h, self.weights[k], self.biases[k]))  # (B, w)
                mixed = mixed + alpha[i] * F.pad(o, (0, D - w))  # (B, D)
            h = p_on * mixed + p_off * h  # (B, D)
        return F.linear(h, self.head_w, self.head_b)  # (B, C)

    def num_params(self) -> int:
        """Trainable parameters that take part: the chosen branches (relaxed: every branch with
        weight > 0 behind a gate with p_on > 0; each reads the padded width D)."""
        if not self.relaxed:
            return int(sum(p.numel() for p in self.parameters()))
        lay, u, n = self.layout, self.u, self.head_w.numel() + self.head_b.numel()
        for j, choices in enumerate(lay.layers):
            if float(u[lay.blocks[lay.gate_dims[j]]][1]) > 0:
                alpha = u[lay.blocks[lay.layer_dims[j]]]
                n += sum(self.weights[j * len(choices) + i].numel() + w
                         for i, (_, w) in enumerate(choices) if float(alpha[i]) > 0)
        return int(n)

    @torch.no_grad()
    def load_one_hot_(self, other: "ChildNetwork") -> "ChildNetwork":
        """Copy a one-hot child's parameters into this relaxed supernet's chosen branches."""
        if not self.relaxed or other.relaxed:
            raise ArgumentError("load_one_hot_ copies a one-hot child into a relaxed supernet")
        plan, n = other.plan, len(self.layout.layers[0])
        d_in = plan.widths
        for (j, i, _, w), wt, b, d in zip(plan.layers, other.weights, other.biases, d_in):
            self.weights[j * n + i].zero_()[:, :d] = wt
            self.biases[j * n + i].copy_(b)
        self.head_w.zero_()[:, : d_in[-1]] = other.weights[-1]
        self.head_b.copy_(other.biases[-1])
        return self


# -- training ------------------------------------------------------------------------------
def resolve_device(device: Any) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a torch.device; ValueError if unknown or absent."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ArgumentError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    if dev.type not in ("cpu", "cuda"):
        raise ArgumentError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    return dev


def check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
        raise ArgumentError(f"seed must be an int in [0, 2**63), got {seed!r}")
    return int(seed)


def make_adam(params: Sequence[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam, fused where torch supports it (about 1.5x faster per step on CPU for tiny nets)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _tensors(x: np.ndarray, y: np.ndarray, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(x)).to(dev), torch.from_numpy(np.asarray(y)).to(dev)


def _accuracy(net: ChildNetwork, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (net(x)[0].argmax(-1) == y).float().mean()


def train_child(task: Any, space: SearchSpace, architecture: Any, *, recipe: TrainRecipe = TrainRecipe(),
                seed: int = 0, device: Any = "cpu", relaxed_weights: Any = None,
                bank: EmbeddingBank | None = None, observer: "EpochObserver | None" = None) -> ChildResult:
    """Train one child on ``task`` and report its curve and accuracies (one model at a time).

    ``architecture`` is the one-hot child; with ``relaxed_weights`` (u, as from
    ``space.relax``) the relaxed supernet is trained instead and ``architecture`` (may be
    None) only labels the row. ``seed`` fixes the init and the mini-batch order. A training
    failure (non-finite loss, an exception) returns status "failed"; bad arguments raise.

    ``observer`` (cluster.early_stop.EpochObserver) may stop training after any epoch but the
    last (``ChildResult.stopped``) and hears of a child that ran every epoch; its errors raise
    :class:`ObserverError`. Its features are the observer's of ``architecture`` (``observer_features``).
    """
    if not isinstance(recipe, TrainRecipe):
        raise ArgumentError(f"recipe must be a TrainRecipe, got {type(recipe).__name__}")
    seed, dev = check_seed(seed), resolve_device(device)
    bank = bank if bank is not None else default_bank()
    if architecture is not None:
        space.validate(architecture)
    elif observer is not None:
        raise ArgumentError("an early-stop observer needs the architecture (its features), got architecture=None")
    gen = torch.Generator().manual_seed(seed)
    net = ChildNetwork(space, task.num_classes, bank, generator=gen, relaxed_weights=relaxed_weights,
                       architecture=architecture if relaxed_weights is None else None)
    num_params, curve = net.num_params(), []
    features = None if observer is None else observer_features(observer, space, [architecture], [num_params],
                                                                recipe.to_dict())
    start = time.perf_counter()
    try:
        data = {s: _tensors(net.select_features(bank.task_features(task, s)), task.samples(s)[1], dev)
                for s in ("train", "val", "test")}
        net.to(dev)
        opt = make_adam(list(net.parameters()), recipe.learning_rate)
        (x, y), n = data["train"], len(data["train"][1])
        for epoch in range(1, recipe.epochs + 1):
            net.train()
            perm = torch.randperm(n, generator=gen).to(dev)  # (n,)
            loss_sum = torch.zeros((), device=dev)
            for s in range(0, n, recipe.batch_size):
                idx = perm[s: s + recipe.batch_size]  # (b,)
                _, loss = net(x[idx], y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach()
            if not torch.isfinite(loss_sum):
                return ChildResult.failed(f"diverged: non-finite loss at epoch {epoch}", val_curve=curve,
                                          seconds=time.perf_counter() - start, num_params=num_params)
            net.eval()
            curve.append(float(_accuracy(net, *data["val"])))
            if observer is not None and epoch < recipe.epochs:
                stop, predicted = observe_epoch(observer, np.array([curve]), features)
                if stop[0]:
                    return ChildResult.stopped(curve, float(_accuracy(net, *data["test"])), num_params,
                                               float(predicted[0]), time.perf_counter() - start)
        test = float(_accuracy(net, *data["test"]))
    except ObserverError:
        raise
    except Exception as e:  # a training failure is a result, not a crash of the caller
        return ChildResult.failed(f"{type(e).__name__}: {e}".splitlines()[0][:500], val_curve=curve,
                                  seconds=time.perf_counter() - start, num_params=num_params)
    result = ChildResult(curve, curve[-1], test, len(curve), time.perf_counter() - start, num_params)
    if observer is not None:
        observe_complete(observer, np.array([curve]), features)
    return result
