// The console drawer: the CLI command that reproduces the current preview, rebuilt by
// POST /api/commands/build on every form change (debounced by the caller), with a copy
// button. An error answer shows the server's detail instead of a stale command.

import { buildCommand } from "./api.js";

// The builder only needs to know that an image was uploaded (IMAGE.png stands in for
// it in the command), so the drawer sends this 1x1 PNG instead of megabytes of base64
// on every keystroke.
const UPLOAD_STUB =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==";

export class CommandDrawer {
  constructor({ code, copy, warnings, status }) {
    Object.assign(this, { code, copy, warnings, status });
    this.generation = 0;
    copy.addEventListener("click", () => this.#copy());
  }

  /** Rebuild from a preview request body; only the newest answer is shown. */
  async update(previewBody) {
    const generation = ++this.generation;
    const preview = { ...previewBody };
    if (preview.image_base64 != null) preview.image_base64 = UPLOAD_STUB;
    try {
      const built = await buildCommand({ command: "playground-rt run", preview });
      if (generation !== this.generation) return;
      this.code.textContent = built.command;
      this.code.classList.remove("error");
      this.copy.disabled = false;
      this.#warn(built.warnings ?? []);
    } catch (error) {
      if (generation !== this.generation) return;
      this.code.textContent = error.message;
      this.code.classList.add("error");
      this.copy.disabled = true;
      this.#warn([]);
    }
  }

  #warn(list) {
    this.warnings.replaceChildren(
      ...list.map((text) => {
        const li = document.createElement("li");
        li.textContent = text;
        return li;
      }),
    );
  }

  async #copy() {
    const text = this.code.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // No clipboard permission (or no secure context): select it for Ctrl+C instead.
      const range = document.createRange();
      range.selectNodeContents(this.code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      this.status.textContent = "Selected: press Ctrl+C to copy";
      return;
    }
    this.status.textContent = "Copied";
    setTimeout(() => (this.status.textContent = ""), 1500);
  }
}
