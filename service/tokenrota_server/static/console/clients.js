// OAuth clients: services that get tokens with their own credentials. A secret is shown once,
// when the client is created or its secret rotated; the service keeps only its hash.
import * as api from "./api.js";
import { announce, confirmDialog, field, h, parseScopes, secretBox, table, title, when } from "./dom.js";

const PAGE_SIZE = 50;

export async function render(main) {
  const cursors = [null];
  const list = h("div", { id: "client-list" });

  async function show(page) {
    const answer = await api.call("GET", `/admin/clients${api.query({ cursor: cursors[page], limit: PAGE_SIZE })}`);
    if (answer.next_cursor) cursors[page + 1] = answer.next_cursor;
    const rows = answer.clients.map((client) => [
      h("a", { href: `#/clients/${client.client_id}` }, client.name),
      h("code", {}, client.client_id),
      client.scopes.join(" ") || "none",
      client.disabled ? "disabled" : "enabled",
      when(client.created_at),
    ]);
    list.replaceChildren(
      table(`OAuth clients, page ${page + 1}`, ["Name", "Client id", "Scopes", "State", "Created"], rows, "No client yet."),
      h("div", { class: "buttons pager" },
        page > 0 ? h("button", { type: "button", class: "secondary", onclick: () => show(page - 1) }, "Previous page") : null,
        answer.next_cursor ? h("button", { type: "button", class: "secondary", onclick: () => show(page + 1) }, "Next page") : null),
    );
  }

  const name = field("Name", { name: "name", required: true, autocomplete: "off", maxlength: 100 });
  const scopes = field("Scopes", { name: "scopes", autocomplete: "off" }, "Separated by spaces.");
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const created = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "client-form-heading",
      onsubmit: async (event) => {
        event.preventDefault();
        problem.hidden = true;
        try {
          const client = await api.call("POST", "/admin/clients", {
            name: name.querySelector("input").value.trim(),
            scopes: parseScopes(scopes.querySelector("input").value),
          });
          form.reset();
          created.replaceChildren(
            h("p", { class: "notice" }, "Created ", h("a", { href: `#/clients/${client.client_id}` }, client.name),
              ", client id ", h("code", {}, client.client_id), "."),
            secretBox(`The secret of ${client.name}`, client.client_secret),
          );
          announce(`Client ${client.name} created; its secret is shown below, once.`);
          await show(0);
        } catch (error) {
          problem.textContent = error.message;
          problem.hidden = false;
        }
      },
    },
    h("h2", { id: "client-form-heading" }, "Register a client"),
    name, scopes, problem,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Create client")),
  );
  main.replaceChildren(title("OAuth clients"), list, form, created);
  await show(0);
}

/** One client: its scopes, its secret's rotation, disable, enable, delete. */
export const detail = {
  async render(main, clientId) {
    const path = `/admin/clients/${clientId}`;
    const client = await api.call("GET", path);
    const again = () => detail.render(main, clientId).then(() => main.querySelector("h1").focus());
    const act = (label, work) => async () => {
      try {
        await work();
        announce(label);
        await again();
      } catch (error) {
        announce(error.message, "error");
      }
    };

    const facts = h("dl", { class: "facts" },
      h("dt", {}, "Client id"), h("dd", {}, h("code", {}, client.client_id)),
      h("dt", {}, "State"), h("dd", {}, client.disabled ? `disabled since ${new Date(client.disabled_at).toLocaleString()}` : "enabled"),
      h("dt", {}, "Scopes"), h("dd", {}, client.scopes.join(" ") || "none"),
      h("dt", {}, "Created"), h("dd", {}, when(client.created_at)),
      h("dt", {}, "Previous secret works until"),
      h("dd", {}, client.previous_secret_expires_at ? when(client.previous_secret_expires_at) : "no previous secret"));

    const grace = field("Grace period for the old secret (seconds)",
      { name: "grace", type: "number", min: 0, max: 604800, value: "3600", required: true },
      "0 ends the old secret now (after a leak); up to 604800 (7 days) lets a fleet switch without an outage.");
    const rotated = h("div", { "aria-live": "polite" });
    const rotateForm = h(
      "form",
      {
        class: "card",
        "aria-labelledby": "rotate-heading",
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            const answer = await api.call("POST", `${path}/secret`,
              { grace_seconds: Number(grace.querySelector("input").value) });
            announce("Secret rotated; the new one is shown below, once.");
            rotated.replaceChildren(
              secretBox(`The new secret of ${answer.name}`, answer.client_secret),
              h("p", {}, answer.previous_secret_expires_at
                ? ["The old secret keeps working until ", when(answer.previous_secret_expires_at), "."]
                : "The old secret stopped working now."));
          } catch (error) {
            announce(error.message, "error");
          }
        },
      },
      h("h2", { id: "rotate-heading" }, "Rotate the secret"),
      grace,
      h("div", { class: "buttons" }, h("button", { type: "submit", disabled: client.disabled }, "Rotate secret")),
      rotated,
    );

    const scopes = field("Scopes", { name: "scopes", autocomplete: "off", value: client.scopes.join(" ") }, "Separated by spaces.");
    const clientName = field("Name", { name: "name", autocomplete: "off", value: client.name, required: true, maxlength: 100 });
    const editForm = h(
      "form",
      {
        class: "card",
        "aria-labelledby": "client-edit-heading",
        onsubmit: async (event) => {
          event.preventDefault();
          await act("Client saved.", () => api.call("PATCH", path, {
            name: clientName.querySelector("input").value.trim(),
            scopes: parseScopes(scopes.querySelector("input").value),
          }))();
        },
      },
      h("h2", { id: "client-edit-heading" }, "Name and scopes"),
      clientName, scopes,
      h("div", { class: "buttons" }, h("button", { type: "submit" }, "Save client")),
    );

    const actions = h("div", { class: "buttons" },
      client.disabled
        ? h("button", { type: "button", onclick: act("Client enabled.", () => api.call("PATCH", path, { disabled: false })) }, "Enable")
        : h("button", {
            type: "button",
            class: "danger",
            onclick: async () => {
              const sure = await confirmDialog(`Disable ${client.name}?`,
                "Its secret and every token it holds are refused at once, and the revocation feed names it, so resource servers following the feed refuse its tokens within seconds.",
                "Disable client");
              if (sure) await act("Client disabled.", () => api.call("PATCH", path, { disabled: true }))();
            },
          }, "Disable"),
      h("button", {
        type: "button",
        class: "danger",
        onclick: async () => {
          const sure = await confirmDialog(`Delete ${client.name}?`,
            "Its tokens are refused now and the client is forgotten. This cannot be undone.", `Delete ${client.name}`);
          if (!sure) return;
          try {
            await api.call("DELETE", path);
            announce(`Client ${client.name} deleted.`);
            location.hash = "#/clients";
          } catch (error) {
            announce(error.message, "error");
          }
        },
      }, "Delete…"));

    main.replaceChildren(
      h("p", {}, h("a", { href: "#/clients" }, "← OAuth clients")),
      title(client.name),
      facts,
      actions,
      rotateForm,
      editForm,
    );
  },
};
