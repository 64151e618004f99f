// Building the page: every string given here becomes text (a text node or textContent), never
// markup, so whatever a user typed (an email, a session's name, metadata) shows as text and runs
// nothing. No module of the console parses HTML from a string (a test checks).

/** An element: `props` sets properties or attributes (`on*` functions are listeners); children
 * are nodes, strings (as text), numbers, null or arrays of them. */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      element.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      element.className = value;
    } else if (key === "text") {
      element.textContent = String(value);
    } else if (key === "checked" || key === "value") {
      // The default too, so that a form's reset() comes back to it.
      if (key === "checked") element.defaultChecked = value;
      else if ("defaultValue" in element) element.defaultValue = value;
      element[key] = value;
    } else if (key === "hidden" || key === "disabled") {
      element[key] = value;
    } else {
      element.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else if (child instanceof Node) element.append(child);
    else element.append(document.createTextNode(String(child)));
  }
}

/** Replace what `parent` holds with `children` (as `h` takes them: null and false are
 * skipped, where replaceChildren would write "null"). */
export function fill(parent, ...children) {
  parent.replaceChildren();
  append(parent, children);
}

let nextId = 0;
/** A fresh element id, for a <label for>. */
export function uid(prefix = "f") {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** A labelled input: [<label for>, <input id>], with a hint tied by aria-describedby. */
export function field(label, attributes = {}, hint = null) {
  const id = attributes.id || uid();
  const hintId = hint ? `${id}-hint` : null;
  const tag = attributes.tag || "input";
  const { tag: _ignored, ...rest } = attributes;
  const input = h(tag, { ...rest, id, "aria-describedby": hintId });
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    input,
    hint ? h("p", { class: "hint", id: hintId }, hint) : null,
  );
}

/** A checkbox with its label after it. */
export function checkbox(label, attributes = {}) {
  const id = attributes.id || uid();
  return h(
    "div",
    { class: "field check" },
    h("input", { type: "checkbox", ...attributes, id }),
    h("label", { for: id }, label),
  );
}

/** A table: a caption, header cells, and rows of cells (each a node, string or null). */
export function table(caption, headers, rows, empty = "Nothing to show.") {
  if (rows.length === 0) return h("p", { class: "empty" }, empty);
  return h(
    "table",
    {},
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
  );
}

/** A date as the reader's local time, in a <time> holding the exact instant. */
export function when(iso) {
  if (!iso) return "never";
  return h("time", { datetime: iso, title: iso }, new Date(iso).toLocaleString());
}

/** A heading that takes the focus when a screen opens, so screen readers announce it. */
export function title(text) {
  return h("h1", { tabindex: "-1", class: "screen-title" }, text);
}

/** A message in the live region (errors are alerts). */
export function announce(message, kind = "info") {
  const status = document.getElementById("status");
  fill(status, h("p", { class: kind, role: kind === "error" ? "alert" : null }, message));
}

/** Ask before doing something that cannot be undone: a modal <dialog> (focus inside it, Escape
 * cancels, the focus returns to where it was); resolves true when confirmed. */
export function confirmDialog(heading, message, confirmLabel) {
  return new Promise((resolve) => {
    const returnTo = document.activeElement;
    const headingId = uid("dialog");
    const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
    const confirm = h("button", { type: "button", class: "danger" }, confirmLabel);
    const dialog = h(
      "dialog",
      { "aria-labelledby": headingId, class: "confirm" },
      h("h2", { id: headingId }, heading),
      h("p", {}, message),
      h("div", { class: "buttons" }, cancel, confirm),
    );
    const close = (answer) => {
      dialog.close();
      dialog.remove();
      if (returnTo && returnTo.isConnected) returnTo.focus();
      resolve(answer);
    };
    cancel.addEventListener("click", () => close(false));
    confirm.addEventListener("click", () => close(true));
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      close(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

/** An event handler that says so when its work fails, rather than failing silently. */
export function guarded(work) {
  return async (...args) => {
    try {
      await work(...args);
    } catch (error) {
      announce(error.message || "The service could not be reached.", "error");
    }
  };
}

/** A secret shown this once, with what to do with it. */
export function secretBox(label, secret) {
  const id = uid("secret");
  return h(
    "div",
    { class: "secret", role: "region", "aria-labelledby": id },
    h("h3", { id }, label),
    h("p", {}, "Copy it now: it is shown this once and is never stored in readable form."),
    h("output", { class: "secret-value" }, secret),
  );
}

/** Scopes typed as a space- or comma-separated list. */
export function parseScopes(text) {
  return text.split(/[\s,]+/).filter((scope) => scope.length > 0);
}
