"""The real `csbs serve` process, started as a user would, spoken to over HTTP."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx2

from tests.support.processes import free_port, start_serve, wait_ready
from tests.support.runtime import password_auth


def test_first_start_generates_admin_password_then_serves(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    proc = start_serve(tmp_path / "data", port, log=log)
    try:
        wait_ready(base, proc)
        output = log.read_text()
        m = re.search(r"with password:\s*\n\s+(\S+)", output)
        assert m, output
        password = m.group(1)

        assert httpx2.get(f"{base}/").status_code == 300
        r = httpx2.post(
            f"{base}/v3/auth/tokens", json=password_auth("admin", password, project_name="admin")
        )
        assert r.status_code == 201, r.text
        token = r.headers["X-Subject-Token"]
        endpoint = r.json()["token"]["catalog"][0]["endpoints"][0]["url"]
        assert endpoint.startswith(f"{base}/v1/")
        providers = httpx2.get(f"{endpoint}/providers", headers={"X-Auth-Token": token})
        assert providers.status_code == 200
        assert providers.headers["x-request-id"].startswith("req-")
        assert (tmp_path / "data" / "csbs.db").exists()
        assert (tmp_path / "data").stat().st_mode & 0o077 == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    # One JSON line per request, with request id, status and duration.
    lines = [line for line in log.read_text().splitlines() if '"msg": "request"' in line]
    assert any('"status": 201' in line and '"duration_ms"' in line for line in lines)
    # The embedded scheduler led while the service ran and handed over on SIGTERM.
    text = log.read_text()
    assert '"msg": "scheduler leadership taken"' in text
    assert '"msg": "scheduler stopped"' in text


def test_second_start_keeps_admin_and_uses_env_password(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for attempt in range(2):
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = tmp_path / f"serve{attempt}.log"
        proc = start_serve(data, port, log=log, CSBS_ADMIN_PASSWORD="chosen-password-1")
        try:
            wait_ready(base, proc)
            assert "with password" not in log.read_text()
            r = httpx2.post(
                f"{base}/v3/auth/tokens",
                json=password_auth("admin", "chosen-password-1", project_name="admin"),
            )
            assert r.status_code == 201
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
