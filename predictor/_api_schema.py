"""Request and response bodies of the suggestion API (predictor/serve.py), as pydantic models.

Validation is strict on purpose: features are finite numbers (no NaN/Infinity, which
Python's JSON parser would otherwise accept, no strings, no booleans), labels and choice
indices are integers (1.0 and true are refused), unknown fields are refused (a typo such as
``k_max_iter`` must not be silently ignored). Checks that depend on the loaded predictor
(feature count, label range, architecture length and choice ranges, server limits) happen
in the endpoint and raise ValueError naming the field; both end as a 4xx.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

#: Hard caps, independent of the server's (smaller, configurable) limits.
HARD_MAX_SAMPLES = 100_000
HARD_MAX_ARCHITECTURES = 10_000
HARD_MAX_ITERS = 100_000

Feature = Annotated[float, Field(strict=True, allow_inf_nan=False)]
TaskName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskInput(_Strict):
    """A task: either ``task`` (a name the store knows) or inline samples ``x`` with labels ``y``."""

    task: TaskName | None = Field(None, description="Name of a built-in or registered task of the store.")
    x: list[list[Feature]] | None = Field(
        None, max_length=HARD_MAX_SAMPLES,
        description="Task samples, one row of `feature_dim` (64) finite numbers per sample.")
    y: list[StrictInt] | None = Field(
        None, max_length=HARD_MAX_SAMPLES, description="Integer class labels in [0, max_classes), one per row of x.")

    @model_validator(mode="after")
    def _one_source(self) -> "TaskInput":
        inline = self.x is not None or self.y is not None
        if self.task is not None and inline:
            raise ValueError("give either `task` or inline samples `x` and `y`, not both")
        if self.task is None:
            if self.x is None or self.y is None:
                missing = "x" if self.x is None else "y"
                raise ValueError(f"`{missing}` is missing: give a `task` name or both `x` and `y`")
            if len(self.x) == 0:
                raise ValueError("`x` is empty: at least one sample is needed")
            if len(self.y) != len(self.x):
                raise ValueError(f"`y` has {len(self.y)} labels but `x` has {len(self.x)} rows")
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

    def overrides(self) -> dict[str, Any]:
        keys = ("k_max_iters", "step_size", "top_per_task", "closest_tasks")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class PredictRequest(TaskInput):
    """POST /v1/predict: predictor scores of discrete architectures on a task."""

    architectures: list[list[StrictInt]] = Field(
        ..., min_length=1, max_length=HARD_MAX_ARCHITECTURES,
        description="Architectures as choice-index vectors, one index per dimension of the search space.")


class CandidateOut(BaseModel):
    architecture: list[int]
    description: dict[str, str]
    score: float = Field(description="Predictor score of the discrete architecture (one-hot).")
    continuous_score: float = Field(description="Predictor score of the relaxed encoding the ascent reached.")
    start_task: str | None
    start_architecture: list[int]
    start_score: float


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


class PredictResponse(BaseModel):
    predictor_id: str
    task: str | None = None
    scores: list[float]
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
    following: str = Field(description="'latest' (picks up newly fitted predictors) or 'pinned'.")
    refresh_seconds: float
    suggest_defaults: dict[str, Any]
    limits: dict[str, int]


class ErrorResponse(BaseModel):
    detail: str = Field(description="One line naming the offending field and what is wrong.")
    errors: list[dict[str, Any]] | None = None
