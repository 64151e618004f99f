// The console's entry: sign-in first, then the screens, one per location hash (#/users,
// #/users/<id>, #/invite, #/roles, #/clients, #/clients/<id>, #/resources, #/audit).
// Plain ES modules, no framework and no build step: what is served is what is in the package.
import * as api from "./api.js";
import { announce, fill, h } from "./dom.js";
import * as signin from "./signin.js";
import * as users from "./users.js";
import * as user from "./user.js";
import * as invite from "./invite.js";
import * as roles from "./roles.js";
import * as clients from "./clients.js";
import * as resources from "./resources.js";
import * as audit from "./audit.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const account = document.getElementById("account");

const SCREENS = [
  [/^#\/users\/([0-9a-f-]{36})$/, user],
  [/^#\/users$/, users],
  [/^#\/invite$/, invite],
  [/^#\/roles$/, roles],
  [/^#\/clients\/([0-9a-f]{32})$/, clients.detail],
  [/^#\/clients$/, clients],
  [/^#\/resources$/, resources],
  [/^#\/audit$/, audit],
];

function chrome(signedIn) {
  nav.hidden = !signedIn;
  account.hidden = !signedIn;
  const claims = api.operator();
  document.getElementById("who").textContent = claims ? `Signed in as ${claims.email || claims.sub}` : "";
}

function markCurrent(hash) {
  for (const link of nav.querySelectorAll("a")) {
    const here = hash === link.getAttribute("href") || hash.startsWith(`${link.getAttribute("href")}/`);
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

async function route() {
  if (!api.signedIn()) {
    chrome(false);
    signin.render(main, () => {
      chrome(true);
      if (!location.hash.startsWith("#/")) location.hash = "#/users";
      else route();
    });
    return;
  }
  const hash = location.hash.startsWith("#/") ? location.hash : "#/users";
  markCurrent(hash);
  for (const [pattern, screen] of SCREENS) {
    const match = pattern.exec(hash);
    if (!match) continue;
    fill(main, h("p", { class: "loading" }, "Loading…"));
    try {
      await screen.render(main, ...match.slice(1));
    } catch (error) {
      await showFailure(error);
      if (!api.signedIn()) return;
    }
    const heading = main.querySelector("h1");
    if (heading) heading.focus();
    return;
  }
  location.hash = "#/users";
}

// Refusals that a new sign-in may cure: the console forgets the session and asks for one.
const SIGN_IN_AGAIN = {
  insufficient_user_authentication:
    "The admin API wants a recent sign-in with a second factor: sign in again.",
  invalid_token:
    "The admin API refused this session (ended, or the account was disabled or lost its admin role): sign in again.",
};

/** What a refused call means, in words. */
async function showFailure(error) {
  if (!api.signedIn()) return;
  if (SIGN_IN_AGAIN[error.code]) {
    await api.signOut();
    chrome(false);
    signin.render(main, () => {
      chrome(true);
      route();
    }, SIGN_IN_AGAIN[error.code]);
    return;
  }
  const words = {
    insufficient_scope: "This account holds no role with the admin scope.",
  };
  fill(main, 
    h("h1", { tabindex: "-1" }, "The admin API refused"),
    h("p", { class: "error", role: "alert" }, words[error.code] || error.message),
  );
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await api.signOut();
  announce("Signed out.");
  route();
});

api.onSessionEnd((reason) => {
  chrome(false);
  signin.render(main, () => {
    chrome(true);
    route();
  }, reason);
});

window.addEventListener("hashchange", route);
// A message belongs to the screen it was said on: choosing another section clears it.
nav.addEventListener("click", () => document.getElementById("status").replaceChildren());

(async () => {
  try {
    await api.loadConfig();
  } catch {
    fill(main, h("h1", {}, "The console cannot start"),
      h("p", { class: "error", role: "alert" }, "The service's console configuration could not be read."));
    return;
  }
  route();
})();
