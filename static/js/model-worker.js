// The page's model worker: rembg's u2netp through onnxruntime-web, WebGPU where the browser
// has it, WASM otherwise (threads when the page is cross-origin isolated). One session, one
// run at a time; rembg.js queues the requests.
//
// Messages in:  {type: "init", model, modelUrl, runtimeUrl, threads}
//               {type: "remove", id, taskId, maskKey, image, params}
// Messages out: {type: "ready", backend, threads, model, cached, loadMs}
//               {type: "unavailable", detail}
//               {type: "done", id, taskId, image, timings, inferred, runs, masks}
//               {type: "failed", id, taskId, detail}
//
// The model file comes from the server (GET /models/u2netp.onnx) once and is kept in Cache
// Storage, so a reload reads it from there: the server's route is not asked again.
// The mask of an input is kept under the caller's `maskKey` (image bytes, the steps before
// rembg, the model): moving only strength, bgcolor or only_mask re-blends it, no new run.

import { finish, maskFromPrediction, U2NETP, u2netpInput } from "./rembg-ops.js";

const MODEL_CACHE = "playground-rt-models-v1";
const MASK_BYTES = 64 * 1024 * 1024; // masks kept, by their bytes (one a pixel)

let ort = null;
let session = null;
let runs = 0;
const masks = new Map(); // maskKey -> Uint8ClampedArray (LRU: the Map's order)
let maskBytes = 0;

async function modelBytes(url) {
  const store = typeof caches !== "undefined" ? await caches.open(MODEL_CACHE) : null;
  const hit = store && (await store.match(url));
  if (hit) return { bytes: new Uint8Array(await hit.arrayBuffer()), cached: true };
  const response = await fetch(url);
  if (!response.ok) {
    const detail = await response.text().catch(() => "");
    throw new Error(`model ${url}: HTTP ${response.status} ${detail.slice(0, 200)}`);
  }
  if (store) await store.put(url, response.clone());
  return { bytes: new Uint8Array(await response.arrayBuffer()), cached: false };
}

async function webgpuUsable() {
  try {
    return Boolean(self.navigator?.gpu && (await self.navigator.gpu.requestAdapter()));
  } catch {
    return false;
  }
}

async function loadRuntime(runtimeUrl, backend) {
  const url = `${runtimeUrl}${backend === "webgpu" ? "ort.webgpu.min.mjs" : "ort.wasm.min.mjs"}`;
  try {
    return await import(url);
  } catch (error) {
    const status = await fetch(url, { method: "HEAD" }).then((r) => r.status, () => 0);
    const why = status === 404 ? "not installed on the server (npm ci)" : error.message;
    throw new Error(`the onnxruntime-web runtime could not be loaded: ${why}`);
  }
}

function openSession(bytes, backend) {
  return ort.InferenceSession.create(bytes, {
    executionProviders: [backend],
    graphOptimizationLevel: "all",
  });
}

async function init({ model, modelUrl, runtimeUrl, threads }) {
  const started = performance.now();
  if (typeof WebAssembly === "undefined") throw new Error("no WebAssembly in this browser");
  let backend = (await webgpuUsable()) ? "webgpu" : "wasm";
  ort = await loadRuntime(runtimeUrl, backend);
  ort.env.wasm.wasmPaths = runtimeUrl;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = false; // this is already a worker
  ort.env.logLevel = "error";
  const { bytes, cached } = await modelBytes(modelUrl);
  try {
    session = await openSession(bytes, backend);
  } catch (error) {
    if (backend !== "webgpu") throw error;
    backend = "wasm"; // an adapter that cannot run the model: the bundle's WASM still can
    session = await openSession(bytes, backend);
  }
  const loadMs = performance.now() - started;
  return { backend, threads: backend === "wasm" ? threads : 0, model, cached, loadMs };
}

function remember(key, mask) {
  masks.set(key, mask);
  maskBytes += mask.length;
  while (maskBytes > MASK_BYTES && masks.size > 1) {
    const [oldest, value] = masks.entries().next().value;
    masks.delete(oldest);
    maskBytes -= value.length;
  }
}

async function infer(image) {
  const t0 = performance.now();
  const input = u2netpInput(image);
  const side = U2NETP.side;
  const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", input, [1, 3, side, side]) };
  const t1 = performance.now();
  const first = session.outputNames[0];
  const outputs = await session.run(feeds, [first]);
  runs += 1;
  const pred = await outputs[first].getData();
  const t2 = performance.now();
  const mask = maskFromPrediction(pred, side, image.width, image.height);
  const t3 = performance.now();
  return { mask, timings: { pre: t1 - t0, infer: t2 - t1, post: t3 - t2 } };
}

async function remove({ maskKey, image, params }) {
  let mask = masks.get(maskKey);
  let timings = {};
  const inferred = !mask;
  if (mask) {
    masks.delete(maskKey); // re-insert: most recently used last
    masks.set(maskKey, mask);
  } else {
    ({ mask, timings } = await infer(image));
    remember(maskKey, mask);
  }
  const started = performance.now();
  const result = finish(image, mask, params);
  timings.blend = performance.now() - started;
  return { image: result, timings, inferred };
}

let chain = Promise.resolve();

self.onmessage = (event) => {
  const message = event.data;
  // One message at a time, in order: a run must not interleave with another's.
  chain = chain.then(() => handle(message));
};

async function handle(message) {
  const { type, id, taskId } = message;
  if (type === "init") {
    try {
      self.postMessage({ type: "ready", ...(await init(message)) });
    } catch (error) {
      self.postMessage({ type: "unavailable", detail: String(error?.message ?? error) });
    }
    return;
  }
  try {
    if (type !== "remove") throw new Error(`unknown message type ${JSON.stringify(type)}`);
    if (!session) throw new Error("the model is not loaded");
    const { image, timings, inferred } = await remove(message);
    const reply = { type: "done", id, taskId, image, timings, inferred, runs };
    self.postMessage({ ...reply, masks: [...masks.keys()] }, [image.data.buffer]);
  } catch (error) {
    self.postMessage({ type: "failed", id, taskId, detail: String(error?.message ?? error) });
  }
}
