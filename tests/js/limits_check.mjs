// Run static/js/ui/limits.js's headerSize under node for tests/test_page.py.
//
// Usage: node limits_check.mjs JOB.json
// JOB.json: [base64 bytes of an image file, ...]; prints [{width, height} | null, ...].

import { readFileSync } from "node:fs";
import { headerSize } from "../../static/js/ui/limits.js";

const files = JSON.parse(readFileSync(process.argv[2], "utf8"));
const sizes = files.map((b64) => headerSize(new Uint8Array(Buffer.from(b64, "base64"))));
process.stdout.write(JSON.stringify(sizes));
