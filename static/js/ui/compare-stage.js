// The compare stage: the original and the result on one canvas, as a wipe (a handle splits
// the view: original on the left, result on the right) or side by side, with one zoom and
// pan shared by both, a 1:1 view (one result pixel per device pixel), a backdrop for
// transparent results (checkerboard, black, white) and, for background removal, the
// removed area tinted over the original.
//
// The view is {zoom, u, v}: zoom 1 fits the picture in its pane; (u, v) is the point of the
// picture (0..1 across and down) at the pane's centre. Every layer is drawn fitted to the
// pane and scaled by the same zoom around the same (u, v), so a resized result lines up with
// its original. A layer may stand for a bigger picture (`scale`): a live preview computed on
// a display-sized copy is drawn at the full result's size.
//
// Mouse, touch and keyboard: ui/stage-input.js; the layers and their drawing:
// ui/stage-paint.js. Implements the Viewer interface the previewer paints through
// (showOriginal, showResult, clearResult).

import { bindStageInput } from "./stage-input.js";
import { fitScale, layerOf, logicalSize, maskOf, paintStage, scaleIn } from "./stage-paint.js";

const GAP = 8; // between the two panes, CSS px
const MAX_ZOOM = 64;
const MIN_ZOOM = 0.1;
const WIPE_GRAB = 14; // CSS px around the handle that grab it instead of panning

const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));

