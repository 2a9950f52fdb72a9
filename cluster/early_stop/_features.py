"""Features of the sequential regression models (accelerating-nas-performance-prediction-baker.md Sec. 2).

A model's feature vector for ``tau`` observed epochs is its time series (TS: y_1..y_tau, the
first differences y'_t = y_t - y_{t-1} and the second differences y''_t = y'_t - y'_{t-1}),
its architecture parameters (AP: parameter count, enabled layers, widths, embedding) and the
training hyperparameters (HP: learning rate, batch size, epochs). AP and HP do not change
during training, so trainers compute them once per model with :func:`model_features`.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from nasdb.errors import ArgumentError
from nasdb.space import SearchSpace, parse_layer_choice

#: Architecture features of a space with ``layer<j>`` / ``enable<j>`` dimensions (the default space).
LAYERED_ARCH_FEATURES = ("log10_params", "enabled_layers", "log2_mean_width", "log2_max_width",
                         "log2_total_width", "tanh_fraction", "embedding_index")
#: Training hyperparameters used as features, in this order, from a recipe dict.
HPARAM_KEYS = ("learning_rate", "batch_size", "epochs")
HPARAM_FEATURES = ("log10_learning_rate", "log2_batch_size", "epochs")

_LAYER_RE = re.compile(r"^layer(\d+)$")


def _layer_dims(space: SearchSpace) -> list[tuple[int, int]] | None:
    """(layer dim index, enable dim index) pairs, or None when the space is not layered."""
    names = [d.name for d in space.dimensions]
    pairs = []
    for i, name in enumerate(names):
        m = _LAYER_RE.match(name)
        if m:
            gate = f"enable{m.group(1)}"
            if gate not in names:
                return None
            pairs.append((i, names.index(gate)))
    return pairs or None


def architecture_feature_names(space: SearchSpace) -> tuple[str, ...]:
    """Names of :func:`architecture_features` columns for ``space``."""
    if _layer_dims(space) is None:
        return ("log10_params",) + tuple(f"choice_{d.name}" for d in space.dimensions)
    return LAYERED_ARCH_FEATURES


def architecture_features(space: SearchSpace, architectures: Any, num_params: Any) -> np.ndarray:
    """AP features, shape ``(N, F)``: log10 parameter count, enabled layers, width statistics of the
    enabled layers, fraction of tanh layers and the embedding choice index.

    A space without ``layer<j>``/``enable<j>`` dimensions gets log10 parameters plus the raw
    choice indices instead.
    """
    archs = np.asarray(architectures)
    if archs.ndim != 2 or archs.shape[1] != space.num_dimensions:
        raise ArgumentError(f"architectures must have shape (N, {space.num_dimensions}), got {archs.shape}")
    params = np.asarray(num_params, dtype=np.float64).reshape(-1)  # (N,)
    if params.shape[0] != archs.shape[0]:
        raise ArgumentError(f"num_params has {params.shape[0]} entries for {archs.shape[0]} architectures")
    if not np.all(np.isfinite(params)) or np.any(params < 1):
        bad = params[~(np.isfinite(params) & (params >= 1))][0]
        raise ArgumentError(f"num_params must be finite and >= 1, got {bad!r}")
    archs = np.stack([space.validate(a) for a in archs]) if len(archs) else archs.astype(np.int64)
    log_params = np.log10(params)[:, None]  # (N, 1)
    pairs = _layer_dims(space)
    if pairs is None:
        return np.concatenate([log_params, archs.astype(np.float64)], axis=1)  # (N, 1 + D)

    n = archs.shape[0]
    widths = np.zeros((n, len(pairs)))  # (N, L) width of each layer, 0 when disabled
    tanh = np.zeros((n, len(pairs)))  # (N, L)
    for j, (layer, gate) in enumerate(pairs):
        parsed = [parse_layer_choice(c) for c in space.dimensions[layer].choices]
        width_of = np.array([w for _, w in parsed], dtype=np.float64)
        tanh_of = np.array([act == "tanh" for act, _ in parsed], dtype=np.float64)
        gate_choices = space.dimensions[gate].choices
        enabled = archs[:, gate] == gate_choices.index("on") if "on" in gate_choices else archs[:, gate] > 0
        widths[:, j] = np.where(enabled, width_of[archs[:, layer]], 0.0)
        tanh[:, j] = np.where(enabled, tanh_of[archs[:, layer]], 0.0)
    count = (widths > 0).sum(axis=1).astype(np.float64)  # (N,)
    total = widths.sum(axis=1)  # (N,)
    mean = np.divide(total, count, out=np.zeros(n), where=count > 0)
    tanh_fraction = np.divide(tanh.sum(axis=1), count, out=np.zeros(n), where=count > 0)
    names = [d.name for d in space.dimensions]
    embedding = archs[:, names.index("embedding")].astype(np.float64) if "embedding" in names else np.zeros(n)
    cols = [log_params[:, 0], count, np.log2(1 + mean), np.log2(1 + widths.max(axis=1, initial=0.0)),
            np.log2(1 + total), tanh_fraction, embedding]
    return np.stack(cols, axis=1)  # (N, 7)


def _recipe_dict(recipe: Any) -> Mapping[str, Any]:
    if isinstance(recipe, Mapping):
        return recipe
    if hasattr(recipe, "to_dict"):
        return recipe.to_dict()
    raise ArgumentError(f"a training recipe must be a dict or have to_dict(), got {type(recipe).__name__}")


def hparam_features(recipes: Any, n: int | None = None) -> np.ndarray:
    """HP features, shape ``(N, 3)``: log10 learning rate, log2 batch size, epochs.

    ``recipes`` is one recipe (dict or ``TrainRecipe``) shared by ``n`` models, or a sequence of them.
    """
    single = isinstance(recipes, Mapping) or hasattr(recipes, "to_dict")
    items: Sequence[Any] = [recipes] if single else list(recipes)
    rows = []
    for r in items:
        d = _recipe_dict(r)
        values = []
        for key in HPARAM_KEYS:
            if key not in d:
                raise ArgumentError(f"training recipe lacks {key!r} (needed as a feature): {dict(d)!r}")
            v = float(d[key])
            if not math.isfinite(v) or v <= 0:
                raise ArgumentError(f"recipe {key} must be finite and > 0, got {d[key]!r}")
            values.append(v)
        lr, bs, epochs = values
        rows.append([math.log10(lr), math.log2(bs), epochs])
    out = np.asarray(rows, dtype=np.float64).reshape(-1, len(HPARAM_KEYS))  # (len(items), 3)
    if n is not None:
        if single:
            out = np.repeat(out, n, axis=0)
        elif out.shape[0] != n:
            raise ArgumentError(f"got {out.shape[0]} recipes for {n} models")
    return out


def model_features(space: SearchSpace, architectures: Any, num_params: Any, recipe: Any) -> np.ndarray:
    """The static (AP + HP) features of ``N`` models, shape ``(N, F + 3)``: what trainers pass as
    ``features`` to an early stopper, once per model."""
    arch = architecture_features(space, architectures, num_params)  # (N, F)
    return np.concatenate([arch, hparam_features(recipe, arch.shape[0])], axis=1)


def model_feature_names(space: SearchSpace) -> tuple[str, ...]:
    return architecture_feature_names(space) + HPARAM_FEATURES


#: Columns of :func:`trend_features`.
TREND_FEATURES = ("best_so_far", "mean_last3", "gain_so_far", "slope_last3", "log_fit_at_T", "log_fit_slope",
                  "inverse_fit_at_T", "inverse_fit_slope", "log_error")


def _fit_at(y: np.ndarray, g: np.ndarray, g_end: float) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares ``y ~ a + b g`` per row of ``y (N, tau)``: the fit's value at ``g_end`` and ``b``."""
    x = np.stack([np.ones_like(g), g], axis=1)  # (tau, 2)
    coef, *_ = np.linalg.lstsq(x, y.T, rcond=None)  # (2, N)
    return coef[0] + coef[1] * g_end, coef[1]


