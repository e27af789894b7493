// Backups: the B4 list (filters, sort, paging), details, tags, and deletion watched live.

import { PROVIDER, ApiError, call, canWrite, get, query } from "../api.js";
import {
  announce,
  badge,
  confirmDialog,
  every,
  field,
  fmtBytes,
  fmtSeconds,
  fmtTime,
  h,
  notice,
  parseTime,
  progress,
  readOnlyNote,
  table,
} from "../ui.js";

const STATUSES = ["protecting", "available", "restoring", "waiting_delete", "deleting", "error"];
const SORTS = [
  ["created_at:desc", "Newest first"],
  ["created_at:asc", "Oldest first"],
  ["name:asc", "Name A–Z"],
  ["name:desc", "Name Z–A"],
  ["status:asc", "Status"],
];

// Deletions being watched survive a page change (they poll until each backup is gone).
const watched = new Map();

export async function backupsPage(view, ctx) {
  const p = ctx.params;
  const f = {
    status: p.get("status") || "",
    name: p.get("name") || "",
    resource_id: p.get("resource_id") || "",
    start_time: p.get("start_time") || "",
    end_time: p.get("end_time") || "",
    tag: p.get("tag") || "",
    sort: p.get("sort") || "created_at:desc",
    limit: Number(p.get("limit") || 20),
    page: Number(p.get("page") || 1),
  };
  view.append(h("h1", {}, "Backups"));
  if (!canWrite()) view.append(readOnlyNote());
  const [servers, projectTags] = await Promise.all([
    get("/servers").then((r) => r.servers),
    get("/csbs_backup/tags").then((r) => r.tags),
  ]);

  const inputs = {
    status: h("select", { name: "status" }, h("option", { value: "" }, "Any status"), STATUSES.map((s) => h("option", { value: s }, s.replace("_", " ")))),
    name: h("input", { name: "name", type: "search" }),
    resource_id: h("select", { name: "resource_id" }, h("option", { value: "" }, "Any server"), servers.map((s) => h("option", { value: s.id }, s.name))),
    start_time: h("input", { name: "start_time", type: "date" }),
    end_time: h("input", { name: "end_time", type: "date" }),
    tag: h("input", { name: "tag", type: "search", list: "project-tags", placeholder: "key=value" }),
    sort: h("select", { name: "sort" }, SORTS.map(([v, l]) => h("option", { value: v }, l))),
    limit: h("select", { name: "limit" }, [10, 20, 50, 100].map((n) => h("option", { value: String(n) }, String(n)))),
  };
  for (const [k, el] of Object.entries(inputs)) el.value = String(f[k]);
  const filters = h(
    "form",
    {
      class: "filters",
      "aria-label": "Filter backups",
      onsubmit: (e) => {
        e.preventDefault();
        const next = { page: 1 };
        for (const [k, el] of Object.entries(inputs)) next[k] = el.value;
        ctx.go(`backups${query(next)}`);
      },
    },
    field("Status", inputs.status),
    field("Name contains", inputs.name),
    field("Server", inputs.resource_id),
    field("From", inputs.start_time),
    field("To", inputs.end_time),
    field("Tag", inputs.tag, "key=value or key; with a tag the list is the tag query's, newest first"),
    h(
      "datalist",
      { id: "project-tags" },
      projectTags.flatMap((t) => [h("option", { value: t.key }), ...t.values.map((v) => h("option", { value: `${t.key}=${v}` }))]),
    ),
    field("Sort", inputs.sort),
    field("Per page", inputs.limit),
    h("div", { class: "field" }, h("button", { type: "submit" }, "Apply")),
  );
  const out = h("div", { class: "out" });
  const deletions = h("section", { class: "card deletions", "aria-labelledby": "del-title", hidden: true });
  const list = h("div");
  view.append(filters, out, deletions, list);
  const selected = new Set();
  let lastSig = "";

  const apiFilter = () => ({
    status: f.status,
    name: f.name,
    resource_id: f.resource_id,
    start_time: f.start_time ? `${f.start_time}T00:00:00` : "",
    end_time: f.end_time ? `${f.end_time}T23:59:59` : "",
  });

  // A tag filter is the API's tag query (T1), which knows tags and names but not the list's
  // other filters: those stay as chosen but apply only without a tag.
  const byTag = async () => {
    const [key, ...rest] = f.tag.split("=");
    const body = {
      action: "filter",
      tags: [{ key: key.trim(), values: rest.length ? [rest.join("=").trim()] : [] }],
      limit: String(f.limit),
      offset: String((f.page - 1) * f.limit),
    };
    if (f.name) body.matches = [{ key: "resource_name", value: f.name }];
    const r = await call("POST", "/csbs_backup/resource_instances/action", body);
    return [{ checkpoint_items: r.resources.map((x) => x.resource_detail) }, { count: r.total_count }];
  };

  const load = async () => {
    const [items, count] = f.tag ? await byTag() : await Promise.all([
      get(`/checkpoint_items${query({ ...apiFilter(), sort: f.sort, limit: f.limit, offset: (f.page - 1) * f.limit })}`),
      get(`/checkpoint_items/count${query(apiFilter())}`),
    ]);
    // Drawn again only when something changed: a redraw would take the keyboard focus away.
    const sig = JSON.stringify([items, count, [...watched.entries()]]);
    if (!ctx.isCurrent() || sig === lastSig) return;
    lastSig = sig;
    render(items.checkpoint_items, count.count);
  };

  const deleteButton = h("button", { type: "button", class: "danger", disabled: true, onclick: () => deleteSelected() }, "Delete selected");
  let current = [];
  const render = (items, total) => {
    current = items;
    for (const id of [...selected]) if (!items.some((b) => b.id === id)) selected.delete(id);
    const pages = Math.max(1, Math.ceil(total / f.limit));
    const rows = items.map((b) => {
      const box = h("input", {
        type: "checkbox",
        "aria-label": `Select ${b.name}`,
        disabled: !canWrite() || !["available", "error"].includes(b.status),
        onchange: (e) => {
          if (e.target.checked) selected.add(b.id);
          else selected.delete(b.id);
          updateButton();
        },
      });
      box.checked = selected.has(b.id);
      return h(
        "tr",
        { "data-backup": b.name },
        h("td", {}, box),
        h("th", { scope: "row" }, h("a", { href: `#/backups/${b.id}` }, b.name)),
        h("td", {}, b.extend_info.resource_name),
        h("td", { class: "status" }, badge(b.status), b.status === "protecting" ? [" ", progress(b.extend_info.progress, `progress of ${b.name}`)] : null),
        h("td", {}, fmtTime(b.created_at)),
        h("td", {}, fmtBytes(b.extend_info.stored_bytes)),
        h("td", {}, b.extend_info.incremental ? "incremental" : "full"),
        h("td", {}, b.tags.map((t) => h("span", { class: "tag" }, `${t.key}=${t.value}`))),
      );
    });
    const pager = h(
      "nav",
      { class: "pager", "aria-label": "Pages" },
      h("button", { type: "button", class: "secondary", disabled: f.page <= 1, onclick: () => ctx.go(`backups${query({ ...f, page: f.page - 1 })}`) }, "Previous"),
      h("span", {}, `Page ${f.page} of ${pages} · ${total} backup(s)`),
      h("button", { type: "button", class: "secondary", disabled: f.page >= pages, onclick: () => ctx.go(`backups${query({ ...f, page: f.page + 1 })}`) }, "Next"),
    );
    list.replaceChildren(
      h("div", { class: "toolbar" }, deleteButton),
      table("Backups", ["Select", "Name", "Server", "Status", "Created", "Stored", "Kind", "Tags"], rows, { empty: "No backup matches." }),
      pager,
    );
    updateButton();
  };
  const updateButton = () => {
    deleteButton.disabled = !canWrite() || selected.size === 0;
    deleteButton.textContent = selected.size ? `Delete selected (${selected.size})` : "Delete selected";
  };

  const deleteSelected = async () => {
    const chosen = current.filter((b) => selected.has(b.id));
    const ok = await confirmDialog(
      `Delete ${chosen.length} backup(s)?`,
      h("div", {}, h("p", {}, "These backups will be deleted; this cannot be undone:"), h("ul", {}, chosen.map((b) => h("li", {}, `${b.name} (${b.extend_info.resource_name}, ${fmtTime(b.created_at)})`)))),
      "Delete",
    );
    if (!ok) return;
    out.replaceChildren();
    // One DELETE per backup record, naming the backups of it that were chosen.
    const byRecord = new Map();
    for (const b of chosen) byRecord.set(b.checkpoint_id, [...(byRecord.get(b.checkpoint_id) || []), b]);
    for (const [record, items] of byRecord) {
      try {
        await call("DELETE", `/providers/${PROVIDER}/checkpoints/${record}${query({ checkpoint_items: items.map((b) => b.id).join(",") })}`);
        for (const b of items) watched.set(b.id, { name: b.name, status: "waiting_delete" });
      } catch (err) {
        out.append(notice("error", `${items.map((b) => b.name).join(", ")}: ${err.message}`));
      }
    }
    selected.clear();
    announce("Deletion accepted; the backups' status shows below.");
    drawDeletions();
    await load();
  };

  const drawDeletions = () => {
    if (!watched.size) {
      deletions.hidden = true;
      return;
    }
    deletions.hidden = false;
    deletions.replaceChildren(
      h("h2", { id: "del-title" }, "Deletions"),
      h(
        "ul",
        { class: "plain" },
        [...watched.values()].map((w) =>
          h("li", { "data-deletion": w.name }, `${w.name}: `, badge(w.status), w.position ? ` (queue position ${w.position})` : null, w.error ? notice("error", w.error) : null),
        ),
      ),
      [...watched.values()].every((w) => w.status === "gone" || w.status === "error")
        ? h("button", { type: "button", class: "secondary small", onclick: () => { watched.clear(); drawDeletions(); } }, "Clear")
        : "",
    );
  };

  const pollDeletions = async () => {
    const open = [...watched.entries()].filter(([, w]) => w.status !== "gone" && w.status !== "error");
    if (!open.length) return;
    const logs = await get("/operation_logs?operation_type=delete&status=waiting&limit=100").catch(() => ({ operation_logs: [] }));
    const position = new Map(logs.operation_logs.map((t) => [t.checkpoint_item_id, t.extra_info.queue_position]));
    await Promise.all(
      open.map(async ([id, w]) => {
        try {
          const b = (await get(`/checkpoint_items/${id}`)).checkpoint_item;
          const was = w.status;
          w.status = b.status;
          w.position = b.status === "waiting_delete" ? position.get(id) : undefined;
          if (b.status === "error") w.error = b.extend_info.fail_reason;
          if (was !== w.status) announce(`${w.name}: ${w.status.replace("_", " ")}`);
        } catch (err) {
          if (err instanceof ApiError && err.status === 404) {
            w.status = "gone";
            announce(`${w.name} is deleted.`);
          } else throw err;
        }
      }),
    );
    if (ctx.isCurrent()) drawDeletions();
  };

  await load();
  drawDeletions();
  // Every second while something moves (a deletion watched, a backup in a passing state),
  // else every third.
  let tick = 0;
  const moving = () =>
    [...watched.values()].some((w) => w.status !== "gone" && w.status !== "error") ||
    current.some((b) => !["available", "error"].includes(b.status));
  every(1000, async () => {
    tick += 1;
    if (!moving() && tick % 3) return;
    try {
      await pollDeletions();
      await load();
    } catch (err) {
      out.replaceChildren(notice("error", err.message));
    }
  });
}

