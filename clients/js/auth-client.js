// auth-client.js: a dependency-free ES module for browser frontends of the token service.
//
//   import { createAuthClient } from "https://auth.example/auth-client.js";
//   const auth = createAuthClient({ baseUrl: "https://auth.example" });
//   await auth.login(email, password);           // refresh token goes into an HttpOnly cookie
//   const response = await auth.fetch("/profile"); // bearer added; refreshed when needed
//   auth.onLogout(() => showLoginForm());
//   await auth.logout();
//
// The access token lives in this module's memory only (never localStorage): script injected
// into the page later cannot find it lying around, and the refresh token is out of script's
// reach in its cookie. Refreshes are single-flight within a tab, serialised across the tabs of
// one browser with the Web Locks API, and announced on a BroadcastChannel, so tabs neither race
// each other into the server's reuse detection nor refresh twice for one expiry.

const LOCK_NAME = "token-service-refresh";
const CHANNEL_NAME = "token-service-auth";

/** An error the service answered with: `code` is its `error` field (e.g. "invalid_credentials"). */
export class AuthError extends Error {
  constructor(code, description, status, retryAfter = null) {
    super(description || code);
    this.name = "AuthError";
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/**
 * Create a client for the service at `baseUrl` (default: this page's origin).
 * `refreshMargin`: seconds before the access token's expiry at which `fetch` refreshes first
 * (default 30; capped at half the token's lifetime).
 */
export function createAuthClient({ baseUrl = "", refreshMargin = 30 } = {}) {
  const base = String(baseUrl).replace(/\/+$/, "");
  const listeners = new Set();
  const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(CHANNEL_NAME) : null;
  let accessToken = null;
  let expiresAt = 0; // epoch milliseconds
  let lifetime = 0; // milliseconds
  let inflight = null;

  const resolve = (path) => (/^[a-z][a-z0-9+.-]*:/i.test(path) ? path : base + path);

  function adopt(token, expiry, life) {
    accessToken = token;
    expiresAt = expiry;
    lifetime = life;
  }

  function isFresh() {
    const margin = Math.min(refreshMargin * 1000, lifetime / 2);
    return accessToken !== null && Date.now() < expiresAt - margin;
  }

  function endSession(reason, tellOtherTabs) {
    const hadSession = accessToken !== null;
    adopt(null, 0, 0);
    if (tellOtherTabs && channel) channel.postMessage({ type: "logout" });
    if (!hadSession && reason !== "logout") return;
    for (const listener of [...listeners]) {
      try {
        listener({ reason });
      } catch (error) {
        console.error("onLogout listener failed", error);
      }
    }
  }

  if (channel) {
    channel.onmessage = ({ data }) => {
      if (data && data.type === "logout") endSession("other-tab", false);
      if (data && data.type === "token") adopt(data.accessToken, data.expiresAt, data.lifetime);
    };
  }

  // Cookie requests must carry X-Requested-With and a JSON (or empty) body: the service's CSRF
  // checks refuse anything else. `credentials: "include"` sends the cookie across origins too.
  function post(path, body) {
    const headers = { "X-Requested-With": "auth-client" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(resolve(path), {
      method: "POST",
      credentials: "include",
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  }

  async function failure(response) {
    let body = {};
    try {
      body = await response.json();
    } catch {
      // Not JSON (a proxy's error page): keep the status only.
    }
    const retryAfter = Number(response.headers.get("Retry-After")) || null;
    return new AuthError(body.error || "http_error", body.error_description, response.status, retryAfter);
  }

  function takePair(body) {
    const life = body.expires_in * 1000;
    adopt(body.access_token, Date.now() + life, life);
    if (channel) channel.postMessage({ type: "token", accessToken, expiresAt, lifetime });
    return accessToken;
  }

  async function refreshUnderLock(staleToken) {
    // Another tab may have refreshed while this one waited for the lock, and said so.
    if (accessToken !== staleToken && isFresh()) return accessToken;
    const response = await post("/refresh");
    if (response.ok) return takePair(await response.json());
    const error = await failure(response);
    // 401/403: the cookie is missing, spent or revoked, so the session is over in every tab.
    // Anything else (a 5xx, a 429) is transient: keep the session and let the caller retry.
    if (response.status === 401 || response.status === 403) endSession("expired", true);
    throw error;
  }

  /** One refresh at a time: concurrent callers share the request in flight. */
  function refresh(staleToken = accessToken) {
    if (inflight === null) {
      const run = () => refreshUnderLock(staleToken);
      const locked = globalThis.navigator?.locks ? navigator.locks.request(LOCK_NAME, run) : run();
      inflight = locked.finally(() => {
        inflight = null;
      });
    }
    return inflight;
  }

  function send(input, init, token) {
    const headers = new Headers(init.headers || {});
    headers.set("Authorization", `Bearer ${token}`);
    const target = typeof input === "string" ? resolve(input) : input;
    return fetch(target, { ...init, headers });
  }

  async function isTokenExpired(response) {
    if (response.status !== 403) return false;
    try {
      return (await response.clone().json()).error === "token_expired";
    } catch {
      return false;
    }
  }

  return {
    /** Log in with the cookie transport; throws `AuthError` (invalid_credentials, too_many_attempts). */
    async login(email, password) {
      const response = await post("/login", { email, password, use_cookie: true });
      if (!response.ok) throw await failure(response);
      takePair(await response.json());
    },

    /** `fetch` with the bearer token; refreshes first when it is (about to be) expired, and
     * retries once when the service answers 403 token_expired. */
    async fetch(input, init = {}) {
      const token = isFresh() ? accessToken : await refresh(accessToken);
      const response = await send(input, init, token);
      if (!(await isTokenExpired(response))) return response;
      const renewed = accessToken !== token && isFresh() ? accessToken : await refresh(token);
      return send(input, init, renewed);
    },

    /** End the session at the service, clear the cookie, and tell every tab. */
    async logout() {
      try {
        await post("/logout");
      } finally {
        endSession("logout", true);
      }
    },

    /** Call `callback({reason})` when the session ends (logout, expiry, another tab); returns
     * a function that unsubscribes. */
    onLogout(callback) {
      listeners.add(callback);
      return () => listeners.delete(callback);
    },
  };
}
