// Resources: the APIs tokens are minted for (RFC 8707), each its own audience.
import * as api from "./api.js";
import { announce, confirmDialog, field, fill, h, parseScopes, table, title } from "./dom.js";

export async function render(main) {
  const { resources } = await api.call("GET", "/admin/resources");
  const again = () => render(main).then(() => main.querySelector("h1").focus());
  let editing = null; // the resource the form edits, or null to create one

  const uri = field("URI", { name: "uri", required: true, autocomplete: "off", type: "url" },
    "The API's absolute URI: its tokens' audience. It never changes once registered.");
  const name = field("Name", { name: "name", required: true, autocomplete: "off" });
  const scopes = field("Scopes", { name: "scopes", autocomplete: "off" }, "Separated by spaces.");
  const ttl = field("Access-token lifetime (seconds)", { name: "ttl", type: "number", min: 1, autocomplete: "off" },
    "Empty: the service's own lifetime.");
  const heading = h("h2", { id: "resource-form-heading" }, "Register a resource");
  const submit = h("button", { type: "submit" }, "Register resource");
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const form = h(
    "form",
    {
      class: "card",
      "aria-labelledby": "resource-form-heading",
      onsubmit: async (event) => {
        event.preventDefault();
        problem.hidden = true;
        const lifetime = ttl.querySelector("input").value;
        const body = {
          name: name.querySelector("input").value.trim(),
          scopes: parseScopes(scopes.querySelector("input").value),
          access_token_ttl: lifetime === "" ? null : Number(lifetime),
        };
        try {
          if (editing) {
            await api.call("PATCH", `/admin/resources/${editing.id}`, body);
          } else {
            if (body.access_token_ttl === null) delete body.access_token_ttl;
            await api.call("POST", "/admin/resources", { uri: uri.querySelector("input").value.trim(), ...body });
          }
          announce(`Resource ${body.name} saved.`);
          await again();
        } catch (error) {
          problem.textContent = error.message;
          problem.hidden = false;
        }
      },
    },
    heading, uri, name, scopes, ttl, problem, h("div", { class: "buttons" }, submit),
  );

  const edit = (resource) => () => {
    editing = resource;
    heading.textContent = `Edit ${resource.uri}`;
    submit.textContent = "Save resource";
    uri.querySelector("input").value = resource.uri;
    uri.querySelector("input").disabled = true;
    name.querySelector("input").value = resource.name;
    scopes.querySelector("input").value = resource.scopes.join(" ");
    ttl.querySelector("input").value = resource.access_token_ttl ?? "";
    name.querySelector("input").focus();
  };
  const remove = (resource) => async () => {
    const sure = await confirmDialog(`Delete the resource ${resource.uri}?`,
      "Every client's grant to it goes with it; tokens already issued for it live until they expire.", "Delete resource");
    if (!sure) return;
    try {
      await api.call("DELETE", `/admin/resources/${resource.id}`);
      announce(`Resource ${resource.uri} deleted.`);
      await again();
    } catch (error) {
      announce(error.message, "error");
    }
  };
  const rows = resources.map((resource) => [
    h("code", {}, resource.uri),
    resource.name,
    resource.scopes.join(" ") || "none",
    resource.access_token_ttl === null ? "default" : `${resource.access_token_ttl} s`,
    h("span", { class: "row-actions" },
      h("button", { type: "button", class: "secondary small", "aria-label": `Edit ${resource.uri}`, onclick: edit(resource) }, "Edit"),
      h("button", { type: "button", class: "danger small", "aria-label": `Delete ${resource.uri}`, onclick: remove(resource) }, "Delete")),
  ]);
  fill(main, 
    title("Resources"),
    h("p", { class: "hint" }, "Each registered API gets tokens only it accepts; changes apply to tokens minted from now on."),
    table("Resources", ["URI", "Name", "Scopes", "Token lifetime", "Actions"], rows, "No resource yet."),
    form,
  );
}
