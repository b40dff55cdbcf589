// Run static/js/placement.js under node for tests/test_page_rembg.py: the placement
// decision for made-up measurements, without a browser or a model.
//
// Usage: node placement_check.mjs JOB.json
// JOB.json: a list of cases {isolated, deviceMemory, rembg: {state, detail, model, measured,
//   queued, running, masks}, pool: {queued, size}, telemetry, serverJobs: [[model, durations]],
//   uploads: [[bytes, ms]], budgetMs, decide: {model, maskKey, transfer, auto}}.
// Prints the decisions ({where, why, client?, server?}), one per case.

import { readFileSync } from "node:fs";
import { Placement } from "../../static/js/placement.js";
import { SATURATION_FACTOR } from "../../static/js/worker-pool.js";

function fakeRembg(r) {
  if (!r) return null;
  return {
    state: r.state ?? "ready",
    detail: r.detail ?? null,
    model: r.model ?? "u2netp",
    queued: r.queued ?? 0,
    running: r.running ?? 0,
    measured: () => ({ model: r.measured ?? null }),
    hasMask: (key) => (r.masks ?? []).includes(key),
  };
}

function fakePool(p) {
  const pool = { queued: p?.queued ?? 0, size: p?.size ?? 1 };
  pool.saturated = () => pool.queued > SATURATION_FACTOR * pool.size;
  return pool;
}

const decisions = [];
for (const c of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  globalThis.crossOriginIsolated = c.isolated ?? true;
  Object.defineProperty(globalThis, "navigator", {
    value: { deviceMemory: c.deviceMemory, hardwareConcurrency: 2 },
    configurable: true,
  });
  const placement = new Placement({
    rembg: fakeRembg(c.rembg),
    pool: fakePool(c.pool),
    budgetMs: c.budgetMs ?? 8000,
  });
  if (c.telemetry) placement.observeTelemetry(c.telemetry);
  for (const [model, durations] of c.serverJobs ?? []) placement.observeServerJob(model, durations);
  for (const [bytes, ms] of c.uploads ?? []) placement.observeUpload(bytes, ms);
  decisions.push(placement.decide({ model: "u2netp", maskKey: "k", ...c.decide }));
}
process.stdout.write(JSON.stringify(decisions));
