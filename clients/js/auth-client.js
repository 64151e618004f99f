// auth-client.js: a dependency-free ES module for browser frontends of the token service
// (npm package tokenrota-client; the service also serves this file at /auth-client.js).
//
//   import { createAuthClient } from "tokenrota-client"; // or "https://auth.example/auth-client.js"
//   const auth = createAuthClient({
//     baseUrl: "https://auth.example",
//     resourceOrigins: ["https://api.example"], // APIs that may see the access token
//   });
//   await auth.login(email, password);           // refresh token goes into an HttpOnly cookie
//   await auth.login(email, password, { remember: false }); // a short, browser-session login
//   const response = await auth.fetch("/profile"); // bearer added; refreshed when needed
//   auth.onLogout(({ reason }) => showLoginForm());
//   await auth.logout();
//
// The access token is sent only to the service's origin and to `resourceOrigins`: any other URL
// given to `auth.fetch` is fetched without it, so a call to a third-party API cannot leak it.
//
// APIs that accept only tokens of their own audience (RFC 8707 resources) are named in
// `resources`, origin -> resource URI:
//   createAuthClient({ baseUrl, resources: { "https://orders.example": "https://orders.example/api" } })
// `auth.fetch` then sends each of those origins only a token for its resource, which it gets
// from `/refresh` with `{resource}` (the session's one refresh cookie) when first needed and
// again before it expires. Every refresh, of any audience, is one at a time (within the tab and,
// through the Web Lock, across tabs): the refresh token rotates at each, and two at once would
// look like reuse. A tab shares each resource's token with the others, as it does the main one.
// Answers follow the service's convention (also that of resource servers built with
// tokenrota.verify): 403 token_expired is refreshed and retried once; 403 invalid_token for the
// token this client holds means the session was ended elsewhere: every tab signs out, "revoked".
//
// The access token lives in this module's memory only (never localStorage): script injected
// into the page later cannot find it lying around, and the refresh token is out of script's
// reach in its cookie. Refreshes are single-flight within a tab, serialised across the tabs of
// one browser with the Web Locks API, and announced on a BroadcastChannel, so tabs neither race
// each other into the server's reuse detection nor refresh twice for one expiry. The lock can
// reach a tab before the announcement of the refresh it waited for, so each new token also gets
// a number, its generation, kept in IndexedDB (the number only, never a token): a tab that finds
// a newer generation there than the one it holds waits for that token instead of refreshing.

const LOCK_NAME = "token-service-refresh";
const CHANNEL_NAME = "token-service-auth";
const STORE_NAME = "token-service-auth"; // an IndexedDB database with one number in it
// How long a tab that holds the lock waits for a newer token's announcement before it refreshes
// itself: messages take milliseconds, so only a tab that died mid-announcement makes it wait.
const ANNOUNCEMENT_TIMEOUT = 5000;

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
 * `resourceOrigins`: origins of the APIs that accept the access token (e.g.
 * "https://api.example"); `fetch` sends the token to these and to the service's origin only.
 * `resources`: origins of APIs that each accept only a token for their own resource, mapped to
 * that resource's URI (`{"https://orders.example": "https://orders.example/api"}`).
 */
