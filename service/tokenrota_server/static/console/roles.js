// Roles: a name and a set of scopes (and whether they need a second factor), held by users.
import * as api from "./api.js";
import { announce, checkbox, confirmDialog, field, fill, h, parseScopes, table, title, when } from "./dom.js";

export async function render(main) {
  const { roles } = await api.call("GET", "/admin/roles");
  const again = () => render(main).then(() => main.querySelector("h1").focus());

  const name = field("Name", { name: "name", required: true, autocomplete: "off", pattern: "[a-z0-9][a-z0-9_.:\\-]{0,63}" },
    "Lower case: letters, digits and _ . : - (saving an existing name replaces that role).");
  const scopes = field("Scopes", { name: "scopes", autocomplete: "off" }, "Separated by spaces, e.g. tickets:read tickets:write");
  const mfa = checkbox("Requires a second factor (its scopes go only into aal2 tokens)", { name: "require_mfa" });
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const form = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "role-form-heading",
      onsubmit: async (event) => {
        event.preventDefault();
        problem.hidden = true;
        const roleName = name.querySelector("input").value.trim();
        try {
          await api.call("PUT", `/admin/roles/${encodeURIComponent(roleName)}`, {
            scopes: parseScopes(scopes.querySelector("input").value),
            require_mfa: mfa.querySelector("input").checked,
          });
          announce(`Role ${roleName} saved.`);
          await again();
        } catch (error) {
          problem.textContent = error.message;
          problem.hidden = false;
        }
      },
    },
    h("h2", { id: "role-form-heading" }, "Create or edit a role"),
    name, scopes, mfa, problem,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Save role")),
  );

  const edit = (role) => () => {
    name.querySelector("input").value = role.name;
    scopes.querySelector("input").value = role.scopes.join(" ");
    mfa.querySelector("input").checked = role.require_mfa;
    scopes.querySelector("input").focus();
  };
  const remove = (role) => async () => {
    const sure = await confirmDialog(`Delete the role ${role.name}?`,
      "A role still held by a user cannot be deleted.", "Delete role");
    if (!sure) return;
    try {
      await api.call("DELETE", `/admin/roles/${encodeURIComponent(role.name)}`);
      announce(`Role ${role.name} deleted.`);
      await again();
    } catch (error) {
      announce(error.code === "role_in_use"
        ? `The role ${role.name} is still held by users: take it from them first (on each user's page), then delete it.`
        : error.message, "error");
    }
  };
  const rows = roles.map((role) => [
    role.name,
    role.scopes.join(" ") || "none",
    role.require_mfa ? "yes" : "no",
    when(role.created_at),
    h("span", { class: "row-actions" },
      h("button", { type: "button", class: "secondary small", "aria-label": `Edit ${role.name}`, onclick: edit(role) }, "Edit"),
      h("button", { type: "button", class: "danger small", "aria-label": `Delete ${role.name}`, onclick: remove(role) }, "Delete")),
  ]);
  fill(main, 
    title("Roles"),
    h("p", { class: "hint" }, "A user's tokens carry the scopes of their roles from their next sign-in or refresh."),
    table("Roles", ["Name", "Scopes", "Second factor", "Created", "Actions"], rows, "No role yet."),
    form,
  );
}
