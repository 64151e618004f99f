// One user: what the service knows of them, their sessions and factors, their roles and
// app_metadata, their history in the audit log, and the actions an operator may take.
import * as api from "./api.js";
import { announce, checkbox, confirmDialog, field, fill, h, table, title, when } from "./dom.js";

const REVOCATION =
  "Revoking ends these sessions at once: their refresh tokens stop working now, and resource " +
  "servers that follow the revocation feed refuse their access tokens within seconds (others " +
  "accept them until they expire, at most the access-token lifetime).";

export async function render(main, userId) {
  const path = `/admin/users/${userId}`;
  const [user, factors, roles, history] = await Promise.all([
    api.call("GET", path),
    api.call("GET", `${path}/factors`),
    api.call("GET", "/admin/roles"),
    api.call("GET", `/admin/audit${api.query({ user_id: userId, limit: 20 })}`),
  ]);
  const again = () => render(main, userId).then(() => main.querySelector("h1").focus());

  // Runs an action, says how it went, and shows the user again.
  const act = (label, work) => async () => {
    try {
      await work();
      announce(label);
      await again();
    } catch (error) {
      announce(`${error.message}`, "error");
    }
  };

  const facts = h(
    "dl",
    { class: "facts" },
    h("dt", {}, "Id"), h("dd", {}, h("code", {}, user.id)),
    h("dt", {}, "State"), h("dd", {}, user.disabled ? "disabled" : "active"),
    h("dt", {}, "Email verified"), h("dd", {}, user.email_verified ? "yes" : "no"),
    h("dt", {}, "Created"), h("dd", {}, when(user.created_at)),
    h("dt", {}, "Last sign-in"), h("dd", {}, when(user.last_sign_in_at)),
    h("dt", {}, "Roles"), h("dd", {}, user.roles.join(", ") || "none"),
  );

  const actions = h(
    "div",
    { class: "buttons" },
    user.disabled
      ? h("button", { type: "button", onclick: act("User enabled.", () => api.call("POST", `${path}/enable`)) }, "Enable")
      : h("button", {
          type: "button",
          class: "danger",
          onclick: async () => {
            const sure = await confirmDialog(`Disable ${user.email}?`,
              `${user.email} will not be able to sign in, and every session ends now. ${REVOCATION}`, "Disable");
            if (sure) await act("User disabled; every session ended.", () => api.call("POST", `${path}/disable`))();
          },
        }, "Disable"),
    h("button", { type: "button", class: "secondary", disabled: user.disabled,
      onclick: act("A password reset link is on its way.", () => api.call("POST", `${path}/password-reset`)) },
      "Send password reset"),
    h("button", { type: "button", class: "secondary", disabled: user.disabled || user.email_verified,
      onclick: act("A verification link is on its way.", () => api.call("POST", `${path}/verification`)) },
      "Send verification"),
    h("button", {
      type: "button",
      class: "danger",
      onclick: async () => {
        const sure = await confirmDialog(`Erase ${user.email}?`,
          `This deletes ${user.email} and everything that references them (sessions, factors, roles, links). It cannot be undone; the audit log keeps the id, never the email.`,
          `Erase ${user.email}`);
        if (!sure) return;
        try {
          await api.call("DELETE", path);
          announce(`${user.email} was erased.`);
          location.hash = "#/users";
        } catch (error) {
          announce(error.message, "error");
        }
      },
    }, "Erase…"),
  );

  const sessionRows = user.sessions.map((session) => [
    session.name || "unnamed",
    session.ip || "unknown",
    session.user_agent || "unknown",
    when(session.last_used_at),
    when(session.created_at),
    h("button", {
      type: "button",
      class: "danger small",
      "aria-label": `Revoke the session ${session.name || "unnamed"} from ${session.ip || "an unknown address"}`,
      onclick: async () => {
        const sure = await confirmDialog(`Revoke this session of ${user.email}?`, REVOCATION, "Revoke session");
        if (sure) await act("The session was revoked.", () => api.call("DELETE", `${path}/sessions/${session.id}`))();
      },
    }, "Revoke"),
  ]);
  const sessions = h(
    "section",
    { "aria-labelledby": "sessions-heading" },
    h("h2", { id: "sessions-heading" }, `Live sessions (${user.sessions.length})`),
    h("p", { class: "hint" }, REVOCATION),
    table("Live sessions", ["Device name", "Address", "User agent", "Last used", "Started", "Action"], sessionRows,
      "No live session."),
    h("div", { class: "buttons" }, h("button", {
      type: "button",
      class: "danger",
      disabled: user.sessions.length === 0,
      onclick: async () => {
        const sure = await confirmDialog(`Revoke every session of ${user.email}?`, REVOCATION, "Revoke all sessions");
        if (sure) await act("Every session was revoked.", () => api.call("DELETE", `${path}/sessions`))();
      },
    }, "Revoke all sessions")),
  );

  const factorRows = factors.factors.map((factor) => [
    factor.type === "totp" ? "authenticator app" : factor.type,
    factor.name,
    when(factor.created_at),
    when(factor.last_used_at),
    h("button", {
      type: "button",
      class: "danger small",
      "aria-label": `Remove the factor ${factor.name}`,
      onclick: async () => {
        const sure = await confirmDialog(`Remove the factor "${factor.name}" of ${user.email}?`,
          `The factor stops working, and every session of ${user.email} is revoked.`, "Remove factor");
        if (sure) await act("The factor was removed; the user's sessions were revoked.",
          () => api.call("DELETE", `${path}/factors/${factor.id}`))();
      },
    }, "Remove"),
  ]);
  const factorSection = h(
    "section",
    { "aria-labelledby": "factors-heading" },
    h("h2", { id: "factors-heading" }, "Second factors"),
    table("Second factors", ["Kind", "Name", "Added", "Last used", "Action"], factorRows, "No second factor."),
  );

  const roleBoxes = roles.roles.map((role) =>
    checkbox(role.name, { name: "role", value: role.name, checked: user.roles.includes(role.name) }));
  const roleForm = h(
    "form",
    {
      "aria-labelledby": "roles-heading",
      onsubmit: async (event) => {
        event.preventDefault();
        const chosen = [...roleForm.querySelectorAll("input[name=role]:checked")].map((box) => box.value);
        await act("Roles saved; they show in the user's tokens from their next refresh.",
          () => api.call("PUT", `${path}/roles`, { roles: chosen }))();
      },
    },
    h("h2", { id: "roles-heading" }, "Roles"),
    h("fieldset", {}, h("legend", {}, `Roles of ${user.email}`),
      roleBoxes.length ? roleBoxes : h("p", { class: "empty" }, "No role exists yet.")),
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Save roles")),
  );

  const metadataField = field("app_metadata (a JSON object)", {
    tag: "textarea",
    name: "app_metadata",
    rows: 6,
    spellcheck: "false",
    value: JSON.stringify(user.app_metadata, null, 2),
  }, "At most 4096 bytes and 4 levels deep; the keys the service is configured to copy become claims in the user's next tokens.");
  const metadataProblem = h("p", { class: "error", role: "alert", hidden: true });
  const metadataForm = h(
    "form",
    {
      "aria-labelledby": "metadata-heading",
      onsubmit: async (event) => {
        event.preventDefault();
        metadataProblem.hidden = true;
        let value;
        try {
          value = JSON.parse(metadataField.querySelector("textarea").value);
        } catch {
          metadataProblem.textContent = "That is not JSON.";
          metadataProblem.hidden = false;
          return;
        }
        try {
          await api.call("PATCH", path, { app_metadata: value });
          announce("app_metadata saved.");
          await again();
        } catch (error) {
          metadataProblem.textContent = error.message;
          metadataProblem.hidden = false;
        }
      },
    },
    h("h2", { id: "metadata-heading" }, "Application metadata"),
    metadataField,
    metadataProblem,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Save app_metadata")),
  );

  const historyRows = history.events.map((event) => [
    when(event.at), event.action, event.actor, event.ip || "", h("code", {}, JSON.stringify(event.details)),
  ]);
  const historySection = h(
    "section",
    { "aria-labelledby": "history-heading" },
    h("h2", { id: "history-heading" }, "History"),
    table("The user's latest audit events", ["At", "Action", "Actor", "Address", "Details"], historyRows, "No event yet."),
    h("p", {}, h("a", { href: "#/audit" }, "The whole audit log")),
  );

  fill(main, 
    h("p", {}, h("a", { href: "#/users" }, "← Users")),
    title(user.email),
    facts,
    actions,
    sessions,
    factorSection,
    roleForm,
    metadataForm,
    historySection,
  );
}
