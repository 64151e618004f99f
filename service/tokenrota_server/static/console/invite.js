// Create a user, or invite one: the invitation mails a link to choose a password.
import * as api from "./api.js";
import { announce, checkbox, field, fill, h, title } from "./dom.js";

export async function render(main) {
  const { roles } = await api.call("GET", "/admin/roles");
  const email = field("Email", { type: "email", name: "email", required: true, autocomplete: "off" });
  const invite = checkbox("Mail an invitation (a link to choose a password, valid 72 hours by default)",
    { name: "invite", checked: true });
  const roleBoxes = roles.map((role) => checkbox(role.name, { name: "role", value: role.name }));
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const result = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "invite-heading",
      onsubmit: async (event) => {
        event.preventDefault();
        problem.hidden = true;
        const body = {
          email: email.querySelector("input").value.trim(),
          invite: invite.querySelector("input").checked,
          roles: [...form.querySelectorAll("input[name=role]:checked")].map((box) => box.value),
        };
        try {
          const user = await api.call("POST", "/admin/users", body);
          announce(body.invite ? `Invited ${user.email}.` : `Created ${user.email}.`);
          fill(result, h("p", { class: "notice" },
            body.invite ? "Invitation sent to " : "Created ",
            h("a", { href: `#/users/${user.id}` }, user.email),
            body.invite ? "." : ": they have no password yet; send them a password reset link from their page."));
          form.reset();
        } catch (error) {
          problem.textContent = error.code === "email_taken" ? "An account already has this email." : error.message;
          problem.hidden = false;
        }
      },
    },
    h("h2", { id: "invite-heading" }, "New user"),
    email,
    invite,
    h("fieldset", {}, h("legend", {}, "Roles"),
      roleBoxes.length ? roleBoxes : h("p", { class: "empty" }, "No role exists yet.")),
    problem,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Create user")),
  );
  fill(main, 
    title("Create or invite a user"),
    h("p", { class: "hint" }, "Operators never choose a password: the user sets their own through the mailed link."),
    form,
    result,
  );
}