export class CompareStage {
  /**
   * @param {object} els {stage, canvas, placeholder, wipe, zoomLevel, modeWipe, modeSide,
   *   zoomIn, zoomOut, fit, oneToOne, backdrop, mask, beforeCaption, afterCaption}
   */
  constructor(els) {
    this.els = els;
    this.ctx = els.canvas.getContext("2d");
    this.before = null; // layer
    this.after = null; // layer
    this.tint = null; // layer: the removed area of `after`
    this.afterPixels = null; // the full result's pixels (downloads read them)
    this.view = { zoom: 1, u: 0.5, v: 0.5 };
    this.mode = "wipe";
    this.wipe = 0.5;
    this.backdrop = "checker";
    this.showMask = false;
    this.paints = 0; // results painted (full or live), for tests
    this.livePaints = 0;
    this.outlinePaints = 0; // outlines painted, for tests
    this.listeners = new Set(); // view changes (overlays follow)
    this.frame = 0;
    this.size = { width: 0, height: 0, dpr: 1 };
    this.pattern = null; // the checkerboard's fill, kept by ui/stage-paint.js
    bindStageInput(this, els);
    new ResizeObserver(() => this.#resize()).observe(els.stage);
    this.#resize();
  }

  // --- the Viewer interface --------------------------------------------------------------

  showOriginal(img) {
    this.before = layerOf(img);
    this.after = null;
    this.tint = null;
    this.afterPixels = null;
    this.view = { zoom: 1, u: 0.5, v: 0.5 };
    this.els.beforeCaption.textContent = `Original ${img.width}×${img.height}`;
    this.#changed();
  }

  /** Show a result; `meta` = {source, ms}. */
  showResult(img, meta) {
    this.#setAfter(img, 1);
    this.afterPixels = img;
    this.live = false;
    const parts = [`Result ${img.width}×${img.height}`, meta.source];
    if (meta.ms != null) parts.push(`${meta.ms.toFixed(0)} ms`);
    this.els.afterCaption.textContent = parts.join(" · ");
    this.els.canvas.dataset.source = meta.source;
    this.paints += 1;
    this.#changed();
  }

  /** A live preview computed on a display-sized copy: drawn at the full result's size. */
  showLive(img, scale) {
    this.#setAfter(img, scale);
    this.live = true;
    this.els.afterCaption.textContent = `Live preview · display copy ${img.width}×${img.height}`;
    this.paints += 1;
    this.livePaints += 1;
    this.#changed();
  }

  /** A server job's outline (its cut-out at <= 256 px), drawn at the result's size. */
  showOutline(img, scale) {
    this.#setAfter(img, scale);
    this.afterPixels = null;
    this.live = false;
    const size = `${img.width}×${img.height}`;
    this.els.afterCaption.textContent = `Outline · ${size}, the full result is on its way`;
    this.els.canvas.dataset.source = "outline";
    this.outlinePaints += 1;
    this.#changed();
  }

  /** No result to show (yet): the original alone. */
  clearResult(message) {
    this.after = null;
    this.tint = null;
    this.afterPixels = null;
    this.els.afterCaption.textContent = message ?? "";
    delete this.els.canvas.dataset.source;
    this.#changed();
  }

  get hasResult() {
    return this.after !== null;
  }

  // --- the view --------------------------------------------------------------------------

  setMode(mode) {
    this.mode = mode === "side" ? "side" : "wipe";
    this.#changed();
  }

  setWipe(fraction) {
    this.wipe = clamp(fraction, 0, 1);
    this.#changed();
  }

  setBackdrop(name) {
    this.backdrop = ["checker", "black", "white"].includes(name) ? name : "checker";
    this.#changed();
  }

  setMask(on) {
    this.showMask = Boolean(on);
    this.#changed();
  }

  fit() {
    this.view = { zoom: 1, u: 0.5, v: 0.5 };
    this.#changed();
  }

  /** One result pixel per device pixel, keeping the point at the centre (or `at`). */
  oneToOne(at = null) {
    const pane = this.panes()[0];
    const ref = this.#reference();
    if (!pane || !ref) return;
    const target = 1 / (fitScale(ref, pane) * this.size.dpr * ref.scale);
    this.zoomBy(target / this.view.zoom, at);
  }

  /** Zoom by `factor` around `at` ({x, y} in CSS px of the canvas; default: the centre). */
  zoomBy(factor, at = null) {
    const pane = at ? this.#paneAt(at.x) : this.panes()[0];
    const ref = this.#reference();
    if (!pane || !ref) return;
    const point = at ?? { x: pane.x + pane.w / 2, y: pane.y + pane.h / 2 };
    const before = this.#toPicture(ref, pane, point);
    this.view.zoom = clamp(this.view.zoom * factor, MIN_ZOOM, MAX_ZOOM);
    const k = this.#scale(ref, pane);
    const { lw, lh } = logicalSize(ref);
    this.view.u = clamp(before.u - (point.x - (pane.x + pane.w / 2)) / (lw * k), 0, 1);
    this.view.v = clamp(before.v - (point.y - (pane.y + pane.h / 2)) / (lh * k), 0, 1);
    this.#changed();
  }

  /** Move the picture by (dx, dy) CSS px. */
  panBy(dx, dy) {
    const pane = this.panes()[0];
    const ref = this.#reference();
    if (!pane || !ref) return;
    const k = this.#scale(ref, pane);
    const { lw, lh } = logicalSize(ref);
    this.view.u = clamp(this.view.u - dx / (lw * k), 0, 1);
    this.view.v = clamp(this.view.v - dy / (lh * k), 0, 1);
    this.#changed();
  }

  /** The state tests and overlays read: {mode, zoom, scale, u, v, wipe, backdrop, mask, ...}. */
  get state() {
    const ref = this.#reference();
    const pane = this.panes()[0];
    const scale = ref && pane ? this.#scale(ref, pane) * ref.scale : null;
    return {
      mode: this.mode,
      zoom: this.view.zoom,
      u: this.view.u,
      v: this.view.v,
      scale, // CSS px per full-result pixel
      pixelRatio: scale && scale * this.size.dpr, // device px per full-result pixel
      wipe: this.wipe,
      backdrop: this.backdrop,
      mask: this.showMask,
      maskAvailable: Boolean(this.tint),
      paints: this.paints,
      livePaints: this.livePaints,
      outlinePaints: this.outlinePaints,
      live: Boolean(this.live),
      width: this.size.width,
      height: this.size.height,
    };
  }

  /** [{x, y, w, h, layers}] in CSS px: one pane (wipe) or two (side by side). */
  panes() {
    const { width: w, height: h } = this.size;
    if (!w || !h) return [];
    if (this.mode === "side" && this.after) {
      const half = (w - GAP) / 2;
      return [
        { x: 0, y: 0, w: half, h, layers: ["before"] },
        { x: half + GAP, y: 0, w: half, h, layers: ["after"] },
      ];
    }
    return [{ x: 0, y: 0, w, h, layers: this.after ? ["before", "after"] : ["before"] }];
  }

  /**
   * Where picture pixel (px, py) of the original lands on screen, in the first pane that
   * shows the original: {x, y, k} with k the CSS px per original pixel. For overlays.
   */
  originalToScreen(px, py) {
    const pane = this.panes()[0];
    if (!pane || !this.before) return null;
    const k = this.#scale(this.before, pane);
    const cx = pane.x + pane.w / 2;
    const cy = pane.y + pane.h / 2;
    return {
      x: cx + (px - this.view.u * this.before.width) * k,
      y: cy + (py - this.view.v * this.before.height) * k,
      k,
    };
  }

  onView(listener) {
    this.listeners.add(listener);
  }

  /** The canvas pixel at (x, y) CSS px, as [r, g, b, a] (for tests). */
  pixelAt(x, y) {
    paintStage(this);
    const { dpr } = this.size;
    return [...this.ctx.getImageData(Math.floor(x * dpr), Math.floor(y * dpr), 1, 1).data];
  }

  // --- geometry ----------------------------------------------------------------------------

  #reference() {
    return this.after ?? this.before;
  }

