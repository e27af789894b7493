// Admin: what the API lets an administrator change — quotas, the server inventory, projects
// and users (through the identity API, /v3).

import { callAt, isAdmin, session } from "../api.js";
import { field, fmtBytes, h, notice, table } from "../ui.js";

export async function adminPage(view, ctx) {
  view.append(h("h1", {}, "Admin"));
  const admin = isAdmin();
  if (!admin) view.append(notice("info", "Only administrators may change quotas and servers; you see them read-only."));
  const out = h("div", { class: "out" });
  const peopleBox = h("div");
  const quotaBox = h("div");
  const serverBox = h("div");
  view.append(
    out,
    h(
      "div",
      { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "q-title" }, h("h2", { id: "q-title" }, "Quotas"), quotaBox),
      h("section", { class: "card", "aria-labelledby": "s-title" }, h("h2", { id: "s-title" }, "Servers"), serverBox),
    ),
    h("section", { class: "card", "aria-labelledby": "p-title" }, h("h2", { id: "p-title" }, "Projects and users"), peopleBox),
  );

  // An administrator may manage any project: quotas and servers follow the chosen one.
  let pid = session().projectId;
  const call = (method, path, body) => callAt(method, `/v1/${pid}${path}`, body);
  const get = (path) => call("GET", path);
  if (admin) {
    const projects = (await callAt("GET", "/v3/projects")).projects;
    const chooser = h(
      "select",
      {
        name: "admin-project",
        onchange: async (e) => {
          pid = e.target.value;
          out.replaceChildren();
          await Promise.all([loadQuotas(), loadServers()]);
        },
      },
      projects.map((p) => h("option", { value: p.id }, p.name)),
    );
    chooser.value = pid;
    view.insertBefore(h("div", { class: "filters" }, field("Project to manage", chooser, "Quotas and servers below are this project's.")), out);
  }

  const report = (kind, text) => {
    // The notice is a live region of its own: screen readers read it once.
    out.replaceChildren(notice(kind, text));
  };

  const loadQuotas = async () => {
    const q = (await get("/quotas")).quotas.resources;
    const of = (t) => q.find((r) => r.type === t) || { quota: -1, used: 0 };
    const backups = h("input", { type: "number", name: "quota-backups", min: "-1", value: String(of("backups").quota), disabled: !admin });
    const capacity = h("input", { type: "number", name: "quota-capacity", min: "-1", step: "any", value: String(of("backup_capacity").quota), disabled: !admin });
    quotaBox.replaceChildren(
      h("p", {}, `Used: ${of("backups").used} backups, ${of("backup_capacity").used} GB stored.`),
      h(
        "form",
        {
          onsubmit: async (e) => {
            e.preventDefault();
            try {
              await call("PUT", "/admin/quotas", { quotas: { backups: Number(backups.value), backup_capacity: Number(capacity.value) } });
              report("success", "Quotas saved.");
              await loadQuotas();
            } catch (err) {
              report("error", err.message);
            }
          },
        },
        field("Backups (-1 = unlimited)", backups),
        field("Stored GB (-1 = unlimited)", capacity),
        h("button", { type: "submit", disabled: !admin }, "Save quotas"),
      ),
    );
  };

  const loadServers = async () => {
    const servers = (await get("/servers")).servers;
    const name = h("input", { name: "server-name", required: true, disabled: !admin });
    const host = h("input", { name: "server-host", disabled: !admin });
    const disks = h("textarea", { name: "server-disks", rows: "3", required: true, disabled: !admin });
    serverBox.replaceChildren(
      table(
        "Registered servers",
        ["Name", "Status", "Disks", "Actions"],
        servers.map((s) =>
          h(
            "tr",
            {},
            h("th", { scope: "row" }, s.name),
            h("td", {}, s.status),
            h("td", {}, s.disks.map((d) => `${d.path} (${fmtBytes(d.size_bytes)})`).join(", ")),
            h(
              "td",
              {},
              h(
                "button",
                {
                  type: "button",
                  class: "secondary small",
                  disabled: !admin,
                  "aria-label": `${s.status === "stopped" ? "Mark running" : "Mark stopped"}: ${s.name}`,
                  onclick: async () => {
                    try {
                      await call("PUT", `/servers/${s.id}`, { server: { status: s.status === "stopped" ? "running" : "stopped" } });
                      report("success", `${s.name} is ${s.status === "stopped" ? "running" : "stopped"}.`);
                      await loadServers();
                    } catch (err) {
                      report("error", err.message);
                    }
                  },
                },
                s.status === "stopped" ? "Mark running" : "Mark stopped",
              ),
            ),
          ),
        ),
      ),
      h(
        "form",
        {
          onsubmit: async (e) => {
            e.preventDefault();
            const paths = disks.value.split("\n").map((x) => x.trim()).filter(Boolean);
            try {
              await call("POST", "/servers", { server: { name: name.value, host: host.value || undefined, status: "stopped", disks: paths.map((path) => ({ path })) } });
              report("success", `Server ${name.value} registered.`);
              await loadServers();
            } catch (err) {
              report("error", err.message);
            }
          },
        },
        h("h3", {}, "Register a server"),
        field("Name", name),
        field("Host", host),
        field("Disk paths, one a line", disks, "Image files or block devices beneath the inventory roots."),
        h("button", { type: "submit", disabled: !admin }, "Register"),
      ),
    );
  };
  const loadPeople = async () => {
    if (!admin) {
      peopleBox.replaceChildren(h("p", {}, "Only administrators see the projects and users."));
      return;
    }
    const [projects, users] = await Promise.all([callAt("GET", "/v3/projects"), callAt("GET", "/v3/users")]);
    const projectName = h("input", { name: "project-name", required: true, maxlength: "64" });
    const userName = h("input", { name: "user-name", required: true, maxlength: "64", autocomplete: "off" });
    const userPassword = h("input", { name: "user-password", type: "password", required: true, autocomplete: "new-password" });
    const userProject = h("select", { name: "user-project" }, projects.projects.map((p) => h("option", { value: p.id }, p.name)));
    const userRole = h("select", { name: "user-role" }, ["member", "reader", "admin"].map((r) => h("option", { value: r }, r)));
    peopleBox.replaceChildren(
      h(
        "div",
        { class: "grid" },
        h(
          "div",
          {},
          table("Projects", ["Name", "Id"], projects.projects.map((p) => h("tr", {}, h("th", { scope: "row" }, p.name), h("td", {}, h("code", {}, p.id)))), { showCaption: true }),
          h(
            "form",
            {
              class: "inline",
              onsubmit: async (e) => {
                e.preventDefault();
                try {
                  await callAt("POST", "/v3/projects", { project: { name: projectName.value } });
                  report("success", `Project ${projectName.value} created.`);
                  await loadPeople();
                } catch (err) {
                  report("error", err.message);
                }
              },
            },
            field("New project", projectName),
            h("div", { class: "field" }, h("button", { type: "submit" }, "Create project")),
          ),
        ),
        h(
          "div",
          {},
          table("Users", ["Name", "Roles"], users.users.map((u) => h("tr", {}, h("th", { scope: "row" }, u.name), h("td", {}, u.roles.map((r) => `${r.role} in ${r.project}`).join(", ")))), { showCaption: true }),
          h(
            "form",
            {
              onsubmit: async (e) => {
                e.preventDefault();
                try {
                  await callAt("POST", "/v3/users", {
                    user: { name: userName.value, password: userPassword.value, default_project_id: userProject.value, role: userRole.value },
                  });
                  report("success", `User ${userName.value} created.`);
                  await loadPeople();
                } catch (err) {
                  report("error", err.message);
                }
              },
            },
            h("h3", {}, "New user"),
            field("User name", userName),
            field("Password", userPassword),
            field("Project", userProject),
            field("Role", userRole),
            h("button", { type: "submit" }, "Create user"),
          ),
        ),
      ),
    );
  };
  await Promise.all([loadQuotas(), loadServers(), loadPeople()]);
}
