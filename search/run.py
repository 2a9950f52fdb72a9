"""Run one architecture search: ``run_search(...)`` and ``python -m search.run`` (for ``ray job submit``).

Every input is checked before any work starts (unknown agent or task, a budget <= 0, a
pre-training set that includes the target, no stored rows to pre-train T-NAML on). With the
train evaluator the search runs as a Ray actor (the agent's actor) that drives populate's
trainer actors; with the lookup evaluator it runs in-process. The default run id is a hash of
the agent's description, the evaluator, recipe and space, so rerunning the same command
resumes an interrupted search (and a finished one returns its result at once).

``early_stop`` (train evaluator only) stops children whose learning curve predicts a final
accuracy below the best so far (accelerating-nas-performance-prediction-baker.md Sec. 3): one
curve-predictor actor per run, seeded on resume from the run's own complete children; the agent
is rewarded with a stopped child's predicted final accuracy, and "best" ranks complete children
only (search/result.py). A search with early stopping is a different run (another run id).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from nasdb.checks import int_at_least
from nasdb.errors import ArgumentError, NasdbError, TaskHasNoSamplesError
from nasdb.records import search_run_ids
from search.agents import PRETRAIN_SOURCES, agent_class, create_agent
from search.evaluators import EVALUATORS, Evaluation, LookupEvaluator, child_reward
from search.result import SearchResult

if TYPE_CHECKING:
    from nasdb.store import ExperimentStore

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


@dataclass(frozen=True)
class SearchPlan:
    """A validated search run: what ``SearchDriver`` needs, picklable to a Ray actor."""

    store_root: str
    run_id: str
    task: str
    budget: int
    agent: dict[str, Any]  # describe(): {"name", "args"}
    evaluator: str
    parallel: int
    space_id: str
    recipe: dict | None  # None: lookup over the task's single stored recipe
    pretrain: dict | None = None  # T-NAML: {"source", "tasks", "budget"}
    checkpoint_every: int = 1
    verbose: bool = False
    early_stop: dict | None = None  # EarlyStopConfig settings (train evaluator), None = off
    batch_size: int = 1  # children proposed, trained on one actor and told together (1: one at a time, as before)
    start_timeout_s: float = 60.0  # trainer actors that cannot start within it fail the run (no silent hang)
    progress_s: float | None = None  # a progress line at most this often (None: only with ``verbose``)
    #: train evaluator: {"tasks": {task: data fingerprint}, "bank": embedding bank fingerprint}, part of
    #: every trial's experiment id (schema v3); None (lookup): trials take the stored rows' ids
    fingerprints: dict | None = None
    #: the predictor agent's ``surrogate(task) -> search.agents.Surrogate`` (picklable, e.g.
    #: predictor.surrogate.SurrogateFactory); not part of the description (the agent's description names its predictor)
    surrogate: Callable[[str], Any] | None = None

    def make_agent(self, space) -> Any:
        """The run's agent, built from its description (and the surrogate, for the predictor agent)."""
        surrogate = self.surrogate(self.task) if self.surrogate is not None else None
        return create_agent(self.agent["name"], space, self.agent["args"], surrogate=surrogate)

    def trial_fingerprints(self, task: str) -> dict[str, str | None]:
        """``experiment_id`` keyword arguments of a trial of ``task``: its data and bank fingerprints."""
        if self.fingerprints is None:
            return {"task_fingerprint": None, "bank_fingerprint": None}
        return {"task_fingerprint": self.fingerprints["tasks"][task], "bank_fingerprint": self.fingerprints["bank"]}

    @property
    def recipe_for_ids(self) -> dict:
        return self.recipe if self.recipe is not None else {}

    def evaluator_description(self) -> dict[str, Any]:
        args = {"parallel": self.parallel, "recipe": self.recipe}
        if self.early_stop is not None:
            args["early_stop"] = self.early_stop
        if self.batch_size != 1:
            args["batch_size"] = self.batch_size
        return {"name": self.evaluator, "args": args}

    def describe(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "task": self.task, "budget": self.budget, "agent": self.agent,
                "evaluator": self.evaluator_description(), "space_id": self.space_id, "pretrain": self.pretrain,
                "store": self.store_root}

    def pretrain_rows(self, store, space) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Stored children of the pre-training tasks (at most ``budget`` per task, a seeded sample),
        each with its reward: the validation accuracy, or for a child stopped early its predicted
        final accuracy (the reward a live search gives it; skipping stopped children would leave out
        exactly the weak ones and bias the task's reward baseline upward)."""
        out = {}
        for t in self.pretrain["tasks"]:
            rows = _space_rows(store, t, self.space_id)
            rows.sort(key=lambda r: r["experiment_id"])
            rng = np.random.default_rng([int(self.agent["args"].get("seed", 0)), len(out)])
            keep = rng.permutation(len(rows))[: self.pretrain["budget"]]
            archs = np.array([rows[i]["architecture"] for i in keep], dtype=np.int64).reshape(len(keep), -1)
            out[t] = (archs, np.array([_row_reward(rows[i]) for i in keep], dtype=np.float64))
        return out


def _offline(run_id: str, searches: set[str]) -> bool:
    """Rows of the offline phase: not written by a search run (nor its live pre-training)."""
    return run_id not in searches and run_id.removesuffix(".pretrain") not in searches


def _row_reward(row: dict) -> float:
    """A stored row's reward, as a live search gives it (``child_reward``)."""
    return child_reward(row["val_accuracy"], bool(row.get("stopped_early")), row.get("predicted_final"))


def _space_rows(store, task: str, space_id: str) -> list[dict]:
    """The task's offline rows (status ok, discrete) of ``space_id``: what T-NAML pre-trains on."""
    searches = search_run_ids(store)
    table = store.experiments_arrow(task, status="ok").select(["experiment_id", "space_id", "run_id",
                                                                "architecture", "relaxed_weights", "val_accuracy",
                                                                "stopped_early", "predicted_final"])
    return [r for r in table.to_pylist()
            if r["space_id"] == space_id and r["relaxed_weights"] is None and _offline(r["run_id"], searches)]


def _tasks_with_rows(store, space_id: str) -> dict[str, int]:
    searches = search_run_ids(store)
    table = store.experiments_arrow(None, status="ok").select(["task", "space_id", "run_id", "relaxed_weights"])
    counts: dict[str, int] = {}
    for task, sid, run, relaxed in zip(*(table.column(c).to_pylist()
                                         for c in ("task", "space_id", "run_id", "relaxed_weights"))):
        if sid == space_id and relaxed is None and _offline(run, searches):
            counts[task] = counts.get(task, 0) + 1
    return counts


def check_batch_size(batch_size: Any, budget: int) -> int:
    """A search batch: an integer from 1 to the budget (ValueError naming the value otherwise)."""
    batch_size = int_at_least("batch size", batch_size, 1)
    if batch_size > budget:
        raise ArgumentError(f"batch size {batch_size} is larger than the budget {budget}")
    return batch_size


def check_seconds(name: str, value: Any) -> float:
    """A positive, finite number of seconds (ValueError naming the value otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value <= 0:
        raise ArgumentError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def _split_tasks(tasks: Sequence[str] | str | None, what: str = "pre-training tasks") -> list[str] | None:
    """``"a,b"`` or ``["a", "b"]`` -> ``["a", "b"]``; None stays None; empty or repeated names are refused."""
    if tasks is None:
        return None
    names = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks)]
    names = [t for t in names if t]
    if not names:
        raise ArgumentError(f"the list of {what} is empty")
    if len(set(names)) != len(names):
        raise ArgumentError(f"{what} are repeated: {names}")
    return names


def _resolve_space(store, evaluator: str, task: str, space_id: str | None) -> Any:
    from nasdb.space import default_space

    if space_id is not None:
        return store.space(space_id)
    if evaluator == "lookup":
        table = store.experiments_arrow(task, status="ok").select(["space_id"])
        ids = sorted(set(table.column("space_id").to_pylist()))
        if len(ids) == 1:
            return store.space(ids[0])
        if len(ids) > 1 and default_space().space_id not in ids:
            raise ArgumentError(f"task {task!r} has rows of {len(ids)} search spaces {ids}; pass space_id")
    space = default_space()
    return space


def _check_task(store: ExperimentStore, name: str, evaluator: str) -> None:
    """UnknownTaskError for a task the store does not know; an imported benchmark task (no
    samples, nasdb.benchmarks) is searched only through its table."""
    try:
        store.task(name)
    except TaskHasNoSamplesError:
        if evaluator != "lookup":
            raise ArgumentError(f"task {name!r} is an imported tabular benchmark: there is nothing to train; "
                                f"search it with --evaluator lookup") from None


def _fingerprints(store, tasks: list[str]) -> dict:
    """The data fingerprints of the tasks a training run trains on, and the embedding bank's."""
    from cluster.child import default_bank

    return {"tasks": {t: store.task_fingerprint(t) for t in tasks}, "bank": default_bank().fingerprint()}


def plan_search(store, agent: str, task: str, budget: int, *, pretrain_tasks: Sequence[str] | str | None = None,
                pretrain_source: str = "store", pretrain_budget: int | None = None, parallel: int = 1,
                seed: int = 0, epochs: int | None = None, recipe: dict | None = None, evaluator: str = "train",
                run_id: str | None = None, agent_args: dict | None = None, space_id: str | None = None,
                checkpoint_every: int | None = None, verbose: bool = False, early_stop: Any = None,
                batch_size: int = 1, start_timeout: float = 60.0, progress_s: float | None = None,
                surrogate: Callable[[str], Any] | None = None) -> SearchPlan:
    """Check every input against the store and return the run's plan; raises before any work.

    ``store``: an ExperimentStore or its root. ``evaluator``: "train" (real children on Ray
    trainer actors, ``parallel`` in flight, rows tagged agent/run_id) or "lookup" (a tabulated
    benchmark in the store). ``early_stop`` (train evaluator): None (off), True, a dict of
    settings or a ``cluster.early_stop.EarlyStopConfig``; its ``num_epochs`` is the recipe's
    epochs. ``batch_size``: children the agent proposes at once, trained in one batched-trainer
    call on one actor (each of the ``parallel`` actors trains its own batch, none waits for
    another's) and told in one REINFORCE update (1, the default: one child at a time).
    ``surrogate`` (the predictor agent, required there): ``surrogate(task)`` -> its
    ``search.agents.Surrogate``, e.g. ``predictor.surrogate.SurrogateFactory(store_root, predictor_id)``.
    ``start_timeout``: seconds the trainer actors may wait for free resources before the run
    fails naming the shortfall. ``progress_s``: print a progress line (children done, best,
    rate, ETA) at most this often; ``verbose`` prints one line per child instead."""
    from cluster.child import TrainRecipe
    from cluster.early_stop import resolve_early_stop
    from nasdb.store import ExperimentStore

    agent_class(agent)  # ValueError listing the known agents
    budget = int_at_least("budget", budget, 1)
    parallel = int_at_least("parallel", parallel, 1)
    seed = int_at_least("seed", seed, 0)
    batch_size = check_batch_size(batch_size, budget)
    start_timeout = check_seconds("start timeout", start_timeout)
    if progress_s is not None:
        progress_s = check_seconds("progress interval", progress_s)
    if evaluator not in EVALUATORS:
        raise ArgumentError(f"unknown evaluator {evaluator!r}; known: {sorted(EVALUATORS)}")
    names = _split_tasks(pretrain_tasks)
    if agent != "tnaml" and (names is not None or pretrain_budget is not None):
        raise ArgumentError(f"pre-training tasks apply to the 'tnaml' agent only, not {agent!r}")
    if pretrain_source not in PRETRAIN_SOURCES:
        raise ArgumentError(f"pretrain source must be one of {PRETRAIN_SOURCES}, got {pretrain_source!r}")
    if epochs is not None:
        int_at_least("epochs", epochs, 1)
    store = store if isinstance(store, ExperimentStore) else ExperimentStore(store)
    _check_task(store, task, evaluator)
    if names is not None and task in names:
        raise ArgumentError(f"the pre-training tasks {names} include the target task {task!r}")
    for t in names or ():
        _check_task(store, t, evaluator)

    if evaluator == "train":
        fields = {**TrainRecipe().to_dict(), **(recipe or {})}
        if epochs is not None:
            fields["epochs"] = epochs
        recipe = TrainRecipe.from_dict(fields).to_dict()
        early_stop = resolve_early_stop(early_stop, recipe["epochs"])
    elif early_stop not in (None, False):
        raise ArgumentError(f"early stopping applies to the train evaluator only, not {evaluator!r} "
                            "(the lookup evaluator trains nothing)")
    elif epochs is not None:
        recipe = TrainRecipe.from_dict({**TrainRecipe().to_dict(), **(recipe or {}), "epochs": epochs}).to_dict()
    space = _resolve_space(store, evaluator, task, space_id)

    args = {"task": task, "seed": seed, **(agent_args or {})}
    pretrain = None
    if agent == "tnaml":
        pretrain_budget = int_at_least("pretrain budget", pretrain_budget if pretrain_budget is not None else 1000, 1)
        if pretrain_source == "store":
            have = {t: n for t, n in _tasks_with_rows(store, space.space_id).items() if t != task} \
                if store.exists() else {}
            if names is None:
                names = sorted(have)
                if not names:
                    raise ArgumentError(f"store {store.uri} has no offline children of tasks other than {task!r} "
                                        f"(space {space.space_id}) to pre-train T-NAML on; populate it first")
            empty = [t for t in names if not have.get(t)]
            if empty:
                raise ArgumentError(f"pre-training tasks {empty} have no offline children (space {space.space_id}) in "
                                    f"store {store.uri}; populate them first or use the live pretrain source")
        elif names is None:
            raise ArgumentError("live T-NAML pre-training needs explicit pre-training tasks (--pretrain-tasks)")
        args.update(pretrain_tasks=list(names), pretrain_source=pretrain_source, pretrain_budget=pretrain_budget)
        pretrain = {"source": pretrain_source, "tasks": list(names), "budget": pretrain_budget}
    # bad agent arguments, a missing surrogate or one over another space fail here
    described = create_agent(agent, space, args, surrogate=surrogate(task) if surrogate else None).describe()

    if evaluator == "lookup":  # the target (and live pre-training tasks) must be tabulated
        lookup_tasks = [task] + (list(names) if pretrain and pretrain_source == "live" else [])
        LookupEvaluator(store, space, recipe=recipe, tasks=lookup_tasks)
    if run_id is None:
        settings = {"agent": described, "evaluator": evaluator, "recipe": recipe, "space": space.space_id}
        if early_stop is not None:  # runs without early stopping keep the ids they always had
            settings["early_stop"] = early_stop.to_dict()
        if batch_size != 1:  # nor do runs of one child at a time
            settings["batch_size"] = batch_size
        key = json.dumps(settings, sort_keys=True, default=str)
        run_id = f"{agent}-{task}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
    elif not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise ArgumentError(f"run id {run_id!r} is not valid: use 1-128 letters, digits or '_.+-', starting with a "
                            f"letter or digit (it names a folder in the store)")
    every = checkpoint_every if checkpoint_every is not None else (1 if evaluator == "train" else 25)
    return SearchPlan(store.uri, run_id, task, budget, described, evaluator, parallel, space.space_id, recipe,
                      pretrain, int_at_least("checkpoint_every", every, 1), bool(verbose),
                      None if early_stop is None else early_stop.to_dict(), batch_size,
                      start_timeout_s=start_timeout, progress_s=progress_s,
                      fingerprints=_fingerprints(store, [task] + list(pretrain["tasks"] if pretrain and
                                                                       pretrain_source == "live" else []))
                      if evaluator == "train" else None, surrogate=surrogate)


def run_search(store, agent: str, task: str, budget: int, *, as_actor: bool | None = None, address: str | None = None,
               on_evaluation: Callable[[Evaluation, int], None] | None = None, **settings: Any) -> SearchResult:
    """Search ``budget`` child models of ``task`` with ``agent`` ("predictor", "random", "rl", "tnaml"); resumable.

    ``plan_search(store, agent, task, budget, **settings)`` checks the run's settings (see there:
    the evaluator, pre-training, recipe, early stopping, batch size, ...) before anything starts;
    ``execute`` runs the plan. ``as_actor`` (default: with the train evaluator) runs the loop as a
    Ray actor; Ray is started (``address``, else RAY_ADDRESS, else local) if it is not running.
    ``on_evaluation(evaluation, n)`` is called in-process only (``as_actor=False``).
    """
    plan = plan_search(store, agent, task, budget, **settings)
    return execute(plan, as_actor=as_actor, address=address, on_evaluation=on_evaluation)


def execute(plan: SearchPlan, *, as_actor: bool | None = None, address: str | None = None,
            on_evaluation: Callable[[Evaluation, int], None] | None = None) -> SearchResult:
    """Run a validated plan, in-process or as a Ray actor."""
    from search._driver import SearchDriver

    as_actor = plan.evaluator == "train" if as_actor is None else as_actor
    if as_actor and on_evaluation is not None:
        raise ArgumentError("on_evaluation callbacks run in-process only; pass as_actor=False")
    needs_ray = as_actor or plan.evaluator == "train"
    started = False
    if needs_ray:
        import ray

        if not ray.is_initialized():
            ray.init(address=address or os.environ.get("RAY_ADDRESS"), log_to_driver=True)
            started = True
    try:
        shared = None
        if plan.evaluator == "train":
            import ray

            from cluster.populate import plan_resources, wait_for_resources
            from nasdb.space import default_space
            from nasdb.store import ExperimentStore
            from search.evaluators import release_placement_groups, shared_objects

            # a resumed run first frees what a dead driver of the same run still holds (its trainers' reservation)
            release_placement_groups(plan.run_id)
            res = plan_resources(ray.cluster_resources(), plan.parallel)  # InsufficientResourcesError before any work
            # ...and a bounded wait for what is free now (a Serve replica or another job may hold CPUs)
            wait_for_resources(res, plan.start_timeout_s,
                               on_wait=(lambda text: print(f"[{plan.agent['name']} {plan.task}] {text}", flush=True))
                               if plan.verbose or plan.progress_s else None)
            store = ExperimentStore(plan.store_root)
            store.init()
            if plan.space_id == default_space().space_id:
                store.save_space(default_space())  # any other space was read from this store when planned
            tasks = [plan.task] + (list(plan.pretrain["tasks"]) if plan.pretrain and
                                   plan.pretrain["source"] == "live" else [])
            shared = shared_objects(store, tasks)
        if not as_actor:
            return SearchResult.from_dict(SearchDriver(plan, on_evaluation, shared).run())
        import ray

        actor = ray.remote(num_cpus=0, max_restarts=0)(SearchDriver).options(
            name=f"nasdb-search-{plan.run_id}").remote(plan, None, shared)
        try:
            return SearchResult.from_dict(ray.get(actor.run.remote()))
        except ray.exceptions.RayTaskError as e:  # the driver's own one-line error, not Ray's traceback
            if isinstance(e.cause, NasdbError):
                raise e.cause from None
            raise
        finally:
            ray.kill(actor)
            from search.evaluators import release_placement_groups

            release_placement_groups(plan.run_id)  # a driver that died never closed its evaluator
    finally:
        if started:
            import ray

            ray.shutdown()


if __name__ == "__main__":  # the CLI's entry point (search/cli.py)
    from search.cli import search_main

    search_main()
