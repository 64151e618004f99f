// The demo page's script: the frontend flow of the token service, through auth-client.js.
import { createAuthClient } from "/auth-client.js";

// The DPoP switch is a preference of this browser (never a secret): the client is made with it
// at load, and a reload needs it again to sign the refresh of a bound session.
const DPOP_PREFERENCE = "demo-dpop";
let usesDpop = window.localStorage.getItem(DPOP_PREFERENCE) === "on";
let dpopUnavailable = null;
const auth = makeClient();
window.auth = auth; // to explore from the browser console

function makeClient() {
  try {
    return createAuthClient({ baseUrl: window.location.origin, dpop: usesDpop });
  } catch (error) {
    // No WebCrypto (a page neither https nor localhost): bearer tokens, and say so below.
    usesDpop = false;
    dpopUnavailable = error.message;
    return createAuthClient({ baseUrl: window.location.origin });
  }
}

const $ = (id) => document.getElementById(id);

function log(message) {
  const line = `${new Date().toLocaleTimeString()}  ${message}\n`;
  $("log").textContent = (line + $("log").textContent).slice(0, 4000);
}

function show(signedIn) {
  $("signed-in").hidden = !signedIn;
  $("signed-out").hidden = signedIn;
  $("second-factor").hidden = true;
}

// A login that answered mfa_required waits here for its second factor.
let mfaToken = null;

async function signedIn(what) {
  log(what);
  mfaToken = null;
  await loadProfile();
  await loadSessions();
  await loadFactors();
}

async function loadFactors() {
  let factors = [];
  try {
    factors = await auth.listFactors();
  } catch (error) {
    log(`GET /mfa/factors failed: ${error.code || error.message}`);
  }
  const body = $("factors");
  body.replaceChildren();
  for (const factor of factors) {
    const row = document.createElement("tr");
    cell(row, factor.type === "totp" ? "authenticator app" : "passkey");
    cell(row, factor.name);
    cell(row, new Date(factor.created_at).toLocaleString());
    const remove = document.createElement("button");
    remove.textContent = "Remove";
    remove.className = "danger remove-factor";
    remove.onclick = async () => {
      try {
        await auth.removeFactor(factor.id);
        log(`DELETE /mfa/factors/${factor.id.slice(0, 8)}… -> 204`);
      } catch (error) {
        log(`remove failed: ${error.code || error.message}`);
      }
      await loadFactors();
    };
    cell(row, "").append(remove);
    body.append(row);
  }
}

function showRecoveryCodes(codes) {
  if (!codes) return;
  $("recovery-codes").textContent = `Recovery codes (shown once):\n${codes.join("\n")}`;
  $("recovery-codes").hidden = false;
}

async function loadProfile() {
  const response = await auth.fetch("/profile");
  if (!response.ok) throw new Error(`/profile answered ${response.status}`);
  const { user } = await response.json();
  $("who").textContent = `${user.email}${user.email_verified ? " (verified)" : ""}`;
  $("binding").textContent = usesDpop
    ? "Tokens bound to this browser's key (DPoP): each call carries a proof it signs."
    : "Bearer tokens: whoever holds a copy can use it until it expires.";
  show(true);
  log(`GET /profile -> 200 (${user.email})`);
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text ?? "";
  row.append(td);
  return td;
}

