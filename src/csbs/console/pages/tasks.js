// Tasks: the operation logs, filtered, with live progress and errors in words.

import { get, query } from "../api.js";
import { badge, every, field, fmtBytes, fmtTime, h, notice, progress, table } from "../ui.js";

const TYPES = ["backup", "restore", "delete"];
const STATUSES = ["waiting", "running", "success", "failed", "timeout"];

export async function tasksPage(view, ctx) {
  const p = ctx.params;
  const f = { operation_type: p.get("operation_type") || "", status: p.get("status") || "", resource_id: p.get("resource_id") || "", page: Number(p.get("page") || 1) };
  const limit = 25;
  view.append(h("h1", {}, "Tasks"));
  const servers = (await get("/servers")).servers;
  const inputs = {
    operation_type: h("select", { name: "operation_type" }, h("option", { value: "" }, "Any type"), TYPES.map((t) => h("option", { value: t }, t))),
    status: h("select", { name: "status" }, h("option", { value: "" }, "Any status"), STATUSES.map((s) => h("option", { value: s }, s))),
    resource_id: h("select", { name: "resource_id" }, h("option", { value: "" }, "Any server"), servers.map((s) => h("option", { value: s.id }, s.name))),
  };
  for (const [k, el] of Object.entries(inputs)) el.value = f[k];
  view.append(
    h(
      "form",
      {
        class: "filters",
        "aria-label": "Filter tasks",
        onsubmit: (e) => {
          e.preventDefault();
          const next = { page: 1 };
          for (const [k, el] of Object.entries(inputs)) next[k] = el.value;
          ctx.go(`tasks${query(next)}`);
        },
      },
      field("Type", inputs.operation_type),
      field("Status", inputs.status),
      field("Server", inputs.resource_id),
      h("div", { class: "field" }, h("button", { type: "submit" }, "Apply")),
    ),
  );
  const out = h("div", { class: "out" });
  const list = h("div");
  view.append(out, list);
  let last = "";
  const load = async () => {
    const r = await get(`/operation_logs${query({ operation_type: f.operation_type, status: f.status, resource_id: f.resource_id, limit: limit + 1, offset: (f.page - 1) * limit })}`);
    const sig = JSON.stringify(r);
    if (!ctx.isCurrent() || sig === last) return;
    last = sig;
    const items = r.operation_logs.slice(0, limit);
    const more = r.operation_logs.length > limit;
    const rows = items.map((t) => {
      const x = t.extra_info || {};
      const detail = [];
      if (t.status === "waiting" && x.queue_position) detail.push(`queue position ${x.queue_position}`);
      if (x.bytes_read) detail.push(`read ${fmtBytes(x.bytes_read)}`);
      if (x.bytes_written) detail.push(`written ${fmtBytes(x.bytes_written)}`);
      if (x.bytes_reclaimed) detail.push(`reclaimed ${fmtBytes(x.bytes_reclaimed)}`);
      return h(
        "tr",
        { "data-task": t.id },
        h("td", {}, t.operation_type),
        h("td", {}, badge(t.status)),
        h("td", {}, t.resource_name || "—"),
        h("td", {}, progress(x.progress, `${t.operation_type} of ${t.resource_name || "a server"}`)),
        h("td", {}, fmtTime(t.created_at)),
        h("td", {}, fmtTime(t.ended_at)),
        h("td", {}, detail.join(", ")),
        h("td", { class: "error-text" }, t.error_info ? `${t.error_info.message}${t.error_info.code ? ` (${t.error_info.code})` : ""}` : ""),
      );
    });
    list.replaceChildren(
      table("Tasks", ["Type", "Status", "Server", "Progress", "Created", "Ended", "Detail", "Error"], rows, { empty: "No task matches." }),
      h(
        "nav",
        { class: "pager", "aria-label": "Pages" },
        h("button", { type: "button", class: "secondary", disabled: f.page <= 1, onclick: () => ctx.go(`tasks${query({ ...f, page: f.page - 1 })}`) }, "Previous"),
        h("span", {}, `Page ${f.page}`),
        h("button", { type: "button", class: "secondary", disabled: !more, onclick: () => ctx.go(`tasks${query({ ...f, page: f.page + 1 })}`) }, "Next"),
      ),
    );
  };
  await load();
  every(2000, async () => {
    try {
      await load();
    } catch (err) {
      out.replaceChildren(notice("error", err.message));
    }
  });
}
