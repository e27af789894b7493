// Admin: what the API lets an administrator change — quotas, the server inventory.
// Projects and users have no API calls (they are managed with `csbs admin`), so the console
// shows none rather than reaching past the API.

import { call, get, isAdmin } from "../api.js";
import { field, fmtBytes, h, notice, table } from "../ui.js";

export async function adminPage(view, ctx) {
  view.append(h("h1", {}, "Admin"));
  const admin = isAdmin();
  if (!admin) view.append(notice("info", "Only administrators may change quotas and servers; you see them read-only."));
  const out = h("div", { class: "out" });
  const quotaBox = h("div");
  const serverBox = h("div");
  view.append(
    out,
    h(
      "div",
      { class: "grid" },
      h("section", { class: "card", "aria-labelledby": "q-title" }, h("h2", { id: "q-title" }, "Quotas of this project"), quotaBox),
      h("section", { class: "card", "aria-labelledby": "s-title" }, h("h2", { id: "s-title" }, "Servers"), serverBox),
    ), h("section", { class: "card", "aria-labelledby": "p-title" }, h("h2", { id: "p-title" }, "Projects and users"), h("p", {}, "The API has no calls for projects and users; manage them with ", h("code", {}, "csbs admin project"), " and ", h("code", {}, "csbs admin user"), " on the service's machine.")));

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
                  "aria-label": `${s.status === "stopped" ? "Start" : "Stop"} ${s.name}`,
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
  await Promise.all([loadQuotas(), loadServers()]);
}
