// Where a preview that removes a background runs: in this page's model worker, or on the
// server (params.background_removal = "server", the contract's fallback). Decided by
// measurement, not a guess:
//
//  1. Device downgrades: no WebAssembly or no WASM SIMD, not cross-origin isolated (no
//     WASM threads), navigator.deviceMemory below LOW_MEMORY_GB, the runtime could not be
//     loaded (runtime files or model missing), a model the page does not run.
//  2. Saturation: more than SATURATION_FACTOR x workers waiting in the page (model queue or
//     pool), as for the light ops.
//  3. A mask the worker already has: only the blend runs (milliseconds), in the page.
//  4. A measured model time over the budget (BUDGET_MS, or ?budget_ms= on the page's URL):
//     a device downgrade too.
//  5. Not measured yet: the first run is in the page (it calibrates).
//  6. Otherwise the estimates: page = its queue + the measured model time; server = upload
//     and download of the image at the measured bandwidth + its queue (telemetry: depth,
//     running, workers) + the model time it reported for our jobs (completed frames'
//     op.rembg) or, before any, in telemetry. The page runs it unless the server would
//     finish in under 1 / PREFER_PAGE of the time: the server is shared by every page, so a
//     small gain is not worth its load.

import { SATURATION_FACTOR } from "./worker-pool.js";

export const BUDGET_MS = 8000;
export const LOW_MEMORY_GB = 2;
export const PREFER_PAGE = 1.25;
const DEFAULT_MBIT_S = 20; // before any upload is measured (navigator.connection if present)
const EWMA = 0.3;

// A WASM module using one SIMD instruction (v128.const + drop): validates only with SIMD.
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 10, 23, 1, 21, 0, 253, 12, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 26, 11,
]);

/** Why this device should not run the model itself (null when it may). */
export function deviceDowngrade(nav = globalThis.navigator) {
  if (typeof WebAssembly === "undefined") return "no WebAssembly";
  if (!WebAssembly.validate(SIMD_PROBE)) return "no WASM SIMD";
  if (!globalThis.crossOriginIsolated) {
    return "the page is not cross-origin isolated (no WASM threads)";
  }
  const memory = nav?.deviceMemory;
  if (memory != null && memory < LOW_MEMORY_GB) return `low device memory (${memory} GB)`;
  return null;
}

export function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function budgetFromUrl() {
  const given = Number(new URLSearchParams(globalThis.location?.search ?? "").get("budget_ms"));
  return Number.isFinite(given) && given > 0 ? given : BUDGET_MS;
}

export class Placement {
  constructor({ rembg, pool, budgetMs = budgetFromUrl() }) {
    Object.assign(this, { rembg, pool, budgetMs });
    this.device = deviceDowngrade();
    this.server = { queue_depth: 0, running: 0, workers: 1, durations_ms: {} };
    this.serverModelMs = {}; // model -> EWMA of op.rembg in our completed server jobs
    const mbit = globalThis.navigator?.connection?.downlink || DEFAULT_MBIT_S;
    this.bytesPerMs = (mbit * 1e6) / 8 / 1000;
    this.last = null;
    this.queuedEta = null;
  }

  /** A `telemetry` frame: the server's queue and recent durations. */
  observeTelemetry(frame) {
    this.server = frame;
  }

  /** A completed server job of ours that ran `model`: its durations (ms). */
  observeServerJob(model, durations) {
    const ms = durations?.["op.rembg"];
    if (ms == null) return;
    const old = this.serverModelMs[model];
    this.serverModelMs[model] = old == null ? ms : old + EWMA * (ms - old);
  }

  /** A request of `bytes` answered in `ms` (the preview POST): the upload bandwidth. */
  observeUpload(bytes, ms) {
    if (bytes < 64 * 1024 || ms <= 0) return; // small bodies measure latency, not bandwidth
    const rate = bytes / ms;
    this.bytesPerMs = this.bytesPerMs + EWMA * (rate - this.bytesPerMs);
  }

  /** A `queued` frame of one of our jobs: the server's own ETA for it. */
  observeQueued(etaMs) {
    this.queuedEta = { ms: etaMs, at: performance.now() };
  }

  /** True when the model worker's queue is past SATURATION_FACTOR x its one worker. */
  saturated() {
    return (this.rembg?.queued ?? 0) > SATURATION_FACTOR;
  }

  /**
   * {where: "client" | "server", why, client?, server?} for a preview whose rembg step runs
   * `model`; `maskKey` names the mask it needs, `transfer` {upload, download} the bytes the
   * server route would move; with `auto` false the page keeps it unless downgraded.
   */
  decide({ model, maskKey, transfer = { upload: 0, download: 0 }, auto = true }) {
    this.last = this.#decide({ model, maskKey, transfer, auto });
    return this.last;
  }

  #decide({ model, maskKey, transfer, auto }) {
    const rembg = this.rembg;
    if (this.device) return { where: "server", why: this.device };
    if (!rembg) return { where: "server", why: "no model worker in this page" };
    if (rembg.state === "unavailable") return { where: "server", why: rembg.detail };
    if (model !== rembg.model) return { where: "server", why: `model ${model} runs on the server` };
    if (this.saturated() || this.pool?.saturated()) {
      const waiting = rembg.queued + (this.pool?.queued ?? 0);
      return { where: "server", why: `the page's queue is saturated (${waiting} waiting)` };
    }
    // Re-blending a kept mask costs milliseconds, even on a device too slow for the model.
    if (rembg.hasMask(maskKey)) return { where: "client", why: "mask kept" };
    const measured = rembg.measured();
    if (measured.model != null && measured.model > this.budgetMs) {
      const over = `${formatMs(measured.model)} > budget ${formatMs(this.budgetMs)}`;
      return { where: "server", why: `this device is too slow for ${model} (${over})` };
    }
    if (measured.model == null) return { where: "client", why: "first run calibrates" };
    if (!auto) return { where: "client", why: "kept in the browser (measured choice off)" };
    const client = (rembg.queued + rembg.running + 1) * measured.model;
    const server = this.#serverEstimate(model, transfer);
    if (server == null) return { where: "client", why: "no server timing yet", client };
    if (client > PREFER_PAGE * server) {
      const why = `this device is slower: est. ${formatMs(client)} vs ${formatMs(server)}`;
      return { where: "server", why, client, server };
    }
    const why = `est. ${formatMs(client)} here vs ${formatMs(server)} on the server`;
    return { where: "client", why, client, server };
  }

  #serverEstimate(model, { upload, download }) {
    const reported = this.server.durations_ms ?? {};
    const run = this.serverModelMs[model] ?? reported.rembg;
    if (run == null) return null;
    const { queue_depth = 0, running = 0, workers = 1 } = this.server;
    let wait = ((queue_depth + running * 0.5) * run) / Math.max(1, workers);
    const recent = this.queuedEta && performance.now() - this.queuedEta.at < 5000;
    if (recent) wait = Math.max(wait, this.queuedEta.ms - run); // its own word for our last job
    return (upload + download) / this.bytesPerMs + wait + run;
  }
}