async function loadSessions() {
  const response = await auth.fetch("/sessions");
  const { sessions } = await response.json();
  const body = $("sessions");
  body.replaceChildren();
  for (const session of sessions) {
    const row = document.createElement("tr");
    row.className = session.current ? "current" : "";
    const name = cell(row, session.name ?? "");
    const rename = document.createElement("button");
    rename.textContent = "Name";
    rename.className = "secondary rename";
    rename.onclick = async () => {
      const label = window.prompt("A name for this device", session.name ?? "");
      if (label === null) return;
      const answer = await auth.fetch(`/sessions/${session.id}`, {
        method: "PATCH",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name: label.trim() || null }),
      });
      log(`PATCH /sessions/${session.id.slice(0, 8)}… -> ${answer.status}`);
      await loadSessions();
    };
    name.append(" ", rename);
    cell(row, new Date(session.created_at).toLocaleString());
    cell(row, new Date(session.last_used_at).toLocaleString());
    cell(row, session.ip);
    cell(row, (session.user_agent || "").slice(0, 40));
    const action = cell(row, session.current ? "this tab" : "");
    if (!session.current) {
      const button = document.createElement("button");
      button.textContent = "Revoke";
      button.className = "danger revoke";
      button.onclick = async () => {
        const answer = await auth.fetch(`/sessions/${session.id}`, { method: "DELETE" });
        log(`DELETE /sessions/${session.id.slice(0, 8)}… -> ${answer.status}`);
        await loadSessions();
      };
      action.append(button);
    }
    body.append(row);
  }
  log(`GET /sessions -> ${sessions.length} live`);
}

auth.onLogout(({ reason }) => {
  show(false);
  $("sessions").replaceChildren();
  log(`signed out (${reason})`);
});

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const remember = $("remember").checked;
    await auth.login($("email").value, $("password").value, { remember });
    await signedIn(`POST /login -> 200 (refresh token set as HttpOnly cookie${remember ? "" : ", no Max-Age"})`);
  } catch (error) {
    if (error.code === "mfa_required") {
      mfaToken = error.mfaToken;
      $("signed-out").hidden = true;
      $("second-factor").hidden = false;
      log(`POST /login -> 403 mfa_required (${error.factors.map((f) => f.type).join(", ")})`);
      return;
    }
    log(`login failed: ${error.code || error.message}`);
  }
});

async function completeMfa(factor, what) {
  try {
    await auth.completeMfa(mfaToken, factor);
    await signedIn(`POST /login/mfa -> 200 (${what})`);
  } catch (error) {
    log(`second factor failed: ${error.code || error.message}`);
  }
}

$("mfa-code-form").addEventListener("submit", (event) => {
  event.preventDefault();
  completeMfa({ code: $("mfa-code").value.trim() }, "a code");
});
$("mfa-submit-recovery").addEventListener("click", () =>
  completeMfa({ recoveryCode: $("mfa-code").value.trim() }, "a recovery code"),
);
$("mfa-passkey").addEventListener("click", () => completeMfa({ passkey: true }, "a passkey"));

$("passkey-login").addEventListener("click", async () => {
  try {
    await auth.loginWithPasskey();
    await signedIn("POST /passkeys/login -> 200 (a passkey alone)");
  } catch (error) {
    log(`passkey sign-in failed: ${error.code || error.message}`);
  }
});

let enrolling = null;
$("enroll-totp").addEventListener("click", async () => {
  try {
    const enrolment = await auth.enrollTotp();
    enrolling = enrolment.factor_id;
    $("totp-secret").textContent = enrolment.secret;
    // The service's SVG, parsed as SVG (no script runs: the page's CSP allows none inline).
    const svg = new DOMParser().parseFromString(enrolment.qr_svg, "image/svg+xml");
    $("totp-qr").replaceChildren(document.importNode(svg.documentElement, true));
    $("totp-enrolment").hidden = false;
    log("POST /mfa/totp -> 201 (scan the code, then confirm it)");
  } catch (error) {
    log(`enrolment failed: ${error.code || error.message}`);
  }
});

$("totp-verify-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    const answer = await auth.verifyTotp(enrolling, $("totp-code").value.trim());
    $("totp-enrolment").hidden = true;
    showRecoveryCodes(answer.recovery_codes);
    log("POST /mfa/totp/{id}/verify -> 200 (the factor is live)");
    await loadFactors();
  } catch (error) {
    log(`confirmation failed: ${error.code || error.message}`);
  }
});

$("register-passkey").addEventListener("click", async () => {
  try {
    const name = window.prompt("A name for this passkey", "Passkey") || "Passkey";
    const { factor, recovery_codes: codes } = await auth.registerPasskey(name);
    showRecoveryCodes(codes);
    log(`POST /passkeys/register -> 201 (${factor.name})`);
    await loadFactors();
  } catch (error) {
    log(`passkey registration failed: ${error.code || error.message}`);
  }
});

