// The page's wiring: load the pipelines, make the pieces, connect them.
//
// One taskId per tab (a "form session", kept across reloads in sessionStorage): every
// preview carries it, so the server keeps only the newest job of this tab (slider drags
// supersede each other) and every frame about its jobs comes back tagged with it; after a
// reload the socket's `resume` follows the same jobs again.

import * as api from "./api.js";
import { CommandDrawer } from "./command-drawer.js";
import { exposeDebugHook } from "./debug-hook.js";
import { JobList, TERMINAL } from "./job-list.js";
import { setupUpload } from "./picker.js";
import { deviceDowngrade, Placement } from "./placement.js";
import { Previewer } from "./preview.js";
import { RembgWorker } from "./rembg.js";
import { LiveSocket } from "./socket.js";
import { startReporter, TelemetryPanel } from "./telemetry.js";
import { CompareStage } from "./ui/compare-stage.js";
import { CropHandles } from "./ui/crop-handles.js";
import { DatasetBrowser } from "./ui/dataset-browser.js";
import { $, el } from "./ui/dom.js";
import { Freshness } from "./ui/freshness.js";
import { describe as describeLimits } from "./ui/limits.js";
import { LivePreview } from "./ui/live-preview.js";
import { loadJobs, saveJob, tabTaskId } from "./ui/persist.js";
import { TakeAway } from "./ui/take-away.js";
import { Workspace } from "./ui/workspace.js";
import { WorkerPool } from "./worker-pool.js";

const FRAME_LOG = 50;

/**
 * Why this browser should not run previews itself, or null. Two cores are enough (the
 * pool keeps one for the page); OffscreenCanvas is needed to decode inside a worker.
 */
function downgradeReason() {
  if (typeof Worker === "undefined") return "no Web Workers";
  if (typeof OffscreenCanvas === "undefined") return "no OffscreenCanvas";
  if ((navigator.hardwareConcurrency ?? 1) < 2) return "a single CPU core";
  return null;
}

function makeStage() {
  return new CompareStage({
    stage: $("stage"),
    canvas: $("stage-canvas"),
    placeholder: $("stage-placeholder"),
    wipe: $("wipe"),
    zoomLevel: $("zoom-level"),
    modeWipe: $("mode-wipe"),
    modeSide: $("mode-side"),
    zoomIn: $("zoom-in"),
    zoomOut: $("zoom-out"),
    fit: $("zoom-fit"),
    oneToOne: $("zoom-1to1"),
    backdrop: $("backdrop"),
    mask: $("mask-overlay"),
    beforeCaption: $("before-caption"),
    afterCaption: $("after-caption"),
  });
}

function makeDrawer() {
  return new CommandDrawer({
    code: $("command"),
    copy: $("copy-command"),
    warnings: $("command-warnings"),
    status: $("copy-status"),
    pending: $("pending"),
    pendingCode: $("pending-command"),
    folder: $("folder"),
    folderCode: $("folder-command"),
    copyFolder: $("copy-folder"),
  });
}

