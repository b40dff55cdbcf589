// The telemetry panel (server figures from the `telemetry` channel, the page's own
// workers and model beside them) and the reporter that sends the workers' figures, the
// model's measured times included, to the server (`models` in POST /api/metrics).

import { el } from "./ui/dom.js";

const REPORT_MS = 3000;
const SHOWN_DURATIONS = 6;

function row(name, value) {
  return [el("dt", {}, name), el("dd", {}, value)];
}

function durationRows(durations) {
  return Object.entries(durations ?? {})
    .sort(([a], [b]) => a.localeCompare(b))
    .slice(0, SHOWN_DURATIONS)
    .flatMap(([stage, ms]) => row(`${stage} (avg)`, `${ms.toFixed(1)} ms`));
}

export class TelemetryPanel {
  /** @param {HTMLElement} server a <dl>; @param {HTMLElement} local a <dl> */
  constructor(server, local) {
    this.server = server;
    this.local = local;
    this.last = null;
  }

  /** A `telemetry` frame: {queue_depth, running, workers, durations_ms, clients}. */
  renderServer(frame) {
    this.last = frame;
    this.server.replaceChildren(
      ...row("queue depth", String(frame.queue_depth)),
      ...row("running", `${frame.running} of ${frame.workers} workers`),
      ...row("client pools", String(Object.keys(frame.clients ?? {}).length)),
      ...durationRows(frame.durations_ms),
    );
  }

  /**
   * WorkerPool.stats(): {queue_depth, running, workers, durations_ms}, plus `models` from
   * RembgWorker.report(): {model: {backend, threads, infer_ms, runs}}; `modelNote` says why
   * the page has no model of its own, if so.
   */
  renderLocal(stats, downgraded, modelNote = null) {
    const models = Object.entries(stats.models ?? {}).flatMap(([model, m]) => {
      const how = m.backend === "webgpu" ? "WebGPU" : `WASM × ${m.threads}`;
      const time = m.infer_ms != null ? `${m.infer_ms.toFixed(0)} ms` : "not run yet";
      return row(`${model} (${how})`, `${time} · ${m.runs} runs`);
    });
    this.local.replaceChildren(
      ...row(
        "workers",
        downgraded ? `${stats.workers} (server fallback: ${downgraded})` : String(stats.workers),
      ),
      ...row("queued", String(stats.queue_depth)),
      ...row("running", String(stats.running)),
      ...models,
      ...(modelNote ? row("model", `on the server: ${modelNote}`) : []),
      ...durationRows(stats.durations_ms),
    );
  }
}

/**
 * Every REPORT_MS, tell the server how the page's workers are doing: as a `telemetry`
 * frame while the socket is open, else POST /api/metrics. Returns a stop function.
 */
export function startReporter({ pool, rembg, socket, taskId, post, onStats }) {
  const tick = () => {
    const stats = pool.stats();
    if (rembg?.available) {
      stats.models = rembg.report();
      stats.queue_depth += rembg.queued;
      stats.running += rembg.running;
    }
    onStats(stats);
    const report = { source: "client-workers", taskId, ...stats };
    if (!socket.send({ type: "telemetry", ...report })) {
      post(report).catch((error) => console.warn("metrics report failed:", error.message));
    }
  };
  tick();
  const timer = setInterval(tick, REPORT_MS);
  return () => clearInterval(timer);
}
