// Servers: their disks, last backup, policy; back up now; the restore wizard.

import { PROVIDER, call, canWrite, get, isAdmin } from "../api.js";
import {
  announce,
  badge,
  dialog,
  every,
  field,
  fmtBytes,
  fmtTime,
  h,
  notice,
  progress,
  readOnlyNote,
  table,
} from "../ui.js";

export async function serversPage(view, ctx) {
  view.append(h("h1", {}, "Servers"));
  if (!canWrite()) view.append(readOnlyNote());
  const out = h("div", { class: "out" });
  const list = h("div");
  view.append(out, list);
  let state = null;
  let lastSig = "";

  const load = async () => {
    const [servers, backups, policies] = await Promise.all([
      get("/servers"),
      get("/checkpoint_items?limit=1000&sort=created_at:desc"),
      get("/policies?limit=1000"),
    ]);
    state = { servers: servers.servers, backups: backups.checkpoint_items, policies: policies.policies };
    // Drawn again only when something changed: a redraw would take the keyboard focus away.
    const sig = JSON.stringify(state);
    if (ctx.isCurrent() && sig !== lastSig) {
      lastSig = sig;
      render();
    }
  };

  const render = () => {
    const policyOf = {};
    for (const p of state.policies) for (const r of p.resources) policyOf[r.id] = p;
    const rows = state.servers.map((s) => {
      const last = state.backups.find((b) => b.resource_id === s.id);
      const policy = policyOf[s.id];
      const size = s.disks.reduce((n, d) => n + d.size_bytes, 0);
      return h(
        "tr",
        { "data-server": s.name },
        h("th", { scope: "row" }, s.name),
        h("td", {}, s.status),
        h("td", {}, s.host || "—"),
        h("td", { class: "nowrap" }, `${s.disks.length} (${fmtBytes(size)})`),
        h(
          "td",
          { class: "last-backup" },
          last
            ? [badge(last.status), " ", fmtTime(last.created_at), last.status === "protecting" ? [" ", progress(last.extend_info.progress, `backup of ${s.name}`)] : null, h("br"), h("span", { class: "hint" }, last.extend_info.consistency || ""), last.status === "error" ? h("p", { class: "error-text" }, last.extend_info.fail_reason) : ""]
            : "never",
        ),
        h("td", {}, policy ? h("a", { href: `#/policies/${policy.id}` }, policy.name) : "—"),
        h(
          "td",
          { class: "row-actions" },
          h("button", { type: "button", disabled: !canWrite(), onclick: () => backUp(s), "aria-label": `Back up now: ${s.name}` }, "Back up now"),
          h("button", { type: "button", class: "secondary", disabled: !canWrite(), onclick: () => restoreWizard(s, state, out, load), "aria-label": `Restore ${s.name}` }, "Restore…"),
        ),
      );
    });
    list.replaceChildren(
      table("Servers", ["Name", "Status", "Host", "Disks", "Last backup", "Policy", "Actions"], rows, {
        empty: isAdmin() ? "No servers yet: register one on the Admin page." : "No servers yet: an administrator registers them.",
      }),
    );
  };

  const backUp = async (s) => {
    out.replaceChildren(notice("info", `Starting a backup of ${s.name}…`));
    try {
      const r = await call("POST", `/providers/${PROVIDER}/resources/${s.id}/action`, { protect: {} });
      const msg = `Backup of ${s.name} started (record ${r.checkpoint.id}); its progress shows below.`;
      out.replaceChildren(notice("success", msg));
      await load();
    } catch (err) {
      out.replaceChildren(notice("error", err.message));
    }
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

// Why the API would refuse this restore, in words, checked before anything is sent.
function refusals(server, backup, mapping) {
  const out = [];
  if (server.status !== "stopped") {
    out.push(`${server.name} is ${server.status}: a restore needs the server stopped (an administrator sets its status).`);
  }
  if (!backup) return out;
  if (backup.status !== "available") out.push(`The backup is ${backup.status}; only an available backup can be restored.`);
  const used = new Set();
  for (const vb of backup.extend_info.volume_backups) {
    const diskId = mapping[vb.id];
    if (!diskId) {
      out.push(`Disk backup ${vb.name} has no target disk: every disk backup must be restored.`);
      continue;
    }
    if (used.has(diskId)) out.push(`Two disk backups go to the same disk.`);
    used.add(diskId);
    const disk = server.disks.find((d) => d.id === diskId);
    if (disk && disk.size_gb < vb.source_volume_size) {
      out.push(`Disk ${disk.name} (${disk.size_gb} GB) is smaller than the backup of ${vb.source_volume_name} (${vb.source_volume_size} GB).`);
    }
  }
  return out;
}

function restoreWizard(server, state, out, reload) {
  const candidates = state.backups.filter((b) => b.status === "available");
  const own = candidates.filter((b) => b.resource_id === server.id);
  const others = candidates.filter((b) => b.resource_id !== server.id);
  return dialog(`Restore ${server.name}`, (close) => {
    const select = h(
      "select",
      { name: "backup" },
      h("option", { value: "" }, "Choose a backup"),
      own.length ? h("optgroup", { label: `Backups of ${server.name}` }, own.map((b) => h("option", { value: b.id }, `${b.name} · ${fmtTime(b.created_at)}`))) : null,
      others.length ? h("optgroup", { label: "Backups of other servers" }, others.map((b) => h("option", { value: b.id }, `${b.resource_name}: ${b.name} · ${fmtTime(b.created_at)}`))) : null,
    );
    if (own.length) select.value = own[0].id;
    const mapBox = h("fieldset", { class: "mapping" }, h("legend", {}, "Disk backups onto disks"));
    const powerOn = h("input", { type: "checkbox", name: "power_on" });
    const problems = h("div", { "aria-live": "polite" });
    const send = h("button", { type: "submit" }, "Restore");
    const mapping = {};

    const backup = () => candidates.find((b) => b.id === select.value);
    const check = () => {
      const found = refusals(server, backup(), mapping);
      if (!backup()) found.unshift("Choose a backup to restore.");
      problems.replaceChildren(
        found.length
          ? h("div", { class: "notice notice-error" }, h("p", {}, "This restore would be refused:"), h("ul", {}, found.map((x) => h("li", {}, x))))
          : notice("success", "Every disk backup has a disk large enough."),
      );
      send.disabled = found.length > 0;
      return found;
    };
    const drawMapping = () => {
      mapBox.replaceChildren(h("legend", {}, "Disk backups onto disks"));
      for (const k of Object.keys(mapping)) delete mapping[k];
      const b = backup();
      if (!b) {
        check();
        return;
      }
      b.extend_info.volume_backups.forEach((vb, i) => {
        const disk = server.disks[i];
        mapping[vb.id] = disk ? disk.id : "";
        const target = h(
          "select",
          { onchange: (e) => { mapping[vb.id] = e.target.value; check(); } },
          h("option", { value: "" }, "No disk"),
          server.disks.map((d) => h("option", { value: d.id }, `${d.name} (${d.device_name}, ${d.size_gb} GB)`)),
        );
        target.value = mapping[vb.id];
        mapBox.append(field(`${vb.source_volume_name} (${vb.source_volume_size} GB) →`, target));
      });
      check();
    };
    select.addEventListener("change", drawMapping);
    queueMicrotask(drawMapping);

    return h(
      "form",
      {
        onsubmit: async (e) => {
          e.preventDefault();
          if (check().length) return;
          const b = backup();
          const volumes = Object.entries(mapping).map(([backup_id, volume_id]) => ({ backup_id, volume_id }));
          send.disabled = true;
          problems.replaceChildren(notice("info", "Asking the service whether it can restore this…"));
          try {
            // The service's own check (R3) first: it names any refusal the console missed.
            const verdict = await call("POST", `/providers/${PROVIDER}/resources/action`, {
              check_restorable: [{ checkpoint_item_id: b.id, target: { resource_id: server.id, resource_type: "OS::Nova::Server", volumes } }],
            });
            const v = verdict.restorable[0];
            if (!v.result) {
              problems.replaceChildren(notice("error", `${v.error_msg} (${v.error_code})`));
              send.disabled = false;
              return;
            }
            const r = await call("POST", "/restores", {
              restore: {
                provider_id: PROVIDER,
                checkpoint_id: b.checkpoint_id,
                parameters: { checkpoint_item_id: b.id, power_on: powerOn.checked, targets: { server_id: server.id, volumes } },
              },
            });
            close(true);
            watchRestore(r.restore, server, out, reload);
          } catch (err) {
            problems.replaceChildren(notice("error", err.message));
            send.disabled = false;
          }
        },
      },
      field("Backup", select),
      mapBox,
      h("div", { class: "field check" }, h("label", {}, powerOn, " Start the server when the restore is done")),
      problems,
      h("div", { class: "actions" }, h("button", { type: "button", class: "secondary", onclick: () => close(null) }, "Cancel"), send),
    );
  });
}

function watchRestore(restore, server, out, reload) {
  const box = h("div", { class: "card restore-watch" });
  out.replaceChildren(box);
  const draw = (status, pct, reason) => {
    box.replaceChildren(
      h("h2", {}, `Restore of ${server.name}`),
      h("p", {}, "Status: ", h("span", { class: `badge badge-${status}`, "data-restore-status": status }, status.replace("_", " ")), " ", status === "in_progress" ? progress(pct, "restore progress") : null),
      reason ? notice("error", reason) : "",
    );
  };
  draw(restore.status, 0);
  announce(`Restore of ${server.name} started.`);
  const stop = every(1000, async () => {
    try {
      const r = await get(`/restores/${restore.id}`);
      const logs = await get(`/operation_logs?resource_id=${server.id}&operation_type=restore&limit=5`).catch(() => null);
      const task = logs && logs.operation_logs.find((t) => t.restore_id === restore.id);
      const reason = Object.values(r.restore.resources_reason || {})[0];
      draw(r.restore.status, task ? task.extra_info.progress : 0, reason);
      if (r.restore.status !== "in_progress") {
        stop();
        announce(`Restore of ${server.name}: ${r.restore.status}.`);
        await reload();
      }
    } catch (err) {
      box.append(notice("error", err.message));
    }
  });
}
