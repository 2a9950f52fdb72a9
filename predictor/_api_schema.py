"""Request and response bodies of the suggestion API (predictor/api.py), as pydantic models.

A task is named, given as inline samples (64 features in [0, 1]) or as a table of any width
(``columns``/``rows``/``label``; a CSV upload is the same table as ``text/csv``, predictor/api.py).
Validation is strict on purpose: features are finite numbers inside the suite's feature range
[0, 1] (no NaN/Infinity, which Python's JSON parser would otherwise accept, no 3e38, no strings,
no booleans), labels and choice indices are integers inside hard bounds (1.0, true and 2**63
are refused), unknown fields are refused (a typo such as ``k_max_iter`` must not be silently
ignored), and ``task`` excludes ``x``/``y`` in the OpenAPI schema too (``oneOf``), so a
schema-driven client or fuzzer sees the same rule the server applies. Checks that depend on the
loaded predictor (feature count, label below its ``max_classes``, architecture length and choice
ranges, server limits) happen in the endpoint and raise ValueError naming the field; both end as
a 4xx whose detail names the offending row and column.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nasdb.errors import ArgumentError

#: Hard caps, independent of the server's (smaller, configurable) limits.
HARD_MAX_SAMPLES = 100_000
HARD_MAX_ARCHITECTURES = 10_000
HARD_MAX_ITERS = 100_000
#: Labels and choice indices above these are refused by the schema (the predictor's own bounds
#: are smaller: its max_classes, the search space's choice counts).
HARD_MAX_CLASSES = 100
HARD_MAX_CHOICES = 1_000
#: The suite's feature space: 64 values in [0, 1] (nasdb/tasks.py refuses the rest on `tasks add`).
FEATURE_MIN, FEATURE_MAX = 0.0, 1.0

Feature = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=FEATURE_MIN, le=FEATURE_MAX)]
Label = Annotated[int, Field(strict=True, ge=0, lt=HARD_MAX_CLASSES)]
Choice = Annotated[int, Field(strict=True, ge=0, lt=HARD_MAX_CHOICES)]
TaskName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: The columns of a sent table: its features and its label (nasdb/tabular.py MAX_FEATURES + 1).
HARD_MAX_COLUMNS = 2_001
#: One value of a sent table: a number, a boolean, text or null (missing).
Cell = Annotated[bool | int | float | str | None, Field(union_mode="smart")]
ColumnName = Annotated[str, Field(min_length=1, max_length=256)]

#: ``task`` XOR (``x`` and ``y``) XOR (``columns``, ``rows`` and ``label``), as JSON Schema: exactly what
#: ``TaskInput._one_source`` enforces (a null counts as absent), so the published schema admits no body the
#: server refuses for it.
_NO_TABLE = {"columns": {"type": "null"}, "rows": {"type": "null"}, "label": {"type": "null"}}
_ONE_SOURCE = [
    {"title": "by task name", "required": ["task"],
     "properties": {"task": {"type": "string"}, "x": {"type": "null"}, "y": {"type": "null"}, **_NO_TABLE}},
    {"title": "by inline samples", "required": ["x", "y"],
     "properties": {"task": {"type": "null"}, "x": {"type": "array"}, "y": {"type": "array"}, **_NO_TABLE}},
    {"title": "by a table", "required": ["columns", "rows", "label"],
     "properties": {"task": {"type": "null"}, "x": {"type": "null"}, "y": {"type": "null"},
                    "columns": {"type": "array"}, "rows": {"type": "array"}, "label": {"type": "string"}}},
]


class TaskInput(_Strict):
    """A task: ``task`` (a name the store knows), inline samples ``x`` with labels ``y``, or a table
    (``columns``, ``rows``, ``label``: any width, preprocessed as ``nasdb tasks add`` does)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": _ONE_SOURCE})

    task: TaskName | None = Field(None, description="Name of a built-in or registered task of the store.")
    x: list[list[Feature]] | None = Field(
        None, min_length=1, max_length=HARD_MAX_SAMPLES,
        description="Task samples, one row of `feature_dim` (64) finite numbers in [0, 1] per sample.")
    y: list[Label] | None = Field(
        None, max_length=HARD_MAX_SAMPLES, description="Integer class labels in [0, max_classes), one per row of x.")
    columns: list[ColumnName] | None = Field(
        None, min_length=2, max_length=HARD_MAX_COLUMNS,
        description="A table's column names, the label column among them (a table of any width; needs a predictor "
                    "fitted with the 'cells' meta encoder unless it has 64 numeric columns in [0, 1]).")
    rows: list[list[Cell]] | None = Field(
        None, min_length=1, max_length=HARD_MAX_SAMPLES,
        description="The table's rows, one value per column: numbers, booleans, text, or null for missing.")
    label: ColumnName | None = Field(None, description="The label column of the table (2 to 100 classes).")

    @model_validator(mode="after")
    def _one_source(self) -> "TaskInput":
        inline = self.x is not None or self.y is not None
        table = self.columns is not None or self.rows is not None or self.label is not None
        if table:
            if self.task is not None or inline:
                raise ArgumentError("give one of `task`, inline samples `x` and `y`, or a table "
                                    "(`columns`, `rows`, `label`), not several")
            missing = [k for k in ("columns", "rows", "label") if getattr(self, k) is None]
            if missing:
                raise ArgumentError(f"`{missing[0]}` is missing: a table needs `columns`, `rows` and `label`")
            if self.label not in self.columns:
                raise ArgumentError(f"label: column {self.label!r} is not among `columns`")
            return self
        if self.task is not None and inline:
            raise ArgumentError("give either `task` or inline samples `x` and `y`, not both")
        if self.task is None:
            if self.x is None or self.y is None:
                missing = "x" if self.x is None else "y"
                raise ArgumentError(f"`{missing}` is missing: give a `task` name, both `x` and `y`, or a table")
            if len(self.y) != len(self.x):
                raise ArgumentError(f"`y` has {len(self.y)} labels but `x` has {len(self.x)} rows")
        return self