export function createAuthClient({
  baseUrl = "",
  refreshMargin = 30,
  resourceOrigins = [],
  resources = {},
} = {}) {
  const base = String(baseUrl).replace(/\/+$/, "");
  const page = globalThis.location?.href;
  const trusted = new Set([new URL(base || "/", page).origin, ...resourceOrigins.map((origin) => originOf(origin))]);
  const audiences = resourceMap(resources, trusted); // origin -> resource URI
  const listeners = new Set();
  const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(CHANNEL_NAME) : null;
  let accessToken = null;
  let expiresAt = 0; // epoch milliseconds
  let lifetime = 0; // milliseconds
  let generation = 0; // of the newest token this tab knows: the one it holds, or the newest at load
  let inflight = null;
  const waiters = new Set(); // called after each message from another tab
  const store = channel ? openStore() : Promise.resolve(null);
  const loaded = readGeneration(store).then((stored) => {
    generation = Math.max(generation, stored ?? 0);
  });

  const resolve = (path) => (/^[a-z][a-z0-9+.-]*:/i.test(path) ? path : base + path);

  function adopt(token, expiry, life, number = null) {
    accessToken = token;
    expiresAt = expiry;
    lifetime = life;
    if (number !== null) generation = number;
  }

  function isFresh() {
    const margin = Math.min(refreshMargin * 1000, lifetime / 2);
    return accessToken !== null && Date.now() < expiresAt - margin;
  }

  function endSession(reason, tellOtherTabs) {
    const hadSession = accessToken !== null || resourceTokens.size > 0;
    adopt(null, 0, 0);
    resourceTokens.clear();
    if (tellOtherTabs && channel) channel.postMessage({ type: "logout", reason });
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
      // A logout elsewhere is "other-tab" here; a revoked or expired session is that everywhere.
      if (data && data.type === "logout") {
        const shared = data.reason === "revoked" || data.reason === "expired";
        endSession(shared ? data.reason : "other-tab", false);
      }
      if (data && data.type === "token" && isNewer(data.generation)) {
        adopt(data.accessToken, data.expiresAt, data.lifetime, data.generation);
      }
      if (data && data.type === "resource-token") adoptResourceToken(data);
      for (const waiter of [...waiters]) waiter(data);
    };
  }

  // Tabs announce their tokens in any order: never trade the token held for an older one. A
  // tab without one takes the newest it knows of at load too. (null: no IndexedDB, no numbers.)
  function isNewer(number) {
    if (typeof number !== "number") return true;
    return number > generation || (accessToken === null && number === generation);
  }

  // Until another tab announces the token numbered `number` (or a logout), at most
  // ANNOUNCEMENT_TIMEOUT.
  function announcement(number) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        waiters.delete(waiter);
        resolve();
      };
      const waiter = (data) => {
        if (generation >= number || data?.type === "logout") done();
      };
      const timer = setTimeout(done, ANNOUNCEMENT_TIMEOUT);
      waiters.add(waiter);
    });
  }

  // The Web Lock around everything that takes a new token pair (refresh, login), where there is
  // one; without Web Locks, tabs are not serialised (as in node). Within the tab, one after the
  // other anyway: a refresh for a resource and one for the service must not overlap.
  let queue = Promise.resolve();
  function exclusively(run) {
    const locked = () =>
      globalThis.navigator?.locks ? navigator.locks.request(LOCK_NAME, run) : run();
    const turn = queue.then(locked, locked);
    queue = turn.catch(() => {});
    return turn;
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

  // Under the lock: adopt the new pair, announce it, and record its generation before the lock
  // goes to the next tab, which then finds it in the store even if the message is still on its way.
  async function takePair(body, stored) {
    const life = body.expires_in * 1000;
    const number = stored === null ? null : Math.max(stored, generation) + 1;
    adopt(body.access_token, Date.now() + life, life, number);
    const token = accessToken;
    if (channel) {
      channel.postMessage({ type: "token", accessToken, expiresAt, lifetime, generation: number });
    }
    if (number !== null) await writeGeneration(store, number);
    return token;
  }

  async function refreshUnderLock(staleToken) {
    await loaded;
    const stored = await readGeneration(store);
    // Another tab refreshed while this one waited for the lock: its message may still be on
    // its way (the lock can come first), but the store already has its generation.
    if (stored !== null && stored > generation) await announcement(stored);
    if (accessToken !== staleToken && isFresh()) return accessToken;
    const response = await post("/refresh");
    if (response.ok) return takePair(await response.json(), stored);
    const error = await failure(response);
    // 401/403: the cookie is missing, spent or revoked, so the session is over in every tab.
    // Anything else (a 5xx, a 429) is transient: keep the session and let the caller retry.
    if (response.status === 401 || response.status === 403) endSession("expired", true);
    throw error;
  }

  /** One refresh at a time: concurrent callers share the request in flight. */
  function refresh(staleToken = accessToken) {
    if (inflight === null) {
      inflight = exclusively(() => refreshUnderLock(staleToken)).finally(() => {
        inflight = null;
      });
    }
    return inflight;
  }

  // A Request's body can be read once: each attempt sends a fresh clone.
  function send(input, init, token) {
    const request = new Request(input instanceof Request ? input.clone() : input, init);
    if (token !== null) request.headers.set("Authorization", `Bearer ${token}`);
    return fetch(request);
  }

  // The `error` of a 403 that refuses the token (token_expired, invalid_token), else null.
  async function refusal(response) {
    if (response.status !== 403) return null;
    try {
      const { error } = await response.clone().json();
      return error === "token_expired" || error === "invalid_token" ? error : null;
    } catch {
      return null;
    }
  }

  // -- tokens per resource (RFC 8707) ------------------------------------------------------
  // resource URI -> {token, expiresAt, lifetime}; a refresh per resource in flight at most.
  const resourceTokens = new Map();
  const resourceInflight = new Map();
  // resource URI -> the number of its newest token this tab knows of. As for the main token, the
  // store keeps each resource's number (never a token), so a tab given the lock before another
  // tab's announcement waits for that token instead of refreshing again.
  const resourceNumbers = new Map();
  const numberKey = (resource) => `resource ${resource}`;

  function resourceToken(resource) {
    const held = resourceTokens.get(resource);
    if (!held) return null;
    const margin = Math.min(refreshMargin * 1000, held.lifetime / 2);
    return Date.now() < held.expiresAt - margin ? held.token : null;
  }

  function adoptResourceToken(data) {
    const { resource, accessToken: token, expiresAt: expiry, lifetime: life, number } = data;
    if (typeof resource !== "string" || ![...audiences.values()].includes(resource)) return;
    const held = resourceTokens.get(resource);
    if (!held || expiry > held.expiresAt) {
      resourceTokens.set(resource, { token, expiresAt: expiry, lifetime: life });
    }
    if (typeof number === "number" && number > (resourceNumbers.get(resource) ?? 0)) {
      resourceNumbers.set(resource, number);
    }
  }

  // Until another tab announces `resource`'s token numbered `number` (or a logout), at most
  // ANNOUNCEMENT_TIMEOUT.
  function resourceAnnouncement(resource, number) {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        waiters.delete(waiter);
        resolve();
      };
      const waiter = (data) => {
        if ((resourceNumbers.get(resource) ?? 0) >= number || data?.type === "logout") done();
      };
      const timer = setTimeout(done, ANNOUNCEMENT_TIMEOUT);
      waiters.add(waiter);
    });
  }

  // Under the lock: a token that arrived while this tab waited (another tab's, or this tab's
  // own previous turn) is used as it is; otherwise one /refresh for this resource. `known`: the
  // newest number this tab knew of before it waited for the lock.
  async function refreshResourceUnderLock(resource, staleToken, known) {
    const stored = await readNumber(store, numberKey(resource));
    if (stored !== null && stored > known) await resourceAnnouncement(resource, stored);
    const current = resourceToken(resource);
    if (current !== null && current !== staleToken) return current;
    const response = await post("/refresh", { resource });
    if (!response.ok) {
      const error = await failure(response);
      if (response.status === 401 || response.status === 403) endSession("expired", true);
      throw error;
    }
    const body = await response.json();
    const life = body.expires_in * 1000;
    const expiry = Date.now() + life;
    resourceTokens.set(resource, { token: body.access_token, expiresAt: expiry, lifetime: life });
    const number = stored === null ? null : Math.max(stored, known) + 1;
    if (number !== null) resourceNumbers.set(resource, number);
    if (channel) {
      const announced = { resource, accessToken: body.access_token, expiresAt: expiry, lifetime: life };
      channel.postMessage({ type: "resource-token", ...announced, number });
    }
    // Recorded before the lock goes to the next tab, which then finds it even if the message
    // is still on its way.
    if (number !== null) await writeNumber(store, numberKey(resource), number);
    return body.access_token;
  }

  async function knownNumber(resource) {
    // A tab without this resource's token (a new page) starts from the newest number stored.
    const stored = resourceTokens.has(resource) ? null : await readNumber(store, numberKey(resource));
    return Math.max(resourceNumbers.get(resource) ?? 0, stored ?? 0);
  }

  function refreshResource(resource, staleToken) {
    if (!resourceInflight.has(resource)) {
      const flight = knownNumber(resource).then((known) =>
        exclusively(() => refreshResourceUnderLock(resource, staleToken, known)),
      );
      const cleared = flight.finally(() => resourceInflight.delete(resource));
      resourceInflight.set(resource, cleared);
      return cleared;
    }
    return resourceInflight.get(resource);
  }

  // `fetch` for an origin in `resources`: only that resource's token, refreshed as the main
  // one is (before expiry; once more on token_expired; "revoked" on invalid_token).
  async function fetchForResource(resource, request, init) {
    let token = resourceToken(resource) ?? (await refreshResource(resource, null));
    let response = await send(request, init, token);
    let error = await refusal(response);
    const replaced = () => resourceTokens.get(resource)?.token !== token;
    if (error === "token_expired" || (error === "invalid_token" && replaced())) {
      // Another tab's newer token if there is one, else a refresh of this one.
      const newer = replaced() ? resourceToken(resource) : null;
      token = newer ?? (await refreshResource(resource, token));
      response = await send(request, init, token);
      error = await refusal(response);
    }
    if (error === "invalid_token" && !replaced()) endSession("revoked", true);
    return response;
  }

  return {
    /** Log in with the cookie transport; throws `AuthError` (invalid_credentials, too_many_attempts).
     * `remember: false` starts a short session whose cookie ends with the browser. */
    async login(email, password, { remember = true } = {}) {
      if (typeof remember !== "boolean") throw new TypeError("remember must be true or false");
      // Under the lock too: a login's pair is numbered like a refresh's, one at a time.
      await exclusively(async () => {
        await loaded;
        const response = await post("/login", { email, password, use_cookie: true, remember });
        if (!response.ok) throw await failure(response);
        await takePair(await response.json(), await readGeneration(store));
      });
    },

    /** `fetch` with the bearer token when the URL is the service's or a resource origin's
     * (any other URL is fetched without it); an origin in `resources` gets its resource's own
     * token instead. Refreshes first when the token is (about to be)
     * expired; on 403 token_expired refreshes and retries once; on 403 invalid_token for the
     * token it holds, ends the session in every tab (`onLogout({reason: "revoked"})`) and
     * returns that answer. Throws `AuthError` when there is no session to refresh. */
    async fetch(input, init = {}) {
      const target = input instanceof Request ? input.url : resolve(String(input));
      const url = new URL(target, page);
      const request = input instanceof Request ? input : url;
      const resource = audiences.get(url.origin);
      if (resource !== undefined) return fetchForResource(resource, request, init);
      if (!trusted.has(url.origin)) return send(request, init, null);
      let token = isFresh() ? accessToken : await refresh(accessToken);
      let response = await send(request, init, token);
      let error = await refusal(response);
      // Expired, or refused after another tab had replaced it: once more with a fresh one.
      const replaced = accessToken !== null && accessToken !== token;
      if (error === "token_expired" || (error === "invalid_token" && replaced)) {
        token = accessToken !== token && isFresh() ? accessToken : await refresh(token);
        response = await send(request, init, token);
        error = await refusal(response);
      }
      if (error === "invalid_token" && accessToken === token) endSession("revoked", true);
      return response;
    },

    /** Ask for a password-reset message. Resolves alike whether or not the email has an
     * account (the service never says); throws `AuthError` (invalid_input, too_many_attempts). */
    async requestPasswordReset(email) {
      const response = await post("/password/forgot", { email });
      if (!response.ok) throw await failure(response);
    },

    /** Set a new password with the token of a reset link. The service ends every session of
     * the account, so a session this client holds ends too (reason "revoked"). Throws
     * `AuthError` (invalid_token: used, expired or superseded link; weak_password). */
    async resetPassword(token, newPassword) {
      const response = await post("/password/reset", { token, new_password: newPassword });
      if (!response.ok) throw await failure(response);
      if (accessToken !== null) endSession("revoked", true);
    },

    /** End the session at the service, clear the cookie, and tell every tab. */
    async logout() {
      try {
        await post("/logout");
      } finally {
        endSession("logout", true);
      }
    },

    /** Call `callback({reason})` when the session ends; returns a function that unsubscribes.
     * `reason`: "logout" (this tab), "other-tab" (a logout in another tab), "expired" (the
     * refresh token was refused), "revoked" (the access token was refused as invalid). */
    onLogout(callback) {
      listeners.add(callback);
      return () => {
        listeners.delete(callback);
      };
    },
  };
}

