// Live previews while a slider is dragged: browser ops run on every `input` event, on a
// display-sized copy of a big image (at most LIVE_SIDE pixels on its long side), and are
// painted as they come; the full-size preview runs on release (app.js). Runs share one
// taskId of their own in the worker pool, so a newer value replaces the older ones still
// waiting and at most one runs per worker: the picture follows the slider without a queue.
//
// On the copy, params measured in pixels are scaled with it (resize's sides, blur's
// kernel, kept odd where the server wants it odd), so the copy looks like the full
// result. Pipelines with server-only steps have no live preview: their job starts on
// release.

import { enabledSteps } from "../cachekey.js";
import { Superseded } from "../worker-pool.js";

export const LIVE_SIDE = 1024;

/** A copy of `img` whose long side is at most `side` (and the factor used), via a canvas. */
export async function displayCopy(img, side = LIVE_SIDE) {
  const factor = Math.min(1, side / Math.max(img.width, img.height));
  if (factor === 1) return { image: img, factor };
  const width = Math.max(1, Math.round(img.width * factor));
  const height = Math.max(1, Math.round(img.height * factor));
  const source = new ImageData(new Uint8ClampedArray(img.data), img.width, img.height);
  const bitmap = await createImageBitmap(source, {
    resizeWidth: width,
    resizeHeight: height,
    resizeQuality: "medium",
    premultiplyAlpha: "none",
  });
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  return { image: { width, height, data: ctx.getImageData(0, 0, width, height).data }, factor };
}

/** `params` with each of `names` (params that must be odd) made odd by adding 1. */
function keepOdd(params, names = []) {
  const out = { ...params };
  for (const name of names) if (out[name] % 2 === 0) out[name] += 1;
  return out;
}

/**
 * The steps with their pixel-measured params scaled by `factor` (for the display copy);
 * `oddParams`: per op, the params the server wants odd (GET /api/pipelines `constants`).
 */
export function scaledSteps(steps, factor, oddParams = {}) {
  if (factor === 1) return steps;
  const side = (n) => (n == null ? n : Math.max(1, Math.round(n * factor)));
  return steps.map(({ name, params }) => {
    if (name === "resize")
      return {
        name,
        params: { ...params, width: side(params.width), height: side(params.height) },
      };
    if (name === "blur") {
      const kernelSize = Math.max(1, Math.round(params.kernelSize * factor));
      return { name, params: keepOdd({ ...params, kernelSize }, oddParams[name]) };
    }
    return { name, params };
  });
}

export class LivePreview {
  constructor({ pool, stage, taskId, oddParams, onPaint }) {
    Object.assign(this, { pool, stage, oddParams, onPaint });
    this.taskId = `${taskId}-live`;
    this.copy = null; // {image, factor} of the current image
    this.latest = 0; // the newest value asked for
    this.painted = 0; // the newest value painted
    this.stopped = 0; // values up to this one must not paint (the drag ended)
  }

  /** A new image: make its display copy (a live preview waits for it). */
  async setImage(pixels) {
    this.copy = null;
    this.ready = pixels ? displayCopy(pixels) : null;
    this.copy = await this.ready;
  }

  /** Whether `pipeline` with `params` can run live here (every step a browser op). */
  possible(pipeline, params, { server }) {
    if (!this.pool || server) return false;
    const clientOps = new Set(pipeline.ops.filter((op) => op.client).map((op) => op.name));
    const steps = enabledSteps(pipeline, params);
    return steps.length > 0 && steps.every((s) => clientOps.has(s.name) && s.name !== "rembg");
  }

  /** Run `params` on the display copy; paints unless a newer value came first. */
  async update(pipeline, params, id) {
    const n = ++this.latest;
    const copy = this.copy ?? (await this.ready);
    if (!copy || n !== this.latest) return;
    const steps = scaledSteps(enabledSteps(pipeline, params), copy.factor, this.oddParams);
    try {
      const { image } = await this.pool.run(this.taskId, steps, copy.image);
      // Paint anything newer than what is shown, not only the newest value: while the
      // slider moves faster than a run, the picture must still follow it.
      if (n <= this.painted || this.stopped >= n) return;
      this.painted = n;
      this.stage.showLive(image, 1 / copy.factor);
      this.onPaint(id);
    } catch (error) {
      if (!(error instanceof Superseded)) console.warn("live preview:", error.message);
    }
  }

  /** The drag ended: late live answers must not paint over the full preview. */
  stop() {
    this.stopped = this.latest;
  }
}
