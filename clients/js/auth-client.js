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
// Second factors and passkeys: `login` throws an AuthError with code "mfa_required" (and its
// `mfaToken`, `factors`) for an account with a factor; `completeMfa(mfaToken, { code })` (or
// `{ recoveryCode }`, or `{ passkey: true }`) finishes it. `loginWithPasskey()` signs in with a
// discoverable passkey alone. `onStepUp(callback)`: when an API answers RFC 9470's 401
// insufficient_user_authentication, the callback returns `{ code }` or `{ passkey: true }` (or
// null to give up), the client steps up at /mfa/challenge, then retries the request once.
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
  constructor(code, description, status, retryAfter = null, body = {}) {
    super(description || code);
    this.name = "AuthError";
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
    // mfa_required: the single-use token that /login/mfa takes, and the factors to offer.
    this.mfaToken = typeof body.mfa_token === "string" ? body.mfa_token : null;
    this.factors = Array.isArray(body.factors) ? body.factors : null;
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
  dpop = false,
  resources = {},
} = {}) {
  if (typeof dpop !== "boolean") throw new TypeError("dpop must be true or false");
  // Checked here rather than at login: without WebCrypto (an http page not on localhost) DPoP
  // cannot work at all, and a silent fall back to bearer tokens would hide it.
  if (dpop && !globalThis.crypto?.subtle) throw new TypeError("dpop needs WebCrypto (https)");
  const base = String(baseUrl).replace(/\/+$/, "");
  const page = globalThis.location?.href;
  const trusted = new Set([new URL(base || "/", page).origin, ...resourceOrigins.map((origin) => originOf(origin))]);
  const audiences = resourceMap(resources, trusted); // origin -> resource URI
  const listeners = new Set();
  let stepUp = null; // the app's answer to an insufficient_user_authentication challenge
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
        adopt(data.accessToken, data.expiresAt, data.lifetime, data.generation, data.key ?? null);
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
    return new AuthError(body.error || "http_error", body.error_description, response.status, retryAfter, body);
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
    // A DPoP session's refreshes all need its key's proof, a resource's as much as the main one.
    const key = proofs === null ? null : ((await proofs.storedKey()) ?? tokenKey);
    const response = await post("/refresh", { resource }, key);
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

  // Take a token pair answered at `path` for `body` (cookie transport), under the lock.
  // With DPoP, each sign-in makes a new key (one that signed for an earlier session proves
  // nothing here), kept only once the service has bound the new session to it.
  function signIn(path, body) {
    return exclusively(async () => {
      await loaded;
      const key = proofs === null ? null : await proofs.newKey();
      const response = await post(path, { ...body, use_cookie: true }, key);
      if (!response.ok) throw await failure(response);
      if (key !== null) await proofs.keepKey(key);
      await takePair(await response.json(), await readGeneration(store), key);
    });
  }

  // A JSON call with the bearer token; the parsed answer (null for 204), or throws AuthError.
  async function call(method, path, body) {
    const init = { method, headers: {} };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await client.fetch(path, init);
    if (!response.ok) throw await failure(response);
    return response.status === 204 ? null : response.json();
  }

  // The browser's answer to the service's request options: a passkey assertion, as JSON.
  async function assertion(options = {}) {
    const response = await post("/passkeys/login/options", options);
    if (!response.ok) throw await failure(response);
    return getCredential(await response.json());
  }

  // The second factor the app gave (`{code}`, `{recoveryCode}` or `{passkey: true}`) as the
  // body fields /login/mfa and /mfa/challenge take.
  async function factorFields(factor) {
    if (factor && typeof factor.code === "string") return { code: factor.code };
    if (factor && typeof factor.recoveryCode === "string") return { recovery_code: factor.recoveryCode };
    if (factor && factor.passkey === true) return { credential: await assertion() };
    throw new TypeError("a second factor is { code }, { recoveryCode } or { passkey: true }");
  }

  // Step up this session to aal2 with the factor the app's callback gives; false if none.
  async function stepUpWith(challenge) {
    const factor = stepUp === null ? null : await stepUp(challenge);
    if (factor === null || factor === undefined) return false;
    const fields = await factorFields(factor);
    await exclusively(async () => {
      await loaded;
      // `send` signs a DPoP proof for a bound session's token, as for any other call.
      const init = {
        method: "POST",
        credentials: "include",
        headers: { "Content-Type": "application/json", "X-Requested-With": "auth-client" },
        body: JSON.stringify({ ...fields, use_cookie: true }),
      };
      const response = await send(resolve("/mfa/challenge"), init, accessToken);
      if (!response.ok) throw await failure(response);
      await takePair(await response.json(), await readGeneration(store), tokenKey);
    });
    return true;
  }

  const client = {
    /** Log in with the cookie transport; throws `AuthError` (invalid_credentials, too_many_attempts,
     * or mfa_required with `mfaToken` and `factors`: finish with `completeMfa`).
     * `remember: false` starts a short session whose cookie ends with the browser. */
    async login(email, password, { remember = true } = {}) {
      if (typeof remember !== "boolean") throw new TypeError("remember must be true or false");
      // Under the lock too: a login's pair is numbered like a refresh's, one at a time.
      await signIn("/login", { email, password, remember });
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
      const challenge = await insufficientAuthentication(response);
      if (challenge !== null && (await stepUpWith(challenge))) {
        response = await send(request, init, accessToken);
      }
      return response;
    },

    /** Finish a login that answered mfa_required: `factor` is `{ code }` (TOTP),
     * `{ recoveryCode }` or `{ passkey: true }` (the browser asks for a passkey).
     * @throws {AuthError} invalid_code, invalid_passkey, too_many_attempts, invalid_token */
    async completeMfa(mfaToken, factor) {
      await signIn("/login/mfa", { mfa_token: mfaToken, ...(await factorFields(factor)) });
    },

    /** Sign in with a discoverable passkey alone (no email, no password): the browser lists
     * this site's passkeys and verifies the user. @throws {AuthError} invalid_passkey */
    async loginWithPasskey() {
      await signIn("/passkeys/login", { credential: await assertion() });
    },

    /** Register a passkey of this device (the session must be recent, and at aal2 once the
     * account has a factor): `{ factor, recovery_codes? }` (the codes with the first factor,
     * shown once). @throws {AuthError} invalid_passkey, insufficient_user_authentication */
    async registerPasskey(name = "Passkey") {
      const options = await call("POST", "/passkeys/register/options");
      const credential = await createCredential(options);
      return call("POST", "/passkeys/register", { credential, name });
    },

    /** Start a TOTP enrolment: `{ factor_id, secret, otpauth_uri, qr_svg }`; the factor is
     * live once `verifyTotp(factor_id, code)` passes. */
    async enrollTotp(name) {
      return call("POST", "/mfa/totp", name === undefined ? {} : { name });
    },

    /** Confirm a TOTP enrolment with a first code: `{ factor, recovery_codes? }` (codes come
     * with the first factor, shown once). @throws {AuthError} invalid_code */
    async verifyTotp(factorId, code) {
      return call("POST", `/mfa/totp/${encodeURIComponent(factorId)}/verify`, { code });
    },

    /** The account's factors: `[{ id, type: "totp" | "passkey", name, created_at, last_used_at }]`. */
    async listFactors() {
      return (await call("GET", "/mfa/factors")).factors;
    },

    /** Remove a factor (needs a recent, aal2 session). */
    async removeFactor(factorId) {
      await call("DELETE", `/mfa/factors/${encodeURIComponent(factorId)}`);
    },

    /** `callback({ acrValues, maxAge })` answers a step-up challenge with `{ code }`,
     * `{ recoveryCode }` or `{ passkey: true }`, or null to let the 401 through. One callback;
     * returns a function that removes it. */
    onStepUp(callback) {
      stepUp = callback;
      return () => {
        if (stepUp === callback) stepUp = null;
      };
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
  return client;
}

// RFC 9470: a 401 whose challenge says insufficient_user_authentication; its acr_values and
// max_age, else null. (A resource server on another origin must expose WWW-Authenticate.)
async function insufficientAuthentication(response) {
  if (response.status !== 401) return null;
  const header = response.headers.get("WWW-Authenticate") || "";
  let named = /error="insufficient_user_authentication"/.test(header);
  if (!named) {
    try {
      named = (await response.clone().json()).error === "insufficient_user_authentication";
    } catch {
      named = false;
    }
  }
  if (!named) return null;
  const acr = /acr_values="([^"]*)"/.exec(header);
  const age = /max_age=(\d+)/.exec(header);
  return { acrValues: acr ? acr[1] : null, maxAge: age ? Number(age[1]) : null };
}