class SuggestRequest(TaskInput):
    """POST /v1/suggest: Algorithm 2 for a task; optional overrides of its settings, within bounds."""

    k_max_iters: int | None = Field(None, ge=1, le=HARD_MAX_ITERS, strict=True,
                                    description="Gradient-ascent steps at most (default 1000).")
    step_size: Annotated[float, Field(strict=True, gt=0, le=100, allow_inf_nan=False)] | None = Field(
        None, description="Gradient-ascent step size eta on the per-block logits.")
    top_per_task: int | None = Field(None, ge=1, le=50, strict=True,
                                     description="Starting points per closest training task (default 5).")
    closest_tasks: int | None = Field(None, ge=1, le=50, strict=True,
                                      description="Closest training tasks to start from (default 2).")
    kappa: Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)] | None = Field(
        None, description="The pick maximizes mean - kappa * std over the candidates, std the members' spread of "
                          "its gap to the portfolio pick (default 2; 0: the mean).")

    def overrides(self) -> dict[str, Any]:
        keys = ("k_max_iters", "step_size", "top_per_task", "closest_tasks", "kappa")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class PredictRequest(TaskInput):
    """POST /v1/predict: predictor scores of discrete architectures on a task."""

    architectures: list[list[Choice]] = Field(
        ..., min_length=1, max_length=HARD_MAX_ARCHITECTURES,
        description="Architectures as choice-index vectors, one index per dimension of the search space.")


class CandidateOut(BaseModel):
    architecture: list[int]
    description: dict[str, str]
    score: float = Field(description="The ensemble's mean score of the discrete architecture (one-hot).")
    continuous_score: float = Field(description="Predictor score of the relaxed encoding the ascent reached.")
    start_task: str | None
    start_architecture: list[int]
    start_score: float
    std: float | None = Field(None, description="The ensemble members' spread of `score` (null: one predictor).")
    lcb: float = Field(description="score - kappa * (members' spread of its gap to the portfolio pick): "
                                   "the ranking key.")
    source: str = Field(description="'ascent' (Algorithm 2), 'start' (a starting point) or 'portfolio'.")


class NearestTask(BaseModel):
    task: str
    distance: float


class SuggestResponse(BaseModel):
    predictor_id: str
    task: str | None = Field(None, description="The task name, when the request named one.")
    architecture: list[int]
    description: dict[str, str]
    score: float
    continuous_score: float
    encoding: list[float]
    candidates: list[CandidateOut]
    nearest_tasks: list[NearestTask]
    far_from_training: bool | None
    far_threshold: float | None
    iterations: int
    converged: bool
    seconds: float
    config: dict[str, Any]
    std: float | None = Field(None, description="The ensemble members' spread of `score` (null: one predictor).")
    lcb: float | None = Field(None, description="score - kappa * (members' spread of its gap to the portfolio pick): "
                                                "what the pick maximized.")
    pick_source: str = Field(description="Where the pick came from: 'ascent', 'start' or 'portfolio'.")
    portfolio: list[int] | None = Field(None, description="The portfolio pick, the floor of the suggestion.")


class PredictResponse(BaseModel):
    predictor_id: str
    task: str | None = None
    scores: list[float] = Field(description="The ensemble's mean score of each architecture.")
    stds: list[float] | None = Field(None, description="The members' spread of each score (null: one predictor).")
    ranking: list[int] = Field(description="Indices into `architectures`, best predicted first.")


class HealthResponse(BaseModel):
    status: str
    predictor_id: str | None
    replica: str | None = Field(None, description="Id of the Serve replica that answered.")


class ModelResponse(BaseModel):
    predictor_id: str
    created_at: str | None
    loss: str | None
    use_meta_features: bool
    tasks: list[str]
    space_id: str
    metrics: dict[str, Any]
    data_snapshot: dict[str, Any] = Field(default_factory=dict,
                                          description="Rows per training task the fit saw (ok, failed, skipped).")
    alias: str | None = Field(None, description="The alias served (e.g. 'champion'), when following one.")
    following: str = Field(description="'alias' (swaps when the alias is promoted), 'latest' (picks up newly "
                                       "fitted predictors) or 'pinned'.")
    refresh_seconds: float
    suggest_defaults: dict[str, Any]
    limits: dict[str, int | float]


class ErrorResponse(BaseModel):
    detail: str = Field(description="One line naming the offending field and what is wrong.")
    errors: list[dict[str, Any]] | None = None