export async function backupPage(view, ctx) {
  const id = ctx.id;
  const head = h("h1", {}, "Backup");
  const out = h("div", { class: "out" });
  const body = h("div");
  view.append(h("p", {}, h("a", { href: "#/backups" }, "← All backups")), head, out, body);

  let lastSig = "";
  let deleting = false;
  const remove = async (b) => {
    const ok = await confirmDialog(`Delete backup ${b.name}?`, `${b.name} of ${b.extend_info.resource_name} will be deleted; this cannot be undone.`, "Delete");
    if (!ok) return;
    try {
      await call("DELETE", `/providers/${PROVIDER}/checkpoints/${b.checkpoint_id}${query({ checkpoint_items: b.id })}`);
      deleting = true;
      announce(`Deletion of ${b.name} accepted.`);
      await load();
    } catch (err) {
      out.replaceChildren(notice("error", err.message));
    }
  };
  const load = async () => {
    let b;
    try {
      b = (await get(`/checkpoint_items/${id}`)).checkpoint_item;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        const text = deleting ? "The backup is deleted." : err.message;
        body.replaceChildren(notice(deleting ? "success" : "info", text));
        if (deleting) announce(text);
        return false;
      }
      throw err;
    }
    const tasks = (await get(`/operation_logs${query({ checkpoint_item_id: id, limit: 20 })}`)).operation_logs;
    if (!ctx.isCurrent()) return false;
    // Drawn again only when something changed: a redraw would take the keyboard focus away.
    const sig = JSON.stringify([b, tasks]);
    if (sig === lastSig) return true;
    lastSig = sig;
    head.textContent = `Backup ${b.name}`;
    const e = b.extend_info;
    const seconds = e.finished_at ? (parseTime(e.finished_at) - parseTime(b.created_at)) / 1000 : null;
    body.replaceChildren(
      h("div", { class: "grid" }, h(
        "section",
        { class: "card", "aria-labelledby": "b-facts" },
        h("h2", { id: "b-facts" }, "Details"),
        h(
          "dl",
          { class: "facts" },
          [
            ["Status", badge(b.status)],
            ["Server", e.resource_name],
            ["Created", fmtTime(b.created_at)],
            ["Finished", fmtTime(e.finished_at)],
            ["Duration", fmtSeconds(seconds)],
            ["Kind", e.incremental ? "incremental" : "full"],
            ["Consistency", e.consistency || "—"],
            ["Stored", fmtBytes(e.stored_bytes)],
            ["New data", fmtBytes(e.new_bytes)],
            ["Progress", progress(e.progress, "backup progress")],
            ["Backup record", b.checkpoint_id],
            e.fail_reason ? ["Failure", `${e.fail_op}: ${e.fail_reason}`] : null,
          ]
            .filter(Boolean)
            .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
        ),
        h(
          "div",
          { class: "actions" },
          h(
            "button",
            { type: "button", class: "danger", disabled: !canWrite() || !["available", "error"].includes(b.status), onclick: () => remove(b) },
            "Delete backup",
          ),
        ),
      ), tagsCard(b, load, out)),
      table(
        "Disks",
        ["Disk", "Device", "Size", "Kind", "Saving ratio"],
        e.volume_backups.map((v) =>
          h("tr", {}, h("th", { scope: "row" }, v.name), h("td", {}, v.source_volume_name), h("td", {}, `${v.source_volume_size} GB`), h("td", {}, v.incremental ? "incremental" : "full"), h("td", {}, String(v.space_saving_ratio))),
        ),
        { showCaption: true },
      ),
      table(
        "Tasks of this backup",
        ["Task", "Status", "Progress", "Started", "Ended", "Error"],
        tasks.map((t) =>
          h("tr", {}, h("td", {}, t.operation_type), h("td", {}, badge(t.status)), h("td", {}, progress(t.extra_info.progress, `${t.operation_type} progress`)), h("td", {}, fmtTime(t.started_at)), h("td", {}, fmtTime(t.ended_at)), h("td", {}, t.error_info ? t.error_info.message : "")),
        ),
        { showCaption: true },
      ),
    );
    return true;
  };
  if (await load()) {
    const stop = every(2000, async () => {
      try {
        if (document.activeElement && document.activeElement.closest(".tags")) return;
        if (!(await load())) stop();
      } catch (err) {
        out.replaceChildren(notice("error", err.message));
      }
    });
  }
}

