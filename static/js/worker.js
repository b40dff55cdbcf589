// One Web Worker of the pool (workers.js): decodes uploads and runs client ops.
//
// Messages in:  {type: "decode", id, taskId, blob}
//               {type: "run", id, taskId, steps: [{name, params}], image: {width, height, data}}
// Messages out: {type: "done", id, taskId, image, durations}
//               {type: "failed", id, taskId, detail}
// Every message carries the taskId of the form session that asked, so the page can tell
// stale answers from current ones and report per-task telemetry.

import { applyOp } from "./ops.js";

async function decode(blob) {
  // createImageBitmap applies the EXIF orientation like the server's exif_transpose;
  // no colour conversion and no premultiplication, so the pixels are the file's own.
  const bitmap = await createImageBitmap(blob, {
    colorSpaceConversion: "none",
    premultiplyAlpha: "none",
  });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const { width, height, data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
  return { width, height, data };
}

function run(steps, image) {
  const durations = {};
  let img = { width: image.width, height: image.height, data: new Uint8ClampedArray(image.data) };
  for (const step of steps) {
    const started = performance.now();
    img = applyOp(step.name, step.params, img);
    durations[`op.${step.name}`] = performance.now() - started;
  }
  return { img, durations };
}

self.onmessage = async (event) => {
  const { type, id, taskId } = event.data;
  const started = performance.now();
  try {
    let image;
    let durations = {};
    if (type === "decode") {
      image = await decode(event.data.blob);
      durations.decode = performance.now() - started;
    } else if (type === "run") {
      ({ img: image, durations } = run(event.data.steps, event.data.image));
      durations.ops = performance.now() - started;
    } else {
      throw new Error(`unknown message type ${JSON.stringify(type)}`);
    }
    // Transfer, not copy: the worker has no further use for the pixels.
    self.postMessage({ type: "done", id, taskId, image, durations }, [image.data.buffer]);
  } catch (error) {
    self.postMessage({ type: "failed", id, taskId, detail: String(error?.message ?? error) });
  }
};
