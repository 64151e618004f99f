// Signing in as a person: email and password, then a code from the authenticator app, a
// recovery code or a passkey; or a passkey alone. Every token asked for names the admin API
// (resource = its audience), so the console's tokens are good there and nowhere else.
import * as api from "./api.js";
import { assertion } from "./webauthn.js";
import { field, fill, h, title } from "./dom.js";

const MESSAGES = {
  invalid_credentials: "The email or password is incorrect.",
  invalid_code: "That code is not right (or was already used). Try the next one.",
  invalid_token: "That sign-in took too long. Start again.",
  invalid_passkey: "The passkey was not accepted.",
  too_many_attempts: "Too many attempts. Wait a little, then try again.",
  email_unverified: "This account's email is not verified yet.",
};

function explain(error) {
  if (error instanceof api.ApiError) return MESSAGES[error.code] || error.message;
  if (error && error.name === "NotAllowedError") return "The passkey request was cancelled.";
  return "The service could not be reached.";
}

/** The sign-in screen; `done()` runs once the console holds a token. */
export function render(main, done, notice = null) {
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const fail = (error) => {
    problem.textContent = explain(error);
    problem.hidden = false;
  };

  const email = field("Email", { type: "email", name: "email", autocomplete: "username webauthn", required: true });
  const password = field("Password", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const form = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "signin-heading",
      onsubmit: async (event) => {
        event.preventDefault();
        problem.hidden = true;
        const button = form.querySelector("button[type=submit]");
        button.disabled = true;
        try {
          const address = email.querySelector("input").value;
          const step = await api.login(address, password.querySelector("input").value);
          if (step.done) done();
          else showSecondStep(main, step, address, done);
        } catch (error) {
          fail(error);
        } finally {
          button.disabled = false;
        }
      },
    },
    h("h2", { id: "signin-heading" }, "Email and password"),
    email,
    password,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Continue")),
  );
  const passkey = h(
    "button",
    {
      type: "button",
      class: "secondary",
      onclick: async () => {
        problem.hidden = true;
        try {
          const options = await api.passkeyOptions(null);
          await api.passkeyLogin(await assertion(options));
          done();
        } catch (error) {
          fail(error);
        }
      },
    },
    "Sign in with a passkey",
  );
  fill(main, 
    title("Sign in to the console"),
    notice ? h("p", { class: "notice" }, notice) : null,
    h(
      "p",
      { class: "hint" },
      "Operators sign in as themselves: an account holding a role with the admin scope, with a second factor. ",
      "The console keeps its tokens in this tab's memory only; reloading the page or closing the tab signs you out.",
    ),
    problem,
    form,
    h("section", { class: "card", "aria-labelledby": "passkey-heading" },
      h("h2", { id: "passkey-heading" }, "Or a passkey alone"),
      h("p", { class: "hint" }, "A passkey is both factors at once."),
      h("div", { class: "buttons" }, passkey)),
  );
  main.querySelector("h1").focus();
}

function showSecondStep(main, step, address, done) {
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const fail = (error) => {
    problem.textContent = explain(error);
    problem.hidden = false;
  };
  const code = field(
    "Code from your authenticator app, or a recovery code",
    { name: "code", autocomplete: "one-time-code", required: true, spellcheck: "false" },
    "Six digits, or a recovery code (letters and digits, with or without dashes).",
  );
  const form = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "mfa-heading",
      onsubmit: async (event) => {
        event.preventDefault();
        problem.hidden = true;
        const typed = code.querySelector("input").value.trim();
        const fields = /^\d{6}$/.test(typed) ? { code: typed } : { recovery_code: typed };
        try {
          await api.secondFactor(step.mfaToken, fields);
          done();
        } catch (error) {
          if (error.code === "invalid_token") return render(main, done, explain(error));
          fail(error);
        }
      },
    },
    h("h2", { id: "mfa-heading" }, "Authenticator code"),
    code,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Sign in")),
  );
  const passkey = h(
    "button",
    {
      type: "button",
      class: "secondary",
      onclick: async () => {
        problem.hidden = true;
        try {
          const options = await api.passkeyOptions(address);
          await api.secondFactor(step.mfaToken, { credential: await assertion(options) });
          done();
        } catch (error) {
          fail(error);
        }
      },
    },
    "Use a passkey instead",
  );
  fill(main, 
    title("Second factor"),
    h("p", {}, "The password was right. Now the second factor of ", h("strong", {}, address), "."),
    problem,
    form,
    step.factors.some((factor) => factor.type === "passkey") ? h("div", { class: "buttons" }, passkey) : null,
  );
  code.querySelector("input").focus();
}
