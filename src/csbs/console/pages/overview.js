// Overview: what is protected, what ran and what waits, usage against quotas, two charts.

import { get, query } from "../api.js";
import { every, fmtBytes, fmtSeconds, fmtTime, h, notice, parseTime, svg, table } from "../ui.js";

const BACKUP_STATUSES = ["protecting", "available", "restoring", "waiting_delete", "deleting", "error"];

export async function overviewPage(view, ctx) {
  view.append(h("h1", {}, "Overview"));
  const body = h("div", { class: "grid" });
  const out = h("div");
  let lastSig = "";
  view.append(out, body);
  const load = async () => {
    const since = new Date(Date.now() - 24 * 3600 * 1000).toISOString().slice(0, 19);
    const [servers, backups, policies, quotas, tasks] = await Promise.all([
      get("/servers"),
      get("/checkpoint_items?limit=1000&sort=created_at:desc"),
      get("/policies?limit=1000"),
      get("/quotas"),
      get(`/operation_logs${query({ start_time: since, limit: 1000, sort: "created_at:desc" })}`),
    ]);
    const sig = JSON.stringify([servers, backups, policies, quotas, tasks]);
    if (!ctx.isCurrent() || sig === lastSig) return;
    lastSig = sig;
    out.replaceChildren();
    body.replaceChildren(
      serversCard(servers.servers, backups.checkpoint_items, policies.policies),
      backupsCard(backups.checkpoint_items),
      tasksCard(tasks.operation_logs),
      quotaCard(quotas.quotas.resources, backups.checkpoint_items),
      storedChart(backups.checkpoint_items),
      durationChart(backups.checkpoint_items),
    );
  };
  const refresh = async () => {
    try {
      await load();
    } catch (err) {
      out.replaceChildren(notice("error", err.message));
    }
  };
  await load();
  every(4000, refresh);
}

function card(title, ...content) {
  const id = `card-${title.toLowerCase().replace(/\W+/g, "-")}`;
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), content);
}

function stat(label, value, href) {
  const v = href ? h("a", { href }, String(value)) : String(value);
  return h("div", { class: "stat" }, h("dt", {}, label), h("dd", {}, v));
}

function serversCard(servers, backups, policies) {
  const inPolicy = new Set();
  for (const p of policies) {
    if (p.scheduled_operations[0] && p.scheduled_operations[0].enabled) for (const r of p.resources) inPolicy.add(r.id);
  }
  const backedUp = new Set(backups.filter((b) => b.status === "available").map((b) => b.resource_id));
  const protectedOnes = servers.filter((s) => inPolicy.has(s.id) || backedUp.has(s.id));
  const unprotected = servers.filter((s) => !inPolicy.has(s.id) && !backedUp.has(s.id));
  return card(
    "Servers",
    h("dl", { class: "stats" }, stat("protected", protectedOnes.length, "#/servers"), stat("unprotected", unprotected.length, "#/servers")),
    h("p", { class: "hint" }, "Protected: an available backup, or a member of an enabled policy."),
    unprotected.length
      ? h("p", {}, "Unprotected: ", unprotected.map((s) => s.name).join(", "))
      : null,
  );
}

function backupsCard(backups) {
  const counts = {};
  for (const b of backups) counts[b.status] = (counts[b.status] || 0) + 1;
  const pending = backups.filter((b) => b.status === "waiting_delete" || b.status === "deleting");
  const pendingBytes = pending.reduce((n, b) => n + (b.extend_info.stored_bytes || 0), 0);
  return card(
    "Backups by status",
    h(
      "dl",
      { class: "stats" },
      BACKUP_STATUSES.map((s) => stat(s.replace("_", " "), counts[s] || 0, `#/backups?status=${s}`)),
    ),
    h("p", {}, `Pending release: ${pending.length} backup(s), ${fmtBytes(pendingBytes)} stored.`),
  );
}

function tasksCard(tasks) {
  const counts = { success: 0, failed: 0, timeout: 0, running: 0, waiting: 0 };
  for (const t of tasks) counts[t.status] = (counts[t.status] || 0) + 1;
  const waiting = tasks
    .filter((t) => t.status === "waiting")
    .sort((a, b) => (a.extra_info.queue_position || 0) - (b.extra_info.queue_position || 0));
  return card(
    "Tasks, last 24 hours",
    h(
      "dl",
      { class: "stats" },
      stat("succeeded", counts.success, "#/tasks?status=success"),
      stat("failed", counts.failed + counts.timeout, "#/tasks?status=failed"),
      stat("running", counts.running, "#/tasks?status=running"),
      stat("waiting", counts.waiting, "#/tasks?status=waiting"),
    ),
    h("p", { class: "hint" }, "At most 5 deletions run at once per project; the rest wait their turn in order."),
    waiting.length
      ? table(
          "Waiting tasks",
          ["Task", "Server", "Queue position"],
          waiting.slice(0, 10).map((t) =>
            h("tr", {}, h("td", {}, t.operation_type), h("td", {}, t.resource_name || "—"), h("td", {}, String(t.extra_info.queue_position ?? "—"))),
          ),
        )
      : h("p", {}, "Nothing is waiting."),
  );
}

