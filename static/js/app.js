// The page's wiring: load the pipelines, build the form, connect the pieces.
//
// One taskId per page (a "form session"): every preview carries it, so the server keeps
// only the newest queued job of this page (slider drags supersede each other) and every
// frame about its jobs comes back tagged with it.

import * as api from "./api.js";
import { CommandDrawer } from "./console.js";
import { buildForm } from "./form.js";
import { blobToBase64, bytesToBase64, decodeBlob } from "./imaging.js";
import { JobList } from "./jobs.js";
import { DatasetBrowser, setupUpload } from "./picker.js";
import { deviceDowngrade, Placement } from "./placement.js";
import { Previewer } from "./preview.js";
import { RembgWorker } from "./rembg.js";
import { LiveSocket } from "./socket.js";
import { sha256Hex } from "./cachekey.js";
import { startReporter, TelemetryPanel } from "./telemetry.js";
import { Viewer } from "./viewer.js";
import { WorkerPool } from "./workers.js";

const DEBOUNCE_MS = 250;
const FRAME_LOG = 50;
/** What the page opens on: the contract's own preview (autocontrast, rembg "client", blur 5). */
const SEED_PRESET = Object.freeze({ autocontrast: true, rembg: true, blur: { kernelSize: 5 } });

const $ = (id) => document.getElementById(id);

function newTaskId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // randomUUID needs a secure context; a page served over plain http to another host
  // still has getRandomValues.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) =>
    b.toString(16).padStart(2, "0"),
  ).join("");
}

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

