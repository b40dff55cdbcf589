// How the compare stage (ui/compare-stage.js) draws: its layers (a picture on a canvas of
// its own; for background removal, the removed area as a tint), the one rule that places
// every layer (fitted to the pane, scaled by the view's zoom around its (u, v)), and a frame:
// the backdrop, the picture in each pane (wiped or side by side) and the wipe handle.

import { el } from "./dom.js";

/** A picture on a canvas of its own; it stands for one `scale` times as big (a display copy). */
export function layerOf(img, scale = 1) {
  const surface = el("canvas", { width: img.width, height: img.height });
  const data = new ImageData(new Uint8ClampedArray(img.data), img.width, img.height);
  surface.getContext("2d").putImageData(data, 0, 0);
  return { surface, width: img.width, height: img.height, scale };
}

/** The removed area of a cut-out as a tint: alpha 0 -> strong, 255 -> none. Null if opaque. */
export function maskOf(img) {
  const { width, height, data } = img;
  const tint = new Uint8ClampedArray(width * height * 4);
  let any = false;
  for (let i = 0; i < data.length; i += 4) {
    const removed = 255 - data[i + 3];
    if (removed) any = true;
    tint[i] = 255;
    tint[i + 1] = 0;
    tint[i + 2] = 170;
    tint[i + 3] = Math.round(removed * 0.6);
  }
  return any ? { width, height, data: tint } : null;
}

/** A layer's size in the picture it stands for (a display copy counts at its `scale`). */
export function logicalSize(layer) {
  return { lw: layer.width * layer.scale, lh: layer.height * layer.scale };
}

/** CSS px per logical pixel of `layer` when it fits `pane` (zoom 1). */
export function fitScale(layer, pane) {
  const { lw, lh } = logicalSize(layer);
  return Math.min(pane.w / lw, pane.h / lh);
}

/** CSS px per logical pixel of `layer` in `pane` at `zoom`. */
export function scaleIn(layer, pane, zoom) {
  return fitScale(layer, pane) * zoom;
}

/** Draw `stage`'s view onto its canvas, now. */
export function paintStage(stage) {
  const { ctx } = stage;
  const { dpr } = stage.size;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, stage.size.width, stage.size.height);
  if (!stage.before) return;
  for (const pane of stage.panes()) {
    ctx.save();
    ctx.beginPath();
    ctx.rect(pane.x, pane.y, pane.w, pane.h);
    ctx.clip();
    paintBackdrop(stage, pane);
    if (pane.layers.length === 2) paintWipe(stage, pane);
    else paintLayer(stage, pane, pane.layers[0]);
    ctx.restore();
  }
  if (stage.mode === "wipe" && stage.after) paintHandle(stage);
}

function paintWipe(stage, pane) {
  const split = stage.wipeX();
  const { ctx } = stage;
  ctx.save();
  ctx.beginPath();
  ctx.rect(pane.x, pane.y, split - pane.x, pane.h);
  ctx.clip();
  paintLayer(stage, pane, "before");
  ctx.restore();
  ctx.save();
  ctx.beginPath();
  ctx.rect(split, pane.y, pane.x + pane.w - split, pane.h);
  ctx.clip();
  paintLayer(stage, pane, "after");
  ctx.restore();
}

function paintLayer(stage, pane, which) {
  const layer = which === "before" ? stage.before : stage.after;
  place(stage, pane, layer);
  if (which === "before" && stage.showMask && stage.tint) place(stage, pane, stage.tint);
}

function place(stage, pane, layer) {
  const { ctx, view } = stage;
  const k = scaleIn(layer, pane, view.zoom);
  const { lw, lh } = logicalSize(layer);
  const x = pane.x + pane.w / 2 - view.u * lw * k;
  const y = pane.y + pane.h / 2 - view.v * lh * k;
  // Smooth when shrinking, sharp pixels when magnifying: a blur kernel must be judged
  // on the real pixels.
  ctx.imageSmoothingEnabled = k * layer.scale * stage.size.dpr < 1;
  ctx.drawImage(layer.surface, x, y, lw * k, lh * k);
}

function paintBackdrop(stage, pane) {
  const { ctx } = stage;
  if (stage.backdrop === "checker") {
    ctx.fillStyle = checker(stage);
  } else {
    ctx.fillStyle = stage.backdrop === "black" ? "#000" : "#fff";
  }
  ctx.fillRect(pane.x, pane.y, pane.w, pane.h);
}

/** The checkerboard fill, made again only when the theme's colours change. */
function checker(stage) {
  const styles = getComputedStyle(document.documentElement);
  const a = styles.getPropertyValue("--checker-a").trim() || "#fff";
  const b = styles.getPropertyValue("--checker-b").trim() || "#e6e8ec";
  if (stage.pattern?.key !== a + b) {
    const tile = el("canvas", { width: 16, height: 16 });
    const t = tile.getContext("2d");
    t.fillStyle = a;
    t.fillRect(0, 0, 16, 16);
    t.fillStyle = b;
    t.fillRect(0, 0, 8, 8);
    t.fillRect(8, 8, 8, 8);
    stage.pattern = { key: a + b, fill: stage.ctx.createPattern(tile, "repeat") };
  }
  return stage.pattern.fill;
}

function paintHandle(stage) {
  const { ctx } = stage;
  const x = stage.wipeX();
  const h = stage.size.height;
  ctx.save();
  ctx.fillStyle = "rgb(0 0 0 / 35%)";
  ctx.fillRect(x - 2, 0, 4, h);
  ctx.fillStyle = "#fff";
  ctx.fillRect(x - 1, 0, 2, h);
  ctx.beginPath();
  ctx.arc(x, h / 2, 11, 0, 2 * Math.PI);
  ctx.fill();
  ctx.strokeStyle = "#1d2430";
  ctx.lineWidth = 2;
  ctx.stroke();
  ctx.fillStyle = "#1d2430";
  for (const dir of [-1, 1]) {
    ctx.beginPath();
    ctx.moveTo(x + dir * 3, h / 2 - 5);
    ctx.lineTo(x + dir * 8, h / 2);
    ctx.lineTo(x + dir * 3, h / 2 + 5);
    ctx.fill();
  }
  ctx.font = "600 12px system-ui, sans-serif";
  label(ctx, "Original", 8, "left");
  label(ctx, "Result", stage.size.width - 8, "right");
  ctx.restore();
}

function label(ctx, text, x, align) {
  ctx.textAlign = align;
  const width = ctx.measureText(text).width;
  const left = align === "left" ? x - 4 : x - width - 4;
  ctx.fillStyle = "rgb(0 0 0 / 60%)";
  ctx.fillRect(left, 6, width + 8, 18);
  ctx.fillStyle = "#fff";
  ctx.fillText(text, x, 19);
}
