"""The predictor registry: aliases in the store, `nasdb predictors`, and serving that follows an alias.

Real checkpoints (a tiny store and predictors fitted in-process, predictor/testing.py), the real
CLI through click's runner, and one real Ray Serve app that follows ``champion`` while a
promotion happens under load.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from click.testing import CliRunner

from nasdb.cli import main
from nasdb.errors import AliasConflictError, UnknownPredictorError
from nasdb.store import ExperimentStore
from predictor import registry
from predictor.testing import HELD_OUT_TASK, TRAIN_TASKS, fit_tiny_predictor, shared_tiny_store
from serve_helpers import AUTH, TOKEN, asked_while_swapping, free_port, wait_for_predictor



@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A copy of the shared tiny store with three predictors: ids oldest first."""
    root, pid = shared_tiny_store(str(tmp_path_factory.getbasetemp()))
    copy = tmp_path_factory.mktemp("registry") / "store"
    shutil.copytree(root, copy)
    st = ExperimentStore(str(copy))
    second = fit_tiny_predictor(st, TRAIN_TASKS, num_steps=20, seed=1)
    third = fit_tiny_predictor(st, TRAIN_TASKS, num_steps=20, seed=2)
    return st, [pid, second, third]


def _other_space_predictor(st) -> str:
    """A real (untrained) checkpoint of a smaller search space."""
    from nasdb.space import default_space
    from predictor.checkpoint import save_predictor
    from predictor.config import PredictorConfig
    from predictor.model import PerformancePredictor

    space = default_space(num_layers=2)
    model = PerformancePredictor(space.encoding_size, PredictorConfig()).eval()
    return save_predictor(st, model, space, tasks=list(TRAIN_TASKS), data_snapshot={}, metrics={})


def _cli(st, *args: str, ok: bool = True):
    result = CliRunner().invoke(main, ["--store", st.root, *args])
    assert (result.exit_code == 0) == ok, result.output
    return result


def test_promote_list_show_unalias_through_the_cli(store):
    st, (first, second, _) = store
    out = json.loads(_cli(st, "predictors", "promote", first, "--alias", "champion", "--json").output)
    assert out["predictor_id"] == first and out["previous"] is None
    assert _cli(st, "predictors", "promote", second).output.strip() == f"alias champion -> {second} (was {first})"
    rows = json.loads(_cli(st, "predictors", "list", "--json").output)
    assert {r["predictor_id"]: r["aliases"] for r in rows}[second] == ["champion"]
    assert "champion" in _cli(st, "predictors", "list").output
    shown = json.loads(_cli(st, "predictors", "show", "champion", "--json").output)
    assert shown["predictor_id"] == second and shown["aliases"] == ["champion"]
    assert shown["selected_as"] == "alias champion" and set(shown["data_snapshot"]) == set(TRAIN_TASKS)
    assert re.search(rf"^predictor_id +{second}$", _cli(st, "predictors", "show", "champion").output, re.M)
    record = registry.alias_record(st, "champion")
    assert [h["predictor_id"] for h in record["history"]] == [second, first]
    _cli(st, "predictors", "promote", first, "--alias", "staging")
    assert _cli(st, "predictors", "unalias", "staging").output.strip() == f"removed alias staging (was {first})"
    assert list(registry.aliases(st)) == ["champion"]
    assert not [p for p in os.listdir(st.path("aliases")) if p.endswith(".tmp")]  # no temp left behind


def test_selection_rules(store):
    st, (first, second, third) = store
    registry.promote(st, second, "champion")
    assert registry.select(st, None) == registry.Selection("alias", "champion")  # the default: champion
    assert registry.select(st, "latest").target(st) == third
    assert registry.select(st, first) == registry.Selection("pinned", first)
    registry.unalias(st, "champion")
    assert registry.select(st, None) == registry.Selection("pinned", third)  # never "follow latest" by default