/** The status elements the previewer writes to (its `ui`). */
function statusView(freshness, getForm) {
  return {
    status(text, error = false) {
      if (error) {
        getForm()?.showServerError(text);
        freshness.failed(text.replace(/ - at `\$[^`]*`$/, "")); // the field shows where
      } else {
        freshness.progress(text);
      }
    },
    keyCheck(client, server) {
      $("client-key").textContent = client ?? "–";
      $("server-key").textContent = server ?? "–";
      const warning = $("key-warning");
      warning.hidden = !(client && server && client !== server);
      warning.textContent = warning.hidden
        ? ""
        : "Cache key mismatch: the page and the server hash this request differently, " +
          "so memoized previews may be wrong. The page's cachekey.js is out of date.";
    },
    /** Where the shown preview ran and why ("browser · WASM × 2 threads · 690 ms"). */
    placement(text) {
      $("placement").textContent = text;
      $("placement").hidden = !text;
    },
    notes(list) {
      $("notes").replaceChildren(...list.map((text) => el("li", {}, text)));
    },
  };
}

/** The page's own model worker, unless this device should leave the model to the server. */
function startModel(pool) {
  const why = pool ? deviceDowngrade() : "no Web Workers for the model";
  const rembg = why ? null : new RembgWorker();
  const note = (text) => {
    $("model-note").hidden = false;
    $("model-note").textContent = text;
  };
  if (why) note(`Background removal runs on the server: ${why}.`);
  rembg?.ready.then((worker) => {
    if (worker.available) return;
    note(`Background removal runs on the server: ${worker.detail}.`);
  });
  return { rembg, why };
}

function showSocketState(state, detail) {
  $("socket-state").textContent = detail ? `live: ${state} (${detail})` : `live: ${state}`;
  $("socket-state").dataset.state = state;
}

async function main() {
  const taskId = tabTaskId();
  const downgraded = downgradeReason();
  const pool = downgraded ? null : new WorkerPool();
  const model = startModel(pool);
  const rembg = model.rembg;
  const placement = new Placement({ rembg, pool });
  const frames = [];
  // The pipelines, and what the page shares with the server instead of copying it: its
  // limits and `constants` (the cache-key format, the routing switch, close codes, ...).
  const listing = await api.getPipelines();
  const { constants } = listing;
  if (pool) pool.limits = listing.limits;
  $("limits-hint").textContent = describeLimits(listing.limits);

  const stage = makeStage();
  const drawer = makeDrawer();
  const telemetry = new TelemetryPanel($("telemetry-server"), $("telemetry-local"));
  let workspace = null;
  const freshness = new Freshness({
    root: $("freshness"),
    badge: $("freshness-badge"),
    detail: $("status"),
  });
  const view = statusView(freshness, () => workspace?.form);

  const previewer = new Previewer({
    pool,
    rembg,
    placement,
    jobs: null,
    viewer: null,
    ui: view,
    taskId,
    socket: null,
    constants,
  });
  const isLatest = (jobId) => previewer.waiting.get(jobId)?.seq === previewer.seq;
  // A job row changed: the previewer finishes the preview waiting on it; the stage's
  // marker follows the latest one (its stage, or how it ended).
  const jobChanged = async (job) => {
    const latest = isLatest(job.id);
    if (latest && !TERMINAL.has(job.state)) freshness.progress(jobs.progressText(job));
    if (latest && (job.state === "failed" || job.state === "cancelled")) {
      freshness.failed(`the server job was ${job.state}${job.detail ? `: ${job.detail}` : ""}`);
    }
    await previewer.jobChanged(job);
  };
  const jobs = new JobList($("job-list"), {
    empty: $("jobs-empty"),
    describe: () => workspace?.describe(),
    onChange: (job) => {
      saveJob(jobs.record(job));
      if (isLatest(job.id) && !TERMINAL.has(job.state)) freshness.progress(jobs.progressText(job));
    },
    onCancel: async (job) => {
      try {
        const updated = jobs.update(await api.cancelJob(job.id, job.taskId));
        if (updated) await jobChanged(updated);
      } catch (error) {
        job.detailEl.textContent = `cancel failed: ${error.message}`;
      }
    },
  });

  const socket = new LiveSocket(
    `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws` +
      (api.TOKEN ? `?token=${encodeURIComponent(api.TOKEN)}` : ""),
    {
      onState: showSocketState,
      closeCodes: constants.close_codes,
      onFrame: (frame) => {
        frames.push(frame);
        if (frames.length > FRAME_LOG) frames.shift();
        if (frame.type === "telemetry") {
          telemetry.renderServer(frame);
          placement.observeTelemetry(frame);
          jobs.telemetry(frame.durations_ms);
        } else if (frame.type === "gap") previewer.refetch(jobs.active().map((j) => j.id));
        else if (frame.type === "error") console.warn(`live socket: ${frame.detail}`);
        else if (frame.job_id) {
          if (frame.type === "queued") placement.observeQueued(frame.eta_ms);
          const job = jobs.update(frame);
          if (job) jobChanged(job);
        }
      },
    },
  );
  const live = new LivePreview({
    pool,
    stage,
    taskId,
    oddParams: constants.odd_params,
    onPaint: (id) => freshness.live(id),
  });
  const takeaway = new TakeAway(
    {
      result: $("download-result"),
      mask: $("download-mask"),
      saveUpload: $("save-upload"),
      status: $("takeaway-status"),
    },
    { onSaved: (path) => workspace.adoptPath(path) },
  );
  const datasets = new DatasetBrowser(
    {
      list: $("dataset-list"),
      prev: $("dataset-prev"),
      next: $("dataset-next"),
      status: $("dataset-status"),
      search: $("dataset-q"),
    },
    (pick) => workspace.pick(pick),
  );
  const crop = new CropHandles({
    overlay: $("crop-overlay"),
    canvas: $("stage-canvas"),
    stage,
    getForm: () => workspace?.form,
  });
  workspace = new Workspace({
    els: {
      form: $("params-form"),
      pipeline: $("pipeline"),
      server: $("run-on-server"),
      placementAuto: $("placement-auto"),
      auto: $("auto-preview"),
      preview: $("preview-button"),
      imageName: $("image-name"),
      imageError: $("image-error"),
    },
    listing,
    pool,
    taskId,
    previewer,
    stage,
    freshness,
    drawer,
    jobs,
    live,
    takeaway,
    datasets,
    crop,
  });
  Object.assign(previewer, { jobs, socket, viewer: workspace.viewer() });

  setupUpload(
    { input: $("file-input"), zone: $("drop-zone"), overlay: $("drop-overlay") },
    (pick) => workspace.pick(pick),
  );

  // Rows from before a reload; the socket's resume follows their jobs again, and a refetch
  // settles any that ended meanwhile.
  jobs.restore(await loadJobs(taskId));
  socket.followTask(taskId);
  socket.watch("telemetry");
  socket.start();
  settle(jobs, jobs.active());

  if (downgraded) {
    $("run-on-server").checked = true;
    $("run-on-server").disabled = true;
    $("device-note").hidden = false;
    $("device-note").textContent = `This browser has ${downgraded}: previews run on the server.`;
  }
  if (pool) {
    const modelNote = () => model.why ?? (rembg?.state === "unavailable" ? rembg.detail : null);
    const onStats = (stats) => telemetry.renderLocal(stats, downgraded, modelNote());
    startReporter({ pool, rembg, socket, taskId, post: api.reportMetrics, onStats });
  } else {
    telemetry.renderLocal({ queue_depth: 0, running: 0, workers: 0 }, downgraded);
  }

  const browse = $("datasets");
  if (window.matchMedia("(min-width: 961px)").matches) browse.open = true;
  if (browse.open) datasets.load(0);
  else
    browse.addEventListener("toggle", () => browse.open && datasets.load(datasets.offset), {
      once: true,
    });

  const hooks = { previewer, pool, rembg, placement, socket, jobs, frames, taskId };
  exposeDebugHook({ ...hooks, stage, freshness, workspace });
  await workspace.start(listing.example);
}

/**
 * Ask the server how rows restored from before a reload stand now. A job the server no
 * longer knows (restarted, or finished long ago) must not tick forever as "running".
 */
function settle(jobs, restored) {
  for (const job of restored) {
    api.getJob(job.id).then(
      (view) => jobs.update(view),
      (error) => {
        if (error.status !== 404) return;
        const detail = "the server no longer knows this job (restarted, or finished long ago)";
        jobs.update({ job_id: job.id, state: "cancelled", detail });
      },
    );
  }
}

main().catch((error) => {
  $("status").textContent = `The page failed to start: ${error.message}`;
  $("freshness").dataset.state = "failed";
  console.error(error);
});
