"""The web console's files, served beside the API: a browser's `GET /` is sent to them, an
API client's is not."""

from __future__ import annotations

from pathlib import Path

from csbs.api.console import CONSOLE_DIR
from tests.support.runtime import Env


def test_a_browser_is_sent_to_the_console_and_api_clients_get_the_versions(env: Env) -> None:
    r = env.client.get(
        "/", headers={"Accept": "text/html,application/xhtml+xml"}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/"
    for accept in (None, "application/json", "*/*", ""):
        headers = {"Accept": accept} if accept is not None else {}
        r = env.client.get("/", headers=headers, follow_redirects=False)
        assert r.status_code == 300, accept
        assert r.json()["versions"][0]["id"] == "v1.0"
    r = env.client.get("/console", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/"


def test_the_console_is_the_packages_own_files_with_a_strict_policy(env: Env) -> None:
    r = env.client.get("/console/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in r.text
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert r.headers["cache-control"] == "no-cache"
    r = env.client.get("/console/pages/backups.js")
    assert r.status_code == 200 and "javascript" in r.headers["content-type"]
    assert env.client.get("/console/nope.js").status_code == 404
    assert env.client.get("/console/../pyproject.toml").status_code == 404


def test_no_console_file_loads_anything_from_elsewhere() -> None:
    files = [p for p in CONSOLE_DIR.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".html", ".js", ".css"}
    for path in files:
        # The SVG namespace is a name, not an address anything is loaded from.
        text = path.read_text().replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text, path


def test_the_package_data_lists_every_console_file() -> None:
    import tomllib

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["csbs"]
    package = CONSOLE_DIR.parent
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    assert {p for p in CONSOLE_DIR.rglob("*") if p.is_file()} <= shipped