function quotaCard(resources, backups) {
  const rows = resources.map((r) => {
    const unlimited = r.quota === -1;
    const label = r.type === "backups" ? "Backups" : "Stored (GB)";
    const pct = unlimited || r.quota === 0 ? (r.quota === 0 && r.used > 0 ? 100 : 0) : Math.min(100, (100 * r.used) / r.quota);
    return h(
      "div",
      { class: "quota" },
      h("span", {}, `${label}: ${r.used}${r.type === "backups" ? "" : " GB"} of ${unlimited ? "unlimited" : r.quota}`),
      h("meter", { min: "0", max: "100", value: String(pct), "aria-label": `${label} used, percent of quota` }),
    );
  });
  const stored = backups.reduce((n, b) => n + (b.extend_info.stored_bytes || 0), 0);
  return card("Usage and quotas", rows, h("p", { class: "hint" }, `Stored by the listed backups: ${fmtBytes(stored)}.`));
}

// A line of points (x: time, y: value) as an inline SVG with a text summary for screen readers.
function lineChart(title, points, yFormat, summary) {
  const W = 520;
  const H = 180;
  const pad = { l: 64, r: 12, t: 12, b: 28 };
  if (!points.length) return h("p", {}, "No data yet.");
  const xs = points.map((p) => p.x);
  const ys = points.map((p) => p.y);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1);
  const y1 = Math.max(...ys, 1);
  const X = (x) => pad.l + ((x - x0) / (x1 - x0)) * (W - pad.l - pad.r);
  const Y = (y) => H - pad.b - (y / y1) * (H - pad.t - pad.b);
  const path = points.map((p, i) => `${i ? "L" : "M"}${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(" ");
  return svg(
    "svg",
    { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${title}. ${summary}`, class: "chart" },
    svg("line", { x1: pad.l, y1: H - pad.b, x2: W - pad.r, y2: H - pad.b, class: "axis" }),
    svg("line", { x1: pad.l, y1: pad.t, x2: pad.l, y2: H - pad.b, class: "axis" }),
    svg("text", { x: pad.l - 6, y: pad.t + 10, "text-anchor": "end", class: "tick" }, yFormat(y1)),
    svg("text", { x: pad.l - 6, y: H - pad.b, "text-anchor": "end", class: "tick" }, yFormat(0)),
    svg("text", { x: pad.l, y: H - 8, class: "tick" }, fmtTime(new Date(x0))),
    svg("text", { x: W - pad.r, y: H - 8, "text-anchor": "end", class: "tick" }, fmtTime(new Date(x1))),
    svg("path", { d: path, class: "line" }),
    points.map((p) => svg("circle", { cx: X(p.x).toFixed(1), cy: Y(p.y).toFixed(1), r: "3", class: "dot" })),
  );
}

function storedChart(backups) {
  // What the retained backups hold, accumulated in the order they were made.
  const sorted = backups
    .filter((b) => b.status !== "error")
    .map((b) => ({ x: parseTime(b.created_at).getTime(), size: b.extend_info.stored_bytes || 0 }))
    .sort((a, b) => a.x - b.x);
  let total = 0;
  const points = sorted.map((p) => ({ x: p.x, y: (total += p.size) }));
  const summary = points.length ? `Now ${fmtBytes(total)} over ${points.length} backups.` : "";
  return card("Stored bytes over time", lineChart("Stored bytes over time", points, fmtBytes, summary));
}

function durationChart(backups) {
  const done = backups
    .filter((b) => b.status === "available" && b.extend_info.finished_at)
    .map((b) => ({
      name: b.name,
      seconds: (parseTime(b.extend_info.finished_at) - parseTime(b.created_at)) / 1000,
    }))
    .slice(0, 20)
    .reverse();
  if (!done.length) return card("Backup durations", h("p", {}, "No finished backups yet."));
  const W = 520;
  const H = 180;
  const pad = { l: 64, b: 12, t: 12 };
  const max = Math.max(...done.map((d) => d.seconds), 1);
  const bw = (W - pad.l - 8) / done.length;
  const avg = done.reduce((n, d) => n + d.seconds, 0) / done.length;
  const chart = svg(
    "svg",
    {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      class: "chart",
      "aria-label": `Backup durations of the last ${done.length} backups: longest ${fmtSeconds(max)}, average ${fmtSeconds(avg)}.`,
    },
    svg("line", { x1: pad.l, y1: H - pad.b, x2: W - 8, y2: H - pad.b, class: "axis" }),
    svg("text", { x: pad.l - 6, y: pad.t + 10, "text-anchor": "end", class: "tick" }, fmtSeconds(max)),
    svg("text", { x: pad.l - 6, y: H - pad.b, "text-anchor": "end", class: "tick" }, "0 s"),
    done.map((d, i) => {
      const bh = (d.seconds / max) * (H - pad.t - pad.b);
      return svg(
        "rect",
        { x: (pad.l + i * bw + 2).toFixed(1), y: (H - pad.b - bh).toFixed(1), width: Math.max(1, bw - 4).toFixed(1), height: bh.toFixed(1), class: "bar" },
        svg("title", {}, `${d.name}: ${fmtSeconds(d.seconds)}`),
      );
    }),
  );
  return card("Backup durations", chart, h("p", { class: "hint" }, `Last ${done.length} backups, oldest first; average ${fmtSeconds(avg)}.`));
}
