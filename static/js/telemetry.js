// The telemetry panel (server figures from the `telemetry` channel, the page's own
// workers beside them) and the reporter that sends the workers' figures to the server.

const REPORT_MS = 3000;
const SHOWN_DURATIONS = 6;

function row(name, value) {
  const dt = document.createElement("dt");
  dt.textContent = name;
  const dd = document.createElement("dd");
  dd.textContent = value;
  return [dt, dd];
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

  /** WorkerPool.stats(): {queue_depth, running, workers, durations_ms}. */
  renderLocal(stats, downgraded) {
    this.local.replaceChildren(
      ...row(
        "workers",
        downgraded ? `${stats.workers} (server fallback: ${downgraded})` : String(stats.workers),
      ),
      ...row("queued", String(stats.queue_depth)),
      ...row("running", String(stats.running)),
      ...durationRows(stats.durations_ms),
    );
  }
}

/**
 * Every REPORT_MS, tell the server how the page's workers are doing: as a `telemetry`
 * frame while the socket is open, else POST /api/metrics. Returns a stop function.
 */
export function startReporter({ pool, socket, taskId, post, onStats }) {
  const tick = () => {
    const stats = pool.stats();
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
