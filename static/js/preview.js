// Running a preview: cache key, memo, routing between the page's workers and the server.
//
//  1. The page computes the cache key (cachekey.js) from the image file's bytes and the
//     params; a result memoized under that key is shown at once.
//  2. POST /api/pipelines/preview with the form session's taskId. The server answers with
//     its own cache_key (compared with ours: a mismatch is shown as a warning), and either
//     `completed` (a cached result), `client-workers` (run it here) or a queued server job.
//  3. Client work goes to the worker pool, unless the pool is saturated: then the same
//     payload is sent again with params.background_removal = "server" (the fallback).
//     The page asks for the server from the start when the user ticks "Run on server", when
//     the device is downgraded, or when the pipeline has no client ops (rembg).
//  4. Server jobs are followed over the WebSocket (progress rows in jobs.js); while the
//     socket is down they are polled with GET /api/jobs/{id}. Their result PNG is fetched,
//     decoded, memoized under the cache key, and shown if it is still the latest request.

import * as api from "./api.js";
import { cacheKey, enabledSteps } from "./cachekey.js";
import { decodeBlob, imageStats } from "./imaging.js";
import { Superseded } from "./workers.js";

const MEMO_SIZE = 24;
const POLL_MS = 1000;
const STALL_MS = 3000;

/** The routing key that asks for the server: what the fallback adds to the same payload. */
export const SERVER_ROUTE = { background_removal: "server" };

export class Previewer {
  constructor({ pool, jobs, viewer, ui, taskId, socket }) {
    Object.assign(this, { pool, jobs, viewer, ui, taskId, socket });
    this.image = null; // {name, sha256?, base64?, path?, pixels?}
    this.seq = 0; // bumps on every run: only the newest run may paint
    this.memo = new Map(); // cache_key -> {image, source, serverKey}
    this.waiting = new Map(); // job_id -> {seq, key, started}
    this.state = { clientKey: null, serverKey: null, routedBackend: null, result: null };
    this.pollTimer = null;
  }

  setImage(image) {
    this.image = image;
    this.state.result = null;
    if (image.pixels) this.viewer.showOriginal(image.pixels);
    this.viewer.clearResult("No preview yet");
  }

  /** The request body for `params` (routing keys added here, never by the form). */
  body(pipeline, params, { server }) {
    const routed = { ...params };
    if (pipeline.ops.some((op) => op.client)) routed.rembg = "client";
    if (server || !pipeline.ops.some((op) => op.client)) Object.assign(routed, SERVER_ROUTE);
    const body = { pipeline_id: pipeline.id, params: routed, taskId: this.taskId };
    if (this.image?.base64 != null) body.image_base64 = this.image.base64;
    else if (this.image?.path != null) body.image_path = this.image.path;
    return body;
  }

  async run(pipeline, params, { server = false } = {}) {
    const seq = ++this.seq;
    if (!this.image) return;
    // A canvas cannot give the file's colours under alpha (imaging.js, decodeBlob): the
    // server computes translucent images, so both sides agree under one cache_key.
    server ||= Boolean(this.image.pixels?.translucent);
    const started = performance.now();
    const key = await this.#clientKey(pipeline, params);
    if (seq !== this.seq) return;
    Object.assign(this.state, { clientKey: key, serverKey: null, routedBackend: null });
    this.ui.keyCheck(null);
    if (key && this.#fromMemo(key)) return;

    this.ui.status("Sending the preview request…");
    const body = this.body(pipeline, params, { server });
    let answer = await this.#send(api.preview, body, seq);
    if (!answer) return;
    this.#checkKey(answer.cache_key);
    if (!key && this.#fromMemo(answer.cache_key)) return;
    if (answer.routed_backend === "client-workers" && this.pool?.saturated()) {
      const queued = this.pool.queued;
      this.ui.status(`Browser workers saturated (${queued} waiting): falling back to the server`);
      answer = await this.#send(api.preview, this.body(pipeline, params, { server: true }), seq);
      if (!answer) return;
    }
    this.state.routedBackend = answer.routed_backend;
    this.ui.notes(answer.notes ?? []);
    if (answer.status === "completed") {
      await this.#showServer(answer.result_url, answer.cache_key, seq, { cacheHit: true, started });
    } else if (answer.routed_backend === "client-workers") {
      await this.#runClient(pipeline, params, answer.cache_key, seq, started);
    } else {
      this.#follow(pipeline, answer, seq, started);
    }
  }

  /** A job row changed (frame or JobView): finish the preview waiting on it, if any. */
  async jobChanged(job) {
    const wait = this.waiting.get(job.id);
    if (!wait || !["completed", "failed", "cancelled"].includes(job.state)) return;
    this.waiting.delete(job.id);
    if (job.state === "completed") {
      await this.#showServer(job.resultUrl, wait.key, wait.seq, {
        cacheHit: job.cacheHit,
        started: wait.started,
      });
    } else if (wait.seq === this.seq) {
      const why = job.detail ? `: ${job.detail}` : "";
      this.ui.status(`Server job ${job.state}${why}`, job.state === "failed");
    }
  }

