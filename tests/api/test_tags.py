"""Tags of backups over HTTP (T1-T6, spec §4.16 and §5), on both engines."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from csbs.domain.identity import Role
from tests.support.runtime import Env, make_env
from tests.support.seed import EPOCH, seed_backup


@dataclasses.dataclass
class World:
    env: Env
    pid: str
    member: str
    reader: str
    other_pid: str
    other: str

    def h(self, token: str | None = None) -> dict[str, str]:
        return {"X-Auth-Token": token or self.member}

    def url(self, tail: str, pid: str | None = None) -> str:
        return f"/v1/{pid or self.pid}/csbs_backup{tail}"

    def add(self, bid: str, key: Any, value: Any = "v", token: str | None = None) -> Any:
        return self.env.client.post(
            self.url(f"/{bid}/tags"),
            headers=self.h(token),
            json={"tag": {"key": key, "value": value}},
        )

    def batch(self, bid: str, action: str, tags: Any, token: str | None = None) -> Any:
        return self.env.client.post(
            self.url(f"/{bid}/tags/action"),
            headers=self.h(token),
            json={"action": action, "tags": tags},
        )

    def tags(self, bid: str, token: str | None = None) -> list[dict[str, str]]:
        r = self.env.client.get(self.url(f"/{bid}/tags"), headers=self.h(token))
        assert r.status_code == 200, r.text
        return list(r.json()["tags"])

    def query(self, body: dict[str, Any], token: str | None = None) -> Any:
        return self.env.client.post(
            self.url("/resource_instances/action"), headers=self.h(token), json=body
        )


@pytest.fixture
def world(tmp_path: Path, db_url: str) -> Iterator[World]:
    env = make_env(tmp_path, db_url)
    try:
        member = env.add_user("mia", "alpha", Role.MEMBER)
        reader = env.add_user("rey", "alpha", Role.READER)
        other = env.add_user("bob", "beta", Role.MEMBER)
        yield World(env, env.project_id("alpha"), member, reader, env.project_id("beta"), other)
    finally:
        env.client.close()
        env.runtime.close()


def _error(r: Any, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error_code"] == code, r.text


# -- T3, T5: one tag --------------------------------------------------------------------------


def test_add_one_overwrites_and_is_idempotent(world: World) -> None:
    b = seed_backup(world.env.services, world.pid, "bk1")
    r = world.add(b.id, "DEV", "DEV1")
    assert r.status_code == 204 and r.content == b""
    assert world.add(b.id, "DEV", "DEV1").status_code == 204
    assert world.tags(b.id) == [{"key": "DEV", "value": "DEV1"}]
    assert world.add(b.id, "DEV", "DEV2").status_code == 204
    assert world.add(b.id, " app ", "  ").status_code == 204  # trimmed; empty value allowed
    assert world.tags(b.id) == [{"key": "DEV", "value": "DEV2"}, {"key": "app", "value": ""}]
    # The backup itself shows them (B3).
    item = world.env.client.get(f"/v1/{world.pid}/checkpoint_items/{b.id}", headers=world.h())
    assert item.json()["checkpoint_item"]["tags"] == world.tags(b.id)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("k" * 37, "v"),
        ("", "v"),
        ("   ", "v"),
        ("a.b", "v"),
        ("a b", "v"),
        ("k", "v" * 44),
        ("k", "v*"),
        ("k", "é"),
        (5, "v"),
        ("k", 5),
        ("k", None),
    ],
)
def test_add_one_create_rules(world: World, key: Any, value: Any) -> None:
    b = seed_backup(world.env.services, world.pid, "bk1")
    _error(world.add(b.id, key, value), 400, "CSBS.9001")
    assert world.tags(b.id) == []


def test_add_one_limits_are_inclusive(world: World) -> None:
    b = seed_backup(world.env.services, world.pid, "bk1")
    assert world.add(b.id, "K" * 36, "v" * 43).status_code == 204
    assert world.add(b.id, "a-b_C9", "x-y_Z0").status_code == 204
    assert {t["key"] for t in world.tags(b.id)} == {"K" * 36, "a-b_C9"}


def test_at_most_ten_tags_per_backup(world: World) -> None:
    b = seed_backup(world.env.services, world.pid, "bk1")
    for i in range(10):
        assert world.add(b.id, f"k{i}", "v").status_code == 204
    r = world.add(b.id, "k10", "v")
    _error(r, 400, "CSBS.7000")
    assert r.json()["error_msg"] == "request tags exceed the max allowed count: 10."
    # Overwriting an existing key does not add one.
    assert world.add(b.id, "k3", "new").status_code == 204
    tags = world.tags(b.id)
    assert len(tags) == 10 and {"key": "k3", "value": "new"} in tags


def test_missing_body_or_garbage_is_400(world: World) -> None:
    b = seed_backup(world.env.services, world.pid, "bk1")
    r = world.env.client.post(world.url(f"/{b.id}/tags"), headers=world.h(), content=b"{")
    _error(r, 400, "CSBS.9001")
    r = world.env.client.post(world.url(f"/{b.id}/tags"), headers=world.h(), json={"tag": []})
    _error(r, 400, "CSBS.9001")


# -- T2: batch ------------------------------------------------------------------------------


def test_batch_create_and_delete(world: World) -> None:
    b = seed_backup(world.env.services, world.pid, "bk1", tags=[("a", "1")])
    r = world.batch(b.id, "create", [{"key": "a", "value": "2"}, {"key": " b ", "value": " 3 "}])
    assert r.status_code == 204 and r.content == b""
    assert world.tags(b.id) == [{"key": "a", "value": "2"}, {"key": "b", "value": "3"}]

    # delete: missing tags are ignored, duplicates allowed, charset not checked
    r = world.batch(
        b.id, "delete", [{"key": "zz"}, {"key": "a.b", "value": "x y"}, {"key": "b"}, {"key": "b"}]
    )
    assert r.status_code == 204
    assert world.tags(b.id) == [{"key": "a", "value": "2"}]
    # a given value deletes only when it matches
    assert world.batch(b.id, "delete", [{"key": "a", "value": "1"}]).status_code == 204
    assert world.tags(b.id) == [{"key": "a", "value": "2"}]
    assert world.batch(b.id, "delete", [{"key": " a ", "value": " 2 "}]).status_code == 204
    assert world.tags(b.id) == []
    # limits of delete: key up to 127, value up to 255
    ok = [{"key": "k" * 127, "value": "v" * 255}]
    assert world.batch(b.id, "delete", ok).status_code == 204


@pytest.mark.parametrize(
    ("action", "tags", "code"),
    [
        ("create", [], "CSBS.9001"),
        ("create", [{"key": f"k{i}", "value": "v"} for i in range(11)], "CSBS.7000"),
        ("create", [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}], "CSBS.9001"),
        ("create", [{"key": "a", "value": "1"}, {"key": " a", "value": "2"}], "CSBS.9001"),
        ("create", [{"key": "a"}], "CSBS.9001"),
        ("create", [{"key": "a.b", "value": "1"}], "CSBS.9001"),
        ("create", [{"key": "a", "value": "v" * 44}], "CSBS.9001"),
        ("delete", [], "CSBS.9001"),
        ("delete", [{"key": f"k{i}"} for i in range(11)], "CSBS.7000"),
        ("delete", [{"key": "k" * 128}], "CSBS.9001"),
        ("delete", [{"key": " "}], "CSBS.9001"),
        ("delete", [{"key": "k", "value": "v" * 256}], "CSBS.9001"),
        ("remove", [{"key": "k", "value": "v"}], "CSBS.9001"),
        ("create", "k=v", "CSBS.9001"),
    ],
)
def test_batch_rules(world: World, action: str, tags: Any, code: str) -> None:
    b = seed_backup(world.env.services, world.pid, "bk1", tags=[("keep", "me")])
    _error(world.batch(b.id, action, tags), 400, code)
    assert world.tags(b.id) == [{"key": "keep", "value": "me"}]


def test_batch_create_over_ten_in_total_changes_nothing(world: World) -> None:
    b = seed_backup(world.env.services, world.pid, "bk1", tags=[(f"k{i}", "v") for i in range(9)])
    new = [{"key": "k0", "value": "x"}, {"key": "n1", "value": "v"}, {"key": "n2", "value": "v"}]
    _error(world.batch(b.id, "create", new), 400, "CSBS.7000")
    assert world.tags(b.id) == [{"key": f"k{i}", "value": "v"} for i in range(9)]
    assert world.batch(b.id, "create", new[:2]).status_code == 204  # k0 overwritten, n1 new
    tags = world.tags(b.id)
    assert len(tags) == 10 and {"key": "k0", "value": "x"} in tags


# -- T4: delete one --------------------------------------------------------------------------


def test_delete_one(world: World) -> None:
    b = seed_backup(world.env.services, world.pid, "bk1", tags=[("a", "1"), ("b", "2")])
    r = world.env.client.delete(world.url(f"/{b.id}/tags/a"), headers=world.h())
    assert r.status_code == 204 and r.content == b""
    assert world.tags(b.id) == [{"key": "b", "value": "2"}]
    r = world.env.client.delete(world.url(f"/{b.id}/tags/a"), headers=world.h())
    _error(r, 404, "CSBS.7001")
    assert r.json()["error_msg"] == "The backup tag does not exist."
    # trimmed; blank after trimming or too long -> 400
    assert (
        world.env.client.delete(world.url(f"/{b.id}/tags/%20b%20"), headers=world.h()).status_code
        == 204
    )
    _error(
        world.env.client.delete(world.url(f"/{b.id}/tags/%20%20"), headers=world.h()),
        400,
        "CSBS.9001",
    )
    _error(
        world.env.client.delete(world.url(f"/{b.id}/tags/{'k' * 128}"), headers=world.h()),
        400,
        "CSBS.9001",
    )


# -- who may do what, and which backups exist ------------------------------------------------


def test_unknown_and_foreign_backups_are_not_found(world: World) -> None:
    foreign = seed_backup(world.env.services, world.other_pid, "theirs", tags=[("t", "1")])
    c = world.env.client
    for bid in (foreign.id, "no-such-backup"):
        for r in (
            world.add(bid, "k", "v"),
            world.batch(bid, "create", [{"key": "k", "value": "v"}]),
            world.batch(bid, "delete", [{"key": "t"}]),
            c.delete(world.url(f"/{bid}/tags/t"), headers=world.h()),
            c.get(world.url(f"/{bid}/tags"), headers=world.h()),
        ):
            _error(r, 404, "CSBS.3001")
            assert r.json()["error_msg"] == f"Checkpoint_item ({bid}) is not found."
    # untouched, and invisible to alpha's project-wide reads
    r = c.get(world.url(f"/{foreign.id}/tags", world.other_pid), headers=world.h(world.other))
    assert r.json()["tags"] == [{"key": "t", "value": "1"}]
    assert c.get(world.url("/tags"), headers=world.h()).json() == {"tags": []}
    assert world.query({"action": "count"}).json() == {"total_count": 0}


def test_roles(world: World) -> None:
    b = seed_backup(world.env.services, world.pid, "bk1", tags=[("a", "1")])
    c = world.env.client
    for r in (
        world.add(b.id, "k", "v", world.reader),
        world.batch(b.id, "delete", [{"key": "a"}], world.reader),
        c.delete(world.url(f"/{b.id}/tags/a"), headers=world.h(world.reader)),
    ):
        _error(r, 403, "CSBS.9011")
    assert world.tags(b.id, world.reader) == [{"key": "a", "value": "1"}]
    assert world.query({"action": "count"}, world.reader).json() == {"total_count": 1}
    # a token of another project -> 403 on every tag path
    for r in (
        c.get(world.url(f"/{b.id}/tags"), headers=world.h(world.other)),
        c.get(world.url("/tags"), headers=world.h(world.other)),
        world.add(b.id, "k", "v", world.other),
        world.query({"action": "count"}, world.other),
    ):
        assert r.status_code == 403, r.text
    assert c.get(world.url(f"/{b.id}/tags")).status_code == 401
    # an admin may act everywhere
    assert world.add(b.id, "k", "v", world.env.admin_token()).status_code == 204


# -- T6: project tags -----------------------------------------------------------------------


def test_project_tags_are_distinct_values_per_key(world: World) -> None:
    s = world.env.services
    seed_backup(s, world.pid, "b1", tags=[("env", "prod"), ("team", "a")])
    seed_backup(s, world.pid, "b2", tags=[("env", "dev")])
    seed_backup(s, world.pid, "b3", tags=[("env", "prod"), ("x", "")])
    seed_backup(s, world.other_pid, "b4", tags=[("env", "other"), ("secret", "1")])
    r = world.env.client.get(world.url("/tags"), headers=world.h())
    assert r.status_code == 200
    assert r.json() == {
        "tags": [
            {"key": "env", "values": ["dev", "prod"]},
            {"key": "team", "values": ["a"]},
            {"key": "x", "values": [""]},
        ]
    }


# -- T1: query by tags, against 50 tagged backups --------------------------------------------

ENVS = ("prod", "dev", "test")


def _tags_of(i: int) -> dict[str, str]:
    tags = {"env": ENVS[i % 3], "team": f"t{i % 5}"}
    if i % 2 == 0:
        tags["even"] = ""
    if i % 10 == 0:
        tags["ten"] = f"x{i}"
    return tags


def _name_of(i: int) -> str:
    return f"bk{i:02d}" + ("_db" if i % 7 == 0 else "")


@pytest.fixture
def fifty(world: World) -> dict[str, int]:
    """50 backups of alpha (bk00 oldest .. bk49 newest) and 3 of beta; name -> index."""
    s = world.env.services
    out = {}
    for i in range(50):
        seed_backup(
            s,
            world.pid,
            _name_of(i),
            tags=sorted(_tags_of(i).items()),
            created_at=EPOCH + dt.timedelta(minutes=i),
        )
        out[_name_of(i)] = i
    for i in range(3):
        seed_backup(s, world.other_pid, _name_of(i), tags=sorted(_tags_of(i).items()))
    return out


def _matches(tags: dict[str, str], key: str, values: list[str]) -> bool:
    key, values = key.strip(), [v.strip() for v in values]
    if key not in tags:
        return False
    if not values:
        return True
    v = tags[key]
    return any(w[1:].lower() in v.lower() if w.startswith("*") else w == v for w in values)


def _terms(tags: dict[str, str], body: dict[str, Any]) -> Any:
    def terms(field: str) -> list[bool]:
        return [_matches(tags, t["key"], t.get("values", [])) for t in body.get(field, [])]

    return terms


def _expected(body: dict[str, Any]) -> list[str]:
    """Names the query should answer, newest first (the reference semantics of spec §4.16)."""
    out = []
    for i in reversed(range(50)):
        tags, name = _tags_of(i), _name_of(i)
        terms = _terms(tags, body)
        if "tags" in body and not all(terms("tags")):
            continue
        if "tags_any" in body and not any(terms("tags_any")):
            continue
        if "not_tags" in body and all(terms("not_tags")):
            continue
        if "not_tags_any" in body and any(terms("not_tags_any")):
            continue
        if "matches" in body:
            m = body["matches"][0]["value"]
            if (m == "" and name != "") or (m != "" and m.lower() not in name.lower()):
                continue
        out.append(name)
    return out


QUERIES: list[dict[str, Any]] = [
    {},
    {"tags": [{"key": "env", "values": ["prod"]}]},
    {"tags": [{"key": "env", "values": ["prod", "dev"]}, {"key": "team", "values": ["t1"]}]},
    {"tags": [{"key": "even", "values": []}]},
    {"tags": [{"key": "even"}]},
    {"tags": [{"key": "even", "values": [""]}, {"key": "ten", "values": []}]},
    {"tags": [{"key": "env", "values": ["*RO"]}]},
    {"tags": [{"key": "ten", "values": ["*x1", "x40"]}]},
    {"tags": [{"key": "env", "values": ["nope"]}]},
    {"tags": [{"key": "absent", "values": []}]},
    {"tags_any": [{"key": "ten", "values": []}, {"key": "team", "values": ["t2"]}]},
    {"not_tags": [{"key": "env", "values": ["prod"]}, {"key": "even", "values": []}]},
    {"not_tags_any": [{"key": "env", "values": ["prod"]}, {"key": "team", "values": ["t0"]}]},
    {"matches": [{"key": "resource_name", "value": "_DB"}]},
    {"matches": [{"key": "resource_name", "value": "bk4"}]},
    {"matches": [{"key": "resource_name", "value": ""}]},
    {
        "tags": [{"key": "env", "values": ["dev", "test"]}],
        "tags_any": [{"key": "even", "values": []}, {"key": "team", "values": ["t3"]}],
        "not_tags": [{"key": "team", "values": ["t4"]}],
        "not_tags_any": [{"key": "ten", "values": []}],
        "matches": [{"key": "resource_name", "value": "bk"}],
    },
    {"tags": [{"key": " env ", "values": [" prod "]}]},
    # `%` and `_` are literal in fuzzy values and in matches, never wildcards.
    {"matches": [{"key": "resource_name", "value": "k_"}]},
    {"matches": [{"key": "resource_name", "value": "%"}]},
    {"tags": [{"key": "ten", "values": ["*x_"]}]},
]


@pytest.mark.parametrize("body", QUERIES)
def test_filter_and_count(world: World, fifty: dict[str, int], body: dict[str, Any]) -> None:
    expected = _expected(body)
    r = world.query({"action": "filter", **body})
    assert r.status_code == 200, r.text
    got = r.json()
    assert [x["resource_name"] for x in got["resources"]] == expected
    assert got["total_count"] == len(expected)
    for res in got["resources"]:
        i = fifty[res["resource_name"]]
        assert res["tags"] == [{"key": k, "value": v} for k, v in sorted(_tags_of(i).items())]
    r = world.query({"action": "count", **body})
    assert r.status_code == 200 and r.json() == {"total_count": len(expected)}


def test_sanity_of_the_reference() -> None:
    # The reference semantics above are not vacuous: the queries pick different sets.
    assert len(_expected({})) == 50
    assert len(_expected(QUERIES[1])) == 17
    assert len(_expected(QUERIES[3])) == 25
    assert _expected(QUERIES[6]) == _expected(QUERIES[1])
    assert 0 < len(_expected(QUERIES[16])) < 50
    assert _expected(QUERIES[15]) == []


def test_filter_pages_with_string_limit_and_offset(world: World, fifty: dict[str, int]) -> None:
    newest_first = _expected({})
    r = world.query({"action": "filter", "limit": "7"}).json()
    assert [x["resource_name"] for x in r["resources"]] == newest_first[:7]
    assert r["total_count"] == 50
    r = world.query({"action": "filter", "limit": "10", "offset": "45"}).json()
    assert [x["resource_name"] for x in r["resources"]] == newest_first[45:]
    assert r["total_count"] == 50
    r = world.query({"action": "filter", "offset": "50"}).json()
    assert r == {"resources": [], "total_count": 50}
    r = world.query({"action": "filter", "limit": "1000", "offset": "0"}).json()
    assert len(r["resources"]) == 50
    r = world.query({"action": "filter", "limit": 3}).json()  # numbers are tolerated
    assert len(r["resources"]) == 3
    # count ignores paging
    assert world.query({"action": "count", "limit": "1", "offset": "10"}).json() == {
        "total_count": 50
    }


def test_filter_resource_detail_is_the_checkpoint_item(world: World, fifty: dict[str, int]) -> None:
    r = world.query(
        {"action": "filter", "matches": [{"key": "resource_name", "value": "bk48"}]}
    ).json()
    (res,) = r["resources"]
    item = world.env.client.get(
        f"/v1/{world.pid}/checkpoint_items/{res['resource_id']}", headers=world.h()
    ).json()["checkpoint_item"]
    assert res["resource_detail"] == item
    assert res["resource_detail"]["name"] == "bk48" and res["resource_id"] == item["id"]


def _filter_tags(n_keys: int = 1, n_values: int = 1, key: str = "k", value: str = "v") -> list[Any]:
    return [
        {
            "key": key if n_keys == 1 else f"{key}{i}",
            "values": [f"{value}{j}" if n_values > 1 else value for j in range(n_values)],
        }
        for i in range(n_keys)
    ]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"action": "find"}, "CSBS.9001"),
        ({}, "CSBS.9001"),
        ({"action": "filter", "limit": "0"}, "CSBS.9001"),
        ({"action": "filter", "limit": "1001"}, "CSBS.9001"),
        ({"action": "filter", "limit": "abc"}, "CSBS.9001"),
        ({"action": "filter", "limit": "1.5"}, "CSBS.9001"),
        ({"action": "filter", "limit": "-1"}, "CSBS.9001"),
        ({"action": "filter", "limit": True}, "CSBS.9001"),
        ({"action": "filter", "offset": "-1"}, "CSBS.9001"),
        ({"action": "filter", "offset": "x"}, "CSBS.9001"),
        ({"action": "filter", "offset": "9" * 40}, "CSBS.9001"),
        ({"action": "filter", "tags": []}, "CSBS.9001"),
        ({"action": "count", "tags_any": []}, "CSBS.9001"),
        ({"action": "filter", "tags": _filter_tags(n_keys=11)}, "CSBS.7000"),
        ({"action": "filter", "not_tags": _filter_tags(n_keys=11)}, "CSBS.7000"),
        ({"action": "filter", "tags": _filter_tags() * 2}, "CSBS.9001"),
        ({"action": "filter", "tags": [{"key": "", "values": []}]}, "CSBS.9001"),
        ({"action": "filter", "tags": [{"key": "k" * 128, "values": []}]}, "CSBS.9001"),
        ({"action": "filter", "tags": _filter_tags(n_values=11)}, "CSBS.9001"),
        ({"action": "filter", "tags": [{"key": "k", "values": ["a", "a"]}]}, "CSBS.9001"),
        ({"action": "filter", "tags": [{"key": "k", "values": ["v" * 256]}]}, "CSBS.9001"),
        ({"action": "filter", "tags": [{"key": "k", "values": "v"}]}, "CSBS.9001"),
        ({"action": "filter", "tags": "env"}, "CSBS.9001"),
        ({"action": "filter", "matches": []}, "CSBS.9001"),
        ({"action": "filter", "matches": [{"key": "name", "value": "x"}]}, "CSBS.9001"),
        (
            {"action": "filter", "matches": [{"key": "resource_name", "value": "x"}] * 2},
            "CSBS.9001",
        ),
        (
            {"action": "filter", "matches": [{"key": "resource_name", "value": "x" * 256}]},
            "CSBS.9001",
        ),
    ],
)
def test_query_rules(world: World, body: dict[str, Any], code: str) -> None:
    _error(world.query(body), 400, code)


def test_query_limits_are_inclusive(world: World) -> None:
    seed_backup(world.env.services, world.pid, "bk", tags=[("k0", "v0")])
    body = {
        "action": "count",
        "tags_any": _filter_tags(n_keys=10, n_values=10),
        "not_tags": [{"key": "k" * 127, "values": ["v" * 255]}],
        "matches": [{"key": "resource_name", "value": "b" * 255}],
    }
    assert world.query(body).json() == {"total_count": 0}
    body.pop("matches")
    assert world.query(body).json() == {"total_count": 1}
