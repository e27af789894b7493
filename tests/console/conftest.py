"""A live `csbs serve` with real servers and backups, and Debian's chromium driven by
Playwright to use its console as a person would."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.processes import clean_env, csbs_command, free_port, start_serve, wait_ready
from tests.support.runtime import password_auth

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Browser, Page, sync_playwright

PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da"
CHROMIUM = os.environ.get("CSBS_TEST_CHROMIUM", "/usr/bin/chromium")
HERE = Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"
#: where the run leaves its screenshots for a person to look at (git-ignored)
SCREENSHOTS = HERE.parents[1] / "build" / "screenshots"
ADMIN_PASSWORD = "console-admin-pw"
PASSWORD = "console-user-pw"
LAPTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


@dataclasses.dataclass
class Site:
    """The running service: its address, tokens, and the servers registered in `alpha`."""

    base: str
    data: Path
    pid: str
    servers: dict[str, dict[str, Any]]

    def token(self, user: str, project: str = "alpha", password: str = PASSWORD) -> str:
        r = httpx2.post(
            f"{self.base}/v3/auth/tokens", json=password_auth(user, password, project_name=project)
        )
        assert r.status_code == 201, r.text
        return str(r.headers["X-Subject-Token"])

    def api(self, method: str, path: str, token: str, body: Any = None) -> httpx2.Response:
        return httpx2.request(
            method,
            f"{self.base}/v1/{self.pid}{path}",
            headers={"X-Auth-Token": token},
            json=body,
            timeout=30,
        )

    def backup(self, server: str, token: str) -> str:
        """A finished backup of `server` (made through the API, as a script would)."""
        sid = self.servers[server]["id"]
        r = self.api(
            "POST", f"/providers/{PROVIDER}/resources/{sid}/action", token, {"protect": {}}
        )
        assert r.status_code == 200, r.text
        cp = r.json()["checkpoint"]["id"]
        (item,) = self.api("GET", f"/checkpoint_items?checkpoint_id={cp}", token).json()[
            "checkpoint_items"
        ]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            b = self.api("GET", f"/checkpoint_items/{item['id']}", token).json()["checkpoint_item"]
            if b["status"] != "protecting":
                assert b["status"] == "available", b
                return str(b["id"])
            time.sleep(0.2)
        raise AssertionError("the backup did not finish")


def _cli(data: Path, *args: str, **env: str) -> None:
    subprocess.run(
        [*csbs_command(), *args, "--data-dir", str(data)],
        check=True,
        capture_output=True,
        env=clean_env(**env),
    )


@contextlib.contextmanager
def serving(root: Path, **env: str) -> Iterator[str]:
    """`csbs serve` on a free port with its data in `root`; yields its base URL."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start_serve(
        root / "data",
        port,
        log=root / "serve.log",
        CSBS_ADMIN_PASSWORD=ADMIN_PASSWORD,
        # A revoked token must fail at the next call, not up to five seconds later.
        CSBS_TOKEN_CACHE_SECONDS="0",
        CSBS_LOG_LEVEL="WARNING",
        **env,
    )
    try:
        wait_ready(base, proc)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("console")
    data = root / "data"
    disks = data / "disks"
    with serving(root) as base:
        _cli(data, "admin", "project", "create", "alpha")
        for user, role in (("mia", "member"), ("rita", "reader")):
            _cli(
                data,
                "admin",
                "user",
                "create",
                user,
                "--project",
                "alpha",
                "--role",
                role,
                CSBS_USER_PASSWORD=PASSWORD,
            )
        disks.mkdir(parents=True, exist_ok=True)
        r = httpx2.post(
            f"{base}/v3/auth/tokens",
            json=password_auth("admin", ADMIN_PASSWORD, project_name="admin"),
        )
        admin = r.headers["X-Subject-Token"]
        mia = httpx2.post(
            f"{base}/v3/auth/tokens", json=password_auth("mia", PASSWORD, project_name="alpha")
        ).json()["token"]
        pid = mia["project"]["id"]
        servers: dict[str, dict[str, Any]] = {}
        # Small image files with some data in them, so backups read and store real bytes.
        layout = {"web1": [8, 4], "web2": [4], "db1": [4], "app1": [4], "old1": [4]}
        for name, sizes in layout.items():
            paths = []
            for i, size in enumerate(sizes):
                path = disks / f"{name}-{i}.img"
                with open(path, "wb") as f:
                    f.truncate(size << 20)
                    f.write(os.urandom(256 << 10))
                    f.seek((size << 20) // 2)
                    f.write(name.encode() * 4096)
                paths.append({"path": str(path)})
            status = "running" if name == "app1" else "stopped"
            r = httpx2.post(
                f"{base}/v1/{pid}/servers",
                headers={"X-Auth-Token": admin},
                json={"server": {"name": name, "status": status, "disks": paths}},
            )
            assert r.status_code == 200, r.text
            servers[name] = r.json()["server"]
        yield Site(base=base, data=data, pid=pid, servers=servers)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium package")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # The console forbids inline scripts (its content security policy); the test lifts that
    # for itself only, to inject axe-core.
    context = browser.new_context(viewport=LAPTOP, bypass_csp=True)
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, errors


def login(
    page: Page, site: Site, user: str, project: str = "alpha", password: str = PASSWORD
) -> None:
    page.goto(f"{site.base}/")
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Project").fill(project)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Overview", level=1).wait_for()


def check_accessibility(page: Page, name: str) -> None:
    """axe-core finds no serious or critical violation on the page as it stands."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `npm ci` in tests/console (scripts/test does)")
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(content=AXE.read_text())
    violations = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"""
    )
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert not bad, f"{name}: {json.dumps(bad, indent=1)}"


def screenshots(page: Page, name: str) -> None:
    """The page at laptop and at phone width, for a person to look at (and a look at its
    text for what a person should never read there)."""
    text = page.locator("main").inner_text()
    for word in ("null", "undefined", "NaN", "[object Object]"):
        assert word not in text.split(), f"{name}: {word!r} in {text!r}"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for label, size in (("laptop", LAPTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.wait_for_timeout(150)
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(LAPTOP)
