// Running a preview: cache key, memo, routing between the page's workers and the server.
//
//  1. The page computes the cache key (cachekey.js) from the image file's bytes and the
//     params; a result memoized under that key is shown at once.
//  2. POST /api/pipelines/preview with the form session's taskId. The server answers with
//     its own cache_key (compared with ours: a mismatch is shown as a warning), and either
//     `completed` (a cached result), `client-workers` (run it here) or a queued server job.
//  3. Client work goes to the worker pool, and the rembg step to the model worker (rembg.js:
//     the steps before it run in the pool, then the model, then the steps after it), unless
//     the page's queues are saturated: then the same payload is sent again with
//     params.background_removal = "server" (the fallback). The page asks for the server from
//     the start when the user ticks "Run on server", when the device is downgraded, or when
//     placement.js finds the server faster (measured) or the device unfit for the model.
//  4. Server jobs are followed over the WebSocket (progress rows in job-list.js); while the
//     socket is down they are polled with GET /api/jobs/{id}. A big job's outline (its
//     cut-out at <= 256 px, `outline_url` once the model's mask is known) is shown until
//     its result arrives. The result PNG is fetched, decoded, memoized under the cache key,
//     and shown if it is still the latest request.

import * as api from "./api.js";
import { cacheKey, canonicalJson, enabledSteps, isFlat, opProperties } from "./cachekey.js";
import { decodeBlob, imageStats } from "./imaging.js";
import { formatMs } from "./placement.js";
import { Superseded } from "./worker-pool.js";

const MEMO_SIZE = 24;
const POLL_MS = 1000;
const STALL_MS = 3000;

/** The server's reason for running a job the page asked for (jobs.submit's note). */
/** Why the server runs a preview the page asked to run itself (the answer says it). */
function serverReason(answer) {
  return answer.server_reasons?.length ? answer.server_reasons.join("; ") : "the server chose it";
}

/** True when `value` (the form's object for op `op`) is all of its defaults. */
function isDefaults(op, value) {
  if (value === true) return true;
  return Object.entries(opProperties(op)).every(
    ([name, prop]) => canonicalJson(value?.[name] ?? null) === canonicalJson(prop.default ?? null),
  );
}

export class Previewer {
  /**
   * `constants`: the server's (GET /api/pipelines): `cache_format` for the page's cache key,
   * `route_switch` the routing key that asks for the page or the server (background_removal).
   */
  constructor({ pool, rembg, placement, jobs, viewer, ui, taskId, socket, constants }) {
    Object.assign(this, { pool, rembg, placement, jobs, viewer, ui, taskId, socket, constants });
    this.image = null; // {name, sha256?, base64?, path?, pixels?}
    this.seq = 0; // bumps on every run: only the newest run may paint
    this.memo = new Map(); // cache_key -> {image, source, serverKey}
    this.waiting = new Map(); // job_id -> {seq, key, started, model, plan}
    this.state = { clientKey: null, serverKey: null, routedBackend: null, result: null };
    this.pollTimer = null;
  }

  setImage(image) {
    this.image = image;
    this.state.result = null;
    if (image.pixels) this.viewer.showOriginal(image.pixels);
    this.viewer.clearResult("No preview yet");
  }

  /**
   * The request body for `params` (routing keys added here, never by the form). A placed
   * op (preprocessing's rembg) with its defaults is sent as the contract writes it,
   * `"rembg": "client"`; the fallback is the same payload plus background_removal "server".
   */
  body(pipeline, params, { server }) {
    const routed = { ...params };
    if (!isFlat(pipeline)) {
      for (const op of pipeline.ops.filter((o) => o.placed && routed[o.name])) {
        if (isDefaults(op, routed[op.name])) routed[op.name] = "client";
      }
    }
    const placedClient = pipeline.ops.some((o) => o.placed && routed[o.name] === "client");
    const routeSwitch = this.constants.route_switch;
    if (server || !pipeline.ops.some((op) => op.client)) routed[routeSwitch] = "server";
    else if (!placedClient) routed[routeSwitch] = "client";
    const body = { pipeline_id: pipeline.id, params: routed, taskId: this.taskId };
    if (this.image?.base64 != null) body.image_base64 = this.image.base64;
    else if (this.image?.path != null) body.image_path = this.image.path;
    return body;
  }

