"""`nasdb export --format optuna`: the store as Optuna studies, loaded back with Optuna itself (issue 20)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from nasdb.benchmarks import import_benchmark
from nasdb.cli import main
from nasdb.store import ExperimentStore

optuna = pytest.importorskip("optuna")
TASKS = ("hpobench.car", "hpobench.kc1")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    st = ExperimentStore(str(tmp_path_factory.mktemp("optuna") / "store"))
    st.init()
    import_benchmark(st, "hpobench", tasks=["car", "kc1"], max_configurations=4)
    return st


def _cli(st, *args: str, code: int = 0):
    result = CliRunner().invoke(main, ["--store", st.root, "export", *args])
    assert result.exit_code == code, result.output
    return result


def test_one_study_per_task_one_trial_per_experiment(store, tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    out = json.loads(_cli(store, "--format", "optuna", "--storage", url, "--json").output)
    assert sorted(s["study"] for s in out["studies"]) == list(TASKS)
    for task in TASKS:
        study = optuna.load_study(study_name=task, storage=url)
        rows = store.experiments_arrow(task).to_pylist()
        assert len(study.trials) == len(rows) == store.count(task)
        assert study.direction == optuna.study.StudyDirection.MAXIMIZE
        space = store.space(rows[0]["space_id"])
        by_id = {r["experiment_id"]: r for r in rows}
        for trial in study.trials:
            row = by_id[trial.user_attrs["experiment_id"]]
            assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == row["val_accuracy"]
            assert trial.params == {d.name: d.choices[i] for d, i in zip(space.dimensions, row["architecture"])}
        assert study.best_value == max(r["val_accuracy"] for r in rows)


def test_existing_studies_need_overwrite_and_bad_input_is_one_line(store, tmp_path):
    url = f"sqlite:///{tmp_path / 'again.db'}"
    _cli(store, "--format", "optuna", "--storage", url, "--task", TASKS[0])
    again = _cli(store, "--format", "optuna", "--storage", url, "--task", TASKS[0], code=1)
    assert again.output.startswith("error: Optuna storage") and "--overwrite" in again.output
    assert again.output.count("\n") == 1
    _cli(store, "--format", "optuna", "--storage", url, "--task", TASKS[0], "--overwrite")
    assert len(optuna.load_study(study_name=TASKS[0], storage=url).trials) == store.count(TASKS[0])
    bad = _cli(store, "--format", "optuna", "--storage", url, "--task", "nope", code=1)
    assert "nope" in bad.output and bad.output.count("\n") == 1
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == [TASKS[0]]  # nothing half-written
    assert "writes to --storage URL" in _cli(store, "--format", "optuna", "--out", "x", code=2).output
    assert "at most one --task" in _cli(store, "--out", "x.csv", "--format", "csv", "--task", "a,b", code=2).output
