"""How an architecture enters the predictor: its encoding ``u`` plus structured features of it.

The child network (cluster/child/_child.py, task-aware-performance-prediction.md Sec. 3.4) applies
only the layers whose gate is on; a layer choice behind a closed gate does nothing. A one-hot
encoding leaves the predictor to discover that interaction from a few thousand rows; here it
is given. With ``a_j`` the choice block of layer slot j and ``p_j`` its gate's "on" entry:

- ``u`` itself;
- gated layers ``g_j = p_j * a_j`` for every slot (what slot j really contributes);
- counts ``mean_j g_j`` (how many enabled layers of each kind, in an order-free form);
- depth ``mean_j p_j`` and mean width ``mean_j sum_c g_jc * log2(width_c) / 8``.

Every feature is ``u @ P_u + vec(g) @ P_g`` for two fixed matrices, bilinear in ``u``: defined
and differentiable on Algorithm 2's relaxed encodings, equal to the discrete feature on
one-hots, and cheap to differentiate by hand (predictor/ascent.py folds ``P_u`` and ``P_g``
into rho's first layer). Spaces without that structure (imported benchmarks: one categorical
per hyperparameter) use ``u`` alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nasdb.space import SearchSpace, parse_layer_choice


def child_network_slots(space: SearchSpace) -> tuple[list[slice], list[slice], list[int]] | None:
    """The layer blocks, gate blocks and layer widths of a child-network space, or None for another space.

    A child-network space has dimensions ``layer1..L`` with the same base-layer choices
    (``relu64``, ...) and two-way gates ``enable1..L`` ("off", "on").
    """
    names = {d.name for d in space.dimensions}
    num_layers = sum(1 for j in range(1, len(names) + 1) if f"layer{j}" in names)
    if num_layers == 0 or not all(f"enable{j}" in names for j in range(1, num_layers + 1)):
        return None
    dims = [space.dimensions[space.index(f"layer{j}")] for j in range(1, num_layers + 1)]
    gates = [space.dimensions[space.index(f"enable{j}")] for j in range(1, num_layers + 1)]
    if any(d.choices != dims[0].choices for d in dims) or any(tuple(g.choices) != ("off", "on") for g in gates):
        return None
    try:
        widths = [parse_layer_choice(c)[1] for c in dims[0].choices]
    except ValueError:
        return None
    return ([space.blocks[space.index(f"layer{j}")] for j in range(1, num_layers + 1)],
            [space.blocks[space.index(f"enable{j}")] for j in range(1, num_layers + 1)], widths)


class ArchitectureFeatures(nn.Module):
    """``u`` (..., D) -> features (..., F) = ``u @ P_u + vec(g) @ P_g`` (see the module docstring)."""

    def __init__(self, space: SearchSpace, structured: bool = True):
        super().__init__()
        slots = child_network_slots(space) if structured else None
        self.structured = slots is not None
        d = self.encoding_size = space.encoding_size
        if slots is None:
            self.out_size = d
            return
        layers, gates, widths = slots
        L, C = self.num_layers, self.num_choices = len(layers), len(widths)
        self.out_size = f = d + L * C + C + 2
        self.register_buffer("layer_index", torch.tensor([list(range(s.start, s.stop)) for s in layers]))  # (L, C)
        self.register_buffer("on_index", torch.tensor([g.start + 1 for g in gates]))  # (L,)
        p_u = torch.zeros(d, f)
        p_u[torch.arange(d), torch.arange(d)] = 1.0  # u itself
        p_u[self.on_index, f - 2] = 1.0 / L  # depth
        p_g = torch.zeros(L * C, f)
        p_g[torch.arange(L * C), d + torch.arange(L * C)] = 1.0  # gated layers
        p_g[torch.arange(L * C), d + L * C + torch.arange(L * C) % C] = 1.0 / L  # counts
        log_width = torch.tensor([math.log2(w) / 8.0 for w in widths])  # (C,)
        p_g[:, f - 1] = log_width.repeat(L) / L  # mean width
        self.register_buffer("p_u", p_u)  # (D, F)
        self.register_buffer("p_g", p_g)  # (L * C, F)

    def gated(self, u: torch.Tensor) -> torch.Tensor:
        """``vec(g)``: each slot's choice block times its gate's "on" entry: (..., D) -> (..., L * C)."""
        g = u[..., self.layer_index] * u[..., self.on_index].unsqueeze(-1)  # (..., L, C)
        return g.flatten(-2)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        if not self.structured:
            return u
        return u @ self.p_u + self.gated(u) @ self.p_g  # (..., F)