def trend_features(curves: Any, num_epochs: int) -> np.ndarray:
    """Summaries of a partial curve ``(N, tau)`` that say where it is heading, shape ``(N, 9)``
    (:data:`TREND_FEATURES`): best value so far, mean of the last 3 epochs, gain since epoch 1,
    the slope of the last 3 epochs, two parametric extrapolations to epoch ``T = num_epochs``
    (least squares of y ~ a + b log t and of y ~ a + b / t over the observed epochs, the saturating
    shapes of Domhan et al.'s curve models that Baker et al. Sec. 5 compare against) with their
    slopes, and log(1 - y_tau) (room left below 100 %). Early in the curve, while accuracies still
    rise steeply, the raw values alone say little about the final one; these say how fast and how
    far it is going (issue 19)."""
    y = np.asarray(curves, dtype=np.float64)
    n, tau = y.shape
    t = np.arange(1, tau + 1, dtype=np.float64)
    zeros = np.zeros(n)
    if tau >= 2:
        log_end, log_slope = _fit_at(y, np.log(t), math.log(num_epochs))
        inv_end, inv_slope = _fit_at(y, 1.0 / t, 1.0 / num_epochs)
        k = min(3, tau)
        _, slope3 = _fit_at(y[:, -k:], t[-k:] - t[-k:].mean(), 0.0)
    else:
        log_end, log_slope, inv_end, inv_slope, slope3 = y[:, -1], zeros, y[:, -1], zeros, zeros
    cols = [y.max(axis=1), y[:, -min(3, tau):].mean(axis=1), y[:, -1] - y[:, 0], slope3, log_end, log_slope,
            inv_end, inv_slope, np.log(np.clip(1.0 - y[:, -1], 1e-4, None))]
    return np.stack(cols, axis=1)  # (N, 9)


