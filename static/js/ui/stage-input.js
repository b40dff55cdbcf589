// How people move the compare stage (ui/compare-stage.js). Mouse: drag pans (or moves the
// wipe handle near it), the wheel zooms at the pointer, a double click toggles fit and 1:1.
// Touch: one finger pans, two pinch. Keyboard (the stage is focusable): + and − zoom, 0
// fits, 1 is 1:1, arrows pan (Shift: further), W wipe, S side by side, M the removed area.
// The toolbar's buttons, backdrop and wipe slider drive the same calls.

const PAN_STEP = 40;
const ZOOM_STEP = 1.25;

/** Wire `els` (the stage, its canvas and toolbar) to `stage`'s view calls. */
export function bindStageInput(stage, els) {
  els.modeWipe.addEventListener("click", () => stage.setMode("wipe"));
  els.modeSide.addEventListener("click", () => stage.setMode("side"));
  els.zoomIn.addEventListener("click", () => stage.zoomBy(ZOOM_STEP));
  els.zoomOut.addEventListener("click", () => stage.zoomBy(1 / ZOOM_STEP));
  els.fit.addEventListener("click", () => stage.fit());
  els.oneToOne.addEventListener("click", () => stage.oneToOne());
  els.backdrop.addEventListener("change", () => stage.setBackdrop(els.backdrop.value));
  els.mask.addEventListener("change", () => stage.setMask(els.mask.checked));
  els.wipe.addEventListener("input", () => stage.setWipe(Number(els.wipe.value) / 1000));
  const pointer = new PointerInput(stage, els);
  const surface = els.stage;
  surface.addEventListener("pointerdown", (e) => pointer.down(e));
  surface.addEventListener("pointermove", (e) => pointer.move(e));
  for (const type of ["pointerup", "pointercancel"]) {
    surface.addEventListener(type, (e) => pointer.up(e));
  }
  surface.addEventListener("wheel", (e) => wheel(stage, els, e), { passive: false });
  surface.addEventListener("dblclick", (e) => {
    if (stage.zoom === 1) stage.oneToOne(pointOf(els, e));
    else stage.fit();
  });
  surface.addEventListener("keydown", (e) => key(stage, e));
}

function pointOf(els, event) {
  const box = els.canvas.getBoundingClientRect();
  return { x: event.clientX - box.left, y: event.clientY - box.top };
}

function wheel(stage, els, event) {
  if (!stage.before) return;
  event.preventDefault();
  const delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
  stage.zoomBy(Math.exp(-delta * 0.0015), pointOf(els, event));
}

function key(stage, event) {
  if (event.altKey || event.ctrlKey || event.metaKey || !stage.before) return;
  const step = event.shiftKey ? PAN_STEP * 4 : PAN_STEP;
  const actions = {
    "+": () => stage.zoomBy(ZOOM_STEP),
    "=": () => stage.zoomBy(ZOOM_STEP),
    "-": () => stage.zoomBy(1 / ZOOM_STEP),
    0: () => stage.fit(),
    1: () => stage.oneToOne(),
    ArrowLeft: () => stage.panBy(step, 0),
    ArrowRight: () => stage.panBy(-step, 0),
    ArrowUp: () => stage.panBy(0, step),
    ArrowDown: () => stage.panBy(0, -step),
    w: () => stage.setMode("wipe"),
    s: () => stage.setMode("side"),
    m: () => stage.tint && stage.setMask(!stage.showMask),
  };
  const action = actions[event.key] ?? actions[event.key.toLowerCase?.()];
  if (!action) return;
  event.preventDefault();
  action();
}

/** Drags and pinches: which pointers are down and what they are doing. */
class PointerInput {
  constructor(stage, els) {
    this.stage = stage;
    this.els = els;
    this.pointers = new Map();
    this.drag = null;
  }

  down(event) {
    const { stage, els } = this;
    if (!stage.before) return;
    els.stage.focus({ preventScroll: true });
    try {
      els.stage.setPointerCapture(event.pointerId);
    } catch {
      // a synthetic pointer (tests, some assistive tech) cannot be captured
    }
    const point = pointOf(els, event);
    this.pointers.set(event.pointerId, point);
    if (this.pointers.size === 2) {
      this.drag = { kind: "pinch", ...this.#pinch() };
    } else if (stage.nearHandle(point.x)) {
      this.drag = { kind: "wipe" };
    } else {
      this.drag = { kind: "pan", last: point };
      els.stage.classList.add("panning");
    }
    event.preventDefault();
  }

  move(event) {
    const { stage, els } = this;
    const point = pointOf(els, event);
    if (!this.drag) {
      els.stage.classList.toggle("near-wipe", stage.nearHandle(point.x));
      return;
    }
    if (!this.pointers.has(event.pointerId)) return;
    this.pointers.set(event.pointerId, point);
    if (this.drag.kind === "wipe") {
      stage.setWipe(point.x / stage.size.width);
    } else if (this.drag.kind === "pan") {
      stage.panBy(point.x - this.drag.last.x, point.y - this.drag.last.y);
      this.drag.last = point;
    } else if (this.drag.kind === "pinch" && this.pointers.size === 2) {
      const now = this.#pinch();
      stage.panBy(now.mid.x - this.drag.mid.x, now.mid.y - this.drag.mid.y);
      if (this.drag.distance > 0) stage.zoomBy(now.distance / this.drag.distance, now.mid);
      Object.assign(this.drag, now);
    }
  }

  up(event) {
    this.pointers.delete(event.pointerId);
    if (this.pointers.size === 1 && this.drag?.kind === "pinch") {
      this.drag = { kind: "pan", last: [...this.pointers.values()][0] };
      return;
    }
    if (this.pointers.size === 0) {
      this.drag = null;
      this.els.stage.classList.remove("panning");
    }
  }

  #pinch() {
    const [a, b] = [...this.pointers.values()];
    return {
      mid: { x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 },
      distance: Math.hypot(a.x - b.x, a.y - b.y),
    };
  }
}
