// One Web Worker of the pool (worker-pool.js): decodes uploads and runs client ops.
//
// Messages in:  {type: "decode", id, taskId, blob}
//               {type: "run", id, taskId, steps: [{name, params}], image: {width, height, data},
//                limits}   (the server's limits: resize checks max_side)
// Messages out: {type: "done", id, taskId, image, durations}
//               {type: "failed", id, taskId, detail}
// Every message carries the taskId of the form session that asked, so the page can tell
// stale answers from current ones and report per-task telemetry. A decoded image carries
// `translucent` (imaging.js: the canvas lost its colours under alpha, so the page sends
// its requests to the server).

import { decodeBlob as decode } from "./imaging.js";
import { applyOp } from "./ops.js";

function run(steps, image, limits) {
  const durations = {};
  let img = { width: image.width, height: image.height, data: new Uint8ClampedArray(image.data) };
  for (const step of steps) {
    const started = performance.now();
    img = applyOp(step.name, step.params, img, limits);
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
      ({ img: image, durations } = run(event.data.steps, event.data.image, event.data.limits));
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
