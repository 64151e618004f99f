// The audit log: every change and security event, newest first, filtered by user, actor,
// action and time.
import * as api from "./api.js";
import { field, fill, guarded, h, table, title, when } from "./dom.js";

const PAGE_SIZE = 50;

// A datetime-local value (the reader's time) as RFC 3339 in UTC, as the API wants it.
function instant(local) {
  return local ? new Date(local).toISOString() : "";
}

export async function render(main) {
  const cursors = [null];
  let filters = {};
  const results = h("div", { id: "audit-results", "aria-live": "polite" });

  async function show(page) {
    const answer = await api.call("GET", `/admin/audit${api.query({ ...filters, cursor: cursors[page], limit: PAGE_SIZE })}`);
    if (answer.next_cursor) cursors[page + 1] = answer.next_cursor;
    const rows = answer.events.map((event) => [
      when(event.at),
      event.action,
      event.actor,
      event.user_id ? h("a", { href: `#/users/${event.user_id}` }, event.target || event.user_id) : event.target || "",
      event.ip || "",
      h("code", {}, JSON.stringify(event.details)),
    ]);
    fill(results, 
      table(`Audit events, page ${page + 1}`, ["At", "Action", "Actor", "Target", "Address", "Details"], rows,
        "No event matches."),
      h("div", { class: "buttons pager" },
        page > 0 ? h("button", { type: "button", class: "secondary", onclick: guarded(() => show(page - 1)) }, "Newer") : null,
        answer.next_cursor ? h("button", { type: "button", class: "secondary", onclick: guarded(() => show(page + 1)) }, "Older") : null),
    );
  }

  const userId = field("User id", { name: "user_id", autocomplete: "off", spellcheck: "false" }, "A user's id (on their page).");
  const actor = field("Actor", { name: "actor", autocomplete: "off" }, "user:<id>, client:<client id>, cli or system.");
  const action = field("Action", { name: "action", tag: "select" });
  action.querySelector("select").append(h("option", { value: "" }, "any"), ...api.actions().map((name) => h("option", { value: name }, name)));
  const after = field("At or after", { name: "after", type: "datetime-local", step: 1 });
  const before = field("Before", { name: "before", type: "datetime-local", step: 1 });
  const problem = h("p", { class: "error", role: "alert", hidden: true });
  const form = h(
    "form",
    {
      role: "search",
      "aria-label": "Filter the audit log",
      class: "filters",
      onsubmit: async (event) => {
        event.preventDefault();
        problem.hidden = true;
        filters = {
          user_id: userId.querySelector("input").value.trim(),
          actor: actor.querySelector("input").value.trim(),
          action: action.querySelector("select").value,
          after: instant(after.querySelector("input").value),
          before: instant(before.querySelector("input").value),
        };
        cursors.length = 1;
        try {
          await show(0);
        } catch (error) {
          problem.textContent = error.message;
          problem.hidden = false;
        }
      },
    },
    userId, actor, action, after, before,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Filter")),
  );
  fill(main, title("Audit log"), form, problem, results);
  await show(0);
}
