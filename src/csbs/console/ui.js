// Small DOM helpers: the console builds its pages from these, no framework.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

let seq = 0;
export const uid = (prefix) => `${prefix}-${++seq}`;

// API times are UTC without a zone suffix.
export function parseTime(value) {
  if (!value) return null;
  return new Date(/[zZ]|[+-]\d\d:\d\d$/.test(value) ? value : `${value}Z`);
}

export function fmtTime(value) {
  const d = value instanceof Date ? value : parseTime(value);
  if (!d || Number.isNaN(d.getTime())) return "—";
  return `${d.toISOString().slice(0, 16).replace("T", " ")} UTC`;
}

export function fmtBytes(n) {
  if (n === null || n === undefined || Number.isNaN(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function fmtSeconds(s) {
  if (s === null || s === undefined) return "—";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s % 60)} s`;
}

const STATUS_WORDS = {
  waiting_protect: "waiting to back up",
  protecting: "backing up",
  available: "available",
  waiting_restore: "waiting to restore",
  restoring: "restoring",
  error: "error",
  waiting_delete: "waiting to delete",
  deleting: "deleting",
  deleted: "deleted",
  waiting: "waiting",
  running: "running",
  success: "succeeded",
  failed: "failed",
  timeout: "timed out",
  gone: "deleted (gone)",
};

export function badge(status) {
  return h("span", { class: `badge badge-${status}` }, STATUS_WORDS[status] || status);
}

export function announce(text) {
  const region = document.getElementById("announce");
  region.textContent = "";
  // A new node, so screen readers read a repeated message again.
  setTimeout(() => {
    region.textContent = text;
  }, 30);
}

// A message box: errors carry the API's own words.
export function notice(kind, text) {
  return h(
    "div",
    { class: `notice notice-${kind}`, role: kind === "error" ? "alert" : "status" },
    text,
  );
}

export function field(label, control, hint) {
  const id = control.id || uid("f");
  control.id = id;
  const hintId = hint ? `${id}-hint` : null;
  if (hintId) control.setAttribute("aria-describedby", hintId);
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    control,
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
  );
}

export function table(caption, headers, rows, opts = {}) {
  const t = h(
    "table",
    { class: opts.class || "" },
    h("caption", { class: opts.showCaption ? "" : "visually-hidden" }, caption),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        headers.map((x) =>
          x instanceof Node ? h("th", { scope: "col" }, x) : h("th", { scope: "col" }, x),
        ),
      ),
    ),
    h("tbody", {}, rows),
  );
  // At phone width the stylesheet lays rows out as cards, each cell under its header's
  // name; the explicit roles keep the table a table for screen readers when it does.
  const names = headers.map((x) => (x instanceof Node ? x.textContent : String(x)));
  t.setAttribute("role", "table");
  for (const group of t.querySelectorAll("thead, tbody")) group.setAttribute("role", "rowgroup");
  for (const tr of t.querySelectorAll("tr")) tr.setAttribute("role", "row");
  for (const th of t.querySelectorAll("thead th")) th.setAttribute("role", "columnheader");
  for (const tr of t.querySelectorAll("tbody tr")) {
    [...tr.children].forEach((cell, i) => {
      cell.setAttribute("role", cell.tagName === "TH" ? "rowheader" : "cell");
      if (names[i]) cell.dataset.label = names[i];
    });
  }
  if (!rows.length) {
    t.querySelector("tbody").append(
      h("tr", {}, h("td", { colspan: String(headers.length), class: "empty" }, opts.empty || "Nothing here yet.")),
    );
  }
  // A region that scrolls must be reachable by keyboard (tables are wider than phones).
  return h("div", { class: "table-wrap", role: "region", "aria-label": caption, tabindex: "0" }, t);
}

// A modal dialog (native <dialog>: focus stays inside, Escape closes). Resolves with the
// value given to `close`, or null when dismissed.
export function dialog(title, build) {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const d = h("dialog", { "aria-labelledby": titleId, class: "dialog" });
    const opener = document.activeElement;
    let done = false;
    const close = (value) => {
      if (done) return;
      done = true;
      d.close();
      d.remove();
      if (opener && opener.focus) opener.focus();
      resolve(value);
    };
    d.addEventListener("cancel", (e) => {
      e.preventDefault();
      close(null);
    });
    d.append(h("h2", { id: titleId }, title), build(close));
    document.body.append(d);
    d.showModal();
    const first = d.querySelector("[autofocus], input, select, textarea, button");
    if (first) first.focus();
  });
}

export function confirmDialog(title, message, action, danger = true) {
  return dialog(title, (close) =>
    h(
      "div",
      {},
      typeof message === "string" ? h("p", {}, message) : message,
      h(
        "div",
        { class: "actions" },
        h("button", { type: "button", class: "secondary", onclick: () => close(false) }, "Cancel"),
        h(
          "button",
          { type: "button", class: danger ? "danger" : "", onclick: () => close(true), autofocus: true },
          action,
        ),
      ),
    ),
  );
}

// Timers of the current page; the router stops them all when the page changes.
const timers = new Set();
export function every(ms, fn) {
  let stopped = false;
  let handle = null;
  const tick = async () => {
    if (stopped) return;
    try {
      // A tab nobody looks at asks nothing of the service.
      if (!document.hidden) await fn();
    } finally {
      if (!stopped) handle = setTimeout(tick, ms);
    }
  };
  const stop = () => {
    stopped = true;
    clearTimeout(handle);
    timers.delete(stop);
  };
  timers.add(stop);
  handle = setTimeout(tick, ms);
  return stop;
}

export function stopTimers() {
  for (const stop of [...timers]) stop();
}

export function readOnlyNote() {
  return notice("info", "Your role may only read in this project: actions that change something are disabled.");
}

export function progress(value, label) {
  const v = Math.max(0, Math.min(100, Number(value) || 0));
  return h(
    "span",
    { class: "progress" },
    h("progress", { max: "100", value: String(v), "aria-label": label || "progress" }),
    ` ${v}%`,
  );
}

export function debounce(fn, ms) {
  let handle = null;
  return (...args) => {
    clearTimeout(handle);
    handle = setTimeout(() => fn(...args), ms);
  };
}
