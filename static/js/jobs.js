// The list of server jobs: one row per job with a progress bar, stage and step, queue
// position and ETA, a cancel button while it can still be cancelled, and the server's
// own `detail` when it fails.
//
// Rows are fed by WebSocket job frames (queued/progress/completed/failed/cancelled) and by
// JobViews from GET /api/jobs/{id} (after a `gap`, or polling while the socket is down);
// both go through update(). Old finished rows are dropped past MAX_ROWS.

const MAX_ROWS = 8;
const MAX_EARLY = 64; // untracked jobs whose frames are kept for a moment
const TERMINAL = new Set(["completed", "failed", "cancelled"]);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function formatMs(ms) {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

export class JobList {
  /** list: an <ol>; empty: shown while there is no row; onCancel(job) */
  constructor(list, { empty, onCancel }) {
    this.list = list;
    this.empty = empty;
    this.onCancel = onCancel;
    this.jobs = new Map(); // job_id -> job record (see #row)
    // Frames can beat the REST answer that names their job (a fast job, a joined one):
    // they wait here until track() and are replayed then.
    this.early = new Map(); // job_id -> [frame, ...]
  }

  get(jobId) {
    return this.jobs.get(jobId);
  }

  /** Jobs that may still change (for resume and the gap refetch). */
  active() {
    return [...this.jobs.values()].filter((job) => !TERMINAL.has(job.state));
  }

  /** Start (or restart: the same job id comes back for the same request) a row. */
  track(jobId, { pipelineId, taskId, backend }) {
    let job = this.jobs.get(jobId);
    if (!job) {
      job = this.#row(jobId);
      this.jobs.set(jobId, job);
      this.list.prepend(job.node);
      this.empty.hidden = true;
      this.#trim();
    }
    Object.assign(job, { pipelineId, taskId, backend, frames: 0, detail: null });
    if (TERMINAL.has(job.state)) job.state = "queued";
    const early = this.early.get(jobId) ?? [];
    this.early.delete(jobId);
    this.#render(job);
    for (const frame of early) this.update(frame);
    return job;
  }

  /** Apply a job frame or a JobView ({state, position, eta_ms, ...}). */
  update(message) {
    const job = this.jobs.get(message.job_id);
    if (!job) {
      if (message.type) this.#keepEarly(message);
      return null;
    }
    const kind = message.type ?? message.state;
    if (TERMINAL.has(job.state) && kind !== job.state) return job; // late frames lose
    job.frames += message.type ? 1 : 0;
    switch (kind) {
      case "queued":
        Object.assign(job, { state: "queued", position: message.position, eta: message.eta_ms });
        break;
      case "progress":
        Object.assign(job, { state: "running", stage: message.stage, step: message.step });
        job.total = message.total;
        break;
      case "running":
        job.state = "running";
        break;
      case "completed":
        Object.assign(job, { state: "completed", resultUrl: message.result_url });
        Object.assign(job, { cacheHit: message.cache_hit, durations: message.durations ?? {} });
        break;
      case "failed":
        Object.assign(job, { state: "failed", detail: message.detail });
        break;
      case "cancelled":
        Object.assign(job, { state: "cancelled", detail: message.detail ?? null });
        break;
      default:
        return job;
    }
    this.#render(job);
    return job;
  }

  #keepEarly(frame) {
    const frames = this.early.get(frame.job_id) ?? [];
    frames.push(frame);
    this.early.delete(frame.job_id); // re-insert: oldest job ids go first
    this.early.set(frame.job_id, frames.slice(-8));
    while (this.early.size > MAX_EARLY) this.early.delete(this.early.keys().next().value);
  }

  #row(jobId) {
    const node = el("li", "job");
    node.dataset.jobId = jobId;
    const title = el("span", "job-title");
    const state = el("span", "job-state");
    state.setAttribute("role", "status");
    const cancel = el("button", "job-cancel", "Cancel");
    cancel.type = "button";
    cancel.setAttribute("aria-label", `Cancel job ${jobId}`);
    const bar = el("progress", "job-progress");
    bar.setAttribute("aria-label", `Progress of job ${jobId}`);
    const meta = el("div", "job-meta");
    const detail = el("div", "job-detail");
    node.append(el("div", "job-head"), bar, meta, detail);
    node.firstChild.append(title, state, cancel);
    const job = { id: jobId, node, title, stateEl: state, cancel, bar, meta, detailEl: detail };
    Object.assign(job, { state: "queued", stage: null, step: 0, total: 0, frames: 0 });
    cancel.addEventListener("click", () => this.onCancel(job));
    return job;
  }

  #render(job) {
    const short = job.id.slice(job.id.lastIndexOf("-") + 1, job.id.lastIndexOf("-") + 9);
    job.title.textContent = `${job.pipelineId} · ${short}`;
    job.title.title = `${job.id} on ${job.backend ?? "the server"}`;
    job.node.dataset.state = job.state;
    job.stateEl.textContent =
      job.state === "completed" && job.cacheHit ? "completed (cached)" : job.state;
    job.cancel.hidden = TERMINAL.has(job.state);
    this.#renderBar(job);
    job.meta.textContent = this.#metaText(job);
    job.detailEl.textContent = job.detail ?? "";
    job.detailEl.classList.toggle("error", job.state === "failed");
  }

  #renderBar(job) {
    if (job.state === "completed") {
      job.bar.max = 1;
      job.bar.value = 1;
    } else if (job.state === "running" && job.total > 0) {
      job.bar.max = job.total;
      job.bar.value = job.step;
    } else if (job.state === "queued") {
      job.bar.removeAttribute("value"); // indeterminate while waiting
    }
  }

  #metaText(job) {
    const parts = [];
    if (job.state === "queued" && job.position != null) {
      parts.push(`#${job.position + 1} in queue`);
      if (job.eta != null) parts.push(`ETA ${formatMs(job.eta)}`);
    }
    if (job.state === "running" && job.stage) {
      parts.push(`stage ${job.stage} · step ${job.step}/${job.total}`);
    }
    if (job.state === "completed") {
      const total = job.durations?.total;
      parts.push(total != null ? `done in ${formatMs(total)}` : "done");
    }
    return parts.join(" · ");
  }

  #trim() {
    const finished = [...this.jobs.values()].filter((job) => TERMINAL.has(job.state));
    while (this.jobs.size > MAX_ROWS && finished.length) {
      const oldest = finished.shift(); // a Map iterates in insertion order: oldest first
      oldest.node.remove();
      this.jobs.delete(oldest.id);
    }
  }
}