  async run(pipeline, params, { server = false, auto = true } = {}) {
    const seq = ++this.seq;
    if (!this.image) return;
    // A canvas cannot give the file's colours under alpha (imaging.js, decodeBlob): the
    // server computes translucent images, so both sides agree under one cache_key.
    const translucent = Boolean(this.image.pixels?.translucent);
    const started = performance.now();
    const key = await this.#clientKey(pipeline, params);
    if (seq !== this.seq) return;
    Object.assign(this.state, { clientKey: key, serverKey: null, routedBackend: null });
    this.ui.keyCheck(null);
    if (key && this.#fromMemo(key)) return;

    const plan = this.#plan(pipeline, params, { server, auto, translucent });
    this.ui.status("Sending the preview request…");
    const toServer = plan.where === "server";
    let answer = await this.#post(this.body(pipeline, params, { server: toServer }), seq);
    if (!answer) return;
    this.#checkKey(answer.cache_key);
    if (!key && this.#fromMemo(answer.cache_key)) return;
    const waiting = (this.pool?.queued ?? 0) + (plan.rembg ? (this.rembg?.queued ?? 0) : 0);
    if (answer.routed_backend === "client-workers" && this.#saturated(plan)) {
      Object.assign(plan, { where: "server", why: `the page's queue is saturated (${waiting})` });
      this.ui.status(`Browser workers saturated (${waiting} waiting): falling back to the server`);
      answer = await this.#post(this.body(pipeline, params, { server: true }), seq);
      if (!answer) return;
    }
    this.state.routedBackend = answer.routed_backend;
    this.ui.notes(answer.notes ?? []);
    if (answer.status === "completed") {
      const why = plan.where === "server" ? ` · ${plan.why}` : "";
      this.ui.placement(`server${why} · cached result`);
      await this.#showServer(answer.result_url, answer.cache_key, seq, { cacheHit: true, started });
    } else if (answer.routed_backend === "client-workers") {
      await this.#runClient(pipeline, params, plan, answer.cache_key, seq, started);
    } else {
      if (plan.where !== "server") plan.why = serverReason(answer);
      this.ui.placement(`server · ${plan.why}`);
      this.#follow(pipeline, answer, seq, started, plan);
    }
  }

  /** A job row changed (frame or JobView): finish the preview waiting on it, if any. */
  async jobChanged(job) {
    const wait = this.waiting.get(job.id);
    if (wait && job.state === "running" && job.outlineUrl && wait.outline !== job.outlineUrl) {
      wait.outline = job.outlineUrl;
      return this.#showOutline(job, wait);
    }
    if (!wait || !["completed", "failed", "cancelled"].includes(job.state)) return;
    this.waiting.delete(job.id);
    if (wait.model && !job.cacheHit) this.placement?.observeServerJob(wait.model, job.durations);
    if (job.state === "completed") {
      await this.#showServer(job.resultUrl, wait.key, wait.seq, {
        cacheHit: job.cacheHit,
        started: wait.started,
        plan: wait.plan,
        wait,
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
    const format = this.constants.cache_format;
    const { key } = await cacheKey({ format, pipeline, params, imageSha256: this.image.sha256 });
    return key;
  }

  /**
   * Where this preview should run: {where, why, steps, rembg (its step), maskKey}. The
   * model step is placed by measurement (placement.js); light ops always fit the page.
   */
  #plan(pipeline, params, { server, auto, translucent }) {
    const steps = enabledSteps(pipeline, params);
    const index = steps.findIndex((s) => s.name === "rembg");
    const rembg = index < 0 ? null : steps[index];
    const before = index < 0 ? steps : steps.slice(0, index);
    const maskKey = rembg && `${rembg.params.model}|${this.image.sha256}|${canonicalJson(before)}`;
    const plan = { steps, index, rembg, maskKey, where: "client", why: "light ops" };
    if (server) return { ...plan, where: "server", why: "“Run on server” is ticked" };
    if (translucent) {
      const why = "a translucent image (the canvas loses its colours)";
      return { ...plan, where: "server", why };
    }
    if (!this.pool) return { ...plan, where: "server", why: "this browser cannot run workers" };
    if (!rembg) return plan;
    const upload = this.image.base64?.length ?? 0; // a dataset path uploads nothing
    const transfer = { upload, download: this.image.bytes ?? 0 };
    const decided = this.placement.decide({ model: rembg.params.model, maskKey, transfer, auto });
    return { ...plan, ...decided };
  }

  #saturated(plan) {
    return this.pool?.saturated() || (plan.rembg && this.placement.saturated());
  }

  /** POST the preview; its time and size feed the page's bandwidth estimate. */
  async #post(body, seq) {
    const started = performance.now();
    const answer = await this.#send(api.preview, body, seq);
    const bytes = body.image_base64?.length ?? 0;
    if (answer) this.placement?.observeUpload(bytes, performance.now() - started);
    return answer;
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

  async #runClient(pipeline, params, plan, serverKey, seq, started) {
    this.ui.status("Running in the browser's workers…");
    try {
      const { image, model } = await this.#computeHere(plan, seq);
      if (!image) return;
      this.#remember(this.state.clientKey ?? serverKey, image, "client-workers", serverKey);
      if (seq !== this.seq) return;
      const ms = performance.now() - started;
      this.#paint(image, { source: "client-workers", key: serverKey, ms });
      this.ui.placement(this.#clientLine(plan, model, ms));
      this.ui.status("Preview computed in the browser");
    } catch (error) {
      if (error instanceof Superseded || seq !== this.seq) return;
      if (!plan.rembg) return this.ui.status(`Browser workers failed: ${error.message}`, true);
      // The model worker failed (or never loaded): the server runs it, as a fallback.
      plan.why = `the browser's model failed: ${error.message}`;
      const answer = await this.#post(this.body(pipeline, params, { server: true }), seq);
      if (!answer) return;
      this.ui.placement(`server · ${plan.why}`);
      if (answer.status === "completed") {
        const shown = { cacheHit: true, started };
        await this.#showServer(answer.result_url, answer.cache_key, seq, shown);
      } else {
        this.#follow(pipeline, answer, seq, started, plan);
      }
    }
  }

  /** The steps before rembg in the pool, rembg in the model worker, the rest in the pool. */
  async #computeHere(plan, seq) {
    const { steps, index } = plan;
    const before = index < 0 ? steps : steps.slice(0, index);
    const after = index < 0 ? [] : steps.slice(index + 1);
    let image = this.image.pixels;
    if (before.length) image = (await this.pool.run(this.taskId, before, image)).image;
    if (seq !== this.seq) return {};
    let model = null;
    if (plan.rembg) {
      const job = { image, maskKey: plan.maskKey, params: plan.rembg.params };
      model = await this.rembg.remove(this.taskId, job);
      image = model.image;
    }
    if (seq !== this.seq) return {};
    if (after.length) image = (await this.pool.run(this.taskId, after, image)).image;
    return { image, model };
  }

