// OAuth clients: services that get tokens with their own credentials. A secret is shown once,
// when the client is created or its secret rotated; the service keeps only its hash.
import * as api from "./api.js";
import { announce, checkbox, confirmDialog, field, fill, guarded, h, parseScopes, secretBox, table, title, when } from "./dom.js";

const PAGE_SIZE = 50;
const GRANT_KINDS = {
  token: "token: client-credentials tokens for the resource",
  exchange: "exchange: exchange a user's token toward the resource",
  serves: "serves: the client is that resource's server (no scopes)",
};

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
    fill(list, 
      table(`OAuth clients, page ${page + 1}`, ["Name", "Client id", "Scopes", "State", "Created"], rows, "No client yet."),
      h("div", { class: "buttons pager" },
        page > 0 ? h("button", { type: "button", class: "secondary", onclick: guarded(() => show(page - 1)) }, "Previous page") : null,
        answer.next_cursor ? h("button", { type: "button", class: "secondary", onclick: guarded(() => show(page + 1)) }, "Next page") : null),
    );
  }

  const name = field("Name", { name: "name", required: true, autocomplete: "off", maxlength: 100 });
  const scopes = field("Scopes", { name: "scopes", autocomplete: "off" }, "Separated by spaces.");
  const dpop = checkbox("Tokens only with a DPoP proof (bound to the client's key)", { name: "dpop" });
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
            dpop_bound_access_tokens: dpop.querySelector("input").checked,
          });
          form.reset();
          fill(created, 
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
    name, scopes, dpop, problem,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Create client")),
  );
  fill(main, title("OAuth clients"), list, form, created);
  await show(0);
}

/** One client: its scopes, its secret's rotation, disable, enable, delete. */
export const detail = {
  async render(main, clientId) {
    const path = `/admin/clients/${clientId}`;
    const [client, { grants }, { resources }] = await Promise.all([
      api.call("GET", path),
      api.call("GET", `${path}/grants`),
      api.call("GET", "/admin/resources"),
    ]);
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
      h("dt", {}, "DPoP"), h("dd", {}, client.dpop_bound_access_tokens ? "required (tokens bound to its key)" : "not required"),
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
            fill(rotated, 
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
    const dpop = checkbox("Tokens only with a DPoP proof (bound to the client's key)",
      { name: "dpop", checked: client.dpop_bound_access_tokens });
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
            dpop_bound_access_tokens: dpop.querySelector("input").checked,
          }))();
        },
      },
      h("h2", { id: "client-edit-heading" }, "Name, scopes and DPoP"),
      clientName, scopes, dpop,
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

    const grantRows = grants.map((grant) => [
      h("code", {}, grant.resource),
      grant.kind,
      grant.scopes.join(" ") || "none",
      h("button", {
        type: "button",
        class: "danger small",
        "aria-label": `Remove the ${grant.kind} grant to ${grant.resource}`,
        onclick: async () => {
          const sure = await confirmDialog(`Remove the ${grant.kind} grant to ${grant.resource}?`,
            "Tokens already minted under it live out their lifetime.", "Remove grant");
          if (sure) await act("Grant removed.",
            () => api.call("DELETE", `${path}/grants/${grant.resource_id}/${grant.kind}`))();
        },
      }, "Remove"),
    ]);
    const resource = field("Resource", { name: "resource", tag: "select", required: true });
    resource.querySelector("select").append(
      ...resources.map((item) => h("option", { value: item.id }, `${item.name} (${item.uri})`)));
    const kind = field("Kind", { name: "kind", tag: "select", required: true });
    kind.querySelector("select").append(
      ...Object.entries(GRANT_KINDS).map(([value, label]) => h("option", { value }, label)));
    const grantScopes = field("Scopes granted", { name: "grant-scopes", autocomplete: "off" },
      "Separated by spaces; each one the resource defines. Empty for serves.");
    const grantForm = h(
      "form",
      {
        "aria-labelledby": "grant-form-heading",
        onsubmit: async (event) => {
          event.preventDefault();
          const chosen = resource.querySelector("select").value;
          const grantKind = kind.querySelector("select").value;
          const wanted = parseScopes(grantScopes.querySelector("input").value);
          await act("Grant saved.", () => api.call("PUT", `${path}/grants/${chosen}/${grantKind}`,
            grantKind === "serves" ? undefined : { scopes: wanted }))();
        },
      },
      h("h3", { id: "grant-form-heading" }, "Grant a resource"),
      resource, kind, grantScopes,
      h("div", { class: "buttons" }, h("button", { type: "submit" }, "Save grant")),
    );
    const grantSection = h(
      "section",
      { class: "card", "aria-labelledby": "grants-heading" },
      h("h2", { id: "grants-heading" }, "Resources it may use"),
      table("Grants", ["Resource", "Kind", "Scopes", "Action"], grantRows, "No grant."),
      resources.length ? grantForm : h("p", { class: "empty" }, "No resource is registered yet."),
    );

    fill(main, 
      h("p", {}, h("a", { href: "#/clients" }, "← OAuth clients")),
      title(client.name),
      facts,
      actions,
      rotateForm,
      editForm,
      grantSection,
    );
  },
};
