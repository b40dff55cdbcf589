// The command drawer (the page's "Console" footer): the CLI command that reproduces what
// is shown — the command of the result on the stage, not of the form — and, while they
// differ, the form's pending command beside it. For a dataset image, the same command on
// its whole folder. Commands come from POST /api/commands/build (cached per request
// identity); a form with an error builds nothing, so the last valid command stays.

import { buildCommand } from "./api.js";
import { el } from "./ui/dom.js";

// The builder only needs to know that an image was uploaded (IMAGE.png stands in for
// it in the command), so the drawer sends this 1x1 PNG instead of megabytes of base64.
const UPLOAD_STUB =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg==";
const CACHE = 64;

function folderOf(path) {
  return path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : null;
}

export class CommandDrawer {
  constructor({
    code,
    copy,
    warnings,
    status,
    pending,
    pendingCode,
    folder,
    folderCode,
    copyFolder,
  }) {
    Object.assign(this, {
      code,
      copy,
      warnings,
      status,
      pending,
      pendingCode,
      folder,
      folderCode,
      copyFolder,
    });
    this.built = new Map(); // request -> Promise<{command, warnings} | {error}>
    this.shownBody = null;
    this.pendingBody = null;
    this.generation = 0;
    copy.addEventListener("click", () => this.#copy(this.code));
    copyFolder.addEventListener("click", () => this.#copy(this.folderCode));
  }

  /** The result on the stage now came from the request `body`. */
  async shown(body) {
    this.shownBody = body;
    await this.#render();
  }

  /** What the form asks for (not called while it has errors: the last valid command stays). */
  async want(body) {
    this.pendingBody = body;
    await this.#render();
  }

  /** The command of a request body (built once per distinct request). */
  build(body) {
    const preview = { ...body, taskId: undefined };
    if (preview.image_base64 != null) preview.image_base64 = UPLOAD_STUB;
    const key = JSON.stringify(preview);
    let entry = this.built.get(key);
    if (!entry) {
      entry = buildCommand({ command: "playground-rt run", preview }).catch((error) => ({
        error: error.message,
      }));
      this.built.set(key, entry);
      while (this.built.size > CACHE) this.built.delete(this.built.keys().next().value);
    }
    return entry;
  }

  async #render() {
    const generation = ++this.generation;
    const body = this.shownBody ?? this.pendingBody;
    if (!body) return;
    const main = await this.build(body);
    const other = this.pendingBody ? await this.build(this.pendingBody) : null;
    const differs = other && (other.command ?? other.error) !== (main.command ?? main.error);
    const folder = body.image_path ? await this.#folderCommand(body) : null;
    if (generation !== this.generation) return;
    this.#put(this.code, main);
    this.copy.disabled = Boolean(main.error);
    this.pending.hidden = !differs;
    if (differs) this.#put(this.pendingCode, other);
    this.folder.hidden = !folder || Boolean(folder.error);
    this.copyFolder.hidden = this.folder.hidden;
    if (folder && !folder.error) this.folderCode.textContent = folder.command;
    this.#warn(main.warnings ?? []);
  }

  /** `playground-rt run` on the image's folder with the same pipeline and params. */
  #folderCommand(body) {
    const folder = folderOf(body.image_path);
    if (!folder) return null;
    const params = { ...body.params };
    const key = `folder:${folder}:${body.pipeline_id}:${JSON.stringify(params)}`;
    let entry = this.built.get(key);
    if (!entry) {
      const values = { pipeline: body.pipeline_id, image: folder, params: JSON.stringify(params) };
      entry = buildCommand({ command: "playground-rt run", values }).catch((error) => ({
        error: error.message,
      }));
      this.built.set(key, entry);
    }
    return entry;
  }

  #put(code, built) {
    code.textContent = built.error ?? built.command;
    code.classList.toggle("error", Boolean(built.error));
  }

  #warn(list) {
    this.warnings.replaceChildren(...list.map((text) => el("li", {}, text)));
  }

  async #copy(code) {
    const text = code.textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      // No clipboard permission (or no secure context): select it for Ctrl+C instead.
      const range = document.createRange();
      range.selectNodeContents(code);
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      this.status.textContent = "Selected: press Ctrl+C to copy";
      return;
    }
    this.status.textContent = "Copied";
    setTimeout(() => (this.status.textContent = ""), 1500);
  }
}
