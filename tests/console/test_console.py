"""The console in a real browser against a live `csbs serve`: logging in, the overview,
backing up and restoring, deleting, policies, a reader's view, and losing the token; every
page checked by axe-core and photographed at laptop and phone width."""

from __future__ import annotations

import re
from pathlib import Path

import httpx2
from playwright.sync_api import Page, expect

from tests.console.conftest import (
    ADMIN_PASSWORD,
    Site,
    check_accessibility,
    login,
    screenshots,
    serving,
)


def test_login_then_the_overview(page: Page, site: Site) -> None:
    page.goto(f"{site.base}/")
    # A browser asking for `/` lands on the console's login.
    expect(page).to_have_url(re.compile(r"/console/"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    check_accessibility(page, "login")
    screenshots(page, "login")
    login(page, site, "mia")
    for title in ("Servers", "Backups by status", "Tasks, last 24 hours", "Usage and quotas"):
        expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
    expect(page.get_by_text("mia · alpha · member")).to_be_visible()
    # Every registered server is counted, protected or not.
    servers = page.get_by_role("region", name="Servers")
    counts = servers.locator(".stat dd")
    expect(counts).to_have_count(2)
    assert sum(int(x) for x in counts.all_inner_texts()) == len(site.servers)


def test_back_up_a_server_watch_it_finish_then_restore_it(page: Page, site: Site) -> None:
    login(page, site, "mia")
    page.get_by_role("link", name="Servers").click()
    row = page.locator("tr[data-server=web1]")
    row.get_by_role("button", name="Back up now: web1").click()
    expect(page.locator("#main").get_by_text("Backup of web1 started")).to_be_visible()
    # Live: the row goes from backing up to available without a reload.
    expect(row.locator(".last-backup")).to_contain_text("available", timeout=60_000)
    expect(row.locator(".last-backup")).to_contain_text("consistent")

    row.get_by_role("button", name="Restore web1").click()
    dialog = page.get_by_role("dialog", name="Restore web1")
    expect(dialog.get_by_label("Backup")).to_be_visible()
    # Each disk backup is mapped onto a disk; sending is possible once nothing is refused.
    expect(dialog.get_by_text("Every disk backup has a disk large enough.")).to_be_visible()
    # Mapping the large disk's backup onto the small disk is explained before anything is sent.
    selects = dialog.locator("fieldset.mapping select")
    expect(selects).to_have_count(2)
    small = site.servers["web1"]["disks"][1]["id"]
    selects.nth(0).select_option(small)
    expect(dialog.get_by_text("Two disk backups go to the same disk.")).to_be_visible()
    expect(dialog.get_by_text(re.compile("is smaller than the backup of"))).to_be_visible()
    expect(dialog.get_by_role("button", name="Restore")).to_be_disabled()
    check_accessibility(page, "restore wizard")
    screenshots(page, "servers-restore-wizard")
    selects.nth(0).select_option(site.servers["web1"]["disks"][0]["id"])
    dialog.get_by_role("button", name="Restore").click()
    expect(page.locator("[data-restore-status]")).to_have_attribute(
        "data-restore-status", "success", timeout=60_000
    )
    check_accessibility(page, "servers after a restore")
    screenshots(page, "servers-restored")


def test_a_failed_backup_says_why_in_words(page: Page, site: Site) -> None:
    # The image file is replaced behind the service's back: the registered disk is gone.
    # (made before the old one goes, so it cannot reuse its inode number)
    image = Path(site.servers["old1"]["disks"][0]["path"])
    other = image.with_suffix(".new")
    other.write_bytes(b"\0" * (4 << 20))
    other.replace(image)
    login(page, site, "mia")
    page.get_by_role("link", name="Servers").click()
    row = page.locator("tr[data-server=old1]")
    row.get_by_role("button", name="Back up now: old1").click()
    expect(row.locator(".last-backup")).to_contain_text("error", timeout=60_000)
    page.get_by_role("link", name="Tasks").click()
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Apply").click()
    failed = page.locator("tbody tr[data-task]", has_text="old1")
    expect(failed.first).to_contain_text("is no longer the file or device registered for it")
    check_accessibility(page, "failed tasks")
    screenshots(page, "tasks-failed")
    # The server says so too, beside its last backup.
    page.get_by_role("link", name="Servers").click()
    expect(row.locator(".last-backup")).to_contain_text("is no longer the file or device")


def test_a_running_server_cannot_be_restored_and_the_wizard_says_why(
    page: Page, site: Site
) -> None:
    login(page, site, "mia")
    page.get_by_role("link", name="Servers").click()
    page.get_by_role("button", name="Restore app1").click()
    dialog = page.get_by_role("dialog", name="Restore app1")
    expect(
        dialog.get_by_text("app1 is running: a restore needs the server stopped")
    ).to_be_visible()
    expect(dialog.get_by_role("button", name="Restore")).to_be_disabled()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_delete_two_backups_and_watch_them_queue_and_go(page: Page, site: Site) -> None:
    token = site.token("mia")
    first, second = site.backup("web2", token), site.backup("web2", token)
    login(page, site, "mia")
    page.get_by_role("link", name="Backups").click()
    page.get_by_label("Server").select_option(label="web2")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("tbody tr[data-backup]")
    expect(rows).to_have_count(2)
    for i in range(2):
        rows.nth(i).get_by_role("checkbox").check()
    page.get_by_role("button", name="Delete selected (2)").click()
    dialog = page.get_by_role("dialog", name="Delete 2 backup(s)?")
    check_accessibility(page, "delete confirmation")
    dialog.get_by_role("button", name="Delete").click()
    deletions = page.get_by_role("region", name="Deletions")
    expect(deletions.locator("li")).to_have_count(2)
    # Accepted deletions wait their turn first, then run, then the backups are gone.
    expect(deletions).to_contain_text("waiting to delete")
    expect(deletions.locator("li", has_text="deleted (gone)")).to_have_count(2, timeout=60_000)
    for backup_id in (first, second):
        assert site.api("GET", f"/checkpoint_items/{backup_id}", token).status_code == 404
    expect(page.get_by_text("No backup matches.")).to_be_visible()
    check_accessibility(page, "backups after deletions")
    screenshots(page, "backups-deleted")


def test_a_backups_details_and_tags(page: Page, site: Site) -> None:
    token = site.token("mia")
    backup_id = site.backup("db1", token)
    login(page, site, "mia")
    page.goto(f"{site.base}/console/#/backups/{backup_id}")
    expect(page.get_by_role("heading", name=re.compile("^Backup "))).to_be_visible()
    expect(page.get_by_role("table", name="Disks")).to_be_visible()
    tags = page.get_by_role("region", name="Tags")
    tags.get_by_label("Key").fill("env")
    tags.get_by_label("Value").fill("prod")
    tags.get_by_role("button", name="Add tag").click()
    expect(tags.get_by_text("env=prod")).to_be_visible()
    assert site.api("GET", f"/csbs_backup/{backup_id}/tags", token).json() == {
        "tags": [{"key": "env", "value": "prod"}]
    }
    # The list filtered by the tag shows this backup alone.
    name = page.get_by_role("heading", name=re.compile("^Backup ")).inner_text().split()[-1]
    page.get_by_role("link", name="Backups", exact=True).click()
    page.get_by_label("Tag", exact=True).fill("env=prod")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("tbody tr[data-backup]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(name)
    expect(rows.first).to_contain_text("env=prod")
    expect(page.get_by_text("Page 1 of 1 · 1 backup(s)")).to_be_visible()
    page.get_by_role("link", name=name).click()
    tags = page.get_by_role("region", name="Tags")
    # The API's own message for what it refuses (a key too long for a tag).
    tags.get_by_label("Key").evaluate("el => el.removeAttribute('maxlength')")
    tags.get_by_label("Key").fill("k" * 200)
    tags.get_by_role("button", name="Add tag").click()
    expect(page.get_by_role("alert")).to_be_visible()
    tags.get_by_role("button", name="Remove tag env").click()
    expect(tags.get_by_text("No tags.")).to_be_visible()
    check_accessibility(page, "backup details")
    screenshots(page, "backup-details")
    # Deleting one backup from its page: confirmed, then followed until it is gone.
    page.get_by_role("button", name="Delete backup").click()
    page.get_by_role("dialog", name=re.compile("^Delete backup")).get_by_role(
        "button", name="Delete"
    ).click()
    expect(page.locator("#main").get_by_text("The backup is deleted.")).to_be_visible(
        timeout=60_000
    )
    assert site.api("GET", f"/checkpoint_items/{backup_id}", token).status_code == 404


def test_create_a_policy_and_see_its_next_runs_before_saving(page: Page, site: Site) -> None:
    login(page, site, "mia")
    page.get_by_role("link", name="Policies").click()
    page.get_by_role("link", name="New policy").click()
    page.get_by_label("Name", exact=True).fill("nightly-web")
    page.get_by_label("Runs", exact=True).select_option("weekly")
    page.get_by_label("Monday").uncheck()
    page.get_by_label("Tuesday").check()
    page.get_by_label("Friday").check()
    page.get_by_label(re.compile("^At")).fill("03:30")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    runs = page.locator("ol.next-runs li")
    expect(runs).to_have_count(5)
    expect(runs.first).to_contain_text(
        re.compile(r"^(Tue|Fri) \d{4}-\d\d-\d\d 03:30 Europe/Berlin")
    )
    # A schedule the service refuses says why, in its words, before saving.
    page.get_by_label(re.compile("^At")).fill("03:30,03:45")
    expect(page.get_by_text("Several times of day must share the same minute")).to_be_visible()
    page.get_by_label(re.compile("^At")).fill("03:30,04:00")
    expect(page.get_by_text("Several times of day must share the same minute")).to_be_visible()
    page.get_by_label(re.compile("^At")).fill("03:30")
    page.get_by_label("Keep the last N backups of each server").check()
    page.get_by_label("N backups", exact=True).fill("5")
    page.get_by_label("Weeks", exact=True).fill("4")
    page.locator("label.member", has_text="web2").get_by_role("checkbox").check()
    check_accessibility(page, "policy editor")
    screenshots(page, "policy-editor")
    page.get_by_role("button", name="Create policy").click()
    row = page.locator("tr[data-policy=nightly-web]")
    expect(row).to_contain_text("weekly on TU, FR at 03:30 (Europe/Berlin)")
    expect(row).to_contain_text("keep last 5")
    (policy,) = [
        p
        for p in site.api("GET", "/policies", site.token("mia")).json()["policies"]
        if p["name"] == "nightly-web"
    ]
    definition = policy["scheduled_operations"][0]["operation_definition"]
    assert definition["week_backups"] == "4" and definition["timezone"] == "Europe/Berlin"
    assert definition["max_backups"] == "5" and definition["permanent"] is False
    expect(row).to_contain_text(re.compile(r"(Tue|Fri) \d{4}-\d\d-\d\d 03:30 Europe/Berlin"))
    # Disable, then run now: the run shows among the policy's last runs.
    row.get_by_role("button", name="Disable nightly-web").click()
    expect(row).to_contain_text("disabled")
    row.get_by_role("button", name="Run now: nightly-web").click()
    expect(
        page.locator("#main").get_by_text("nightly-web is backing up its servers now")
    ).to_be_visible()
    row.get_by_role("link", name="nightly-web").click()
    expect(page.get_by_role("table", name="Last runs")).to_contain_text("manual")
    check_accessibility(page, "policy with its runs")
    screenshots(page, "policy-runs")


def test_a_reader_sees_but_cannot_change(page: Page, site: Site) -> None:
    login(page, site, "rita")
    expect(page.get_by_text("rita · alpha · reader")).to_be_visible()
    page.get_by_role("link", name="Servers").click()
    expect(page.get_by_text("Your role may only read in this project")).to_be_visible()
    expect(page.get_by_role("button", name="Back up now: web1")).to_be_disabled()
    expect(page.get_by_role("button", name="Restore web1")).to_be_disabled()
    page.get_by_role("link", name="Backups").click()
    expect(page.locator("tbody tr[data-backup]").first).to_be_visible()
    expect(page.locator("tbody tr[data-backup] input[type=checkbox]:enabled")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete selected")).to_be_disabled()
    page.get_by_role("link", name="Policies").click()
    expect(page.get_by_role("button", name="New policy")).to_be_disabled()
    expect(page.get_by_role("button", name="Run now: nightly-web")).to_be_disabled()
    page.get_by_role("link", name="Admin").click()
    expect(page.get_by_role("button", name="Save quotas")).to_be_disabled()


def test_a_wrong_password_stays_on_the_login_with_the_message(page: Page, site: Site) -> None:
    page.goto(f"{site.base}/console/")
    page.get_by_label("User").fill("mia")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_label("Project").fill("alpha")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Login failed: The request you have made requires authentication."
    )
    assert page.evaluate("sessionStorage.length") == 0


def test_a_revoked_token_lands_on_the_login_with_the_message(page: Page, site: Site) -> None:
    login(page, site, "mia")
    token = page.evaluate("JSON.parse(sessionStorage.getItem('csbs.session')).token")
    # Revoked elsewhere (another tab, an administrator): the next poll finds out.
    r = site.api("GET", "/servers", token)
    assert r.status_code == 200
    httpx2.delete(
        f"{site.base}/v3/auth/tokens",
        headers={"X-Auth-Token": token, "X-Subject-Token": token},
    ).raise_for_status()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible(timeout=15_000)
    expect(page.get_by_role("alert")).to_have_text("The token is invalid or has been revoked.")
    assert page.evaluate("sessionStorage.getItem('csbs.session')") is None


def test_an_expired_token_lands_on_the_login_with_the_message(page: Page, tmp_path: Path) -> None:
    # A service of its own whose tokens live two seconds.
    with serving(tmp_path, CSBS_TOKEN_TTL_SECONDS="2") as base:
        page.goto(f"{base}/console/")
        page.get_by_label("User").fill("admin")
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_label("Project").fill("admin")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
        # The overview polls; the first call after the expiry sends the person to the login.
        expect(page.get_by_role("heading", name="Log in")).to_be_visible(timeout=15_000)
        expect(page.get_by_role("alert")).to_have_text("The token has expired.")


def test_logout_revokes_the_token(page: Page, site: Site) -> None:
    login(page, site, "mia")
    token = page.evaluate("JSON.parse(sessionStorage.getItem('csbs.session')).token")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.get_by_text("You are logged out; the token is revoked.")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    assert site.api("GET", "/servers", token).status_code == 401


def test_every_page_is_accessible_at_laptop_and_phone_width(page: Page, site: Site) -> None:
    login(page, site, "mia")
    for name, link, heading in (
        ("overview", "Overview", "Overview"),
        ("servers", "Servers", "Servers"),
        ("backups", "Backups", "Backups"),
        ("policies", "Policies", "Policies"),
        ("tasks", "Tasks", "Tasks"),
        ("admin-member", "Admin", "Admin"),
    ):
        page.get_by_role("link", name=link, exact=True).click()
        expect(page.get_by_role("heading", name=heading, level=1)).to_be_visible()
        page.wait_for_load_state("networkidle")
        check_accessibility(page, name)
        screenshots(page, name)
    page.get_by_role("button", name="Log out").click()
    login(page, site, "admin", project="admin", password=ADMIN_PASSWORD)
    page.get_by_role("link", name="Admin", exact=True).click()
    expect(page.get_by_role("button", name="Save quotas")).to_be_enabled()
    # Quotas and servers of a tenant's project.
    page.get_by_label("Project to manage").select_option(label="alpha")
    expect(page.get_by_role("table", name="Registered servers")).to_contain_text("web1")
    page.get_by_label("Backups (-1 = unlimited)").fill("100")
    page.get_by_role("button", name="Save quotas").click()
    expect(page.locator("#main").get_by_text("Quotas saved.")).to_be_visible()
    quotas = site.api("GET", "/quotas", site.token("mia")).json()["quotas"]["resources"]
    assert {"type": "backups", "quota": 100} == {
        k: v for k, v in next(q for q in quotas if q["type"] == "backups").items() if k != "used"
    }
    # Projects and users, through the identity API.
    page.get_by_label("New project").fill("gamma")
    page.get_by_role("button", name="Create project").click()
    expect(page.get_by_role("table", name="Projects")).to_contain_text("gamma")
    page.get_by_label("User name").fill("gina")
    page.get_by_label("Password", exact=True).fill("gina-password-1")
    page.get_by_label("Project", exact=True).select_option(label="gamma")
    page.get_by_label("Role").select_option("reader")
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("table", name="Users")).to_contain_text("reader in gamma")
    page.get_by_label("User name").fill("gina")
    page.get_by_label("Password", exact=True).fill("another-password")
    page.get_by_role("button", name="Create user").click()
    expect(page.get_by_role("alert")).to_contain_text("user 'gina' already exists")
    check_accessibility(page, "admin")
    screenshots(page, "admin")


def test_the_keyboard_alone_reaches_a_backup(page: Page, site: Site) -> None:
    site.backup("db1", site.token("mia"))
    login(page, site, "mia")
    page.reload()
    page.get_by_role("heading", name="Overview", level=1).wait_for()
    # The skip link comes first, then the navigation in reading order.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    for _ in range(3):
        page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Backups")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Backups", level=1)).to_be_focused()
    # Through the filters to the first backup's link, by the Tab key only.
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent.startsWith('manualbk_')"):
            break
    else:
        raise AssertionError("Tab never reached a backup")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=re.compile("^Backup manualbk_"))).to_be_focused()