  /** CSS px per logical pixel of `layer` in `pane`. */
  #scale(layer, pane) {
    return scaleIn(layer, pane, this.view.zoom);
  }

  #toPicture(layer, pane, point) {
    const k = this.#scale(layer, pane);
    const { lw, lh } = logicalSize(layer);
    return {
      u: this.view.u + (point.x - (pane.x + pane.w / 2)) / (lw * k),
      v: this.view.v + (point.y - (pane.y + pane.h / 2)) / (lh * k),
    };
  }

  #paneAt(x) {
    const panes = this.panes();
    return panes.find((p) => x >= p.x && x <= p.x + p.w) ?? panes[0];
  }

  /** Where the wipe handle is, in CSS px from the canvas's left edge. */
  wipeX() {
    return this.size.width * this.wipe;
  }

  /** Whether (x, y) grabs the wipe handle rather than the picture. */
  nearHandle(x) {
    return this.mode === "wipe" && Boolean(this.after) && Math.abs(x - this.wipeX()) < WIPE_GRAB;
  }

  get zoom() {
    return this.view.zoom;
  }

  // --- changes -----------------------------------------------------------------------------

  #setAfter(img, scale) {
    this.after = layerOf(img, scale);
    const tint = maskOf(img);
    this.tint = tint && layerOf(tint, scale);
    this.els.mask.disabled = !this.tint;
  }

  #changed() {
    this.#syncControls();
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        paintStage(this);
      });
    }
    for (const listener of this.listeners) listener(this);
  }

  #resize() {
    const { stage, canvas } = this.els;
    const dpr = window.devicePixelRatio || 1;
    const width = stage.clientWidth;
    const height = stage.clientHeight;
    this.size = { width, height, dpr };
    canvas.width = Math.max(1, Math.round(width * dpr));
    canvas.height = Math.max(1, Math.round(height * dpr));
    this.#changed();
  }

  #syncControls() {
    const { els } = this;
    const state = this.state;
    els.placeholder.hidden = Boolean(this.before);
    els.modeWipe.setAttribute("aria-pressed", String(this.mode === "wipe"));
    els.modeSide.setAttribute("aria-pressed", String(this.mode === "side"));
    els.wipe.disabled = !(this.after && this.mode === "wipe");
    els.wipe.value = String(Math.round(this.wipe * 1000));
    const left = Math.round(this.wipe * 100);
    els.wipe.setAttribute("aria-valuetext", `${left}% original, ${100 - left}% result`);
    els.zoomLevel.value =
      state.pixelRatio == null ? "fit" : `${Math.round(state.pixelRatio * 100)}%`;
    els.mask.checked = this.showMask && Boolean(this.tint);
  }
}
