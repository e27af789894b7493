"""Bad input and failures leave as 4xx/5xx JSON bodies of the one documented shape."""

from __future__ import annotations

import pytest
from fastapi import APIRouter

from csbs.api.app import create_app
from csbs.domain.identity import Role
from tests.support.runtime import ADMIN_PASSWORD, Env, password_auth


def _assert_error(r: object, status: int, code: str) -> dict[str, object]:
    from httpx2 import Response

    assert isinstance(r, Response)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-request-id"].startswith("req-")
    body = r.json()
    keys = list(body)
    assert keys[1:] == ["error_code", "error_msg"], keys
    fault = body[keys[0]]
    assert fault["code"] == status
    assert fault["message"] == body["error_msg"]
    assert body["error_code"] == code
    return dict(body)


def test_malformed_json(env: Env) -> None:
    r = env.client.post(
        "/v3/auth/tokens", content=b'{"auth": ', headers={"Content-Type": "application/json"}
    )
    body = _assert_error(r, 400, "CSBS.9001")
    assert "not valid JSON" in str(body["error_msg"])


def test_missing_field_is_named(env: Env) -> None:
    body = password_auth("admin", ADMIN_PASSWORD, project_name="admin")
    del body["auth"]["identity"]["password"]["user"]["password"]
    r = env.client.post("/v3/auth/tokens", json=body)
    msg = _assert_error(r, 400, "CSBS.9001")["error_msg"]
    assert "auth.identity.password.user.password" in str(msg)


def test_wrong_type_is_named(env: Env) -> None:
    body = password_auth("admin", ADMIN_PASSWORD, project_name="admin")
    body["auth"]["identity"]["methods"] = "password"
    msg = _assert_error(env.client.post("/v3/auth/tokens", json=body), 400, "CSBS.9001")[
        "error_msg"
    ]
    assert "auth.identity.methods" in str(msg)


@pytest.mark.parametrize("payload", [[], "x", 3, None, {"auth": None}])
def test_wrong_shapes(env: Env, payload: object) -> None:
    _assert_error(env.client.post("/v3/auth/tokens", json=payload), 400, "CSBS.9001")


def test_empty_body(env: Env) -> None:
    r = env.client.post("/v3/auth/tokens", headers={"Content-Type": "application/json"})
    _assert_error(r, 400, "CSBS.9001")


def test_huge_body_declared(env: Env) -> None:
    r = env.client.post(
        "/v3/auth/tokens",
        content=b"x" * (1024 * 1024 + 1),
        headers={"Content-Type": "application/json"},
    )
    _assert_error(r, 413, "CSBS.9001")


def test_huge_body_streamed_without_length(env: Env) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(300):
            yield b"x" * 4096

    r = env.client.post(
        "/v3/auth/tokens", content=chunks(), headers={"Content-Type": "application/json"}
    )
    _assert_error(r, 413, "CSBS.9001")


def test_unknown_route(env: Env) -> None:
    _assert_error(env.client.get("/v2/whatever"), 404, "CSBS.9001")


def test_wrong_method(env: Env) -> None:
    _assert_error(env.client.put("/v3/auth/tokens", json={}), 405, "CSBS.9001")


def test_unexpected_exception_is_500_without_internals(env: Env) -> None:
    app = create_app(env.services, env.runtime.edge)
    router = APIRouter()

    @router.get("/boom")
    def boom() -> None:
        raise RuntimeError("secret internal detail /etc/passwd")

    app.include_router(router)
    from fastapi.testclient import TestClient

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    body = _assert_error(r, 500, "CSBS.9999")
    assert "secret" not in r.text and "Traceback" not in r.text
    assert r.headers["x-request-id"] in str(body["error_msg"])


def test_draining_answers_503(env: Env) -> None:
    env.runtime.edge.lifecycle.start_draining()
    r = env.client.get("/v1")
    _assert_error(r, 503, "CSBS.9998")
    assert r.headers["retry-after"]
    assert env.client.get("/healthz").status_code == 200
    assert env.client.get("/readyz").status_code == 503


def test_versions(env: Env) -> None:
    r = env.client.get("/")
    assert r.status_code == 300
    (v1,) = r.json()["versions"]
    assert v1["id"] == "v1.0" and v1["status"] == "CURRENT"
    assert v1["links"][0]["href"] == "http://testserver/v1/"
    r = env.client.get("/v1")
    assert r.status_code == 200 and r.json()["version"]["id"] == "v1.0"


def test_health_ready_metrics_openapi(env: Env) -> None:
    assert env.client.get("/healthz").json() == {"status": "ok"}
    assert env.client.get("/readyz").json() == {"status": "ready"}
    env.client.get("/v1")
    metrics = env.client.get("/metrics")
    assert metrics.status_code == 200
    assert 'csbs_http_requests_total{method="GET",route="/v1",status="200"}' in metrics.text
    spec = env.client.get("/openapi.json").json()
    for path in ("/v3/auth/tokens", "/v1/{project_id}/providers", "/healthz", "/readyz"):
        assert path in spec["paths"]


def test_reader_role_token(env: Env) -> None:
    token = env.add_user("rita", "gamma", Role.READER)
    r = env.client.get(f"/v1/{env.project_id('gamma')}/providers", headers={"X-Auth-Token": token})
    assert r.status_code == 200
