// Run static/js/ops.js under node for tests/test_ops.py.
//
// Usage: node ops_check.mjs JOB.json
// JOB.json: {"width", "height", "data": base64 RGBA, "ops": [{"name", "params"}, ...],
//            "limits": the server's limits (resize checks max_side)}
// Prints {"width", "height", "data": base64 RGBA} of the image after all ops, in order.

import { readFileSync } from "node:fs";
import { applyOp } from "../../static/js/ops.js";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
let img = {
  width: job.width,
  height: job.height,
  data: new Uint8ClampedArray(Buffer.from(job.data, "base64")),
};
for (const op of job.ops) {
  img = applyOp(op.name, op.params, img, job.limits);
}
const data = Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength);
process.stdout.write(
  JSON.stringify({ width: img.width, height: img.height, data: data.toString("base64") }),
);
