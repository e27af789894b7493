"""PostgreSQL going away answers 503 with the error body; csbs recovers without a restart."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from csbs.db.engine import PING_IDLE_SECONDS
from tests.support.runtime import Env, make_env
from tests.support.tcp_proxy import TcpProxy


@pytest.fixture
def proxied(tmp_path: Path, pg_url: str) -> Iterator[tuple[Env, TcpProxy]]:
    url = sa.make_url(pg_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.restore()
    via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = make_env(tmp_path, urllib.parse.unquote(via_proxy), db_connect_timeout_seconds=1)
    try:
        yield env, proxy
    finally:
        proxy.cut()
        env.client.close()
        env.runtime.close()


def test_outage_is_503_then_recovers(proxied: tuple[Env, TcpProxy]) -> None:
    env, proxy = proxied
    token = env.admin_token()
    pid = env.project_id("admin")
    headers = {"X-Auth-Token": token}
    assert env.client.get(f"/v1/{pid}/providers", headers=headers).status_code == 200

    proxy.cut()
    # (The token is remembered for a few seconds; listing backups needs the database.)
    for path in (f"/v1/{pid}/checkpoint_items", "/readyz"):
        r = env.client.get(path, headers=headers)
        assert r.status_code == 503, r.text
        assert r.json()["error_code"] == "CSBS.9998"
        assert r.json()["serviceUnavailable"]["code"] == 503
        assert int(r.headers["retry-after"]) > 0
    r = env.client.post(
        "/v3/auth/tokens",
        json={
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": "admin", "password": "x"}},
                },
                "scope": {"project": {"name": "admin"}},
            }
        },
    )
    assert r.status_code == 503
    assert env.client.get("/healthz").status_code == 200

    proxy.restore()
    assert env.client.get(f"/v1/{pid}/checkpoint_items", headers=headers).status_code == 200
    assert env.client.get("/readyz").status_code == 200


def test_closed_port_is_503(tmp_path: Path, pg_url: str) -> None:
    env = make_env(tmp_path, pg_url)
    try:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
        s.close()
        from fastapi.testclient import TestClient

        from csbs import app as composition
        from csbs.api.app import create_app

        settings = env.runtime.settings.model_copy(
            update={"database_url": f"postgresql://postgres@127.0.0.1:{closed_port}/test"}
        )
        dead = composition.build(settings)
        with TestClient(
            create_app(dead.services, dead.edge), raise_server_exceptions=False
        ) as client:
            r = client.get("/v1/x/providers", headers={"X-Auth-Token": "A" * 43})
            assert r.status_code == 503
            assert r.json()["error_code"] == "CSBS.9998"
        dead.close()
    finally:
        env.client.close()
        env.runtime.close()


def test_connections_idle_through_an_outage_are_replaced_unseen(
    proxied: tuple[Env, TcpProxy],
) -> None:
    # Pooled connections that sat idle while the database went away and came back are
    # pinged on checkout and replaced: the next call succeeds, no 503.
    env, proxy = proxied
    token = env.admin_token()
    pid = env.project_id("admin")
    headers = {"X-Auth-Token": token}
    assert env.client.get(f"/v1/{pid}/checkpoint_items", headers=headers).status_code == 200
    proxy.cut()
    proxy.restore()
    time.sleep(PING_IDLE_SECONDS + 0.2)
    for _ in range(3):
        r = env.client.get(f"/v1/{pid}/checkpoint_items", headers=headers)
        assert r.status_code == 200, r.text
