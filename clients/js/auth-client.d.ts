// Types of auth-client.js (npm package tokenrota-client).

/** Why a session ended, as given to `onLogout` listeners. */
export type LogoutReason =
  /** `logout()` was called in this tab. */
  | "logout"
  /** `logout()` was called in another tab of this browser. */
  | "other-tab"
  /** The service refused the refresh token (missing, spent, expired or revoked). */
  | "expired"
  /** The service or a resource server refused the access token as invalid (403 invalid_token):
   * the session was revoked elsewhere. */
  | "revoked";

export interface LogoutEvent {
  reason: LogoutReason;
}

export interface AuthClientOptions {
  /** The service's URL, e.g. "https://auth.example" (default: this page's origin). Relative
   * paths given to `fetch`, `login` and `logout` go there. */
  baseUrl?: string;
  /** Seconds before the access token's expiry at which `fetch` refreshes first (default 30;
   * capped at half the token's lifetime). */
  refreshMargin?: number;
  /** Origins of the APIs that accept the access token, e.g. ["https://api.example"]. `fetch`
   * attaches the token to these and to the service's origin only; any other URL is fetched
   * without it. Each entry must be a bare http(s) origin (no path), else a TypeError. */
  resourceOrigins?: readonly string[];
  /** `true`: bind the session to a key (DPoP, RFC 9449). Default `false`.
   *
   * `login` makes a P-256 key pair whose private half WebCrypto never exports and keeps it in
   * IndexedDB, so a reload keeps the session; every `login`, refresh and `fetch` to the service
   * or a resource origin then carries a proof signed by that key (`Authorization: DPoP <token>`
   * with a `DPoP` header), and a server that asks for a nonce (`use_dpop_nonce` with a
   * `DPoP-Nonce` header) gets one retry with it; the nonce is remembered per origin.
   *
   * What it defends against: an access token, a proof or the refresh cookie copied out of the
   * browser (by injected script, an extension, a log, a stolen disk) is refused anywhere else,
   * because the thief cannot sign new proofs. What it does not: script injected into the page
   * can still call `fetch` (and so use the key) while it runs there; DPoP takes away its loot,
   * not its hands. Use a strict Content-Security-Policy against that.
   *
   * Needs WebCrypto (an https page, or localhost), else a TypeError here. Every resource origin
   * must accept DPoP-bound tokens (e.g. built with tokenrota.verify) and allow the `DPoP` request
   * header with CORS. Without IndexedDB (some private modes) the key lives as long as the tab, and
   * a reload ends the session. A value that is not a boolean throws a TypeError. */
  dpop?: boolean;
  /** APIs that each accept only a token for their own resource (RFC 8707): origin -> resource
   * URI, e.g. {"https://orders.example": "https://orders.example/api"}. `fetch` sends such an
   * origin only its resource's token, got from `/refresh` with `{resource}` when first needed
   * and before it expires; refreshes are one at a time, the refresh cookie being one per
   * session. An origin that is not bare, a URI that is not absolute http(s) or has a fragment,
   * or an origin also in `resourceOrigins` (or the service's): TypeError. */
  resources?: Readonly<Record<string, string>>;
}

export interface LoginOptions {
  /** `false`: a short session (the service's SESSION_SHORT_MAX_AGE, 12 h by default) whose
   * refresh cookie has no Max-Age, so it ends when the browser closes. Default `true`.
   * Anything but a boolean throws a TypeError. */
  remember?: boolean;
}

export interface AuthClient {
  /** Log in with the cookie transport (the refresh token goes into an HttpOnly cookie). With
   * `dpop: true`, with a new key: the session is bound to it.
   * @throws {AuthError} invalid_credentials, too_many_attempts (with `retryAfter`), ... */
  login(email: string, password: string, options?: LoginOptions): Promise<void>;

  /** `fetch` with `Authorization: Bearer <access token>` (with `dpop: true`,
   * `Authorization: DPoP <access token>` and a `DPoP` proof) for the service's origin and the
   * resource origins (any other URL goes without it). Refreshes first when the token is (about
   * to be) expired; on 403 `token_expired` refreshes and retries once; on 403 `invalid_token`
   * for the token it holds, ends the session in every tab (reason "revoked") and returns that
   * response.
   * @throws {AuthError} when there is no session to refresh. */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;

  /** Ask for a password-reset message; resolves alike whether or not the email has an account.
   * @throws {AuthError} invalid_input, too_many_attempts (with `retryAfter`) */
  requestPasswordReset(email: string): Promise<void>;

  /** Set a new password with the token of a reset link (the `token` query parameter of the
   * page it opens). Every session of the account ends, this client's too (reason "revoked").
   * @throws {AuthError} invalid_token (used, expired or superseded link), weak_password */
  resetPassword(token: string, newPassword: string): Promise<void>;

  /** End the session at the service, clear the cookie, and tell every tab (and, with
   * `dpop: true`, delete the session's key). */
  logout(): Promise<void>;

  /** Call `callback` when the session ends; returns a function that unsubscribes. */
  onLogout(callback: (event: LogoutEvent) => void): () => void;
}

/** An error the service answered with. */
export class AuthError extends Error {
  constructor(code: string, description: string | undefined, status: number, retryAfter?: number | null);
  readonly name: "AuthError";
  /** The body's `error`, e.g. "invalid_credentials"; "http_error" when the body was not JSON. */
  readonly code: string;
  /** The HTTP status. */
  readonly status: number;
  /** Seconds from `Retry-After` (on 429), else null. */
  readonly retryAfter: number | null;
}

/** A client for the token service; see `AuthClientOptions`. */
export function createAuthClient(options?: AuthClientOptions): AuthClient;