auth.onStepUp(async ({ acrValues }) => {
  const code = window.prompt(`This needs a stronger sign-in (${acrValues}): a code, or empty for a passkey`);
  if (code === null) return null;
  return code.trim() ? { code: code.trim() } : { passkey: true };
});

$("register").addEventListener("click", async () => {
  const response = await fetch("/register", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: $("email").value, password: $("password").value }),
  });
  const body = await response.json();
  log(`POST /register -> ${response.status}${body.error ? ` ${body.error}` : ""}`);
});

// Switching makes a new client: the page reloads with the other choice (signed out only).
$("dpop").checked = usesDpop;
if (dpopUnavailable !== null) log(`DPoP is unavailable here: ${dpopUnavailable}`);
$("dpop").addEventListener("change", () => {
  if ($("dpop").checked) window.localStorage.setItem(DPOP_PREFERENCE, "on");
  else window.localStorage.removeItem(DPOP_PREFERENCE);
  window.location.reload();
});

$("profile").addEventListener("click", () => loadProfile().catch((e) => log(e.message)));
$("refresh-sessions").addEventListener("click", () => loadSessions().catch((e) => log(e.message)));
$("logout").addEventListener("click", async () => {
  await auth.logout();
  log("POST /logout -> cookie cleared");
});

$("forgot").addEventListener("click", async () => {
  try {
    await auth.requestPasswordReset($("email").value);
    log("POST /password/forgot -> 202 (a message if the email has an account)");
    await showLatestMail(5);
  } catch (error) {
    log(`forgot failed: ${error.code || error.message}`);
  }
});

$("verify").addEventListener("click", async () => {
  const response = await auth.fetch("/email/verification", { method: "POST" });
  const body = await response.json();
  log(`POST /email/verification -> ${response.status}${body.error ? ` ${body.error}` : ""}`);
  if (response.ok) await showLatestMail(5);
});

// The links of the messages come back here: ?flow=reset&token=... or ?flow=verify&token=...
const query = new URLSearchParams(window.location.search);
const linkToken = query.get("token");
function forgetLink() {
  window.history.replaceState(null, "", "/demo");
}

$("reset").hidden = !(linkToken && query.get("flow") === "reset");
$("reset-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await auth.resetPassword(linkToken, $("new-password").value);
    log("POST /password/reset -> 204: every session ended; log in with the new password");
    $("reset").hidden = true;
    forgetLink();
  } catch (error) {
    log(`reset failed: ${error.code || error.message}`);
  }
});

if (linkToken && query.get("flow") === "verify") {
  fetch("/email/verify", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ token: linkToken }),
  }).then((response) => {
    log(`POST /email/verify -> ${response.status}`);
    forgetLink();
  });
}

async function showLatestMail(wait = 0) {
  const response = await fetch(`/dev/mailbox/latest?wait=${wait}`);
  const body = await response.json();
  if (!response.ok) {
    $("mail").hidden = true;
    log(`GET /dev/mailbox/latest -> ${response.status} (${body.error_description})`);
    return;
  }
  $("mail-subject").textContent = body.subject;
  $("mail-to").textContent = body.to;
  $("mail-text").textContent = body.text;
  // Only a link of our own origin is followed: the demo page handles it.
  const link = body.link ? new URL(body.link, window.location.href) : null;
  const ours = link !== null && link.origin === window.location.origin;
  $("mail-link").href = ours ? link.pathname + link.search : "/demo";
  $("mail-link").hidden = !ours;
  $("mail").hidden = false;
}
$("mailbox-latest").addEventListener("click", () => showLatestMail().catch((e) => log(e.message)));

// A reload loses the in-memory access token; the cookie brings the session back.
loadProfile()
  .then(loadSessions)
  .then(loadFactors)
  .catch(() => show(false));
