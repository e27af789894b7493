// The console's one way to the service: the public API, with the token of this browser tab.
// The token lives in sessionStorage only, so closing the tab forgets it.

const KEY = "csbs.session";
export const PROVIDER = "fc4d5750-22e7-4798-8a46-f48f62c4c1da";

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code || "";
  }
}

export function session() {
  const raw = sessionStorage.getItem(KEY);
  return raw ? JSON.parse(raw) : null;
}

function saveSession(value) {
  if (value) sessionStorage.setItem(KEY, JSON.stringify(value));
  else sessionStorage.removeItem(KEY);
}

// What a listener does when the token stops working (the app sends the person to login).
let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

// The API's own words for an error, whatever shape of the two its body has (CSBS or
// OpenStack fault, or Keystone's under /v3).
export function messageOf(body, status) {
  if (body && typeof body === "object") {
    if (body.error_msg) return body.error_msg;
    if (body.error && body.error.message) return body.error.message;
    for (const value of Object.values(body)) {
      if (value && typeof value === "object" && value.message) return value.message;
    }
    if (typeof body.detail === "string") return body.detail;
  }
  return `The service answered ${status}.`;
}

async function parse(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

export async function login(user, password, project) {
  const response = await fetch("/v3/auth/tokens", {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify({
      auth: {
        identity: {
          methods: ["password"],
          password: { user: { name: user, domain: { id: "default" }, password } },
        },
        scope: { project: { name: project, domain: { id: "default" } } },
      },
    }),
  });
  const body = await parse(response);
  if (response.status !== 201) throw new ApiError(response.status, messageOf(body, response.status));
  const token = body.token;
  const value = {
    token: response.headers.get("X-Subject-Token"),
    user: token.user.name,
    project: token.project.name,
    projectId: token.project.id,
    role: (token.roles[0] || {}).name || "reader",
    expiresAt: token.expires_at,
  };
  saveSession(value);
  return value;
}

export async function logout() {
  const s = session();
  saveSession(null);
  if (!s) return;
  // Revoke the token at the service, so a copy of it is worthless too.
  try {
    await fetch("/v3/auth/tokens", {
      method: "DELETE",
      headers: { "X-Auth-Token": s.token, "X-Subject-Token": s.token },
    });
  } catch {
    // Offline: the token is forgotten here and expires at the service.
  }
}

export function forget() {
  saveSession(null);
}

// Call `path` under /v1/{project_id}; answers the parsed body.
export function call(method, path, body) {
  const s = session();
  return callAt(method, s ? `/v1/${s.projectId}${path}` : path, body);
}

// Call an absolute path of the service (/v3/... for identity) with the session's token.
export async function callAt(method, url, body) {
  const s = session();
  if (!s) {
    onUnauthorized("Please log in.");
    throw new ApiError(401, "Please log in.");
  }
  const init = { method, headers: { "X-Auth-Token": s.token, Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, "The service cannot be reached. Is csbs running?");
  }
  const parsed = await parse(response);
  if (response.status === 401) {
    const message = messageOf(parsed, 401);
    saveSession(null);
    onUnauthorized(message);
    throw new ApiError(401, message);
  }
  if (!response.ok) {
    throw new ApiError(response.status, messageOf(parsed, response.status), parsed && parsed.error_code);
  }
  return parsed;
}

export const get = (path) => call("GET", path);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

export const canWrite = () => {
  const s = session();
  return !!s && s.role !== "reader";
};
export const isAdmin = () => {
  const s = session();
  return !!s && s.role === "admin";
};
