// Policies: list, enable/disable, run now; the editor with its schedule builder, the next
// runs shown before saving (asked of the service, which counts them as its scheduler will),
// retention and member servers; the last runs and what they skipped.

import { PROVIDER, call, canWrite, get } from "../api.js";
import {
  announce,
  confirmDialog,
  debounce,
  every,
  field,
  fmtTime,
  h,
  notice,
  parseTime,
  readOnlyNote,
  table,
  uid,
} from "../ui.js";

const DAYS = [["MO", "Monday"], ["TU", "Tuesday"], ["WE", "Wednesday"], ["TH", "Thursday"], ["FR", "Friday"], ["SA", "Saturday"], ["SU", "Sunday"]];
const ZONES = ["UTC", "Europe/Berlin", "Europe/London", "America/New_York", "America/Los_Angeles", "Asia/Shanghai", "Asia/Tokyo", "Australia/Sydney", "UTC+08:00"];

// The schedule as the builder holds it, read from and written to an iCalendar RRULE.
export function parsePattern(pattern) {
  const m = /RRULE:([^\r\n]+)/i.exec(pattern || "");
  const parts = Object.fromEntries((m ? m[1] : "").split(";").map((p) => p.split("=")));
  const hours = (parts.BYHOUR || "2").split(",").map(Number);
  const minute = Number((parts.BYMINUTE || "0").split(",")[0]);
  const interval = Number(parts.INTERVAL || 1);
  return {
    kind: parts.FREQ === "WEEKLY" ? "weekly" : interval > 1 ? "interval" : "daily",
    interval,
    days: parts.BYDAY ? parts.BYDAY.split(",") : ["MO"],
    times: hours.map((x) => `${String(x).padStart(2, "0")}:${String(minute).padStart(2, "0")}`).join(","),
  };
}

export function buildPattern(s) {
  const times = s.times.split(",").map((t) => t.trim()).filter(Boolean);
  const hours = [];
  const minutes = new Set();
  for (const t of times) {
    const m = /^(\d{1,2}):(\d{2})$/.exec(t);
    if (!m) throw new Error(`"${t}" is not a time of day HH:MM.`);
    hours.push(Number(m[1]));
    minutes.add(Number(m[2]));
  }
  if (!hours.length) throw new Error("Give at least one time of day.");
  if (minutes.size > 1) throw new Error("Several times of day must share the same minute (one rule holds them).");
  const rule = [s.kind === "weekly" ? "FREQ=WEEKLY" : "FREQ=DAILY"];
  if (s.kind === "interval") rule.push(`INTERVAL=${s.interval}`);
  if (s.kind === "weekly") {
    if (!s.days.length) throw new Error("Choose at least one day of the week.");
    rule.push(`BYDAY=${s.days.join(",")}`);
  }
  rule.push(`BYHOUR=${hours.join(",")}`, `BYMINUTE=${[...minutes][0]}`);
  return `BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nRRULE:${rule.join(";")}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n`;
}

function describe(pattern) {
  const s = parsePattern(pattern);
  if (s.kind === "weekly") return `weekly on ${s.days.join(", ")} at ${s.times}`;
  if (s.kind === "interval") return `every ${s.interval} days at ${s.times}`;
  return `daily at ${s.times}`;
}

// A UTC time as the wall clock of `zone` shows it (IANA names and UTC±hh:mm offsets).
export function inZone(value, zone) {
  const d = value instanceof Date ? value : parseTime(value);
  const off = /^(?:UTC|GMT)\s*([+-])(\d{1,2})(?::?(\d{2}))?$/i.exec(zone || "");
  if (off) {
    const minutes = (Number(off[2]) * 60 + Number(off[3] || 0)) * (off[1] === "-" ? -1 : 1);
    return `${new Date(d.getTime() + minutes * 60000).toISOString().slice(0, 16).replace("T", " ")} ${zone}`;
  }
  try {
    const f = new Intl.DateTimeFormat("en-CA", {
      timeZone: zone || "UTC",
      year: "numeric",
      month: "2-digit",
      day: "2-digit",
      hour: "2-digit",
      minute: "2-digit",
      hourCycle: "h23",
      weekday: "short",
    });
    const p = Object.fromEntries(f.formatToParts(d).map((x) => [x.type, x.value]));
    return `${p.weekday} ${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute} ${zone || "UTC"}`;
  } catch {
    return fmtTime(d);
  }
}

function retentionText(def) {
  if (def.permanent === true || def.permanent === "True") return "keep forever";
  const parts = [];
  if (def.max_backups && def.max_backups !== "-1") parts.push(`last ${def.max_backups}`);
  if (def.retention_duration_days && def.retention_duration_days !== "-1") parts.push(`${def.retention_duration_days} days`);
  for (const [key, unit] of [["day_backups", "days"], ["week_backups", "weeks"], ["month_backups", "months"], ["year_backups", "years"]]) {
    if (def[key] && def[key] !== "0") parts.push(`the latest of each of ${def[key]} ${unit}`);
  }
  return parts.length ? `keep ${parts.join(", ")}` : "keep forever";
}

