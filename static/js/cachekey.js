// The server's cache key, computed in the browser (and under node by
// tests/js/cachekey_check.mjs). It must match src/playground_rt/pipeline/registry.py bit for bit:
//
//   sha256 hex of the UTF-8 text
//     format + "\n" + pipeline_id + "\n" + version + "\n" +
//     canonical_params + "\n" + checkpoint_sha256_or_"" + "\n" + sha256hex(image bytes)
//   cache_key = pipeline_id + ":" + the first 32 hex digits
//
// `format` ("playground-rt/cache-v2") is the server's: GET /api/pipelines `constants`
// carries it, so a new key format on the server is never missed here. Keys that say where
// work runs (a pipeline's `routing_keys`) are not hashed.
//
// No DOM here: only Web Crypto (`crypto.subtle`, global in browsers and node 20).

const encoder = new TextEncoder();

/** Lowercase hex SHA-256 of bytes (ArrayBuffer / typed array) or of a string's UTF-8. */
export async function sha256Hex(input) {
  const bytes = typeof input === "string" ? encoder.encode(input) : input;
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

// --- canonical JSON (pipelines.canonical_json) -----------------------------------------

/**
 * A number as Python's `_number` prints it: integral values as integers, others with six
 * decimals, trailing zeros and a trailing dot removed, "-0" as "0".
 */
export function canonicalNumber(value) {
  if (!Number.isFinite(value)) throw new TypeError(`not canonicalisable: ${value}`);
  // BigInt, not String(): String(1e21) is "1e+21" where Python prints every digit.
  if (Number.isInteger(value)) return BigInt(value).toString();
  const text = fixed6(value).replace(/0+$/, "").replace(/\.$/, "");
  return text === "-0" || text === "" ? "0" : text;
}

// Python's f"{x:.6f}" rounds the exact binary value half to even; JS's toFixed(6) rounds
// an exact tie away from zero (0.0078125 -> "0.007813", Python "0.007812"). toFixed(30)
// shows whether the value sits exactly on a tie (a double this size has no digits that
// far down unless it is dyadic with a short expansion), and only then do we round to even.
function fixed6(value) {
  const rounded = value.toFixed(6);
  const long = Math.abs(value).toFixed(30);
  const tail = long.slice(long.indexOf(".") + 7);
  if (!/^50*$/.test(tail)) return rounded;
  const truncated = (value < 0 ? "-" : "") + long.slice(0, long.indexOf(".") + 7);
  const lastDigit = Number(truncated.at(-1));
  return lastDigit % 2 === 0 ? truncated : rounded;
}

// Python compares str keys by code point; JS's default sort by UTF-16 code unit differs
// for characters outside the BMP.
function byCodePoint(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/** The canonical text of a JSON value: keys sorted, no whitespace, numbers normalised. */
export function canonicalJson(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") return canonicalNumber(value);
  // JSON.stringify escapes exactly what json.dumps(ensure_ascii=False) does.
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
  if (typeof value === "object") {
    const keys = Object.keys(value).sort(byCodePoint);
    return "{" + keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",") + "}";
  }
  throw new TypeError(`not canonicalisable: ${typeof value}`);
}

// --- canonical params (Pipeline.plan) -------------------------------------------------

/** Follow a local `$ref` ("#/$defs/Name") inside `root`. */
export function deref(schema, root) {
  let node = schema;
  while (node && typeof node.$ref === "string") {
    const path = node.$ref.replace(/^#\//, "").split("/");
    node = path.reduce((obj, key) => obj?.[key], root);
  }
  return node;
}

/** The op's params object schema (`properties`) from its `params_schema`. */
export function opProperties(op) {
  return deref(op.params_schema, op.params_schema)?.properties ?? {};
}

/** The pipeline's own params object schema (flat pipelines keep their fields here). */
export function pipelineProperties(pipeline) {
  return deref(pipeline.params_schema, pipeline.params_schema)?.properties ?? {};
}

function withDefaults(properties, given, skip = []) {
  const out = {};
  for (const [name, prop] of Object.entries(properties)) {
    if (skip.includes(name)) continue;
    out[name] = Object.hasOwn(given, name) ? given[name] : (prop.default ?? null);
  }
  return out;
}

/** True when the pipeline's single op's params sit at the top level of `params`. */
export function isFlat(pipeline) {
  if (typeof pipeline.flat === "boolean") return pipeline.flat; // the server says so
  // An older server: an op key of a non-flat pipeline accepts `true`/`false` or the op's
  // object; the routing key "rembg" of the rembg pipeline shares the op's name.
  const props = pipelineProperties(pipeline);
  const isOpKey = (op) => props[op.name]?.anyOf?.some((s) => s.type === "boolean") ?? false;
  return !pipeline.ops.every(isOpKey);
}

/** The server's `_quantise`: non-integral numbers rounded to 6 decimals, as keyed and run. */
export function quantise(value) {
  if (typeof value === "number") return Number(canonicalNumber(value));
  if (Array.isArray(value)) return value.map(quantise);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, quantise(v)]));
  }
  return value;
}

/**
 * The enabled ops in pipeline order, each with every default filled in and its numbers
 * quantised: [{name, params}], the very params the server runs. Routing keys are left
 * out; they never change the result. A placed op's "client"/"server" means its defaults.
 */
export function enabledSteps(pipeline, params) {
  if (isFlat(pipeline)) {
    const own = withDefaults(pipelineProperties(pipeline), params, pipeline.routing_keys);
    return [{ name: pipeline.ops[0].name, params: quantise(own) }];
  }
  const steps = [];
  for (const op of pipeline.ops) {
    const value = params[op.name];
    if (value === undefined || value === null || value === false) continue;
    // true, or a placed op's placement ("client"/"server"): the op with its defaults
    const given = typeof value === "object" ? value : {};
    steps.push({ name: op.name, params: quantise(withDefaults(opProperties(op), given)) });
  }
  return steps;
}

/** The canonical params object the server hashes (before canonicalJson). */
export function canonicalParams(pipeline, params) {
  const steps = enabledSteps(pipeline, params);
  if (isFlat(pipeline)) return steps[0].params;
  return Object.fromEntries(steps.map((s) => [s.name, s.params]));
}

/**
 * The cache key of (pipeline, params, image bytes[, checkpoint sha256]) and its parts.
 * `imageSha256` may be given instead of recomputing it from `imageBytes` every time;
 * `format` is the server's `constants.cache_format`.
 */
export async function cacheKey({
  format,
  pipeline,
  params,
  imageBytes,
  imageSha256,
  checkpointSha256 = "",
}) {
  if (!format) throw new TypeError("cacheKey needs the server's cache_format");
  const canonical = canonicalJson(canonicalParams(pipeline, params));
  const image = imageSha256 ?? (await sha256Hex(imageBytes));
  const text = [
    format,
    pipeline.id,
    pipeline.version,
    canonical,
    checkpointSha256,
    image,
  ].join("\n");
  const hex = await sha256Hex(text);
  return { key: `${pipeline.id}:${hex.slice(0, 32)}`, canonical, imageSha256: image };
}
