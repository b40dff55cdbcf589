// Crop as handles on the image: while the crop op is on, its rectangle is drawn over the
// original on the stage (what is cut is dimmed) with a handle on each edge and corner. A
// handle drags with the mouse or a finger, or moves with the arrow keys (Shift: 10 px); the
// margins in the form follow (they stay editable, and the rectangle follows them). The
// margins are what crop's params are: pixels removed from each edge.

import { el } from "./dom.js";

const HANDLES = [
  ["left", ["left"]],
  ["right", ["right"]],
  ["top", ["top"]],
  ["bottom", ["bottom"]],
  ["top left", ["top", "left"]],
  ["top right", ["top", "right"]],
  ["bottom left", ["bottom", "left"]],
  ["bottom right", ["bottom", "right"]],
];

export class CropHandles {
  constructor({ overlay, canvas, stage, getForm }) {
    Object.assign(this, { overlay, canvas, stage, getForm });
    this.box = el("div", { class: "crop-box" });
    this.handles = HANDLES.map(([name, edges]) => {
      const handle = el("button", {
        type: "button",
        class: "crop-handle",
        "aria-label": `Crop: move the ${name} edge${edges.length > 1 ? "s" : ""} (arrow keys)`,
        "data-edge": name,
      });
      handle.addEventListener("pointerdown", (e) => this.#grab(e, edges));
      handle.addEventListener("keydown", (e) => this.#key(e, edges));
      return { handle, edges };
    });
    overlay.append(this.box, ...this.handles.map((h) => h.handle));
    stage.onView(() => this.update());
  }

  /** Redraw from the form's margins (call after every form change). */
  update() {
    const form = this.getForm();
    const size = form?.imageSize;
    const on = Boolean(size && form.enabled("crop") && this.stage.before);
    this.overlay.hidden = !on;
    if (!on) return;
    const m = this.#margins(form);
    const [w, h] = size;
    const offset = this.#offset();
    const a = this.stage.originalToScreen(m.left, m.top);
    const b = this.stage.originalToScreen(w - m.right, h - m.bottom);
    if (!a || !b) return;
    const left = offset.x + a.x;
    const top = offset.y + a.y;
    const width = Math.max(0, b.x - a.x);
    const height = Math.max(0, b.y - a.y);
    Object.assign(this.box.style, {
      left: `${left}px`,
      top: `${top}px`,
      width: `${width}px`,
      height: `${height}px`,
    });
    for (const { handle, edges } of this.handles) {
      const x = edges.includes("left")
        ? left
        : edges.includes("right")
          ? left + width
          : left + width / 2;
      const y = edges.includes("top")
        ? top
        : edges.includes("bottom")
          ? top + height
          : top + height / 2;
      Object.assign(handle.style, { left: `${x}px`, top: `${y}px` });
    }
  }

  #margins(form) {
    const value = (name) => {
      const v = form.value("crop", name);
      return Number.isFinite(v) ? v : 0;
    };
    return {
      left: value("left"),
      top: value("top"),
      right: value("right"),
      bottom: value("bottom"),
    };
  }

  #offset() {
    const canvas = this.canvas.getBoundingClientRect();
    const overlay = this.overlay.getBoundingClientRect();
    return { x: canvas.left - overlay.left, y: canvas.top - overlay.top };
  }

  /** The margin an edge gets when dragged to original pixel (px, py), within the image. */
  #moveTo(edges, px, py, type) {
    const form = this.getForm();
    const [w, h] = form.imageSize;
    const m = this.#margins(form);
    const set = {
      left: () => Math.min(Math.max(0, Math.round(px)), w - m.right - 1),
      right: () => Math.min(Math.max(0, Math.round(w - px)), w - m.left - 1),
      top: () => Math.min(Math.max(0, Math.round(py)), h - m.bottom - 1),
      bottom: () => Math.min(Math.max(0, Math.round(h - py)), h - m.top - 1),
    };
    for (const edge of edges) {
      const value = set[edge]();
      if (value !== m[edge] || type === "change") form.set("crop", edge, value, type);
    }
  }

  #toOriginal(event) {
    const canvas = this.canvas.getBoundingClientRect();
    const origin = this.stage.originalToScreen(0, 0);
    return {
      px: (event.clientX - canvas.left - origin.x) / origin.k,
      py: (event.clientY - canvas.top - origin.y) / origin.k,
    };
  }

  #grab(event, edges) {
    event.preventDefault();
    event.stopPropagation();
    const handle = event.currentTarget;
    handle.setPointerCapture?.(event.pointerId);
    handle.focus();
    const move = (e) => {
      const { px, py } = this.#toOriginal(e);
      this.#moveTo(edges, px, py, "input");
    };
    const up = (e) => {
      handle.removeEventListener("pointermove", move);
      handle.removeEventListener("pointerup", up);
      handle.removeEventListener("pointercancel", up);
      const { px, py } = this.#toOriginal(e);
      this.#moveTo(edges, px, py, "change"); // released: the job starts
    };
    handle.addEventListener("pointermove", move);
    handle.addEventListener("pointerup", up);
    handle.addEventListener("pointercancel", up);
  }

  #key(event, edges) {
    const step = event.shiftKey ? 10 : 1;
    const delta = {
      ArrowLeft: [-step, 0],
      ArrowRight: [step, 0],
      ArrowUp: [0, -step],
      ArrowDown: [0, step],
    }[event.key];
    if (!delta) return;
    event.preventDefault();
    const form = this.getForm();
    const [w, h] = form.imageSize;
    const m = this.#margins(form);
    const px = edges.includes("left") ? m.left + delta[0] : w - m.right + delta[0];
    const py = edges.includes("top") ? m.top + delta[1] : h - m.bottom + delta[1];
    this.#moveTo(edges, px, py, "change");
  }
}