@pytest.mark.parametrize("args,message", [
    (["predictors", "show", "nope"], "error: no predictor 'nope' (no such id or alias) in the store"),
    (["predictors", "promote", "20990101T000000000000Z-deadbeef"],
     "error: no predictor '20990101T000000000000Z-deadbeef' in the store"),
    (["predictors", "unalias", "ghost"], "error: no alias 'ghost' in the store"),
    (["predictors", "promote", "{first}", "--alias", "Bad Name"], "error: not an alias name: 'Bad Name'"),
    (["predictors", "promote", "{first}", "--alias", "latest"], "error: not an alias name: 'latest'"),
    (["predictors", "delete", "--yes", "20990101T000000000000Z-deadbeef"], "error: no predictor"),
])
def test_bad_input_is_one_line(store, args, message):
    st, (first, _, _) = store
    result = _cli(st, *[a.format(first=first) for a in args], ok=False)
    assert result.output.startswith(message) and result.output.count("\n") == 1, result.output


def test_another_space_cannot_take_an_alias_in_use_and_aliased_predictors_are_not_deleted(store):
    st, (first, second, _) = store
    registry.promote(st, first, "prod")
    other = _other_space_predictor(st)
    before = registry.alias_record(st, "prod")
    result = _cli(st, "predictors", "promote", other, "--alias", "prod", ok=False)
    assert "alias 'prod' serves search space" in result.output and result.output.count("\n") == 1
    assert registry.alias_record(st, "prod") == before  # untouched
    with pytest.raises(AliasConflictError, match="aliased as prod"):
        registry.delete_predictor(st, first)
    registry.promote(st, other, "other-space")  # a fresh alias takes any space
    registry.unalias(st, "other-space")
    assert "deleted predictor" in _cli(st, "predictors", "delete", other, "--yes").output
    assert other not in [r["predictor_id"] for r in registry.summaries(st)]
    with pytest.raises(UnknownPredictorError):
        registry.select(st, other)
    registry.unalias(st, "prod")


def test_service_follows_an_alias_in_process(store):
    from predictor.service import SuggestionService

    st, (first, second, _) = store
    registry.promote(st, first, "champion")
    service = SuggestionService(st, predictor_id="champion")
    try:
        info = service.model_info()
        assert info["predictor_id"] == first and info["alias"] == "champion" and info["following"] == "alias"
        assert set(info["data_snapshot"]) == set(TRAIN_TASKS) and "final_train_loss" in info["metrics"]
        registry.promote(st, second, "champion")
        assert service.refresh_now() and service.engine.predictor_id == second
        service.reconfigure({"predictor_id": first})  # user_config pins an id: promotions no longer apply
        registry.promote(st, first, "champion")
        registry.promote(st, second, "champion")
        assert not service.refresh_now() and service.model_info()["following"] == "pinned"
    finally:
        service.close()
        registry.unalias(st, "champion")


def test_promoting_swaps_a_live_replica_without_a_failed_request(store, ray_cluster):
    import requests
    from ray import serve

    from predictor.server import start_server

    st, (first, second, _) = store
    registry.promote(st, first, "champion")
    try:
        info = start_server(st.root, port=free_port(), token=TOKEN, num_cpus=0.5)  # default: follows champion
        with requests.Session() as http:
            model = http.get(f"{info.url}/v1/model", headers=AUTH, timeout=60).json()
            assert model["predictor_id"] == first and model["alias"] == "champion"
            with asked_while_swapping(http, info.url, AUTH, HELD_OUT_TASK, k_max_iters=30) as failures:
                registry.promote(st, second, "champion")
                model = wait_for_predictor(http, info.url, AUTH, second)
        assert model["predictor_id"] == second and model["alias"] == "champion" and failures == []
        assert set(model["data_snapshot"]) == set(TRAIN_TASKS)
    finally:
        serve.shutdown()  # the shared Ray cluster stays up for the next test module
        registry.unalias(st, "champion")
