"""The search loop: ask the agent, keep evaluations in flight, tell results, checkpoint, resume.

One ``SearchDriver`` runs one search run (``run_id``). It is a plain class: ``run_search``
makes it a Ray actor (the agent's actor) when children are trained, or calls it in-process
for lookup runs. State lives in the store, so a killed run resumes:

    <root>/search/<run_id>/run.json        the run: agent and evaluator descriptions, recipe, space
    <root>/search/<run_id>/checkpoint.pt   agent state (controller weights, optimizer, task
                                           embeddings, RNG), evaluations told so far, wall time
    <root>/search/<run_id>/result.json     the SearchResult, once the budget is spent
    experiments rows with run_id           the trained children (train evaluator)

On resume the checkpoint is loaded and rows of this run that reached the store after it
(the run died between a row and its checkpoint) are told to the agent before the loop goes on.

With early stopping (``plan.early_stop``, accelerating-nas-performance-prediction-baker.md
Sec. 3) the driver starts one curve-predictor actor for the run, shared by its trainer actors
and keyed by task; on resume it is seeded with the run's own complete children (never other
runs' rows: a comparison with and without early stopping must not share curves).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import time
from typing import Any, Callable

import numpy as np

from nasdb.errors import ArgumentError
from search.agents import SearchAgent
from search.evaluators import Evaluation, Evaluator, LookupEvaluator, TrainingEvaluator, Trial
from search.result import SearchResult

CHECKPOINT_FORMAT = 1


def seed_base(run_id: str) -> int:
    """Trial ``i`` of a run trains with seed ``seed_base + i``: unique ids, and ``i`` recoverable from a row."""
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:7], 16)


def _rng_for(run_id: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed_base(run_id), int(index)])


class _Files:
    """The run's files, ``<run_id>/<name>`` in the store's artifact area ``search`` (each written atomically)."""

    def __init__(self, store, run_id: str):
        self.area, self.run_id = store.artifacts("search"), run_id

    def path(self, name: str) -> str:
        return self.area.path(f"{self.run_id}/{name}")

    def exists(self, name: str) -> bool:
        return self.area.has(f"{self.run_id}/{name}")

    def write(self, name: str, data: bytes) -> None:
        self.area.put(f"{self.run_id}/{name}", data)

    def read(self, name: str) -> bytes:
        return self.area.get(f"{self.run_id}/{name}")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        import torch

        buf = io.BytesIO()
        torch.save(state, buf)
        self.write("checkpoint.pt", buf.getvalue())

    def load_checkpoint(self) -> dict[str, Any] | None:
        import torch

        if not self.exists("checkpoint.pt"):
            return None
        return torch.load(io.BytesIO(self.read("checkpoint.pt")), weights_only=False)


class SearchDriver:
    """Runs the search described by ``plan`` (a ``search.run.SearchPlan``, already validated)."""

    def __init__(self, plan, on_evaluation: Callable[[Evaluation, int], None] | None = None,
                 shared: dict[str, Any] | None = None):
        from nasdb.store import ExperimentStore

        self.plan = plan
        self.store = ExperimentStore(plan.store_root)
        self.space = self.store.space(plan.space_id)
        self.files = _Files(self.store, plan.run_id)
        self.on_evaluation = on_evaluation
        self.shared = shared  # ObjectRefs for the trainer actors (search.evaluators.shared_objects)
        self.agent: SearchAgent = plan.make_agent(self.space)
        self.evaluations: list[Evaluation] = []
        self.pretrain_evaluations: list[Evaluation] = []
        self.pretrain_children = 0
        self.wall_before, self.sessions, self._since_checkpoint = 0.0, 1, 0
        self._curve_actor = None  # the run's curve predictor (early stopping), started on first use
        self._progress_base: tuple[int, float, float] | None = None  # (children, since, last line) of _progress
        self._pending: dict[str, Any] | None = None  # batches in training: {"run_id", "batches"} (checkpointed)

    # -- public ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or resume) to the budget; returns ``SearchResult.to_dict()`` (picklable across Ray)."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # the controller is tiny: one thread is faster, and leaves cores to trainers
        try:
            return self._run()
        finally:
            torch.set_num_threads(threads)
            self._stop_curve_predictor()

    def _run(self) -> dict[str, Any]:
        self._t0 = time.monotonic()
        self.files.write("run.json", json.dumps(self.plan.describe(), indent=2, default=str).encode())
        self._restore()
        self._pretrain()
        if len(self.evaluations) < self.plan.budget:
            with self._evaluator(self.plan.run_id, [self.plan.task]) as ev:
                self._reconcile(self.plan.run_id, self.plan.task, self.evaluations, None)
                self._loop(ev, [self.plan.task], self.plan.budget, self.evaluations, self.plan.run_id, None)
        self._checkpoint()
        result = self.result()
        self.files.write("result.json", result.to_json().encode())
        return result.to_dict()

    def result(self) -> SearchResult:
        return SearchResult(
            run_id=self.plan.run_id, task=self.plan.task, agent=self.agent.describe(),
            evaluator=self.plan.evaluator_description(), budget=self.plan.budget,
            evaluations=sorted(self.evaluations, key=lambda e: e.index)[: self.plan.budget], wall_seconds=self._wall(),
            pretrain_children=self.pretrain_children, sessions=self.sessions,
            checkpoint=self.files.path("checkpoint.pt"))

    # -- phases ------------------------------------------------------------------------
    def _pretrain(self) -> None:
        """T-NAML multitask pre-training, once per run: from stored rows or from live trials."""
        pre = self.plan.pretrain
        if not pre or getattr(self.agent, "transferred", True):
            return
        if pre["source"] == "store":
            if self.agent.pretrain_steps == 0:
                rows = self.plan.pretrain_rows(self.store, self.space)
                self.agent.pretrain_rows(rows)
                self.pretrain_children = sum(len(r) for _, r in rows.values())
                self._log(f"pre-trained on {self.pretrain_children} stored children of {sorted(rows)}")
        else:
            run_id, tasks = f"{self.plan.run_id}.pretrain", list(pre["tasks"])
            budget = pre["budget"] * len(tasks)
            if len(self.pretrain_evaluations) < budget:
                with self._evaluator(run_id, tasks) as ev:
                    for t in tasks:
                        self._reconcile(run_id, t, self.pretrain_evaluations, t)
                    self._loop(ev, tasks, budget, self.pretrain_evaluations, run_id, "pretrain")
            self.pretrain_children = len(self.pretrain_evaluations)
        self.agent.transfer()
        self._checkpoint()

    def _loop(self, evaluator: Evaluator, tasks: list[str], budget: int, evals: list[Evaluation], run_id: str,
              phase: str | None) -> None:
        """Keep ``evaluator.parallel`` trials in flight until ``budget`` evaluations are told
        (one child at a time; ``plan.batch_size`` > 1: ``_loop_batched``)."""
        if self.plan.batch_size > 1:
            return self._loop_batched(evaluator, tasks, budget, evals, run_id, phase)
        next_index = max((e.index for e in evals), default=-1) + 1
        base = seed_base(run_id)
        while len(evals) < budget:
            while evaluator.num_pending < evaluator.parallel and len(evals) + evaluator.num_pending < budget:
                task = tasks[0] if len(tasks) == 1 else tasks[int(_rng_for(run_id, next_index).integers(len(tasks)))]
                arch = tuple(int(v) for v in self.agent.ask(1, task=task)[0])
                evaluator.submit(self._trial(task, next_index, arch, base + next_index))
                next_index += 1
            for ev in evaluator.results():
                self._tell(ev, evals, phase)

    def _loop_batched(self, evaluator: Evaluator, tasks: list[str], budget: int, evals: list[Evaluation],
                      run_id: str, phase: str | None) -> None:
        """Batches of ``plan.batch_size`` children, one per trainer actor, ``evaluator.parallel`` in
        flight: the agent proposes a batch (one task per batch), the checkpoint records it before it
        trains (agent state, evaluations so far and the batches in flight), one actor trains it at
        once (one batched-trainer call, one flush) and the agent learns from the whole batch in one
        tell (one REINFORCE update, the batch of samples per update of Zoph & Le and T-NAML Sec. 4)
        as soon as it returns, while the other actors train on: no actor waits for another's batch.
        A run interrupted with batches in flight resumes with those same batches: their stored
        children are read back, the others trained, none twice."""
        base = seed_base(run_id)
        flying = self._pending_batches(run_id)
        resumed = list(flying)  # sent first, as actors are free (a resumed run may have fewer)
        next_index = max([e.index for e in evals] + [t.index for b in flying for t in b], default=-1) + 1
        while len(evals) < budget:
            pending = sum(len(b) for b in flying)
            while evaluator.num_busy < evaluator.parallel and (resumed or len(evals) + pending < budget):
                if resumed:
                    evaluator.submit_batch(resumed.pop(0), resume=True)
                    continue
                n = min(self.plan.batch_size, budget - len(evals) - pending)
                task = tasks[0] if len(tasks) == 1 else tasks[int(_rng_for(run_id, next_index).integers(len(tasks)))]
                archs = self.agent.ask(n, task=task)  # (n, D)
                trials = [self._trial(task, next_index + i, tuple(int(v) for v in a), base + next_index + i)
                          for i, a in enumerate(archs)]
                next_index += n
                pending += n
                flying.append(trials)
                self._set_pending(run_id, flying)
                self._checkpoint()
                evaluator.submit_batch(trials)
            done = evaluator.batch_results()
            if not done:
                raise RuntimeError(f"the {evaluator.name} evaluator returned no batch while {len(flying)} "
                                   f"were in flight")
            for batch in done:
                flying = [b for b in flying if b[0].index != batch[0].index]
                self._set_pending(run_id, flying)
                self.agent.tell([e.architecture for e in batch], [e.reward for e in batch], task=batch[0].task)
                for ev in batch:
                    evals.append(ev)
                    self._report(ev, evals, phase)

    def _set_pending(self, run_id: str, flying: list[list[Trial]]) -> None:
        self._pending = {"run_id": run_id, "batches": [[t.to_dict() for t in b] for b in flying]} if flying else None

    def _pending_batches(self, run_id: str) -> list[list[Trial]]:
        """The batches of ``run_id`` in flight at the last checkpoint (a checkpoint of one batch at a
        time, ``{"trials": [...]}``, reads as one batch)."""
        if self._pending is None or self._pending["run_id"] != run_id:
            return []
        batches = self._pending.get("batches", [self._pending.get("trials", [])])
        return [[Trial(**{**t, "architecture": tuple(t["architecture"])}) for t in b] for b in batches if b]

    def _tell(self, ev: Evaluation, evals: list[Evaluation], phase: str | None) -> None:
        self.agent.tell([ev.architecture], [ev.reward], task=ev.task)
        evals.append(ev)
        self._since_checkpoint += 1
        if self._since_checkpoint >= self.plan.checkpoint_every:
            self._checkpoint()
        self._report(ev, evals, phase)

    def _report(self, ev: Evaluation, evals: list[Evaluation], phase: str | None) -> None:
        """The per-child log line and ``on_evaluation`` callback (target-task children only)."""
        if phase is None:
            best = max((e.val_accuracy for e in evals if e.complete), default=float("nan"))
            stop = f", stopped at epoch {ev.epochs}, predicted {ev.reward:.4f}" if ev.ok and ev.stopped_early else ""
            self._log(f"child {len(evals)}/{self.plan.budget}: val {ev.val_accuracy:.4f} test "
                      f"{ev.test_accuracy:.4f} ({ev.status}{stop}); best val {best:.4f}")
            self._progress(len(evals), best)
            if self.on_evaluation is not None:
                self.on_evaluation(ev, len(evals))

    def _progress(self, done: int, best: float) -> None:
        """Without per-child lines (``verbose``): one line at most every ``plan.progress_s`` seconds,
        and one at the last child, as populate logs under ``ray job submit``."""
        if self.plan.verbose or self.plan.progress_s is None:
            return
        now = time.monotonic()
        if self._progress_base is None:
            self._progress_base = (done, now, now)
        first, since, last = self._progress_base
        if now - last < self.plan.progress_s and done < self.plan.budget:
            return
        self._progress_base = (first, since, now)
        rate = (done - first) / (now - since) if now > since and done > first else 0.0
        eta = f", ETA {(self.plan.budget - done) / rate:.0f}s" if rate > 0 and done < self.plan.budget else ""
        print(f"[{self.agent.name} {self.plan.task}] {done}/{self.plan.budget} children, best val {best:.4f}, "
              f"{rate:.2f} children/s{eta}", file=sys.stderr, flush=True)

    def _trial(self, task: str, index: int, arch: tuple[int, ...], seed: int) -> Trial:
        from nasdb.store import experiment_id

        return Trial(task, index, arch, seed, experiment_id(task, self.space.space_id, list(arch), seed,
                                                            self.plan.recipe_for_ids,
                                                            **self.plan.trial_fingerprints(task)))

    def _evaluator(self, run_id: str, tasks: list[str]) -> Evaluator:
        if self.plan.evaluator == "lookup":
            return LookupEvaluator(self.store, self.space, recipe=self.plan.recipe, parallel=self.plan.parallel,
                                   tasks=tasks)
        return TrainingEvaluator(self.store, self.space, recipe=self.plan.recipe, agent=self.agent.name,
                                 run_id=run_id, parallel=self.plan.parallel, shared=self.shared,
                                 early_stop=self._curve_predictor(run_id, tasks),
                                 start_timeout_s=self.plan.start_timeout_s)

    # -- early stopping ----------------------------------------------------------------
    def _curve_predictor(self, run_id: str, tasks: list[str]) -> Any:
        """The run's curve-predictor actor (None without early stopping), seeded with the complete
        children ``run_id`` already stored for ``tasks`` (a resumed run does not repay the burn-in)."""
        if self.plan.early_stop is None:
            return None
        import ray

        from cluster.early_stop import curve_predictor_actor, load_other_curves

        if self._curve_actor is None:
            prior = []
            if self.plan.early_stop.get("pool_curves"):  # other tasks' curves: the stopper starts sooner
                prior = list(load_other_curves(self.store, recipe=self.plan.recipe,
                                               space_id=self.space.space_id).values())
                self._log(f"early stopping: pooling over {sum(cs.num_curves for cs in prior)} complete curves of "
                          f"{len(prior)} tasks in the store (each task's stopper: all but its own)")
            self._curve_actor = curve_predictor_actor(self.plan.early_stop, prior=prior, num_cpus=0)
        for task in tasks:
            curves, features = self.complete_curves(run_id, task, ray.get(self._curve_actor.arch_prior.remote(task)))
            if len(curves):
                held = ray.get(self._curve_actor.report_complete.remote(task, curves, features))
                self._log(f"early stopping: seeded the curve predictor with {held} complete children of {task}")
        return self._curve_actor

    def complete_curves(self, run_id: str, task: str, arch_prior: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Curves ``(N, T)`` and static features ``(N, F)`` of ``run_id``'s children of ``task`` trained to
        the end, as its trainers read them (with ``arch_prior``'s column, the stopper's architecture
        prior): what a resumed run seeds its curve predictor with (never other runs' rows)."""
        from cluster.early_stop import static_features

        T = int(self.plan.early_stop["num_epochs"])
        cols = ["run_id", "architecture", "num_params", "val_curve", "stopped_early"]
        rows = [r for r in self.store.experiments_arrow(task, status="ok").select(cols).to_pylist()
                if r["run_id"] == run_id and not r["stopped_early"] and len(r["val_curve"] or []) == T
                and np.all(np.isfinite(r["val_curve"]))]
        if not rows:
            return np.zeros((0, T)), np.zeros((0, 0))
        features = static_features(self.space, [r["architecture"] for r in rows], [r["num_params"] for r in rows],
                                   self.plan.recipe, arch_prior)  # (N, F)
        return np.array([r["val_curve"] for r in rows], dtype=np.float64), features

    def _stop_curve_predictor(self) -> None:
        if self._curve_actor is None:
            return
        import ray

        try:
            ray.kill(self._curve_actor)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._curve_actor = None

    # -- state -------------------------------------------------------------------------
    def _wall(self) -> float:
        return self.wall_before + time.monotonic() - self._t0

    def _checkpoint(self) -> None:
        self._since_checkpoint = 0
        self.files.save_checkpoint({
            "format": CHECKPOINT_FORMAT, "run": self.plan.describe(), "agent": self.agent.state_dict(),
            "evaluations": [e.to_dict() for e in self.evaluations],
            "pretrain_evaluations": [e.to_dict() for e in self.pretrain_evaluations],
            "pretrain_children": self.pretrain_children, "wall_seconds": self._wall(), "sessions": self.sessions,
            "pending": self._pending,
        })

    def _restore(self) -> None:
        ckpt = self.files.load_checkpoint()
        if ckpt is None:
            return
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ArgumentError(f"checkpoint {self.files.path('checkpoint.pt')} has format {ckpt.get('format')!r}, "
                                f"expected {CHECKPOINT_FORMAT}")
        self.agent.load_state_dict(ckpt["agent"])
        self.evaluations = [Evaluation.from_dict(e) for e in ckpt["evaluations"]]
        self.pretrain_evaluations = [Evaluation.from_dict(e) for e in ckpt["pretrain_evaluations"]]
        self.pretrain_children = int(ckpt["pretrain_children"])
        self.wall_before = float(ckpt["wall_seconds"])
        self.sessions = int(ckpt["sessions"]) + 1
        self._pending = ckpt.get("pending")
        self._log(f"resumed from its checkpoint: {len(self.evaluations)} children told (session {self.sessions})")

    def _reconcile(self, run_id: str, task: str, evals: list[Evaluation], phase_task: str | None) -> None:
        """Tell the agent about rows of this run that reached the store after the last checkpoint."""
        if self.plan.evaluator != "train":
            return
        known = {e.experiment_id for e in evals}
        # batches in flight when the run was interrupted are evaluated again (their stored rows read back)
        known |= {t.experiment_id for b in self._pending_batches(run_id) for t in b}
        table = self.store.experiments_arrow(task, status=None)
        cols = ["experiment_id", "run_id", "architecture", "seed", "val_accuracy", "test_accuracy", "status",
                "error", "train_seconds", "stopped_early", "predicted_final", "epochs"]
        rows = [r for r in table.select(cols).to_pylist() if r["run_id"] == run_id and r["experiment_id"] not in known]
        base = seed_base(run_id)
        for r in sorted(rows, key=lambda r: r["seed"]):
            trial = Trial(task, int(r["seed"]) - base, tuple(int(v) for v in r["architecture"]), int(r["seed"]),
                          r["experiment_id"])
            ev = Evaluation.from_row(trial, r)
            self._tell(ev, evals, "pretrain" if phase_task else None)
        if rows:
            self._log(f"recovered {len(rows)} stored children of run {run_id} missing from its checkpoint")

    def _log(self, text: str) -> None:
        if self.plan.verbose:
            print(f"[{self.agent.name} {self.plan.task}] {text}", flush=True)