// WebAuthn's binary fields travel as base64url in JSON (the service's options, the answers).
function fromBase64url(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(base64 + "===".slice((base64.length + 3) % 4)), (c) => c.charCodeAt(0));
}

function toBase64url(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function descriptors(list) {
  return (list || []).map((item) => ({ ...item, id: fromBase64url(item.id) }));
}

async function createCredential(options) {
  const publicKey = {
    ...options,
    challenge: fromBase64url(options.challenge),
    user: { ...options.user, id: fromBase64url(options.user.id) },
    excludeCredentials: descriptors(options.excludeCredentials),
  };
  const credential = await navigator.credentials.create({ publicKey });
  const response = credential.response;
  return {
    id: credential.id,
    rawId: toBase64url(credential.rawId),
    type: credential.type,
    response: {
      clientDataJSON: toBase64url(response.clientDataJSON),
      attestationObject: toBase64url(response.attestationObject),
      transports: typeof response.getTransports === "function" ? response.getTransports() : [],
    },
    clientExtensionResults: credential.getClientExtensionResults(),
  };
}

async function getCredential(options) {
  const publicKey = {
    ...options,
    challenge: fromBase64url(options.challenge),
    allowCredentials: descriptors(options.allowCredentials),
  };
  const credential = await navigator.credentials.get({ publicKey });
  const response = credential.response;
  return {
    id: credential.id,
    rawId: toBase64url(credential.rawId),
    type: credential.type,
    response: {
      clientDataJSON: toBase64url(response.clientDataJSON),
      authenticatorData: toBase64url(response.authenticatorData),
      signature: toBase64url(response.signature),
      userHandle: response.userHandle ? toBase64url(response.userHandle) : null,
    },
    clientExtensionResults: credential.getClientExtensionResults(),
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
