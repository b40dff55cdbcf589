// Run static/js/resample.js and static/js/rembg-ops.js under node for tests/test_rembg_js.py.
//
// Usage: node rembg_check.mjs JOB.json
// JOB.json: a list of cases, each {"kind", ...}; bytes and float32 arrays travel as base64:
//   {"kind": "resize", "data", "width", "height", "bands", "out_width", "out_height", "filter"}
//   {"kind": "input", "data" (RGBA), "width", "height"}              -> float32 NCHW
//   {"kind": "mask", "pred" (float32), "side", "width", "height"}    -> L bytes
//   {"kind": "finish", "data" (RGBA), "width", "height", "mask", "params"} -> RGBA bytes
// Prints a list of base64 strings, one per case, in order.

import { readFileSync } from "node:fs";
import { resample } from "../../static/js/resample.js";
import { finish, maskFromPrediction, u2netpInput } from "../../static/js/rembg-ops.js";

const bytes = (b64) => new Uint8ClampedArray(Buffer.from(b64, "base64"));
const floats = (b64) => {
  const raw = Buffer.from(b64, "base64");
  return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
};
const out = (typed) => Buffer.from(typed.buffer, typed.byteOffset, typed.byteLength).toString("base64");

const RUN = {
  resize: (c) =>
    resample(bytes(c.data), c.width, c.height, c.bands, c.out_width, c.out_height, c.filter),
  input: (c) => u2netpInput({ width: c.width, height: c.height, data: bytes(c.data) }),
  mask: (c) => maskFromPrediction(floats(c.pred), c.side, c.width, c.height),
  finish: (c) =>
    finish({ width: c.width, height: c.height, data: bytes(c.data) }, bytes(c.mask), c.params)
      .data,
};

const cases = JSON.parse(readFileSync(process.argv[2], "utf8"));
process.stdout.write(JSON.stringify(cases.map((c) => out(RUN[c.kind](c)))));