  /** "browser · WASM × 2 threads · 690 ms": where it ran, how, and how long. */
  #clientLine(plan, model, ms) {
    if (!model) return `browser · workers × ${this.pool.size} · ${formatMs(ms)}`;
    const { backend, threads } = this.rembg;
    const plural = threads === 1 ? "" : "s";
    const how = backend === "webgpu" ? "WebGPU" : `WASM × ${threads} thread${plural}`;
    const work = model.inferred ? formatMs(model.timings.infer) + " model" : "mask kept, re-blend";
    return `browser · ${how} · ${formatMs(ms)} (${work}; ${plan.why})`;
  }

  #follow(pipeline, answer, seq, started, plan = null) {
    const backend = answer.routed_backend;
    const model = plan?.rembg?.params.model ?? null;
    this.waiting.set(answer.job_id, { seq, key: answer.cache_key, started, model, plan });
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

  /**
   * A big server job's outline (its cut-out at <= 256 px, once the model's mask is known):
   * drawn at the image's size until the full result arrives. A nicety: a failure to
   * fetch it only logs, and a result (or a newer run) that beat it wins. The job may end
   * while the outline is fetched: the outline still shows until the result is painted.
   */
  async #showOutline(job, wait) {
    try {
      const image = await decodeBlob(await api.fetchBlob(job.outlineUrl));
      if (wait.seq !== this.seq || wait.painted) return;
      const width = this.image?.pixels?.width ?? image.width;
      this.viewer.showOutline(image, width / image.width);
    } catch (error) {
      console.warn(`outline of ${job.id}:`, error.message);
    }
  }

  async #showServer(url, key, seq, { cacheHit, started, plan = null, wait = null }) {
    try {
      const image = await decodeBlob(await api.fetchBlob(url));
      const source = `server${cacheHit ? " (cached)" : ""}`;
      this.#remember(key, image, source, key);
      if (seq !== this.seq) return;
      const ms = performance.now() - started;
      this.#paint(image, { source, key, ms });
      if (plan) this.ui.placement(`server · ${plan.why} · ${formatMs(ms)}`);
      this.ui.status("Preview computed on the server");
    } catch (error) {
      if (seq === this.seq) this.ui.status(`Could not load the result: ${error.message}`, true);
    } finally {
      if (wait) wait.painted = true; // a late outline must not cover the result (or its error)
    }
  }

  #remember(key, image, source, serverKey) {
    if (!key) return;
    this.memo.set(key, { image, source, serverKey });
    while (this.memo.size > MEMO_SIZE) this.memo.delete(this.memo.keys().next().value);
  }

  #paint(image, { source, key, ms = null, memo = false }) {
    this.state.result = { image, source, key, memo, ms, ...imageStats(image) };
    this.viewer.showResult(image, { source: memo ? `${source}, memo` : source, ms });
  }
}