export async function policiesPage(view, ctx) {
  view.append(h("h1", {}, "Policies"));
  if (!canWrite()) view.append(readOnlyNote());
  const out = h("div", { class: "out" });
  const list = h("div");
  view.append(
    h("div", { class: "toolbar" }, canWrite() ? h("a", { class: "button", href: "#/policies/new" }, "New policy") : h("button", { type: "button", disabled: true }, "New policy")),
    out,
    list,
  );
  let last = "";
  const load = async () => {
    const policies = (await get("/policies?limit=1000")).policies;
    const sig = JSON.stringify(policies);
    if (!ctx.isCurrent() || sig === last) return;
    last = sig;
    const rows = policies.map((p) => {
      const op = p.scheduled_operations[0];
      const tz = op.trigger.properties.timezone || "UTC";
      return h(
        "tr",
        { "data-policy": p.name },
        h("th", { scope: "row" }, h("a", { href: `#/policies/${p.id}` }, p.name)),
        h("td", {}, op.enabled ? "enabled" : "disabled"),
        h("td", {}, `${describe(op.trigger.properties.pattern)} (${tz})`),
        h("td", {}, p.next_run_at ? inZone(p.next_run_at, tz) : "—"),
        h("td", {}, p.resources.map((r) => r.name).join(", ") || "none"),
        h("td", {}, retentionText(op.operation_definition)),
        h(
          "td",
          { class: "row-actions" },
          h("button", { type: "button", class: "secondary", disabled: !canWrite(), onclick: () => toggle(p), "aria-label": `${op.enabled ? "Disable" : "Enable"} ${p.name}` }, op.enabled ? "Disable" : "Enable"),
          h("button", { type: "button", disabled: !canWrite(), onclick: () => runNow(p), "aria-label": `Run now: ${p.name}` }, "Run now"),
          h("button", { type: "button", class: "danger", disabled: !canWrite(), onclick: () => remove(p), "aria-label": `Delete ${p.name}` }, "Delete"),
        ),
      );
    });
    list.replaceChildren(table("Policies", ["Name", "State", "Schedule", "Next run", "Servers", "Retention", "Actions"], rows, { empty: "No policies yet." }));
  };
  const act = async (fn, done) => {
    try {
      await fn();
      out.replaceChildren(notice("success", done));
      await load();
    } catch (err) {
      out.replaceChildren(notice("error", err.message));
    }
  };
  const toggle = (p) => {
    const op = p.scheduled_operations[0];
    return act(
      () => call("PUT", `/policies/${p.id}`, { policy: { scheduled_operations: [{ id: op.id, enabled: !op.enabled }] } }),
      `${p.name} is ${op.enabled ? "disabled" : "enabled"}.`,
    );
  };
  const runNow = (p) =>
    act(() => call("POST", `/providers/${PROVIDER}/checkpoints`, { checkpoint: { plan_id: p.id, parameters: {} } }), `${p.name} is backing up its servers now (see Backups).`);
  const remove = async (p) => {
    if (await confirmDialog(`Delete policy ${p.name}?`, "The policy goes; the backups it made stay.", "Delete policy")) {
      await act(() => call("DELETE", `/policies/${p.id}`), `Policy ${p.name} deleted.`);
    }
  };
  await load();
  every(5000, async () => {
    try {
      await load();
    } catch (err) {
      out.replaceChildren(notice("error", err.message));
    }
  });
}