def curve_features(curves: Any, arch_features: Any, hparams: Any = None, *,
                   num_epochs: int | None = None) -> np.ndarray:
    """The SRM input for ``tau`` observed epochs, shape ``(N, 3 tau - 3 + F [+ H] [+ 9])``: the curve,
    its first differences (tau - 1), its second differences (tau - 2), then the static features,
    then, with ``num_epochs`` (the full length T), the :func:`trend_features`.

    ``hparams`` may be ``None`` when ``arch_features`` already holds them (:func:`model_features`),
    a ``(H,)`` vector shared by all rows, or an ``(N, H)`` array.
    """
    y = np.asarray(curves, dtype=np.float64)
    if y.ndim != 2 or y.shape[1] < 1:
        raise ArgumentError(f"curves must have shape (N, tau) with tau >= 1, got {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ArgumentError(f"curves hold a non-finite value at (row, epoch) {tuple(np.argwhere(~np.isfinite(y))[0])}")
    static = np.asarray(arch_features, dtype=np.float64)
    if static.ndim != 2 or static.shape[0] != y.shape[0]:
        raise ArgumentError(f"features must have shape ({y.shape[0]}, F), got {static.shape}")
    parts = [y, np.diff(y, n=1, axis=1), np.diff(y, n=2, axis=1), static]  # (N, tau), (N, tau-1), (N, tau-2)
    if hparams is not None:
        hp = np.asarray(hparams, dtype=np.float64)
        hp = np.broadcast_to(hp, (y.shape[0], hp.shape[-1])) if hp.ndim == 1 else hp
        if hp.ndim != 2 or hp.shape[0] != y.shape[0]:
            raise ArgumentError(f"hparams must have shape (H,) or ({y.shape[0]}, H), got {hp.shape}")
        parts.append(hp)
    if num_epochs is not None:
        parts.append(trend_features(y, num_epochs))
    out = np.concatenate(parts, axis=1)
    if not np.all(np.isfinite(out)):
        raise ArgumentError("architecture/hyperparameter features hold a non-finite value")
    return out
