// The list of server jobs: one row per job, named by its image and a summary of its settings
// (the job id is in the tooltip), with the stage it is in and its step ("Alpha matting ·
// step 2 of 3"), a progress bar, the time it has taken so far and an estimate of what is
// left that counts down, a cancel button while it can still be cancelled, and the server's
// own `detail` when it fails or is cancelled (superseded by a newer request, ...).
//
// Rows are fed by WebSocket job frames (queued/progress/completed/failed/cancelled) and by
// JobViews from GET /api/jobs/{id} (after a `gap`, or polling while the socket is down);
// both go through update(). Rows kept from before a reload come back through restore().
// Old finished rows are dropped past MAX_ROWS.
//
// Estimates: while queued, the server's eta_ms counted down from the frame that brought it;
// while running, the page's own record of how long jobs with the same settings took here
// (localStorage), else the server's mean for the pipeline (telemetry).

import { el, formatMs, humanize } from "./ui/dom.js";

const MAX_ROWS = 8;
const MAX_EARLY = 64; // untracked jobs whose frames are kept for a moment
const TICK_MS = 250;
const HISTORY_KEY = "playground-rt.durations";
export const TERMINAL = new Set(["completed", "failed", "cancelled"]);

const STAGES = { rembg: "Background removal", model: "Running the model", compose: "Compositing" };

/** A stage name as people say it ("alpha matting" -> "Alpha matting"). */
export function stageName(stage) {
  return STAGES[stage] ?? humanize(stage);
}

/** How long jobs with the same settings took on this server, as seen from this page. */
class History {
  constructor() {
    try {
      this.data = JSON.parse(localStorage.getItem(HISTORY_KEY) ?? "{}");
    } catch {
      this.data = {};
    }
  }

  estimate(key) {
    const values = this.data[key];
    return values?.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
  }

  record(key, ms) {
    const values = (this.data[key] ??= []);
    values.push(ms);
    if (values.length > 5) values.shift();
    const keys = Object.keys(this.data);
    if (keys.length > 50) delete this.data[keys[0]];
    try {
      localStorage.setItem(HISTORY_KEY, JSON.stringify(this.data));
    } catch {
      // storage full or refused: estimates fall back on the server's means
    }
  }
}

export class JobList {
  /**
   * list: an <ol>; empty: shown while there is no row; onCancel(job); describe(): the
   * {image, summary} of the request being sent; onChange(job) after every change.
   */
  constructor(list, { empty, onCancel, describe = () => ({}), onChange = () => {} }) {
    Object.assign(this, { list, empty, onCancel, describe, onChange });
    this.jobs = new Map(); // job_id -> job record (see #row)
    // Frames can beat the REST answer that names their job (a fast job, a joined one):
    // they wait here until track() and are replayed then.
    this.early = new Map(); // job_id -> [frame, ...]
    this.history = new History();
    this.serverMeans = {}; // pipeline -> mean ms (telemetry)
    this.ticker = null;
  }

  get(jobId) {
    return this.jobs.get(jobId);
  }

  /** Jobs that may still change (for resume and the gap refetch). */
  active() {
    return [...this.jobs.values()].filter((job) => !TERMINAL.has(job.state));
  }

  /** The server's mean durations per pipeline (a `telemetry` frame's durations_ms). */
  telemetry(durations) {
    this.serverMeans = durations ?? {};
  }

  /** Start (or restart: the same job id comes back for the same request) a row. */
  track(jobId, { pipelineId, taskId, backend }) {
    let job = this.jobs.get(jobId);
    const { image, summary } = this.describe() ?? {};
    if (!job) {
      job = this.#row(jobId);
      this.jobs.set(jobId, job);
      this.list.prepend(job.node);
      this.empty.hidden = true;
      this.#trim();
    }
    Object.assign(job, { pipelineId, taskId, backend, frames: 0, detail: null });
    if (image) Object.assign(job, { image, summary });
    if (TERMINAL.has(job.state)) Object.assign(job, { state: "queued", created: Date.now() });
    const early = this.early.get(jobId) ?? [];
    this.early.delete(jobId);
    this.#changed(job);
    for (const frame of early) this.update(frame);
    return job;
  }

  /** Rows kept from before a reload ({id, pipelineId, taskId, image, summary, state, ...}). */
  restore(records) {
    for (const record of records) {
      if (this.jobs.has(record.id)) continue;
      const job = this.#row(record.id);
      Object.assign(job, record, { frames: 0, restored: true });
      this.jobs.set(job.id, job);
      this.list.prepend(job.node);
      this.empty.hidden = true;
      this.#render(job);
    }
    this.#trim();
    this.#tick();
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
    const now = Date.now();
    switch (kind) {
      case "queued":
        Object.assign(job, { state: "queued", position: message.position });
        if (message.eta_ms != null) Object.assign(job, { eta: message.eta_ms, etaAt: now });
        break;
      case "progress":
        if (job.state !== "running") job.runningSince = now;
        Object.assign(job, { state: "running", stage: message.stage, step: message.step });
        job.total = message.total;
        if (message.outline_url) job.outlineUrl = message.outline_url;
        break;
      case "running":
        if (job.state !== "running") job.runningSince = now;
        job.state = "running";
        if (message.outline_url) job.outlineUrl = message.outline_url;
        break;
      case "completed":
        Object.assign(job, { state: "completed", resultUrl: message.result_url, ended: now });
        Object.assign(job, { cacheHit: message.cache_hit, durations: message.durations ?? {} });
        if (!job.cacheHit && job.durations.total != null) {
          this.history.record(this.#historyKey(job), job.durations.total);
        }
        break;
      case "failed":
        Object.assign(job, { state: "failed", detail: message.detail, ended: now });
        break;
      case "cancelled":
        Object.assign(job, { state: "cancelled", detail: message.detail ?? null, ended: now });
        break;
      default:
        return job;
    }
    this.#changed(job);
    return job;
  }

  /** What the row says about where the job is, in one line (the stage marker uses it). */
  progressText(job) {
    if (job.state === "queued") {
      const place = job.position != null ? `#${job.position + 1} in the server's queue` : "queued";
      return `Waiting: ${place}${this.#left(job)}`;
    }
    if (job.state === "running") {
      const stage = job.stage ? stageName(job.stage) : "Running";
      const step =
        job.total > 0 ? ` · step ${Math.min(job.step + 1, job.total)} of ${job.total}` : "";
      return `On the server: ${stage}${step}${this.#left(job)}`;
    }
    return job.state;
  }

  /** The record kept for a reload. */
  record(job) {
    const { id, pipelineId, taskId, backend, image, summary, state, detail, created } = job;
    const { cacheHit, durations, resultUrl, ended } = job;
    return {
      id,
      pipelineId,
      taskId,
      backend,
      image,
      summary,
      state,
      detail,
      created,
      cacheHit,
      durations,
      resultUrl,
      ended,
    };
  }

  #historyKey(job) {
    return `${job.pipelineId}|${job.summary ?? ""}`;
  }

