"""Keystone-style tokens end to end through HTTP."""

from __future__ import annotations

import datetime as dt

from csbs import app as composition
from csbs.domain.identity import Role
from tests.support.runtime import ADMIN_PASSWORD, FAST_HASHER, Env, password_auth


def test_version_document(env: Env) -> None:
    r = env.client.get("/v3")
    assert r.status_code == 200
    assert r.json()["version"]["id"].startswith("v3")
    assert r.headers["content-type"] == "application/json"


def test_issue_token_by_project_name_has_catalog(env: Env) -> None:
    r = env.client.post(
        "/v3/auth/tokens", json=password_auth("admin", ADMIN_PASSWORD, project_name="admin")
    )
    assert r.status_code == 201
    assert len(r.headers["X-Subject-Token"]) >= 40
    token = r.json()["token"]
    project_id = env.project_id("admin")
    assert token["project"] == {
        "id": project_id,
        "name": "admin",
        "domain": {"id": "default", "name": "Default"},
    }
    assert token["user"]["name"] == "admin"
    assert token["roles"] == [{"id": "admin", "name": "admin"}]
    expires = dt.datetime.strptime(token["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=dt.UTC
    )
    assert expires == env.clock.now() + dt.timedelta(hours=24)
    (service,) = token["catalog"]
    assert service["type"] == "data-protect"
    public = [e for e in service["endpoints"] if e["interface"] == "public"]
    assert public == [
        {
            "id": "csbs-public",
            "interface": "public",
            "region": "RegionOne",
            "region_id": "RegionOne",
            "url": f"http://testserver/v1/{project_id}",
        }
    ]


def test_issue_token_by_project_id(env: Env) -> None:
    project_id = env.project_id("admin")
    r = env.client.post(
        "/v3/auth/tokens", json=password_auth("admin", ADMIN_PASSWORD, project_id=project_id)
    )
    assert r.status_code == 201
    assert r.json()["token"]["project"]["id"] == project_id


def test_token_works_on_v1_routes(env: Env) -> None:
    token = env.admin_token()
    pid = env.project_id("admin")
    r = env.client.get(f"/v1/{pid}/providers", headers={"X-Auth-Token": token})
    assert r.status_code == 200
    assert r.json()["providers"][0]["id"] == "fc4d5750-22e7-4798-8a46-f48f62c4c1da"


def test_wrong_password_and_unknown_user_look_the_same(env: Env) -> None:
    wrong = env.client.post(
        "/v3/auth/tokens", json=password_auth("admin", "nope", project_name="admin")
    )
    unknown = env.client.post(
        "/v3/auth/tokens", json=password_auth("ghost", "nope", project_name="admin")
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["unauthorized"]["code"] == 401
    assert "X-Subject-Token" not in wrong.headers


def test_unknown_scope_and_project_without_role_are_refused(env: Env) -> None:
    r = env.client.post(
        "/v3/auth/tokens", json=password_auth("admin", ADMIN_PASSWORD, project_name="nowhere")
    )
    assert r.status_code == 401
    env.services.identity.create_project("other")
    env.services.identity.create_user("alice", "alice-pw", "other", Role.MEMBER)
    r = env.client.post(
        "/v3/auth/tokens", json=password_auth("alice", "alice-pw", project_name="admin")
    )
    assert r.status_code == 401
    r = env.client.post(
        "/v3/auth/tokens", json=password_auth("alice", "alice-pw", project_name="other")
    )
    assert r.status_code == 201


def test_foreign_domain_is_refused(env: Env) -> None:
    body = password_auth("admin", ADMIN_PASSWORD, project_name="admin")
    body["auth"]["scope"]["project"]["domain"] = {"id": "elsewhere"}
    assert env.client.post("/v3/auth/tokens", json=body).status_code == 401


def test_token_expires(env: Env) -> None:
    token = env.admin_token()
    pid = env.project_id("admin")
    env.clock.advance(24 * 3600 - 1)
    assert (
        env.client.get(f"/v1/{pid}/providers", headers={"X-Auth-Token": token}).status_code == 200
    )
    env.clock.advance(1)
    r = env.client.get(f"/v1/{pid}/providers", headers={"X-Auth-Token": token})
    assert r.status_code == 401
    assert r.json()["error_msg"] == "The token has expired."


def test_revocation(env: Env) -> None:
    token = env.admin_token()
    other = env.admin_token()
    pid = env.project_id("admin")
    r = env.client.delete(
        "/v3/auth/tokens", headers={"X-Auth-Token": other, "X-Subject-Token": token}
    )
    assert r.status_code == 204
    assert (
        env.client.get(f"/v1/{pid}/providers", headers={"X-Auth-Token": token}).status_code == 401
    )
    assert (
        env.client.get(f"/v1/{pid}/providers", headers={"X-Auth-Token": other}).status_code == 200
    )
    again = env.client.delete(
        "/v3/auth/tokens", headers={"X-Auth-Token": other, "X-Subject-Token": token}
    )
    assert again.status_code == 404


def test_validate_token(env: Env) -> None:
    token = env.admin_token()
    r = env.client.get("/v3/auth/tokens", headers={"X-Auth-Token": token, "X-Subject-Token": token})
    assert r.status_code == 200
    assert r.json()["token"]["user"]["name"] == "admin"


def test_tokens_survive_restart(env: Env, tmp_path: object) -> None:
    token = env.admin_token()
    pid = env.project_id("admin")
    settings = env.runtime.settings
    env.runtime.close()
    again = composition.build(settings, clock=env.clock, password_hasher=FAST_HASHER)
    composition.prepare(again)
    try:
        principal = again.services.identity.validate(token)
        assert principal.project_id == pid
        assert principal.role is Role.ADMIN
    finally:
        again.close()


def test_tokens_are_stored_hashed(env: Env) -> None:
    import sqlalchemy as sa

    token = env.admin_token()
    with env.services.db.read() as s:
        stored = [row[0] for row in s.execute(sa.text("SELECT token_hash FROM tokens"))]
    assert stored and token not in stored


def test_administrators_list_and_create_projects_and_users(env: Env) -> None:
    admin = {"X-Auth-Token": env.admin_token()}
    r = env.client.post("/v3/projects", headers=admin, json={"project": {"name": "alpha"}})
    assert r.status_code == 201, r.text
    alpha = r.json()["project"]
    assert alpha["name"] == "alpha" and alpha["domain_id"] == "default" and alpha["enabled"]
    names = [p["name"] for p in env.client.get("/v3/projects", headers=admin).json()["projects"]]
    assert sorted(names) == ["admin", "alpha"]

    body = {
        "user": {
            "name": "rita",
            "password": "rita-secret-1",
            "default_project_id": alpha["id"],
            "role": "reader",
        }
    }
    r = env.client.post("/v3/users", headers=admin, json=body)
    assert r.status_code == 201, r.text
    assert r.json()["user"]["name"] == "rita"
    assert r.json()["user"]["roles"] == [{"project": "alpha", "role": "reader"}]
    # The new user logs in with its password, in its project, with its role.
    token = env.token("rita", "rita-secret-1", "alpha")
    r = env.client.get("/v3/auth/tokens", headers={"X-Auth-Token": token})
    assert r.json()["token"]["roles"] == [{"id": "reader", "name": "reader"}]
    users = env.client.get("/v3/users", headers=admin).json()["users"]
    assert {u["name"]: u["roles"] for u in users} == {
        "admin": [{"project": "admin", "role": "admin"}],
        "rita": [{"project": "alpha", "role": "reader"}],
    }
    # A name taken, a project unknown, a name the service refuses: the API's own words.
    r = env.client.post("/v3/users", headers=admin, json=body)
    assert r.status_code == 409 and "already exists" in r.json()["error_msg"]
    body["user"].update(name="olaf", default_project_id="nope")
    r = env.client.post("/v3/users", headers=admin, json=body)
    assert r.status_code == 404 and "nope" in r.json()["error_msg"]
    r = env.client.post("/v3/projects", headers=admin, json={"project": {"name": "alpha"}})
    assert r.status_code == 409 and "already exists" in r.json()["error_msg"]


def test_only_administrators_see_projects_and_users(env: Env) -> None:
    token = env.add_user("mia", "alpha", Role.MEMBER)
    for method, path, body in (
        ("GET", "/v3/projects", None),
        ("POST", "/v3/projects", {"project": {"name": "beta"}}),
        ("GET", "/v3/users", None),
        (
            "POST",
            "/v3/users",
            {"user": {"name": "x", "password": "y", "default_project_id": "alpha"}},
        ),
    ):
        r = env.client.request(method, path, headers={"X-Auth-Token": token}, json=body)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error_msg"].startswith("Only administrators may")
        r = env.client.request(method, path, json=body)
        assert r.status_code == 401
