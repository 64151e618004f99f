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

/** A second factor: a TOTP code, a recovery code, or a passkey (the browser asks for one). */
export type SecondFactor = { code: string } | { recoveryCode: string } | { passkey: true };

/** RFC 9470's challenge, as given to the `onStepUp` callback. */
export interface StepUpChallenge {
  /** `acr_values` of the challenge, e.g. "aal2"; null when absent. */
  acrValues: string | null;
  /** `max_age` in seconds; null when absent. */
  maxAge: number | null;
}

/** A factor of the account, as `listFactors` answers. */
export interface Factor {
  id: string;
  type: "totp" | "passkey";
  name: string;
  created_at: string;
  last_used_at: string | null;
}

export interface TotpEnrollment {
  factor_id: string;
  /** The base32 secret, for typing in by hand; shown this once. */
  secret: string;
  otpauth_uri: string;
  /** The otpauth URI as an SVG QR code. */
  qr_svg: string;
}

export interface AuthClient {
  /** Log in with the cookie transport (the refresh token goes into an HttpOnly cookie). With
   * `dpop: true`, with a new key: the session is bound to it (so are `completeMfa` and
   * `loginWithPasskey`).
   * @throws {AuthError} invalid_credentials, too_many_attempts (with `retryAfter`), or
   * mfa_required (with `mfaToken` and `factors`: finish with `completeMfa`), ... */
  login(email: string, password: string, options?: LoginOptions): Promise<void>;

  /** Finish a login that answered mfa_required with a second factor.
   * @throws {AuthError} invalid_code, invalid_passkey, too_many_attempts, invalid_token */
  completeMfa(mfaToken: string, factor: SecondFactor): Promise<void>;

  /** Sign in with a discoverable passkey alone: no email, no password; the authenticator
   * verifies the user. @throws {AuthError} invalid_passkey */
  loginWithPasskey(): Promise<void>;

  /** Register a passkey (a recent session, at aal2 once a factor exists): the new factor, and
   * the recovery codes when it is the account's first factor (shown once).
   * @throws {AuthError} invalid_passkey, insufficient_user_authentication */
  registerPasskey(name?: string): Promise<{ factor: Factor; recovery_codes?: string[] }>;

  /** Start a TOTP enrolment; the factor is live once `verifyTotp` passes. */
  enrollTotp(name?: string): Promise<TotpEnrollment>;

  /** Confirm a TOTP enrolment with its first code; recovery codes come with the first factor.
   * @throws {AuthError} invalid_code */
  verifyTotp(factorId: string, code: string): Promise<{ factor: Factor; recovery_codes?: string[] }>;

  /** The account's live factors. */
  listFactors(): Promise<Factor[]>;

  /** Remove a factor (a recent, aal2 session). */
  removeFactor(factorId: string): Promise<void>;

  /** Answer RFC 9470 step-up challenges met by `fetch` (401 insufficient_user_authentication):
   * the callback returns a factor, or null to let the 401 through; the client steps up at
   * /mfa/challenge and retries the request once. One callback; returns a remover. */
  onStepUp(callback: (challenge: StepUpChallenge) => SecondFactor | null | Promise<SecondFactor | null>): () => void;

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
  constructor(
    code: string,
    description: string | undefined,
    status: number,
    retryAfter?: number | null,
    body?: Record<string, unknown>,
  );
  readonly name: "AuthError";
  /** The body's `error`, e.g. "invalid_credentials"; "http_error" when the body was not JSON. */
  readonly code: string;
  /** The HTTP status. */
  readonly status: number;
  /** Seconds from `Retry-After` (on 429), else null. */
  readonly retryAfter: number | null;
  /** With mfa_required: the single-use token `completeMfa` takes; else null. */
  readonly mfaToken: string | null;
  /** With mfa_required: the factors to offer, `[{ id, type }]`; else null. */
  readonly factors: { id: string; type: "totp" | "passkey" }[] | null;
}

/** A client for the token service; see `AuthClientOptions`. */
export function createAuthClient(options?: AuthClientOptions): AuthClient;
