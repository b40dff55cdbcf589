// The page's debug hook, `window.playground`: the figures the browser tests read (and people
// poke at in devtools), as getters over the live pieces so every read is current.

import { bytesToBase64 } from "./imaging.js";

/**
 * `window.playground`: read-only figures for tests and for poking around in devtools.
 * resultRGBA() returns the shown result's pixels as base64 RGBA.
 */
export function exposeDebugHook({
  previewer,
  pool,
  rembg,
  placement,
  socket,
  jobs,
  frames,
  taskId,
  stage,
  freshness,
  workspace,
}) {
  const state = previewer.state;
  window.playground = Object.freeze({
    taskId,
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
          width: r.width,
          height: r.height,
          mean: r.mean,
          ms: r.ms,
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
    get stage() {
      return stage.state;
    },
    get freshness() {
      return { state: freshness.state, text: freshness.text };
    },
    get form() {
      return workspace.form.read().params;
    },
    pixelAt: (x, y) => stage.pixelAt(x, y),
    jobs: () =>
      [...jobs.jobs.values()].map((j) => ({
        id: j.id,
        state: j.state,
        stage: j.stage,
        frames: j.frames,
        title: j.title.textContent,
        detail: j.detail,
        restored: Boolean(j.restored),
      })),
    frames: () =>
      frames.map((f) => ({ type: f.type, job_id: f.job_id, seq: f.seq, stage: f.stage })),
    resultRGBA: () => state.result && bytesToBase64(state.result.image.data),
  });
}
