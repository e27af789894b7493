"""Who may call what: the 401/403 matrix."""

from __future__ import annotations

import asyncio

import pytest

from csbs.api import deps
from csbs.domain import errors
from csbs.domain.identity import Role
from tests.support.runtime import Env


@pytest.fixture
def tokens(env: Env) -> dict[str, str]:
    return {
        "admin": env.admin_token(),
        "member": env.add_user("mia", "alpha", Role.MEMBER),
        "reader": env.add_user("rey", "alpha", Role.READER),
        "foreign": env.add_user("finn", "beta", Role.MEMBER),
    }


@pytest.mark.parametrize(
    ("who", "status"), [("admin", 200), ("member", 200), ("reader", 200), ("foreign", 403)]
)
def test_read_matrix(env: Env, tokens: dict[str, str], who: str, status: int) -> None:
    pid = env.project_id("alpha")
    r = env.client.get(f"/v1/{pid}/providers", headers={"X-Auth-Token": tokens[who]})
    assert r.status_code == status, r.text
    if status == 403:
        assert r.json()["forbidden"]["code"] == 403
        assert r.json()["error_code"].startswith("CSBS.")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Auth-Token": ""},
        {"X-Auth-Token": "not a token!"},
        {"X-Auth-Token": "A" * 43},
    ],
    ids=["missing", "empty", "malformed", "unknown"],
)
def test_missing_or_bad_token_is_401(env: Env, headers: dict[str, str]) -> None:
    pid = env.project_id("admin")
    r = env.client.get(f"/v1/{pid}/providers", headers=headers)
    assert r.status_code == 401
    assert r.json()["error_code"] == "CSBS.9010"


def test_unknown_provider_is_400(env: Env) -> None:
    pid = env.project_id("admin")
    r = env.client.get(f"/v1/{pid}/providers/nope", headers={"X-Auth-Token": env.admin_token()})
    assert r.status_code == 400
    assert r.json()["error_code"] == "CSBS.9001"
    assert r.json()["error_msg"] == "provider invalid"


def test_act_rule_per_role(env: Env, tokens: dict[str, str]) -> None:
    """The dependency every write route uses: member and admin act, reader and foreign do not."""
    alpha = env.project_id("alpha")
    for who, allowed in [("admin", True), ("member", True), ("reader", False), ("foreign", False)]:
        principal = env.services.identity.validate(tokens[who])
        if allowed:
            assert asyncio.run(deps.project_actor(alpha, principal, env.services)) is principal
        else:
            with pytest.raises(errors.Forbidden):
                asyncio.run(deps.project_actor(alpha, principal, env.services))


def test_all_tenants_is_admin_only(env: Env, tokens: dict[str, str]) -> None:
    admin = env.services.identity.validate(tokens["admin"])
    member = env.services.identity.validate(tokens["member"])
    assert deps.check_all_tenants(admin, True) is True
    assert deps.check_all_tenants(member, False) is False
    with pytest.raises(errors.Forbidden):
        deps.check_all_tenants(member, True)
