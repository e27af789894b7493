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
    services = {s["type"]: s for s in token["catalog"]}
    assert sorted(services) == ["data-protect", "identity"]
    public = [e for e in services["data-protect"]["endpoints"] if e["interface"] == "public"]
    assert public == [
        {
            "id": "csbs-public",
            "interface": "public",
            "region": "RegionOne",
            "region_id": "RegionOne",
            "url": f"http://testserver/v1/{project_id}",
        }
    ]
    identity = [e for e in services["identity"]["endpoints"] if e["interface"] == "public"]
    assert [e["url"] for e in identity] == ["http://testserver/v3"]


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
    # Keystone's shape, whose message keystoneauth shows (spec §11.15); CSBS's keys follow.
    assert wrong.json()["error"] == {
        "code": 401,
        "title": "Unauthorized",
        "message": "The request you have made requires authentication.",
    }
    assert wrong.json()["error_msg"] == wrong.json()["error"]["message"]
    assert "X-Subject-Token" not in wrong.headers


def test_identity_errors_speak_keystone_and_v1_errors_stay_csbs(env: Env) -> None:
    bad = env.client.post("/v3/auth/tokens", json={"auth": {}})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == 400
    assert bad.json()["error"]["title"] == "Bad Request"
    assert bad.json()["error_code"] == "CSBS.9001"
    missing = env.client.get("/v3/auth/tokens")
    assert missing.status_code == 401
    assert missing.json()["error"]["title"] == "Unauthorized"
    assert env.client.get("/v3/nothing").json()["error"]["code"] == 404
    v1 = env.client.get("/v1/x/providers")
    assert v1.status_code == 401
    assert "error" not in v1.json()
    assert v1.json()["unauthorized"]["code"] == 401


def _token_auth(token: str, project: dict[str, str] | None = None) -> dict[str, object]:
    auth: dict[str, object] = {"identity": {"methods": ["token"], "token": {"id": token}}}
    if project is not None:
        auth["scope"] = {"project": project}
    return {"auth": auth}


def test_token_method_rescopes_without_widening(env: Env) -> None:
    env.services.identity.create_project("other")
    env.services.identity.create_user("ann", "ann-password", "other", Role.READER)
    env.services.identity.create_project("third")
    env.services.identity.create_user("ann", "ann-password", "third", Role.MEMBER)
    first = env.token("ann", "ann-password", "other")
    env.clock.advance(20 * 3600)

    same = env.client.post("/v3/auth/tokens", json=_token_auth(first))
    assert same.status_code == 201, same.text
    body = same.json()["token"]
    assert body["methods"] == ["token"]
    assert body["project"]["name"] == "other"
    assert body["roles"] == [{"id": "reader", "name": "reader"}]
    # never outlives the token it came from: 4 hours were left of its 24
    expires = dt.datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert expires.replace(tzinfo=dt.UTC) == env.clock.now() + dt.timedelta(hours=4)
    new = same.headers["X-Subject-Token"]
    assert new != first
    pid = env.project_id("other")
    assert env.client.get(f"/v1/{pid}/providers", headers={"X-Auth-Token": new}).status_code == 200

    third = env.client.post(
        "/v3/auth/tokens",
        json=_token_auth(first, {"name": "third", "domain": {"id": "default"}}),
    )
    assert third.status_code == 201
    assert third.json()["token"]["roles"] == [{"id": "member", "name": "member"}]
    assert third.json()["token"]["project"]["id"] == env.project_id("third")

    # a project the user has no role in, a revoked or unknown token: Keystone's 401
    nowhere = env.client.post(
        "/v3/auth/tokens", json=_token_auth(first, {"id": env.project_id("admin")})
    )
    assert nowhere.status_code == 401
    assert nowhere.json()["error"]["code"] == 401
    assert "X-Subject-Token" not in nowhere.headers
    revoked = env.client.delete(
        "/v3/auth/tokens", headers={"X-Auth-Token": first, "X-Subject-Token": first}
    )
    assert revoked.status_code == 204
    again = env.client.post("/v3/auth/tokens", json=_token_auth(first))
    assert again.status_code == 401
    assert "revoked" in again.json()["error"]["message"]
    unknown = env.client.post("/v3/auth/tokens", json=_token_auth("x" * 43))
    assert unknown.status_code == 401
    assert (
        env.client.post(
            "/v3/auth/tokens", json={"auth": {"identity": {"methods": ["token"]}}}
        ).status_code
        == 400
    )


def test_validate_an_unknown_subject_token_is_404(env: Env) -> None:
    admin = env.admin_token()
    r = env.client.get(
        "/v3/auth/tokens", headers={"X-Auth-Token": admin, "X-Subject-Token": "y" * 43}
    )
    assert r.status_code == 404
    assert r.json()["error"]["title"] == "Not Found"


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


def test_an_admin_naming_a_project_that_does_not_exist_gets_404(env: Env) -> None:
    """Not 200 with empty lists: an administrator may name any project, and one that does
    not exist says so, on every /v1/{project_id} route, the DELETE's lean path included."""
    headers = {"X-Auth-Token": env.admin_token()}
    missing = "0" * 32
    provider = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
    for method, path in (
        ("GET", f"/v1/{missing}/operation_logs"),
        ("GET", f"/v1/{missing}/providers"),
        ("GET", f"/v1/{missing}/providers/{provider}/checkpoints"),
        ("GET", f"/v1/{missing}/policies"),
        ("DELETE", f"/v1/{missing}/providers/{provider}/checkpoints/abc"),
    ):
        r = env.client.request(method, path, headers=headers)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error_code"] == "CSBS.9001", r.text
        assert missing in r.text
    # A project that exists, other than the token's, answers as before.
    other = env.services.identity.create_project("other").id
    r = env.client.get(f"/v1/{other}/operation_logs", headers=headers)
    assert r.status_code == 200 and r.json()["operation_logs"] == []
