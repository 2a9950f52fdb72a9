"""Starting and deploying the suggestion API on Ray Serve (real local Ray): the refusals to start,
picking up a new predictor without downtime (in process, by following ``latest``, by ``serve deploy``'s
user_config), and open access on loopback under a route prefix.

One Serve app per module (the ``server`` fixture, conftest.py) that follows ``latest``; this
module fits more predictors into its copy of the tiny store.
"""

from __future__ import annotations

from urllib.parse import urlparse

import pytest
from serve_helpers import AUTH, TOKEN, asked_while_swapping, free_port, healthy, wait_for_predictor

from predictor.auth import is_loopback, resolve_token_digest, token_digest
from predictor.checkpoint import latest_predictor
from predictor.proxy_deadline import controller_env
from predictor.service import SuggestionService
from predictor.testing import HELD_OUT_TASK, TRAIN_TASKS, fit_tiny_predictor


# -- access rules (no server needed) ----------------------------------------------------------------
def test_no_token_or_open_access_off_loopback_refuse_to_start(store, monkeypatch, tmp_path):
    from predictor.server import start_server

    monkeypatch.delenv("NASDB_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="no API token configured"):
        start_server(store[0].root, port=free_port())
    with pytest.raises(ValueError, match="only allowed when the HTTP host is loopback"):
        start_server(store[0].root, host="0.0.0.0", port=free_port(), allow_unauthenticated=True)
    with pytest.raises(ValueError, match="at least 16"):
        start_server(store[0].root, port=free_port(), token="short")
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "127.8.0.1")] == [True] * 5
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.com", "")] == [False] * 5
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    assert resolve_token_digest(token_file=str(token_file)) == token_digest(TOKEN)
    monkeypatch.setenv("NASDB_API_TOKEN", TOKEN)
    assert resolve_token_digest() == token_digest(TOKEN)
    assert resolve_token_digest(allow_unauthenticated=True, host="::1") is None


# -- picking up a new predictor -----------------------------------------------------------------------
def test_service_reconfigure_and_refresh_in_process(store):
    st, pid = store
    service = SuggestionService(st, predictor_id=pid)
    assert service.engine.predictor_id == pid and not service.refresh_now()  # pinned
    service.reconfigure({"predictor_id": "latest"})
    assert service.engine.predictor_id == latest_predictor(st)
    with pytest.raises(ValueError, match="unknown user_config keys"):
        service.reconfigure({"predictor": pid})
    before = service.engine
    with pytest.raises(KeyError, match="no predictor 'nope'"):
        service.reconfigure({"predictor_id": "nope"})
    assert service.engine is before  # a failed load keeps serving the current predictor
    with pytest.raises(ValueError, match="refresh_seconds"):
        service.reconfigure({"refresh_seconds": -1})
    service.close()


def test_a_newly_fitted_predictor_is_picked_up_without_downtime(server, http, store):
    st, pid = store
    with asked_while_swapping(http, server.url, AUTH, HELD_OUT_TASK, k_max_iters=50) as failures:
        new = fit_tiny_predictor(st, TRAIN_TASKS, num_steps=40, seed=1)
        model = wait_for_predictor(http, server.url, AUTH, new)
    assert model["predictor_id"] == new and failures == []
    r = http.post(f"{server.url}/v1/suggest", json={"task": HELD_OUT_TASK}, headers=AUTH, timeout=60)
    assert r.json()["predictor_id"] == new


def test_open_access_on_loopback_under_a_route_prefix(server, http, store):
    """Without a token the replica itself checks that the Serve proxy binds a loopback host."""
    from ray import serve

    from predictor.serve import build_app

    st, _ = store
    serve.run(build_app(st.root, allow_unauthenticated=True, num_cpus=0.5), name="open", route_prefix="/open",
              blocking=False)
    try:
        r = http.get(f"{server.url}/open/v1/model", timeout=30)
        assert r.status_code == 200 and r.json()["predictor_id"] == latest_predictor(st)
        assert "/v1/suggest" in http.get(f"{server.url}/open/openapi.json", timeout=30).json()["paths"]
        r = http.post(f"{server.url}/open/v1/suggest", json={"task": HELD_OUT_TASK, "k_max_iters": 20}, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        serve.delete("open")
    healthy(http, server)


def test_serve_deploy_config_updates_the_predictor_in_place(server, http, store, tmp_path):
    """The cluster path of predictor/serve_config.example.yaml: the config is deployed the way `serve deploy`
    does (the controller's deploy_apps); changing only user_config.predictor_id swaps the predictor inside the
    running replica (same replica id) while requests keep getting 200."""
    from pathlib import Path

    import yaml
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    from predictor.checkpoint import predictor_ids

    st, _ = store
    if len(predictor_ids(st)) < 2:  # run on its own, without the hot-swap test's second fit
        fit_tiny_predictor(st, TRAIN_TASKS, num_steps=40, seed=2)
    first, second = predictor_ids(st)[:2]
    token_file = tmp_path / "api_token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    config = yaml.safe_load((Path(__file__).parents[2] / "predictor" / "serve_config.example.yaml").read_text())
    url = urlparse(server.url)
    config["http_options"].update(host=url.hostname, port=url.port)  # the running proxy's
    app = config["applications"][0]
    assert app["import_path"] == "predictor.serve:app_builder"
    proxy_env = config["controller_options"]["runtime_env"]["env_vars"]  # what `nasdb serve` gives its proxies
    assert {k: float(v) if k == "NASDB_HEADER_TIMEOUT_S" else v for k, v in proxy_env.items()} == {
        k: float(v) if k == "NASDB_HEADER_TIMEOUT_S" else v for k, v in controller_env().items()}
    app["args"].update(store=st.root, token_file=str(token_file), replicas=1, num_cpus=0.5)
    app["deployments"][0]["user_config"] = {"predictor_id": first}
    client = serve.context._get_global_client()
    client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)
    health = http.get(f"{server.url}/v1/health", timeout=30).json()
    assert health["predictor_id"] == first

    with asked_while_swapping(http, server.url, AUTH, HELD_OUT_TASK, k_max_iters=50) as failures:
        app["deployments"][0]["user_config"] = {"predictor_id": second}
        client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)
        wait_for_predictor(http, server.url, AUTH, second)
    after = http.get(f"{server.url}/v1/health", timeout=30).json()
    assert after["predictor_id"] == second and after["replica"] == health["replica"] and failures == []
