// The page's side of the model worker (model-worker.js): start it, queue background removals
// (one runs at a time; a newer request of the same taskId replaces its queued ones), and
// keep what placement.js needs: whether the runtime loaded (and why not), the backend and
// threads, the measured time per model, and how many times the model ran.

import { Superseded } from "./worker-pool.js";

const RECENT = 10; // measured runs kept per model for the averages
export const MODEL_URL = (model) => `/models/${encodeURIComponent(model)}.onnx`;
export const RUNTIME_URL = "/vendor/onnxruntime-web/";

/** WASM threads: all cores up to 4 when the page is cross-origin isolated, else one. */
export function wasmThreads() {
  if (!globalThis.crossOriginIsolated) return 1;
  return Math.min(4, Math.max(1, navigator.hardwareConcurrency ?? 1));
}

function mean(values) {
  return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
}

export class RembgWorker {
  constructor({ model = "u2netp", url = new URL("./model-worker.js", import.meta.url) } = {}) {
    this.model = model;
    this.state = "loading"; // loading -> ready | unavailable
    this.detail = null; // why unavailable
    this.backend = null; // "wasm" | "webgpu"
    this.threads = 0;
    this.loadMs = null;
    this.modelCached = null; // the model came from Cache Storage
    this.runs = 0; // model runs (not re-blends)
    this.blends = 0; // results from a kept mask
    this.last = null; // {timings: {pre, infer, post, blend} ms, inferred} of the last result
    this.masks = new Set(); // mask keys the worker holds
    this.queue = []; // [{message, resolve, reject}]
    this.current = null;
    this.nextId = 1;
    this.recent = { infer: [], model: [], blend: [] }; // ms
    this.worker = new Worker(url, { type: "module" });
    this.worker.onmessage = (event) => this.#receive(event.data);
    this.worker.onerror = (event) => this.#unavailable(event.message || "model worker failed");
    this.ready = new Promise((resolve) => (this.#settleReady = resolve));
    this.worker.postMessage({
      type: "init",
      model,
      modelUrl: MODEL_URL(model),
      runtimeUrl: RUNTIME_URL,
      threads: wasmThreads(),
    });
  }

  #settleReady;

  get available() {
    return this.state === "ready";
  }

  get queued() {
    return this.queue.length;
  }

  get running() {
    return this.current ? 1 : 0;
  }

  /** Mean measured times (ms): `infer` (the run), `model` (resize + run + mask), `blend`. */
  measured() {
    return {
      infer: mean(this.recent.infer),
      model: mean(this.recent.model),
      blend: mean(this.recent.blend),
    };
  }

  hasMask(key) {
    return this.masks.has(key);
  }

  /**
   * Remove the background of `image` ({width, height, data}) with the rembg `params`; the
   * mask is kept under `maskKey`. Resolves {image, timings, inferred}.
   */
  remove(taskId, { image, maskKey, params }) {
    for (const task of this.queue.filter((t) => t.message.taskId === taskId)) {
      task.reject(new Superseded(taskId));
    }
    this.queue = this.queue.filter((t) => t.message.taskId !== taskId);
    const copy = { width: image.width, height: image.height, data: image.data.slice() };
    return new Promise((resolve, reject) => {
      const message = { type: "remove", id: this.nextId++, taskId, maskKey, image: copy, params };
      this.queue.push({ message, resolve, reject });
      this.#pump();
    });
  }

  /** Figures for the telemetry report: {model: {backend, threads, infer_ms, runs}}. */
  report() {
    if (!this.available) return {};
    const { infer } = this.measured();
    const figures = { backend: this.backend, threads: this.threads, runs: this.runs };
    if (infer != null) figures.infer_ms = Math.round(infer * 1000) / 1000;
    return { [this.model]: figures };
  }

  #pump() {
    if (this.current || !this.queue.length) return;
    if (this.state === "unavailable") {
      for (const task of this.queue.splice(0)) task.reject(new Error(this.detail));
      return;
    }
    if (this.state !== "ready") return; // started again once ready
    this.current = this.queue.shift();
    const { message } = this.current;
    this.worker.postMessage(message, [message.image.data.buffer]);
  }

  #receive(reply) {
    if (reply.type === "ready") {
      Object.assign(this, { state: "ready", backend: reply.backend, threads: reply.threads });
      Object.assign(this, { loadMs: reply.loadMs, modelCached: reply.cached });
      this.#settleReady(this);
      this.#pump();
      return;
    }
    if (reply.type === "unavailable") return this.#unavailable(reply.detail);
    const task = this.current;
    this.current = null;
    if (task && reply.type === "done") {
      this.#record(reply);
      task.resolve({ image: reply.image, timings: reply.timings, inferred: reply.inferred });
    } else if (task) {
      task.reject(new Error(reply.detail));
    }
    this.#pump();
  }

  #record({ timings, inferred, runs, masks }) {
    this.last = { timings, inferred };
    this.runs = runs;
    this.masks = new Set(masks);
    const keep = (name, ms) => {
      this.recent[name].push(ms);
      if (this.recent[name].length > RECENT) this.recent[name].shift();
    };
    if (inferred) {
      keep("infer", timings.infer);
      keep("model", timings.pre + timings.infer + timings.post);
    } else {
      this.blends += 1;
    }
    keep("blend", timings.blend);
  }

  #unavailable(detail) {
    Object.assign(this, { state: "unavailable", detail });
    this.#settleReady(this);
    if (this.current) {
      this.current.reject(new Error(detail));
      this.current = null;
    }
    this.#pump();
  }
}
