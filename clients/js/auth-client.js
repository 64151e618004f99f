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
//
// With `dpop: true` the tokens are bound to a key (RFC 9449; see the DPoP section at the end).

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
 */
export function createAuthClient({
  baseUrl = "",
  refreshMargin = 30,
  resourceOrigins = [],
  dpop = false,
} = {}) {
  if (typeof dpop !== "boolean") throw new TypeError("dpop must be true or false");
  // Checked here rather than at login: without WebCrypto (an http page not on localhost) DPoP
  // cannot work at all, and a silent fall back to bearer tokens would hide it.
  if (dpop && !globalThis.crypto?.subtle) throw new TypeError("dpop needs WebCrypto (https)");
  const base = String(baseUrl).replace(/\/+$/, "");
  const page = globalThis.location?.href;
  const trusted = new Set([new URL(base || "/", page).origin, ...resourceOrigins.map(originOf)]);
  const listeners = new Set();
  const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel(CHANNEL_NAME) : null;
  let accessToken = null;
  let tokenKey = null; // the DPoP key the access token is bound to; null for a bearer token
  const proofs = dpop ? createProofs() : null;
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

  function adopt(token, expiry, life, number = null, key = null) {
    accessToken = token;
    tokenKey = key;
    expiresAt = expiry;
    lifetime = life;
    if (number !== null) generation = number;
  }

  function isFresh() {
    const margin = Math.min(refreshMargin * 1000, lifetime / 2);
    return accessToken !== null && Date.now() < expiresAt - margin;
  }

  function endSession(reason, tellOtherTabs) {
    const hadSession = accessToken !== null;
    adopt(null, 0, 0);
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
        adopt(data.accessToken, data.expiresAt, data.lifetime, data.generation, data.key ?? null);
      }
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
  // one; without Web Locks, tabs are not serialised (as in node).
  function exclusively(run) {
    return globalThis.navigator?.locks ? navigator.locks.request(LOCK_NAME, run) : run();
  }

  // Cookie requests must carry X-Requested-With and a JSON (or empty) body: the service's CSRF
  // checks refuse anything else. `credentials: "include"` sends the cookie across origins too.
  // With a DPoP `key`, each attempt carries a fresh proof (see `proofs.send`).
  function post(path, body, key = null) {
    const url = resolve(path);
    const attempt = (proof) => {
      const headers = { "X-Requested-With": "auth-client" };
      if (body !== undefined) headers["Content-Type"] = "application/json";
      if (proof !== null) headers.DPoP = proof;
      return fetch(url, {
        method: "POST",
        credentials: "include",
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    };
    if (key === null) return attempt(null);
    return proofs.send(key, "POST", new URL(url, page), null, attempt);
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
  // A DPoP-bound pair (token_type "DPoP") keeps the key that signed for it; it travels with the
  // token to the other tabs (a CryptoKey is cloned, its private half still not extractable).
  async function takePair(body, stored, key = null) {
    const life = body.expires_in * 1000;
    const number = stored === null ? null : Math.max(stored, generation) + 1;
    const bound = key !== null && body.token_type === "DPoP" ? key : null;
    adopt(body.access_token, Date.now() + life, life, number, bound);
    const token = accessToken;
    if (channel) {
      channel.postMessage({
        type: "token",
        accessToken,
        expiresAt,
        lifetime,
        generation: number,
        key: bound,
      });
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
    // The session's key is the one the last login stored (in any tab): read under the lock.
    const key = proofs === null ? null : ((await proofs.storedKey()) ?? tokenKey);
    const response = await post("/refresh", undefined, key);
    if (response.ok) return takePair(await response.json(), stored, key);
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

  // A Request's body can be read once: each attempt sends a fresh clone. A bound token goes as
  // `Authorization: DPoP` with a proof for this method and URL (retried once for a nonce).
  function send(input, init, token) {
    // Every token of one session is bound to the same key: the one held now.
    const key = token !== null ? tokenKey : null;
    const attempt = (proof) => {
      const request = new Request(input instanceof Request ? input.clone() : input, init);
      if (token !== null) request.headers.set("Authorization", `${key ? "DPoP" : "Bearer"} ${token}`);
      if (proof !== null) request.headers.set("DPoP", proof);
      return fetch(request);
    };
    if (key === null) return attempt(null);
    const { method, url } = new Request(input instanceof Request ? input.clone() : input, init);
    return proofs.send(key, method, new URL(url), token, attempt);
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

  return {
    /** Log in with the cookie transport; throws `AuthError` (invalid_credentials, too_many_attempts).
     * `remember: false` starts a short session whose cookie ends with the browser. */
    async login(email, password, { remember = true } = {}) {
      if (typeof remember !== "boolean") throw new TypeError("remember must be true or false");
      // Under the lock too: a login's pair is numbered like a refresh's, one at a time.
      await exclusively(async () => {
        await loaded;
        // A new session, a new key: one that signed for an earlier session proves nothing here.
        const key = proofs === null ? null : await proofs.newKey();
        const body = { email, password, use_cookie: true, remember };
        const response = await post("/login", body, key);
        if (!response.ok) throw await failure(response);
        if (key !== null) await proofs.keepKey(key);
        await takePair(await response.json(), await readGeneration(store), key);
      });
    },

    /** `fetch` with the bearer token when the URL is the service's or a resource origin's
     * (any other URL is fetched without it). Refreshes first when the token is (about to be)
     * expired; on 403 token_expired refreshes and retries once; on 403 invalid_token for the
     * token it holds, ends the session in every tab (`onLogout({reason: "revoked"})`) and
     * returns that answer. Throws `AuthError` when there is no session to refresh. */
    async fetch(input, init = {}) {
      const target = input instanceof Request ? input.url : resolve(String(input));
      const url = new URL(target, page);
      if (!trusted.has(url.origin)) return send(input instanceof Request ? input : url, init, null);
      const request = input instanceof Request ? input : url;
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
        // Under the lock, so it cannot remove the key of a login running in another tab.
        if (proofs !== null) await exclusively(() => proofs.dropKey());
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
function openStore(name = STORE_NAME) {
  return new Promise((resolve) => {
    let request = null;
    try {
      request = globalThis.indexedDB.open(name, 1);
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

/** `value` as an origin ("https://api.example", a trailing "/" allowed); throws TypeError for
 * anything else: a path would suggest that only it gets the token, while the whole origin would. */
function originOf(value) {
  let url = null;
  try {
    url = new URL(value);
  } catch {
    // Not a URL at all: refused below.
  }
  const isOrigin = url !== null && /^https?:$/.test(url.protocol) && url.href === `${url.origin}/`;
  if (!isOrigin) throw new TypeError(`resourceOrigins takes origins like https://api.example: ${value}`);
  return url.origin;
}

// ---- DPoP (RFC 9449) ------------------------------------------------------------------------
// With `dpop: true`, login makes a P-256 key pair whose private half WebCrypto will never
// export, and every token request and every call with the token carries a proof signed by it:
// a token copied out of the page (or a refresh cookie lifted from the disk) is useless without
// the key. The pair is kept in IndexedDB (a CryptoKey is stored as is, still unexportable), so a
// reload keeps the session. Script running in the page can still ask the key to sign while it
// runs; what it can no longer do is carry the tokens away and use them elsewhere.

const KEY_STORE_NAME = "token-service-dpop"; // an IndexedDB database with one key pair in it

/** The DPoP side of one client: its key store, its proofs, and the nonce each origin asked for. */
function createProofs() {
  const keyStore = openStore(KEY_STORE_NAME); // its one entry: "current"
  const nonces = new Map(); // origin -> the last DPoP-Nonce it sent
  const jwks = new WeakMap(); // CryptoKeyPair -> its public JWK (ES256, the members RFC 7638 names)

  async function publicJwk(key) {
    if (!jwks.has(key)) {
      const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", key.publicKey);
      jwks.set(key, { kty, crv, x, y });
    }
    return jwks.get(key);
  }

  // ath of the token in use, hashed once per token rather than once per call.
  let hashed = { token: null, hash: null };
  async function tokenHash(accessToken) {
    if (hashed.token !== accessToken) {
      hashed = { token: accessToken, hash: base64url(await sha256(accessToken)) };
    }
    return hashed.hash;
  }

  // A compact JWS over {jti, htm, htu, iat[, ath][, nonce]}. htu drops the query and fragment,
  // as RFC 9449 §4.2 asks; URL has already lowered the scheme and host and dropped a default port.
  async function proof(key, method, url, accessToken) {
    const htu = `${url.origin}${url.pathname}`;
    const claims = { jti: crypto.randomUUID(), htm: method, htu, iat: Math.floor(Date.now() / 1000) };
    if (accessToken !== null) claims.ath = await tokenHash(accessToken);
    const nonce = nonces.get(url.origin);
    if (nonce !== undefined) claims.nonce = nonce;
    const header = { typ: "dpop+jwt", alg: "ES256", jwk: await publicJwk(key) };
    const input = `${base64json(header)}.${base64json(claims)}`;
    const algorithm = { name: "ECDSA", hash: "SHA-256" };
    // WebCrypto's ECDSA signature is r || s, already the JWS form (RFC 7518 §3.4).
    const signature = await crypto.subtle.sign(algorithm, key.privateKey, encoder.encode(input));
    return `${input}.${base64url(signature)}`;
  }

  // Whether `response` refuses the proof for want of a (new) nonce: 400 use_dpop_nonce at a token
  // endpoint, 401 with a DPoP use_dpop_nonce challenge at a resource server (RFC 9449 §8, §9).
  async function asksForNonce(response) {
    if (response.status === 401) {
      return /error="use_dpop_nonce"/.test(response.headers.get("WWW-Authenticate") ?? "");
    }
    if (response.status !== 400) return false;
    try {
      return (await response.clone().json()).error === "use_dpop_nonce";
    } catch {
      return false;
    }
  }

  return {
    /** A new key pair for a new session; not stored until the login succeeds. */
    newKey() {
      const algorithm = { name: "ECDSA", namedCurve: "P-256" };
      return crypto.subtle.generateKey(algorithm, false, ["sign", "verify"]);
    },
    keepKey(key) {
      return inStore(keyStore, "readwrite", (keys) => keys.put(key, "current"));
    },
    dropKey() {
      return inStore(keyStore, "readwrite", (keys) => keys.delete("current"));
    },
    /** The key the last login in this browser kept, or null (none, or no IndexedDB). */
    async storedKey() {
      const stored = await inStore(keyStore, "readonly", (keys) => keys.get("current"));
      return stored?.value?.privateKey instanceof CryptoKey ? stored.value : null;
    },
    /** `attempt(proof)` with a proof for `method` `url` (URL), remembering the origin's
     * DPoP-Nonce; once more with the new nonce when the answer asks for one. */
    async send(key, method, url, accessToken, attempt) {
      let response = null;
      for (let tries = 0; tries < 2; tries += 1) {
        response = await attempt(await proof(key, method, url, accessToken));
        const nonce = response.headers.get("DPoP-Nonce");
        const fresh = nonce !== null && nonce !== nonces.get(url.origin);
        if (nonce !== null) nonces.set(url.origin, nonce);
        if (!fresh || !(await asksForNonce(response))) break;
      }
      return response;
    },
  };
}

const encoder = new TextEncoder();

function base64url(buffer) {
  let binary = "";
  for (const byte of new Uint8Array(buffer)) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function base64json(value) {
  return base64url(encoder.encode(JSON.stringify(value)));
}

function sha256(text) {
  return crypto.subtle.digest("SHA-256", encoder.encode(text));
}
