// The console's session and its calls to the service. The tokens live in this module's
// variables only: never in web storage, a browser database or a cookie, so a reload or
// a closed tab ends the console's session (and nothing is left on the machine to steal). The
// refresh token travels in the body, and renews the access token while the tab is open.

/** An error the service answered with: `code` is its `error` field. */
export class ApiError extends Error {
  constructor(status, body) {
    const code = (body && body.error) || `http_${status}`;
    super((body && body.error_description) || code);
    this.status = status;
    this.code = code;
    this.body = body || {};
  }
}

let audience = null; // the admin API's resource URI, from /console/config.json
let auditActions = []; // the audit log's actions, from the same
let session = null; // { access, refresh, expiresAt (ms), claims }
let refreshing = null; // the one refresh in flight
const endListeners = [];

/** Learn the admin API's audience before any sign-in. */
export async function loadConfig() {
  const response = await fetch("/console/config.json", { credentials: "omit" });
  if (!response.ok) throw new ApiError(response.status, null);
  const config = await response.json();
  audience = config.admin_audience;
  auditActions = config.audit_actions;
  return audience;
}

/** The actions the audit log records, for its filter. */
export function actions() {
  return auditActions;
}

export function adminAudience() {
  return audience;
}

export function signedIn() {
  return session !== null;
}

/** What the access token says of the operator (read, not verified: the service verifies). */
export function operator() {
  return session ? session.claims : null;
}

/** Called with a reason when the session ends without the operator asking. */
export function onSessionEnd(listener) {
  endListeners.push(listener);
}

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return {};
  }
}

function keep(pair) {
  session = {
    access: pair.access_token,
    refresh: pair.refresh_token,
    expiresAt: Date.now() + pair.expires_in * 1000,
    claims: claimsOf(pair.access_token),
  };
}

async function bodyOf(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function postJson(path, body) {
  return fetch(path, {
    method: "POST",
    credentials: "omit",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

/** Sign in with email and password. Resolves `{ done: true }`, or `{ mfaToken, factors }` when
 * the account has a second factor to give. */
export async function login(email, password) {
  const response = await postJson("/login", { email, password, resource: audience });
  const body = await bodyOf(response);
  if (response.ok) {
    keep(body);
    return { done: true };
  }
  if (response.status === 403 && body && body.error === "mfa_required") {
    return { mfaToken: body.mfa_token, factors: body.factors || [] };
  }
  throw new ApiError(response.status, body);
}

/** The second step: `{ code }`, `{ recovery_code }` or `{ credential }` (a passkey's assertion). */
export async function secondFactor(mfaToken, fields) {
  const response = await postJson("/login/mfa", { mfa_token: mfaToken, ...fields, resource: audience });
  const body = await bodyOf(response);
  if (!response.ok) throw new ApiError(response.status, body);
  keep(body);
}

/** The request options for a passkey assertion (`email` narrows them to that user's passkeys). */
export async function passkeyOptions(email) {
  const response = await postJson("/passkeys/login/options", email ? { email } : {});
  const body = await bodyOf(response);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** Sign in with a passkey alone. */
export async function passkeyLogin(credential) {
  const response = await postJson("/passkeys/login", { credential, resource: audience });
  const body = await bodyOf(response);
  if (!response.ok) throw new ApiError(response.status, body);
  keep(body);
}

function end(reason) {
  session = null;
  for (const listener of endListeners) listener(reason);
}

// One refresh at a time: calls that find the token expired wait for the same one.
function refresh() {
  if (!refreshing) {
    const spent = session.refresh;
    refreshing = (async () => {
      try {
        const response = await postJson("/refresh", { refresh_token: spent, resource: audience });
        const body = await bodyOf(response);
        if (!response.ok) {
          end("Your session has ended (signed out elsewhere, revoked, or expired). Sign in again.");
          throw new ApiError(response.status, body);
        }
        keep(body);
      } finally {
        refreshing = null;
      }
    })();
  }
  return refreshing;
}

/** A call to the admin API with the operator's token; the JSON answer, or null for 204.
 * @throws {ApiError} */
export async function call(method, path, body) {
  if (!session) throw new ApiError(401, { error: "missing_token", error_description: "Sign in first." });
  if (session.expiresAt - Date.now() < 30_000) await refresh();
  let response = await send(method, path, body);
  if (response.status === 403 || response.status === 401) {
    const answer = await bodyOf(response.clone());
    if (answer && answer.error === "token_expired" && session) {
      await refresh();
      response = await send(method, path, body);
    }
  }
  const answer = await bodyOf(response);
  if (!response.ok) throw new ApiError(response.status, answer);
  return answer;
}

function send(method, path, body) {
  const init = {
    method,
    credentials: "omit",
    headers: { Authorization: `Bearer ${session.access}` },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  return fetch(path, init);
}

/** Sign out: the service revokes the session; the tokens are forgotten either way. */
export async function signOut() {
  const spent = session ? session.refresh : null;
  session = null;
  if (spent) {
    try {
      await postJson("/logout", { refresh_token: spent });
    } catch {
      // Offline: the tokens are gone from the page; the session expires on its own.
    }
  }
}

/** A query string from the non-empty entries of `params`. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}