  #estimate(job) {
    return this.history.estimate(this.#historyKey(job)) ?? this.serverMeans[job.pipelineId] ?? null;
  }

  #left(job) {
    const now = Date.now();
    let left = null;
    if (job.state === "queued" && job.eta != null) left = job.eta - (now - job.etaAt);
    if (job.state === "running") {
      const estimate = this.#estimate(job);
      if (estimate != null) left = estimate - (now - (job.runningSince ?? now));
    }
    if (left == null) return "";
    if (left >= 500) return ` · about ${formatMs(Math.ceil(left / 1000) * 1000)} left`;
    return left > -2000 ? " · almost done" : " · taking longer than usual";
  }

  #keepEarly(frame) {
    const frames = this.early.get(frame.job_id) ?? [];
    frames.push(frame);
    this.early.delete(frame.job_id); // re-insert: oldest job ids go first
    this.early.set(frame.job_id, frames.slice(-8));
    while (this.early.size > MAX_EARLY) this.early.delete(this.early.keys().next().value);
  }

  #row(jobId) {
    const title = el("span", { class: "job-title" });
    const state = el("span", { class: "job-state", role: "status" });
    const cancel = el("button", { type: "button", class: "job-cancel" }, "Cancel");
    const bar = el("progress", { class: "job-progress" });
    const stage = el("div", { class: "job-stage" });
    const times = el("div", { class: "job-times" });
    const meta = el("div", { class: "job-meta" });
    const detail = el("div", { class: "job-detail" });
    const node = el(
      "li",
      { class: "job", "data-job-id": jobId },
      el("div", { class: "job-head" }, title, state, cancel),
      bar,
      stage,
      times,
      meta,
      detail,
    );
    const job = {
      id: jobId,
      node,
      title,
      stateEl: state,
      cancel,
      bar,
      stageEl: stage,
      times,
      meta,
    };
    Object.assign(job, { detailEl: detail, state: "queued", stage: null, step: 0, total: 0 });
    Object.assign(job, { frames: 0, created: Date.now() });
    cancel.addEventListener("click", () => this.onCancel(job));
    return job;
  }

  #changed(job) {
    this.#render(job);
    this.onChange(job);
    this.#tick();
  }

  /** Re-render the clocks while a row is active; stop when none is. */
  #tick() {
    if (this.ticker || !this.active().length) return;
    this.ticker = setInterval(() => {
      const active = this.active();
      for (const job of active) this.#render(job);
      if (!active.length) {
        clearInterval(this.ticker);
        this.ticker = null;
      }
    }, TICK_MS);
  }

  #render(job) {
    const name = job.image ? `${job.image} · ${job.summary ?? job.pipelineId}` : job.pipelineId;
    job.title.textContent = name;
    job.title.title = `${job.id} on ${job.backend ?? "the server"}`;
    job.node.dataset.state = job.state;
    job.stateEl.textContent =
      job.state === "completed" && job.cacheHit ? "completed (cached)" : job.state;
    job.cancel.hidden = TERMINAL.has(job.state);
    job.cancel.setAttribute("aria-label", `Cancel ${name}`);
    job.bar.setAttribute("aria-label", `Progress of ${name}`);
    this.#renderBar(job);
    job.stageEl.textContent = this.#stageText(job);
    job.times.textContent = this.#timesText(job);
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

  #stageText(job) {
    if (job.state === "queued") {
      return job.position != null ? `#${job.position + 1} in the server's queue` : "Queued";
    }
    if (job.state === "running" && job.stage) {
      const step =
        job.total > 0 ? ` · step ${Math.min(job.step + 1, job.total)} of ${job.total}` : "";
      return `${stageName(job.stage)}${step}`;
    }
    return "";
  }

  #timesText(job) {
    const end = TERMINAL.has(job.state) ? (job.ended ?? Date.now()) : Date.now();
    const elapsed = `elapsed ${formatMs(Math.max(0, end - job.created))}`;
    if (TERMINAL.has(job.state)) return job.state === "completed" ? "" : elapsed;
    return `${elapsed}${this.#left(job)}`;
  }

  #metaText(job) {
    if (job.state !== "completed") return "";
    const total = job.durations?.total;
    return total != null ? `done in ${formatMs(total)}` : "done";
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
