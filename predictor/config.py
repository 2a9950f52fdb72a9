"""The predictor's configuration: network shape, loss, optimizer and Algorithm 1's loop sizes
(``PredictorConfig``), and Algorithm 2's settings (``SuggestConfig``).

Defaults follow task-aware-performance-prediction.md Sec. 5.1 (phi 50-50, rho 50-10, gating,
kOuterIters=1, kInnerIters=2) and ranking-architectures-meta-learning.md Sec. 4 (margin 0.3,
uncertainty gap 0.01). Three deliberate departures:

- ``aggregate="mean"``: the paper sums phi over the samples. A sum grows with the number of
  samples, so z computed on a training batch of 256 samples and z computed on a whole task at
  inference would live on different scales; the mean is the same DeepSets function up to a
  constant per batch size and does not depend on it. ``"sum"`` is kept for fidelity.
- ``optimizer="adam"`` with ``learning_rate=1e-3``: the paper's SGD (momentum 0.5, lr 1e-4)
  needs far more steps than a 2-core machine affords; ``PredictorConfig.paper()`` gives the
  paper's exact setting.
- ``uncertainty_gap="validation"``: the paper set its gap to 0.01 as "roughly the noise level of
  measurements in our database" (App. A.3); here each task's gap is that noise level measured
  for the task, the standard error of an accuracy on its validation split, at least 0.01. A
  table with 120 validation rows measures accuracy to about +-0.04, and pairs closer than that
  are noise to a ranking loss. A number is used for every task as the paper did.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any

from nasdb.checks import positive_float, positive_int
from nasdb.errors import ArgumentError, ConfigError
from nasdb.settings import from_settings

AGGREGATES = ("sum", "mean")
LOSSES = ("l2", "linear", "quadratic")
#: Whether rho reads the landmarking descriptors (predictor/landmarks.py): ``auto`` with the
#: ``cells`` meta encoder (tables: z reads each feature's label-conditional statistics, not how
#: features act together, which the cheap learners measure), not with ``samples`` (the paper's
#: phi over whole rows of the 8x8 digits). Measured both ways on both suites (README,
#: "Landmarking descriptors in the predictor").
LANDMARK_MODES = ("auto", "on", "off")
#: ``landmark_noise`` spelled as a rule rather than a number: Silverman's bandwidth (below).
LANDMARK_NOISE_RULES = ("silverman",)
#: ``uncertainty_gap`` spelled as a rule rather than a number: each task's measurement noise (predictor/data.py).
UNCERTAINTY_GAP_RULES = ("validation",)
META_ENCODERS = ("samples", "cells")
OPTIMIZERS = ("sgd", "adam")
#: What the predictor fits per task (predictor/data.py): "auto" is "rank" for imported benchmarks, else "raw".
TARGETS = ("auto", "raw", "rank")
#: The ranking paper's uncertainty gap (Sec. 4, App. A.3), and the floor of the "validation" rule.
PAPER_GAP = 0.01
#: The paper's optimizer setting (Sec. 5.1): SGD with momentum 0.5, learning rate 1e-4.
PAPER_SGD = {"optimizer": "sgd", "learning_rate": 1e-4, "momentum": 0.5}


def _layer_sizes(name: str, value: Any) -> tuple[int, ...]:
    try:
        sizes = tuple(value)
    except TypeError:
        raise ArgumentError(f"`{name}` must be a sequence of layer widths, but got {name}={value!r}.") from None
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in sizes):
        raise ArgumentError(f"`{name}` must be a non-empty sequence of positive ints, but got {name}={value!r}.")
    return sizes


def _value_or_rule(value: Any, rules: tuple[str, ...]) -> bool:
    """Whether ``value`` is a finite number >= 0 or the name of one of ``rules``."""
    if isinstance(value, str):
        return value in rules
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")


@dataclass(frozen=True)
class PredictorConfig:
    """Everything that defines a predictor and how Algorithm 1 fits it; stored with each checkpoint."""

    # -- network (Sec. 3.1, 5.1) ----------------------------------------------------------
    phi_hidden: tuple[int, ...] = (50, 50)
    rho_hidden: tuple[int, ...] = (50, 10)
    aggregate: str = "mean"
    use_meta_features: bool = True
    gating: bool = True
    feature_dim: int = 64  # nasdb.tasks.FEATURE_DIM: the suite's common feature space
    max_classes: int = 10  # labels are one-hot padded to this width before phi
    meta_encoder: str = "samples"  # phi over whole rows (the paper's) or over (value, label) cells (any width)
    landmarks: str = "auto"  # with meta-features, rho also reads the task's landmarking descriptors (LANDMARK_MODES)
    # std of the Gaussian noise added to the standardized descriptors while training (per member and
    # step), or "silverman": the kernel bandwidth for the training tasks (predictor/landmarks.py);
    # 0 by default: silverman cost 0.012 LOTO Spearman on the tabular suite (README)
    landmark_noise: float | str = 0.0
    architecture_features: bool = True  # u plus its structured features (predictor/features.py)
    dropout: float = 0.0  # after rho's hidden activations, while training
    # -- deep ensemble (issue 16): K members, own initialization and mini-batches ---------
    ensemble_size: int = 5
    # -- loss (ranking paper Sec. 3) ------------------------------------------------------
    loss: str = "linear"  # the best of the three on the 16-task LOTO store (README, issue 16)
    margin: float = 0.3
    # the paper's 0.01 is "roughly the noise level of measurements in our database"; "validation" measures it per
    # task from its validation split, at least 0.01 (predictor/data.py uncertainty_gap; README, issue 17)
    uncertainty_gap: float | str = "validation"
    # -- optimizer ------------------------------------------------------------------------
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.5  # SGD only
    weight_decay: float = 0.0
    # -- Algorithm 1 ----------------------------------------------------------------------
    k_outer_iters: int = 1
    k_inner_iters: int = 2
    batch_size: int = 32  # experiments per mini-batch, all from one task
    sample_batch_size: int = 256  # task samples per "large batch" fed to phi
    task_sample_budget: int = 4096  # rows of a task's train split read (a seeded subset above it; predictor/data.py)
    num_steps: int = 3000  # optimizer steps per worker
    seed: int = 0
    # -- training data (predictor/data.py) ------------------------------------------------
    target: str = "auto"  # fitted per task: raw accuracy, its within-task quantile rank, or auto (TARGETS)
    include_stopped: bool = False  # also train on children stopped early (their accuracy is partial)

    def __post_init__(self) -> None:
        object.__setattr__(self, "phi_hidden", _layer_sizes("phi_hidden", self.phi_hidden))
        object.__setattr__(self, "rho_hidden", _layer_sizes("rho_hidden", self.rho_hidden))
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"`aggregate` must be one of {AGGREGATES}, but got aggregate={self.aggregate!r}.")
        if self.loss not in LOSSES:
            raise ConfigError(f"`loss` must be one of {LOSSES}, but got loss={self.loss!r}.")
        if self.meta_encoder not in META_ENCODERS:
            raise ConfigError(f"`meta_encoder` must be one of {META_ENCODERS}, "
                              f"but got meta_encoder={self.meta_encoder!r}.")
        if isinstance(self.ensemble_size, bool) or not isinstance(self.ensemble_size, int) or self.ensemble_size < 1:
            raise ConfigError(f"`ensemble_size >= 1` must hold, but got ensemble_size={self.ensemble_size!r}.")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"`0 <= dropout < 1` must hold, but got dropout={self.dropout!r}.")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"`optimizer` must be one of {OPTIMIZERS}, but got optimizer={self.optimizer!r}.")
        for name in ("feature_dim", "k_outer_iters", "k_inner_iters", "batch_size",
                     "sample_batch_size", "num_steps", "task_sample_budget"):
            positive_int(name, getattr(self, name), error=ConfigError)
        positive_int("max_classes", self.max_classes, error=ConfigError)
        if self.max_classes < 2:
            raise ConfigError(f"`max_classes >= 2` must hold, but got max_classes={self.max_classes}.")
        if self.batch_size < 2:
            raise ConfigError(f"`batch_size >= 2` must hold (a mini-batch needs pairs), but got {self.batch_size}.")
        if not self.margin > 0:
            raise ConfigError(f"`margin > 0` must hold, but got margin={self.margin!r}.")
        if not _value_or_rule(self.uncertainty_gap, UNCERTAINTY_GAP_RULES):
            raise ConfigError(f"`uncertainty_gap` must be a number >= 0 or one of {UNCERTAINTY_GAP_RULES}, "
                              f"but got uncertainty_gap={self.uncertainty_gap!r}.")
        if not self.learning_rate > 0:
            raise ConfigError(f"`learning_rate > 0` must hold, but got learning_rate={self.learning_rate!r}.")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"`0 <= momentum < 1` must hold, but got momentum={self.momentum!r}.")
        if not self.weight_decay >= 0:
            raise ConfigError(f"`weight_decay >= 0` must hold, but got weight_decay={self.weight_decay!r}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"`seed` must be a non-negative integer, but got seed={self.seed!r}.")
        if self.target not in TARGETS:
            raise ConfigError(f"`target` must be one of {TARGETS}, but got target={self.target!r}.")
        if isinstance(self.landmarks, bool):  # PredictorConfig(landmarks=False) reads as asked
            object.__setattr__(self, "landmarks", "on" if self.landmarks else "off")
        if self.landmarks not in LANDMARK_MODES:
            raise ConfigError(f"`landmarks` must be one of {LANDMARK_MODES}, but got landmarks={self.landmarks!r}.")
        if not _value_or_rule(self.landmark_noise, LANDMARK_NOISE_RULES):
            raise ConfigError(f"`landmark_noise` must be a std >= 0 or one of {LANDMARK_NOISE_RULES}, "
                              f"but got landmark_noise={self.landmark_noise!r}.")
        if not isinstance(self.include_stopped, bool):
            raise ConfigError(f"`include_stopped` must be a bool, but got include_stopped={self.include_stopped!r}.")

    @property
    def uses_landmarks(self) -> bool:
        """Whether rho reads the landmarking descriptors (``landmarks``, resolved for the encoder)."""
        return self.use_meta_features and (self.landmarks == "on" or
                                           (self.landmarks == "auto" and self.meta_encoder == "cells"))

    # -- named constructors ---------------------------------------------------------------
    @classmethod
    def paper(cls, **overrides: Any) -> "PredictorConfig":
        """The papers' exact setting (Sec. 5.1): summed meta-features, SGD momentum 0.5, lr 1e-4, gap 0.01."""
        return cls(**{"aggregate": "sum", "uncertainty_gap": PAPER_GAP, **PAPER_SGD, **overrides})

    # -- description and serialization ------------------------------------------------------
    @classmethod
    def legacy(cls, d: dict[str, Any]) -> "PredictorConfig":
        """The config of a single-predictor checkpoint (format 1, before the ensemble): its fields
        as stored, and the network it was: one member, ``u`` alone, the paper's phi over rows."""
        return cls.from_dict({"ensemble_size": 1, "architecture_features": False, "meta_encoder": "samples",
                              "dropout": 0.0, "landmarks": "off", **d})

    @classmethod
    def stored(cls, d: dict[str, Any], format_version: int = 2) -> "PredictorConfig":
        """The config stored with a checkpoint: format 1 through ``legacy``; a format-2 config
        stored before ``landmarks`` existed describes a predictor without them."""
        return cls.legacy(d) if format_version < 2 else cls.from_dict({"landmarks": "off", **d})

    def describe(self) -> dict[str, Any]:
        """Name and arguments, stored with every checkpoint (STYLE.md: components describe themselves)."""
        return {"name": f"task-aware-predictor/{self.loss}", "args": self.to_dict()}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["phi_hidden"] = list(self.phi_hidden)
        d["rho_hidden"] = list(self.rho_hidden)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PredictorConfig":
        return from_settings(cls, d, "predictor config keys")

    @classmethod
    def from_json(cls, text: str) -> "PredictorConfig":
        return cls.from_dict(cls.parse_json(text))

    @staticmethod
    def parse_json(text: str) -> dict[str, Any]:
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"predictor config JSON is malformed: {e}") from None

    def replace(self, **changes: Any) -> "PredictorConfig":
        return replace(self, **changes)