// The generation store is IndexedDB rather than Web Storage: a transaction begun after another
// completed sees its write, whereas a Web Storage write reaches other tabs' processes later, in
// no set order with the lock. Any failure (no IndexedDB, private modes, a closed database)
// resolves to null, and the tabs rely on their messages alone, as before the store.
function openStore() {
  return new Promise((resolve) => {
    let request = null;
    try {
      request = globalThis.indexedDB.open(STORE_NAME, 1);
    } catch {
      resolve(null);
      return;
    }
    request.onupgradeneeded = () => request.result.createObjectStore("state");
    request.onsuccess = () => {
      request.result.onversionchange = () => request.result.close();
      resolve(request.result);
    };
    request.onerror = () => resolve(null);
    request.onblocked = () => resolve(null);
  });
}

/** The newest generation recorded (0 before the first), or null without a store. */
async function readGeneration(store) {
  const stored = await inStore(store, "readonly", (state) => state.get("generation"));
  if (stored === null) return null;
  return Number.isSafeInteger(stored.value) ? stored.value : 0;
}

function writeGeneration(store, number) {
  return inStore(store, "readwrite", (state) => state.put(number, "generation"));
}

/** The number stored under `key` (0 before the first), or null without a store. */
async function readNumber(store, key) {
  const stored = await inStore(store, "readonly", (state) => state.get(key));
  if (stored === null) return null;
  return Number.isSafeInteger(stored.value) ? stored.value : 0;
}

