// A small pool of Web Workers (op-worker.js) that decode uploads and run client ops.
//
// Size: min(4, hardwareConcurrency - 1), at least 1, leaving a core to the page itself.
// Tasks wait in one FIFO queue for an idle worker. A newer "run" of the same taskId
// replaces that task's queued (not yet started) runs: while a slider is dragged only the
// latest value matters, as on the server (jobs.JobManager._supersede).
//
// Saturation: more than SATURATION_FACTOR x size runs waiting means the workers cannot
// keep up (several form sessions at once, or a very slow device); the page then sends the
// request to the server instead (app.js, "fallback").

export const SATURATION_FACTOR = 2;
const RECENT = 20; // durations kept per stage for the telemetry averages

export class Superseded extends Error {
  constructor(taskId) {
    super(`superseded by a newer request of task ${taskId}`);
    this.name = "Superseded";
  }
}

export function poolSize(cores = globalThis.navigator?.hardwareConcurrency ?? 2) {
  return Math.min(4, Math.max(1, cores - 1));
}

export class WorkerPool {
  constructor(size = poolSize(), url = new URL("./op-worker.js", import.meta.url)) {
    this.size = size;
    this.idle = Array.from({ length: size }, () => new Worker(url, { type: "module" }));
    this.queue = []; // [{message, transfer, resolve, reject}]
    this.pending = new Map(); // id -> {worker, resolve, reject}
    this.nextId = 1;
    this.recent = {}; // stage -> [ms, ...]
    this.limits = null; // the server's (GET /api/pipelines), sent with every run
    for (const worker of this.idle) {
      worker.onmessage = (event) => this.#settle(worker, event.data);
      // A worker that fails to load or throws outside onmessage must not strand its task.
      worker.onerror = (event) => this.#crashed(worker, event.message || "worker error");
    }
  }

  get queued() {
    return this.queue.length;
  }

  get running() {
    return this.pending.size;
  }

  /** True when the queue is past the documented threshold (SATURATION_FACTOR x size). */
  saturated() {
    return this.queue.length > SATURATION_FACTOR * this.size;
  }

  /** Decode an image file (Blob) to {width, height, data: Uint8ClampedArray RGBA}. */
  decode(blob, taskId) {
    return this.#submit({ type: "decode", taskId, blob }, []).then((r) => r.image);
  }

  /** Run `steps` ([{name, params}]) on a copy of `image`; resolves {image, durations}. */
  run(taskId, steps, image) {
    this.#supersede(taskId);
    const copy = { width: image.width, height: image.height, data: image.data.slice() };
    const message = { type: "run", taskId, steps, image: copy, limits: this.limits };
    return this.#submit(message, [copy.data.buffer]);
  }

  /** Figures for POST /api/metrics / the telemetry frame (averages of recent durations). */
  stats() {
    const durations_ms = {};
    for (const [stage, values] of Object.entries(this.recent)) {
      const mean = values.reduce((a, b) => a + b, 0) / values.length;
      durations_ms[stage] = Math.round(mean * 1000) / 1000;
    }
    return { queue_depth: this.queued, running: this.running, workers: this.size, durations_ms };
  }

  #submit(message, transfer) {
    return new Promise((resolve, reject) => {
      this.queue.push({ message: { ...message, id: this.nextId++ }, transfer, resolve, reject });
      this.#pump();
    });
  }

  #supersede(taskId) {
    const kept = [];
    for (const task of this.queue) {
      if (task.message.type === "run" && task.message.taskId === taskId) {
        task.reject(new Superseded(taskId));
      } else {
        kept.push(task);
      }
    }
    this.queue = kept;
  }

  #pump() {
    while (this.idle.length && this.queue.length) {
      const worker = this.idle.pop();
      const task = this.queue.shift();
      this.pending.set(task.message.id, { worker, resolve: task.resolve, reject: task.reject });
      worker.postMessage(task.message, task.transfer);
    }
  }

  #settle(worker, reply) {
    const task = this.pending.get(reply.id);
    this.pending.delete(reply.id);
    this.idle.push(worker);
    if (task) {
      if (reply.type === "done") {
        this.#record(reply.durations);
        task.resolve({ image: reply.image, durations: reply.durations, taskId: reply.taskId });
      } else {
        task.reject(new Error(reply.detail));
      }
    }
    this.#pump();
  }

  #crashed(worker, detail) {
    for (const [id, task] of this.pending) {
      if (task.worker === worker) {
        this.pending.delete(id);
        task.reject(new Error(`Web Worker failed: ${detail}`));
      }
    }
    if (!this.idle.includes(worker)) this.idle.push(worker);
    this.#pump();
  }

  #record(durations) {
    for (const [stage, ms] of Object.entries(durations ?? {})) {
      const values = (this.recent[stage] ??= []);
      values.push(ms);
      if (values.length > RECENT) values.shift();
    }
  }
}