function tagsCard(b, reload, out) {
  const key = h("input", { name: "tag-key", maxlength: "36", required: true });
  const value = h("input", { name: "tag-value", maxlength: "43" });
  const write = canWrite();
  return h(
    "section",
    { class: "card tags", "aria-labelledby": "b-tags" },
    h("h2", { id: "b-tags" }, "Tags"),
    b.tags.length
      ? h(
          "ul",
          { class: "plain" },
          b.tags.map((t) =>
            h(
              "li",
              {},
              h("span", { class: "tag" }, `${t.key}=${t.value}`),
              " ",
              h(
                "button",
                {
                  type: "button",
                  class: "secondary small",
                  disabled: !write,
                  "aria-label": `Remove tag ${t.key}`,
                  onclick: async () => {
                    try {
                      await call("DELETE", `/csbs_backup/${b.id}/tags/${encodeURIComponent(t.key)}`);
                      out.replaceChildren();
                      announce(`Tag ${t.key} removed.`);
                      await reload();
                    } catch (err) {
                      out.replaceChildren(notice("error", err.message));
                    }
                  },
                },
                "Remove",
              ),
            ),
          ),
        )
      : h("p", {}, "No tags."),
    h(
      "form",
      {
        class: "inline",
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            await call("POST", `/csbs_backup/${b.id}/tags`, { tag: { key: key.value, value: value.value } });
            out.replaceChildren();
            announce(`Tag ${key.value} set.`);
            key.value = "";
            value.value = "";
            await reload();
          } catch (err) {
            out.replaceChildren(notice("error", err.message));
          }
        },
      },
      field("Key", key),
      field("Value", value),
      h("div", { class: "field" }, h("button", { type: "submit", disabled: !write }, "Add tag")),
    ),
  );
}