function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** The few status elements the previewer writes to. */
function statusView() {
  return {
    status(text, error = false) {
      $("status").textContent = text;
      $("status").classList.toggle("error", error);
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
    notes(list) {
      $("notes").replaceChildren(
        ...list.map((text) => Object.assign(document.createElement("li"), { textContent: text })),
      );
    },
    /** Where the shown preview ran and why ("browser · WASM × 2 threads · 690 ms"). */
    placement(text) {
      $("placement").textContent = text;
      $("placement").hidden = !text;
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

async function main() {
  const taskId = newTaskId();
  const downgraded = downgradeReason();
  const pool = downgraded ? null : new WorkerPool();
  const frames = [];
  const view = statusView();
  const { pipelines } = await api.getPipelines();
  const model = startModel(pool);
  const rembg = model.rembg;
  const placement = new Placement({ rembg, pool });

  const viewer = new Viewer({
    before: $("before"),
    after: $("after"),
    caption: $("after-caption"),
    placeholder: $("after-placeholder"),
  });
  const telemetry = new TelemetryPanel($("telemetry-server"), $("telemetry-local"));
  const drawer = new CommandDrawer({
    code: $("command"),
    copy: $("copy-command"),
    warnings: $("command-warnings"),
    status: $("copy-status"),
  });

  let previewer;
  const jobs = new JobList($("job-list"), {
    empty: $("jobs-empty"),
    onCancel: async (job) => {
      try {
        const updated = jobs.update(await api.cancelJob(job.id, job.taskId));
        if (updated) await previewer.jobChanged(updated);
      } catch (error) {
        job.detailEl.textContent = `cancel failed: ${error.message}`;
      }
    },
  });

  const socket = new LiveSocket(
    `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws` +
      (api.TOKEN ? `?token=${encodeURIComponent(api.TOKEN)}` : ""),
    {
      onState: (state, detail) => {
        $("socket-state").textContent = detail ? `live: ${state} (${detail})` : `live: ${state}`;
        $("socket-state").dataset.state = state;
      },
      onFrame: (frame) => {
        frames.push(frame);
        if (frames.length > FRAME_LOG) frames.shift();
        if (frame.type === "telemetry") {
          telemetry.renderServer(frame);
          placement.observeTelemetry(frame);
        } else if (frame.type === "gap") previewer.refetch();
        else if (frame.type === "error") view.status(`Live socket: ${frame.detail}`, true);
        else if (frame.job_id) {
          if (frame.type === "queued") placement.observeQueued(frame.eta_ms);
          const job = jobs.update(frame);
          if (job) previewer.jobChanged(job);
        }
      },
    },
  );
  previewer = new Previewer({ pool, rembg, placement, jobs, viewer, ui: view, taskId, socket });
  socket.followTask(taskId);
  socket.watch("telemetry");
  socket.start();

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

  // --- the form ----------------------------------------------------------------------
  const select = $("pipeline");
  for (const p of pipelines) {
    select.append(new Option(`${p.id} (v${p.version})`, p.id));
  }
  let pipeline = pipelines[0];
  let form = null;

  const options = () => ({ server: $("run-on-server").checked, auto: $("placement-auto").checked });
  const currentBody = () => previewer.body(pipeline, form.params(), options());
  const runPreview = () => previewer.run(pipeline, form.params(), options());
  const changed = debounce(() => {
    if (!previewer.image) return;
    drawer.update(currentBody());
    if ($("auto-preview").checked) runPreview();
  }, DEBOUNCE_MS);

  const showForm = () => {
    pipeline = pipelines.find((p) => p.id === select.value) ?? pipelines[0];
    const preset = pipeline.id === "preprocessing" ? SEED_PRESET : {};
    form = buildForm($("params-form"), pipeline, changed, preset);
    changed();
  };
  select.addEventListener("change", showForm);
  $("run-on-server").addEventListener("change", changed);
  $("placement-auto").addEventListener("change", changed);
  $("preview-button").addEventListener("click", () => {
    if (!previewer.image) return view.status("Pick an image first", true);
    drawer.update(currentBody());
    runPreview();
  });
  $("params-form").addEventListener("submit", (event) => event.preventDefault());
  showForm();

  // --- the image ---------------------------------------------------------------------
  const pick = async ({ file, path }) => {
    $("image-name").textContent = `Loading ${file ? file.name : path}…`;
    try {
      previewer.setImage(file ? await uploaded(file, pool, taskId) : await fromDataset(path, pool, taskId));
      $("image-name").textContent = file ? `${file.name} (uploaded)` : path;
      changed();
    } catch (error) {
      $("image-name").textContent = `Could not use this image: ${error.message}`;
    }
  };
  setupUpload({ input: $("file-input"), zone: $("drop-zone") }, pick);
  const datasets = new DatasetBrowser(
    {
      list: $("dataset-list"),
      prev: $("dataset-prev"),
      next: $("dataset-next"),
      status: $("dataset-status"),
    },
    pick,
  );
  $("datasets").addEventListener(
    "toggle",
    () => $("datasets").open && datasets.load(datasets.offset),
    {
      once: true,
    },
  );

  exposeDebugHook({ previewer, pool, rembg, placement, socket, jobs, frames, taskId });
}

/** An uploaded file: its exact bytes are what the server hashes, so hash those. */
async function uploaded(file, pool, taskId) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const [sha256, base64, pixels] = await Promise.all([
    sha256Hex(bytes),
    blobToBase64(file),
    pool ? pool.decode(file, taskId) : decodeBlob(file),
  ]);
  return { name: file.name, sha256, base64, pixels, bytes: bytes.length };
}

/**
 * A dataset image: fetched as the file's bytes (GET /api/datasets/file), so the page hashes
 * exactly what the server hashes for `image_path`; the request still names the path.
 */
async function fromDataset(path, pool, taskId) {
  const blob = await api.fetchBlob(`/api/datasets/file?path=${encodeURIComponent(path)}`);
  const bytes = new Uint8Array(await blob.arrayBuffer());
  const [sha256, pixels] = await Promise.all([
    sha256Hex(bytes),
    pool ? pool.decode(blob, taskId) : decodeBlob(blob),
  ]);
  return { name: path, path, sha256, pixels, bytes: bytes.length };
}

/**
 * `window.playground`: read-only figures for tests and for poking around in devtools.
 * resultRGBA() returns the shown result's pixels as base64 RGBA.
 */
function exposeDebugHook({ previewer, pool, rembg, placement, socket, jobs, frames, taskId }) {
  const state = previewer.state;
  window.playground = Object.freeze({
    taskId,
    /** The model worker: {state, detail, backend, threads, runs, blends, last: {timings}, ...}. */
    get rembg() {
      if (!rembg) return null;
      const { state: status, detail, backend, threads, runs, blends, queued } = rembg;
      const { loadMs, modelCached, last } = rembg;
      const figures = { backend, threads, runs, blends, queued, loadMs, modelCached, last };
      return { state: status, detail, ...figures, measured: rembg.measured() };
    },
    /** The last placement decision: {where, why, client?, server?}, and the line shown. */
    get placement() {
      const shown = document.getElementById("placement").textContent;
      return { ...(placement.last ?? {}), shown, device: placement.device };
    },
    get clientKey() {
      return state.clientKey;
    },
    get serverKey() {
      return state.serverKey;
    },
    get keyMatch() {
      return state.clientKey && state.serverKey ? state.clientKey === state.serverKey : null;
    },
    get routedBackend() {
      return state.routedBackend;
    },
    get result() {
      const r = state.result;
      return (
        r && {
          source: r.source,
          key: r.key,
          memo: r.memo,
          ms: r.ms,
          width: r.width,
          height: r.height,
          mean: r.mean,
        }
      );
    },
    get socket() {
      const { open, lastSeq, epoch, connects } = socket;
      return { open, lastSeq, epoch, connects };
    },
    get pool() {
      return pool && { size: pool.size, queued: pool.queued, running: pool.running };
    },
    jobs: () =>
      [...jobs.jobs.values()].map((j) => ({
        id: j.id,
        state: j.state,
        stage: j.stage,
        frames: j.frames,
      })),
    frames: () => frames.map((f) => ({ type: f.type, job_id: f.job_id, seq: f.seq })),
    resultRGBA: () => state.result && bytesToBase64(state.result.image.data),
  });
}

main().catch((error) => {
  $("status").textContent = `The page failed to start: ${error.message}`;
  $("status").classList.add("error");
  console.error(error);
});
