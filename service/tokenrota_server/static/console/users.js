// Users: search by email prefix, page through, open one.
import * as api from "./api.js";
import { field, fill, guarded, h, table, title, when } from "./dom.js";

const PAGE_SIZE = 20;

export async function render(main) {
  let prefix = "";
  const cursors = [null]; // the cursor of each page seen so far: Previous goes back one
  const results = h("div", { id: "user-results", "aria-live": "polite" });

  async function show(page) {
    const answer = await api.call(
      "GET",
      `/admin/users${api.query({ email: prefix, cursor: cursors[page], limit: PAGE_SIZE })}`,
    );
    if (answer.next_cursor) cursors[page + 1] = answer.next_cursor;
    const rows = answer.users.map((user) => [
      h("a", { href: `#/users/${user.id}` }, user.email),
      user.roles.join(", ") || "none",
      user.email_verified ? "yes" : "no",
      user.disabled ? "disabled" : "active",
      when(user.created_at),
    ]);
    fill(results, 
      table(`Users, page ${page + 1}`, ["Email", "Roles", "Verified", "State", "Created"], rows,
        prefix ? "No user's email starts with that." : "No users yet."),
      h(
        "div",
        { class: "buttons pager" },
        page > 0 ? h("button", { type: "button", class: "secondary", onclick: guarded(() => show(page - 1)) }, "Previous page") : null,
        answer.next_cursor ? h("button", { type: "button", class: "secondary", onclick: guarded(() => show(page + 1)) }, "Next page") : null,
      ),
    );
  }

  const search = field("Email starts with", { type: "search", name: "email", autocomplete: "off" },
    "Case does not matter. Leave it empty to list every user, oldest first.");
  const form = h(
    "form",
    {
      role: "search",
      "aria-label": "Find users",
      onsubmit: guarded(async (event) => {
        event.preventDefault();
        prefix = search.querySelector("input").value.trim();
        cursors.length = 1;
        await show(0);
      }),
    },
    search,
    h("div", { class: "buttons" }, h("button", { type: "submit" }, "Search")),
  );
  fill(main, title("Users"), form, results);
  await show(0);
}