@dataclass(frozen=True)
class SuggestConfig:
    """Algorithm 2's settings. Defaults: the paper's (Sec. 5.3) where it gives them.

    - ``top_per_task`` x ``closest_tasks`` starting points (5 x 2 = kNumStartingPoints 10);
      fewer when the closest tasks hold fewer distinct architectures, then the next-closest
      tasks fill in.
    - ``k_max_iters`` (1000) gradient-ascent steps at most, step size ``step_size`` (eta; the
      paper gives none) on per-block logits; stop early once no entry of u moved more than
      ``tolerance`` over ``check_every`` steps.
    - ``start_smoothing``: a start is ``log((1 - s) onehot + s / size)``, so its softmax is off
      the saturated vertex (a vertex has zero gradient) yet argmaxes to the start.
    - ``kappa``: the pick maximizes a lower confidence bound over every candidate (the ascent's
      results, its starting points and the portfolio pick, the best stored architecture a user
      would try without a predictor): ``mean - kappa * std`` of the ensemble's scores, std taken
      over the members' gaps to the portfolio pick (``SuggestionEngine._floor_bounds``), so
      another candidate displaces the portfolio pick only when the members agree it is better
      (issue 16's floor). The default 2 was chosen by leave-one-task-out zero-shot runs among
      0, 0.5, 1 and 2 (README, "zero-shot pick"): the best median percentile on the suite and
      the most datasets at least as good as the portfolio on NAS-Bench-201. 0 ranks by the mean;
      a single-member predictor has no spread and ranks by its score.
    - ``far_factor``: the task is flagged far from the training tasks when its distance to the
      nearest one exceeds ``far_factor`` x the largest nearest-neighbour distance among the
      training tasks themselves (a task farther out than any training task is from its own
      nearest neighbour, with margin).
    """

    top_per_task: int = 5
    closest_tasks: int = 2
    k_max_iters: int = 1000
    step_size: float = 1.0
    tolerance: float = 1e-4
    check_every: int = 50
    start_smoothing: float = 0.5
    far_factor: float = 2.0
    kappa: float = 2.0

    def __post_init__(self) -> None:
        for name in ("top_per_task", "closest_tasks", "k_max_iters", "check_every"):
            positive_int(name, getattr(self, name), error=ConfigError)
            object.__setattr__(self, name, int(getattr(self, name)))
        positive_float("step_size", self.step_size, error=ConfigError)
        positive_float("tolerance", self.tolerance, allow_zero=True, error=ConfigError)
        positive_float("far_factor", self.far_factor, error=ConfigError)
        positive_float("kappa", self.kappa, allow_zero=True, error=ConfigError)
        if isinstance(self.start_smoothing, bool) or not isinstance(self.start_smoothing, (int, float)) \
                or not 0 < self.start_smoothing < 1:
            raise ConfigError(f"`0 < start_smoothing < 1` must hold, but got start_smoothing={self.start_smoothing!r}.")

    @property
    def k_num_starting_points(self) -> int:
        return self.top_per_task * self.closest_tasks

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SuggestConfig":
        return from_settings(cls, d, "suggest config keys")

    def replace(self, **changes: Any) -> "SuggestConfig":
        return replace(self, **changes)
