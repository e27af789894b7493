// The router: one page at a time in <main>, chosen by the location's hash (#/backups).

import * as api from "./api.js";
import { announce, field, h, notice, stopTimers } from "./ui.js";
import { overviewPage } from "./pages/overview.js";
import { serversPage } from "./pages/servers.js";
import { backupsPage, backupPage } from "./pages/backups.js";
import { policiesPage, policyPage } from "./pages/policies.js";
import { tasksPage } from "./pages/tasks.js";
import { adminPage } from "./pages/admin.js";

const ROUTES = [
  [/^overview$/, overviewPage, "Overview"],
  [/^servers$/, serversPage, "Servers"],
  [/^backups$/, backupsPage, "Backups"],
  [/^backups\/([\w-]+)$/, backupPage, "Backup"],
  [/^policies$/, policiesPage, "Policies"],
  [/^policies\/(new|[\w-]+)$/, policyPage, "Policy"],
  [/^tasks$/, tasksPage, "Tasks"],
  [/^admin$/, adminPage, "Admin"],
];

let loginMessage = "";

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, q] = raw.split("?");
  return { path: path || "overview", params: new URLSearchParams(q || "") };
}

export function go(path) {
  location.hash = `#/${path}`;
}

function renderWho(s) {
  const who = document.getElementById("who");
  const nav = document.getElementById("nav");
  if (!s) {
    who.hidden = true;
    nav.hidden = true;
    return;
  }
  nav.hidden = false;
  who.hidden = false;
  who.replaceChildren(
    h("span", {}, `${s.user} · ${s.project} · ${s.role}`),
    h("button", { type: "button", class: "secondary small", onclick: signOut }, "Log out"),
  );
}

async function signOut() {
  await api.logout();
  loginMessage = "You are logged out; the token is revoked.";
  route();
}

function loginPage(main) {
  document.title = "Log in · csbs console";
  const user = h("input", { name: "user", autocomplete: "username", required: true });
  const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
  const project = h("input", { name: "project", autocomplete: "organization", required: true });
  const out = h("div", { class: "out" });
  const button = h("button", { type: "submit" }, "Log in");
  const form = h(
    "form",
    {
      class: "card login",
      "aria-labelledby": "login-title",
      onsubmit: async (e) => {
        e.preventDefault();
        button.disabled = true;
        out.replaceChildren(notice("info", "Logging in…"));
        try {
          await api.login(user.value.trim(), password.value, project.value.trim());
          loginMessage = "";
          const { path } = parseHash();
          if (path === "login") go("overview");
          else route();
        } catch (err) {
          out.replaceChildren(notice("error", `Login failed: ${err.message}`));
          password.select();
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h1", { id: "login-title" }, "Log in"),
    loginMessage ? notice("error", loginMessage) : null,
    field("User", user),
    field("Password", password),
    field("Project", project, "The project (tenant) whose backups you manage."),
    button,
    out,
  );
  main.replaceChildren(form);
  user.focus();
}

let generation = 0;
let firstRoute = true;

async function route() {
  stopTimers();
  const main = document.getElementById("main");
  const s = api.session();
  renderWho(s);
  if (!s) {
    firstRoute = false;
    loginPage(main);
    return;
  }
  const { path, params } = parseHash();
  const found = ROUTES.map(([re, page, title]) => [path.match(re), page, title]).find(([m]) => m);
  for (const a of document.querySelectorAll("#nav a")) {
    const current = path.split("/")[0] === a.getAttribute("href").slice(2);
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!found) {
    main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/overview" }, "Go to the overview")));
    return;
  }
  const [match, page, title] = found;
  const wasFirst = firstRoute;
  firstRoute = false;
  document.title = `${title} · csbs console`;
  const mine = ++generation;
  const view = h("div", { class: "page" });
  main.replaceChildren(view);
  try {
    await page(view, { params, id: match[1], go, isCurrent: () => mine === generation });
  } catch (err) {
    if (err instanceof api.ApiError && err.status === 401) return;
    view.append(notice("error", err.message || String(err)));
  }
  // Move focus to the new page's heading, so keyboard and screen reader users start there;
  // not on the first page a tab opens, where the skip link should come first.
  if (mine === generation && !wasFirst && !main.contains(document.activeElement)) {
    const heading = main.querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus();
    }
  }
}

api.whenUnauthorized((message) => {
  stopTimers();
  for (const d of document.querySelectorAll("dialog")) d.remove();
  loginMessage = message;
  announce(message);
  route();
});

window.addEventListener("hashchange", route);
route();
