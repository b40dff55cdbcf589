// Run static/js/cachekey.js under node for tests/test_page.py.
//
// Usage: node cachekey_check.mjs JOB.json
// JOB.json: {"pipelines": <GET /api/pipelines body: its constants give the key format>,
//            "cases": [{"pipeline_id", "params", "image": base64 bytes, "checkpoint_sha256"?}]}
// Prints [{"cache_key", "canonical"}, ...], one per case, in order.

import { readFileSync } from "node:fs";
import { cacheKey } from "../../static/js/cachekey.js";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const byId = new Map(job.pipelines.pipelines.map((p) => [p.id, p]));
const format = job.pipelines.constants.cache_format;
const results = [];
for (const c of job.cases) {
  const { key, canonical } = await cacheKey({
    format,
    pipeline: byId.get(c.pipeline_id),
    params: c.params,
    imageBytes: Buffer.from(c.image, "base64"),
    checkpointSha256: c.checkpoint_sha256 ?? "",
  });
  results.push({ cache_key: key, canonical });
}
process.stdout.write(JSON.stringify(results));