export async function policyPage(view, ctx) {
  const isNew = ctx.id === "new";
  const [servers, policy] = await Promise.all([
    get("/servers").then((r) => r.servers),
    isNew ? null : get(`/policies/${ctx.id}`).then((r) => r.policy),
  ]);
  const op = policy ? policy.scheduled_operations[0] : null;
  const def = op ? op.operation_definition : {};
  const sched = parsePattern(op ? op.trigger.properties.pattern : "RRULE:FREQ=DAILY;BYHOUR=2;BYMINUTE=0");
  const write = canWrite();

  view.append(h("p", {}, h("a", { href: "#/policies" }, "← All policies")), h("h1", {}, isNew ? "New policy" : `Policy ${policy.name}`));
  if (!write) view.append(readOnlyNote());

  const name = h("input", { name: "name", required: true, maxlength: "255", pattern: "[A-Za-z0-9_\\-]+", value: policy ? policy.name : "" });
  const description = h("input", { name: "description", maxlength: "255", value: policy ? policy.description || "" : "" });
  const enabled = h("input", { type: "checkbox", name: "enabled" });
  enabled.checked = op ? op.enabled : true;

  const kind = h("select", { name: "frequency" }, h("option", { value: "daily" }, "Every day"), h("option", { value: "weekly" }, "On days of the week"), h("option", { value: "interval" }, "Every N days"));
  kind.value = sched.kind;
  const interval = h("input", { type: "number", name: "interval", min: "2", max: "30", value: String(Math.max(2, sched.interval)) });
  const dayBoxes = DAYS.map(([code, label]) => {
    const box = h("input", { type: "checkbox", value: code, name: "day" });
    box.checked = sched.days.includes(code);
    return h("label", { class: "day" }, box, ` ${label}`);
  });
  const daysSet = h("fieldset", { class: "days" }, h("legend", {}, "Days"), dayBoxes);
  const intervalField = field("Days between runs", interval);
  const times = h("input", { name: "times", value: sched.times, inputmode: "numeric" });
  const zoneList = uid("zones");
  const zone = h("input", { name: "timezone", list: zoneList, value: op ? op.trigger.properties.timezone || "UTC" : "UTC" });
  const preview = h("div", { class: "preview", "aria-live": "polite" });

  const keep = op && (def.permanent === true) ? "forever" : def.max_backups && def.max_backups !== "-1" ? "count" : def.retention_duration_days && def.retention_duration_days !== "-1" ? "days" : "forever";
  const keepRadios = [["forever", "Keep every backup"], ["count", "Keep the last N backups of each server"], ["days", "Keep backups for N days"]].map(([v, l]) => {
    const r = h("input", { type: "radio", name: "keep", value: v });
    r.checked = v === keep;
    return h("label", { class: "radio" }, r, ` ${l}`);
  });
  const maxBackups = h("input", { type: "number", name: "max_backups", min: "1", max: "99999", value: def.max_backups && def.max_backups !== "-1" ? def.max_backups : "7" });
  const days = h("input", { type: "number", name: "retention_days", min: "1", max: "99999", value: def.retention_duration_days && def.retention_duration_days !== "-1" ? def.retention_duration_days : "30" });

  const longTerm = [["day_backups", "Days"], ["week_backups", "Weeks"], ["month_backups", "Months"], ["year_backups", "Years"]].map(([key, label]) => {
    const input = h("input", { type: "number", name: key, min: "0", max: "100", value: def[key] && def[key] !== "0" ? String(def[key]) : "0" });
    return { key, input, field: field(label, input) };
  });
  const members = new Set(policy ? policy.resources.map((r) => r.id) : []);
  const memberBoxes = servers.map((s) => {
    const box = h("input", { type: "checkbox", name: "server", value: s.id });
    box.checked = members.has(s.id);
    return h("label", { class: "member" }, box, ` ${s.name}`);
  });

  const out = h("div", { class: "out" });
  const schedule = () => ({
    kind: kind.value,
    interval: Number(interval.value),
    days: dayBoxes.map((l) => l.querySelector("input")).filter((b) => b.checked).map((b) => b.value),
    times: times.value,
  });
  const longTermSet = h(
    "fieldset",
    { class: "inline-fields" },
    h("legend", {}, "Also keep the latest backup of each of the last N…"),
    longTerm.map((x) => x.field),
  );
  const countField = field("N backups", maxBackups);
  const daysField = field("N days", days);
  const showKind = () => {
    daysSet.hidden = kind.value !== "weekly";
    intervalField.hidden = kind.value !== "interval";
    const how = keepRadios.map((l) => l.querySelector("input")).find((r) => r.checked);
    countField.hidden = !how || how.value !== "count";
    daysField.hidden = !how || how.value !== "days";
    longTermSet.hidden = !how || how.value === "forever";
  };
  const refreshPreview = debounce(async () => {
    let pattern;
    try {
      pattern = buildPattern(schedule());
    } catch (err) {
      preview.replaceChildren(notice("error", err.message));
      return;
    }
    try {
      const r = await call("POST", "/policies/schedule_preview", {
        schedule: { pattern, timezone: zone.value, count: 5, policy_id: policy ? policy.id : undefined },
      });
      preview.replaceChildren(
        h("h3", {}, `Next runs (${zone.value || "UTC"})`),
        h("ol", { class: "next-runs" }, r.next_runs.map((t) => h("li", {}, inZone(t, zone.value), h("span", { class: "hint" }, ` · ${fmtTime(t)}`)))),
        ...(enabled.checked ? [] : [h("p", { class: "hint" }, "The policy is disabled: these runs happen only once it is enabled.")]),
      );
    } catch (err) {
      preview.replaceChildren(notice("error", err.message));
    }
  }, 250);

  const form = h(
    "form",
    {
      class: "card editor",
      onsubmit: async (e) => {
        e.preventDefault();
        let pattern;
        try {
          pattern = buildPattern(schedule());
        } catch (err) {
          out.replaceChildren(notice("error", err.message));
          return;
        }
        const how = keepRadios.map((l) => l.querySelector("input")).find((r) => r.checked).value;
        const definition = {
          permanent: how === "forever",
          max_backups: how === "count" ? Number(maxBackups.value) : -1,
          retention_duration_days: how === "days" ? Number(days.value) : -1,
        };
        // The latest backup of each of the last N days, weeks, ... stays as well, counted
        // in the schedule's zone.
        if (!definition.permanent && longTerm.some((x) => Number(x.input.value) > 0)) {
          for (const x of longTerm) definition[x.key] = Number(x.input.value);
          definition.timezone = zone.value || "UTC";
        }
        const resources = servers.filter((s) => memberBoxes.find((l) => l.querySelector("input").value === s.id).querySelector("input").checked).map((s) => ({ id: s.id, type: "OS::Nova::Server", name: s.name }));
        const operation = {
          enabled: enabled.checked,
          operation_type: "backup",
          operation_definition: definition,
          trigger: { properties: { pattern, timezone: zone.value } },
        };
        try {
          let saved;
          if (isNew) {
            saved = await call("POST", "/policies", {
              policy: { name: name.value, description: description.value, provider_id: PROVIDER, parameters: { common: {} }, resources, scheduled_operations: [{ name: "backup", ...operation }] },
            });
          } else {
            saved = await call("PUT", `/policies/${policy.id}`, {
              policy: { name: name.value, description: description.value, resources, scheduled_operations: [{ id: op.id, ...operation }] },
            });
          }
          announce(`Policy ${saved.policy.name} saved.`);
          ctx.go("policies");
        } catch (err) {
          out.replaceChildren(notice("error", err.message));
          out.querySelector("[role=alert]").focus?.();
        }
      },
    },
    h("fieldset", {}, h("legend", {}, "Policy"), field("Name", name, "Letters, digits, - and _."), field("Description", description), h("div", { class: "field check" }, h("label", {}, enabled, " Enabled (runs on its schedule)"))),
    h(
      "fieldset",
      {},
      h("legend", {}, "Schedule"),
      field("Runs", kind),
      daysSet,
      intervalField,
      field("At (HH:MM, several separated by commas)", times, "Several times share one minute, at least an hour apart."),
      field("Time zone", zone, "An IANA zone such as Europe/Berlin, or an offset such as UTC+08:00."),
      h("datalist", { id: zoneList }, ZONES.map((z) => h("option", { value: z }))),
      preview,
    ),
    h(
      "fieldset",
      {},
      h("legend", {}, "Retention"),
      keepRadios,
      countField,
      daysField,
      longTermSet,
    ),
    h("fieldset", {}, h("legend", {}, "Servers"), servers.length ? memberBoxes : h("p", {}, "No servers registered."), h("p", { class: "hint" }, "A server belongs to one policy at most.")),
    out,
    h("div", { class: "actions" }, h("a", { class: "button secondary", href: "#/policies" }, "Cancel"), h("button", { type: "submit", disabled: !write }, isNew ? "Create policy" : "Save")),
  );
  for (const r of keepRadios) r.querySelector("input").addEventListener("change", showKind);
  for (const el of [kind, interval, times, zone, enabled, ...dayBoxes.map((l) => l.querySelector("input"))]) {
    el.addEventListener("input", () => {
      showKind();
      refreshPreview();
    });
    el.addEventListener("change", () => {
      showKind();
      refreshPreview();
    });
  }
  showKind();
  view.append(form);
  refreshPreview();

  if (policy) {
    const runsBox = h("section", { class: "card", "aria-labelledby": "runs-title" });
    view.append(runsBox);
    const loadRuns = async () => {
      const runs = (await get(`/policies/${policy.id}/runs?limit=10`)).runs;
      const names = Object.fromEntries(servers.map((s) => [s.id, s.name]));
      runsBox.replaceChildren(
        h("h2", { id: "runs-title" }, "Last runs"),
        table(
          "Last runs",
          ["Slot", "Fired", "Trigger", "Backup record", "Skipped"],
          runs.map((r) =>
            h("tr", {}, h("td", {}, fmtTime(r.slot_at)), h("td", {}, fmtTime(r.fired_at)), h("td", {}, r.trigger), h("td", {}, r.checkpoint_id || "—"), h("td", {}, r.skipped.map((x) => `${names[x.server_id] || x.server_id}: ${x.reason}`).join("; ") || "—")),
          ),
          { empty: "The policy has not run yet." },
        ),
      );
    };
    await loadRuns();
    every(5000, loadRuns);
  }
}