  /** Refetch the state of the jobs still waited on (after a `gap`, or while polling). */
  async refetch(jobIds = [...this.waiting.keys()]) {
    for (const jobId of jobIds) {
      try {
        const view = await api.getJob(jobId);
        const job = this.jobs.update(view);
        if (job) await this.jobChanged(job);
      } catch (error) {
        console.warn(`GET /api/jobs/${jobId}:`, error.message);
      }
    }
  }

  // --- steps -----------------------------------------------------------------------------

  async #clientKey(pipeline, params) {
    if (!this.image.sha256) return null;
    const { key } = await cacheKey({ pipeline, params, imageSha256: this.image.sha256 });
    return key;
  }

  async #send(call, body, seq) {
    try {
      const answer = await call(body);
      return seq === this.seq ? answer : null;
    } catch (error) {
      if (seq !== this.seq) return null;
      const retry = error.retryAfter ? ` (retry in ${error.retryAfter} s)` : "";
      const busy = error.code === "queue_full" ? "Server busy: " : "";
      this.ui.status(`${busy}${error.message}${retry}`, true);
      return null;
    }
  }

  #checkKey(serverKey) {
    this.state.serverKey = serverKey;
    this.ui.keyCheck(this.state.clientKey, serverKey);
  }

  #fromMemo(key) {
    const hit = this.memo.get(key);
    if (!hit) return false;
    this.memo.delete(key); // re-insert: the Map's order is the LRU order
    this.memo.set(key, hit);
    if (hit.serverKey) this.#checkKey(hit.serverKey);
    this.state.routedBackend = hit.source;
    this.#paint(hit.image, { source: hit.source, key, memo: true });
    this.ui.status("Shown from the page's memo (same cache_key)");
    return true;
  }

  async #runClient(pipeline, params, serverKey, seq, started) {
    this.ui.status("Running in the browser's workers…");
    const steps = enabledSteps(pipeline, params);
    try {
      const { image } = await this.pool.run(this.taskId, steps, this.image.pixels);
      this.#remember(this.state.clientKey ?? serverKey, image, "client-workers", serverKey);
      if (seq !== this.seq) return;
      this.#paint(image, {
        source: "client-workers",
        key: serverKey,
        ms: performance.now() - started,
      });
      this.ui.status("Preview computed in the browser");
    } catch (error) {
      if (error instanceof Superseded || seq !== this.seq) return;
      this.ui.status(`Browser workers failed: ${error.message}`, true);
    }
  }

  #follow(pipeline, answer, seq, started) {
    const backend = answer.routed_backend;
    this.waiting.set(answer.job_id, { seq, key: answer.cache_key, started });
    const job = this.jobs.track(answer.job_id, {
      pipelineId: pipeline.id,
      taskId: this.taskId,
      backend,
    });
    this.ui.status(`Queued on the server (${backend})…`);
    if (job.state !== "queued") this.jobChanged(job); // frames that beat the REST answer
    this.#poll();
  }

  // Without the socket, poll: the progress is coarser, but the result still arrives. A
  // job that got no frame for STALL_MS although the socket is open is polled too (its
  // first frames may have raced a previous row of the same job id).
  #poll() {
    if (this.pollTimer) return;
    this.pollTimer = setInterval(async () => {
      if (!this.waiting.size) {
        clearInterval(this.pollTimer);
        this.pollTimer = null;
        return;
      }
      const now = performance.now();
      const stalled = [...this.waiting].filter(([jobId, wait]) => {
        const quiet = !this.jobs.get(jobId)?.frames && now - wait.started > STALL_MS;
        return !this.socket.open || quiet;
      });
      if (stalled.length) await this.refetch(stalled.map(([jobId]) => jobId));
    }, POLL_MS);
  }

  async #showServer(url, key, seq, { cacheHit, started }) {
    try {
      const image = await decodeBlob(await api.fetchBlob(url));
      const source = `server${cacheHit ? " (cached)" : ""}`;
      this.#remember(key, image, source, key);
      if (seq !== this.seq) return;
      this.#paint(image, { source, key, ms: performance.now() - started });
      this.ui.status("Preview computed on the server");
    } catch (error) {
      if (seq === this.seq) this.ui.status(`Could not load the result: ${error.message}`, true);
    }
  }

  #remember(key, image, source, serverKey) {
    if (!key) return;
    this.memo.set(key, { image, source, serverKey });
    while (this.memo.size > MEMO_SIZE) this.memo.delete(this.memo.keys().next().value);
  }

  #paint(image, { source, key, ms = null, memo = false }) {
    this.state.result = { image, source, key, memo, ...imageStats(image) };
    this.viewer.showResult(image, { source: memo ? `${source}, memo` : source, ms });
  }
}