function writeNumber(store, key, number) {
  return inStore(store, "readwrite", (state) => state.put(number, key));
}

// One transaction on the "state" object store: `{value}` of `work`'s request once the
// transaction has completed (so a write is visible to every later transaction), or null.
async function inStore(store, mode, work) {
  const database = await store;
  if (database === null) return null;
  return new Promise((resolve) => {
    try {
      const transaction = database.transaction("state", mode);
      const request = work(transaction.objectStore("state"));
      transaction.oncomplete = () => resolve({ value: request.result });
      transaction.onerror = () => resolve(null);
      transaction.onabort = () => resolve(null);
    } catch {
      resolve(null);
    }
  });
}

/** `resources` checked: origin -> absolute http(s) resource URI without a fragment (RFC 8707),
 * as a Map; an origin may not also be the service's or in `resourceOrigins` (which token would it
 * get?). Throws TypeError. */
function resourceMap(resources, trusted) {
  const map = new Map();
  for (const [origin, resource] of Object.entries(resources ?? {})) {
    const key = originOf(origin, "resources");
    let uri = null;
    try {
      uri = new URL(resource);
    } catch {
      // Not a URL: refused below.
    }
    const isResource =
      typeof resource === "string" &&
      uri !== null &&
      /^https?:$/.test(uri.protocol) &&
      !resource.includes("#");
    if (!isResource) {
      throw new TypeError(`a resource is an absolute http(s) URI without a fragment: ${resource}`);
    }
    if (trusted.has(key)) {
      throw new TypeError(`${key} is the service's or in resourceOrigins: not also in resources`);
    }
    map.set(key, resource);
  }
  return map;
}

/** `value` as an origin ("https://api.example", a trailing "/" allowed); throws TypeError for
 * anything else: a path would suggest that only it gets the token, while the whole origin would. */
function originOf(value, option = "resourceOrigins") {
  let url = null;
  try {
    url = new URL(value);
  } catch {
    // Not a URL at all: refused below.
  }
  const isOrigin = url !== null && /^https?:$/.test(url.protocol) && url.href === `${url.origin}/`;
  if (!isOrigin) throw new TypeError(`${option} takes origins like https://api.example: ${value}`);
  return url.origin;
}
