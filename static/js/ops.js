// Browser ports of the server's client-capable ops (src/playground_rt/pipeline/ops, client=True).
//
// Each function is a port of exactly what Pillow does for the Python op, down to its
// fixed-point rounding, so a preview computed in a Web Worker matches the server's pixel
// for pixel (tests/test_ops.py checks this with node against the installed Pillow).
// Images are ImageData-like: {width, height, data: Uint8ClampedArray RGBA}. Ops never
// modify their input; they return a new object of the same shape. No DOM, no deps: this
// module runs inside a Web Worker.

import { resample } from "./resample.js";

function newImage(width, height) {
  return { width, height, data: new Uint8ClampedArray(width * height * 4) };
}

function fail(message) {
  throw new RangeError(message);
}

// --- autocontrast: PIL.ImageOps.autocontrast on R, G, B; alpha untouched -------------

// Python's float `a // b` (floor division of doubles, CPython's float_floor_div).
function pyFloorDiv(a, b) {
  let mod = a % b;
  let div = (a - mod) / b;
  if (mod && b < 0 !== mod < 0) {
    mod += b;
    div -= 1.0;
  }
  if (!div) {
    return 0;
  }
  let floored = Math.floor(div);
  if (div - floored > 0.5) {
    floored += 1.0;
  }
  return floored;
}

// Cut `cutoff` percent of the samples from one end of `h`, walking `order`.
function cutEnd(h, n, cutoff, order) {
  let cut = Math.trunc(pyFloorDiv(n * cutoff, 100));
  for (const i of order) {
    if (cut > h[i]) {
      cut -= h[i];
      h[i] = 0;
    } else {
      h[i] -= cut;
      cut = 0;
    }
    if (cut <= 0) {
      break;
    }
  }
}

const UP = Array.from({ length: 256 }, (_, i) => i);
const DOWN = UP.slice().reverse();

function autocontrastLut(h, cutoff) {
  if (cutoff) {
    const n = h.reduce((sum, count) => sum + count, 0);
    cutEnd(h, n, cutoff, UP);
    cutEnd(h, n, cutoff, DOWN);
  }
  let lo = 0;
  while (lo < 255 && !h[lo]) lo++;
  let hi = 255;
  while (hi > 0 && !h[hi]) hi--;
  const lut = new Uint8Array(256);
  if (hi <= lo) {
    return lut.map((_, i) => i);
  }
  const scale = 255.0 / (hi - lo);
  const offset = -lo * scale;
  for (let i = 0; i < 256; i++) {
    lut[i] = Math.min(255, Math.max(0, Math.trunc(i * scale + offset)));
  }
  return lut;
}

function autocontrast(img, { cutoff = 0 } = {}) {
  if (!(cutoff >= 0 && cutoff <= 49)) {
    fail(`autocontrast.cutoff must be a percentage in 0..49, got ${cutoff}`);
  }
  const src = img.data;
  const out = newImage(img.width, img.height);
  for (let band = 0; band < 3; band++) {
    const h = new Array(256).fill(0);
    for (let i = band; i < src.length; i += 4) h[src[i]]++;
    const lut = autocontrastLut(h, cutoff);
    for (let i = band; i < src.length; i += 4) out.data[i] = lut[src[i]];
  }
  for (let i = 3; i < src.length; i += 4) out.data[i] = src[i];
  return out;
}

// --- grayscale: Image.convert("L" / "LA"), returned as RGBA with R = G = B = L --------

function grayscale(img, { keep_alpha = true } = {}) {
  const src = img.data;
  const out = newImage(img.width, img.height);
  const dst = out.data;
  for (let i = 0; i < src.length; i += 4) {
    // ITU-R 601-2 luma in 16-bit fixed point, as Pillow's Convert.c (L24).
    const l = (src[i] * 19595 + src[i + 1] * 38470 + src[i + 2] * 7471 + 0x8000) >> 16;
    dst[i] = dst[i + 1] = dst[i + 2] = l;
    dst[i + 3] = keep_alpha ? src[i + 3] : 255;
  }
  return out;
}

// --- blur: ImageFilter.BoxBlur((k - 1) / 2), Pillow's BoxBlur.c -----------------------

// One line of ImagingLineBoxBlur32: `n` contiguous RGBA pixels from byte `base` of `src`,
// written to the same place in `dst`. Pillow's three loops per edge case are the one
// loop below with the window's indices clamped to the line (edge pixels extended).
// UINT32 arithmetic is emulated with Math.imul and `>>> 0`, wrap-arounds included.
function boxBlurLine(src, dst, base, n, radius, ww, fw) {
  const last = n - 1;
  const edgeA = Math.min(radius + 1, n);
  for (let c = 0; c < 4; c++) {
    const b = base + c;
    let acc = src[b] * (radius + 1);
    for (let x = 0; x < edgeA - 1; x++) acc += src[b + 4 * x];
    acc += src[b + 4 * last] * (radius - edgeA + 1);
    for (let x = 0; x <= last; x++) {
      const left = b + 4 * Math.max(x - radius - 1, 0);
      const right = b + 4 * Math.min(x + radius + 1, last);
      acc += src[b + 4 * Math.min(x + radius, last)] - src[left];
      const bulk = (Math.imul(acc, ww) + Math.imul(src[left] + src[right], fw)) >>> 0;
      dst[b + 4 * x] = ((bulk + (1 << 23)) >>> 0) >>> 24;
    }
  }
}

// Pixels of an RGBA buffer `width` wide, transposed (rows become columns).
function transpose(data, width, height) {
  const src = new Uint32Array(data.buffer, data.byteOffset, width * height);
  const out = new Uint8ClampedArray(data.length);
  const dst = new Uint32Array(out.buffer);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) dst[x * height + y] = src[y * width + x];
  }
  return out;
}

function blur(img, { kernelSize = 5 } = {}) {
  // The port's own precondition (a whole radius), beside the server's rule the form follows.
  if (!Number.isInteger(kernelSize) || kernelSize < 1 || kernelSize > 31 || kernelSize % 2 === 0) {
    fail(`blur.kernelSize must be an odd integer in 1..31, got ${kernelSize}`);
  }
  const { width, height } = img;
  const radius = (kernelSize - 1) / 2;
  if (radius === 0) {
    return { width, height, data: img.data.slice() };
  }
  // Pillow computes the window weight in single precision: (float)(1 << 24) / (2r + 1).
  const ww = Math.trunc(Math.fround(16777216 / Math.fround(radius * 2 + 1)));
  const fw = Math.floor(((16777216 - (radius * 2 + 1) * ww) >>> 0) / 2);
  // Horizontal pass, then, like Pillow, the vertical one as a horizontal pass over the
  // transposed image (which also keeps memory access sequential).
  const rows = new Uint8ClampedArray(img.data.length);
  for (let y = 0; y < height; y++) {
    boxBlurLine(img.data, rows, y * width * 4, width, radius, ww, fw);
  }
  const columns = transpose(rows, width, height);
  const blurred = new Uint8ClampedArray(img.data.length);
  for (let x = 0; x < width; x++) {
    boxBlurLine(columns, blurred, x * height * 4, height, radius, ww, fw);
  }
  return { width, height, data: transpose(blurred, height, width) };
}

// --- resize: Image.resize((w, h), BILINEAR), Pillow's Resample.c (resample.js) --------

// RGBA -> RGBa (Convert.c rgbA2rgba, MULDIV255) and back (rgba2rgbA): Image.resize
// premultiplies around the resample so transparent colours do not bleed.
function premultiply(data) {
  const out = new Uint8ClampedArray(data.length);
  for (let i = 0; i < data.length; i += 4) {
    const a = data[i + 3];
    for (let c = 0; c < 3; c++) {
      const tmp = data[i + c] * a + 128;
      out[i + c] = ((tmp >> 8) + tmp) >> 8;
    }
    out[i + 3] = a;
  }
  return out;
}

function unpremultiply(data) {
  const out = new Uint8ClampedArray(data.length);
  for (let i = 0; i < data.length; i += 4) {
    const a = data[i + 3];
    for (let c = 0; c < 3; c++) {
      out[i + c] = a === 255 || a === 0 ? data[i + c] : Math.trunc((255 * data[i + c]) / a);
    }
    out[i + 3] = a;
  }
  return out;
}

// Same rule as geometry.target_size: the missing side keeps the aspect ratio, rounded
// half up in integers, at least 1.
function targetSize(img, width, height) {
  const scaled = (side, num, den) =>
    Math.max(1, Math.floor((2 * side * num + den) / (2 * den)));
  if (width != null && height != null) return [width, height];
  if (width != null) return [width, scaled(width, img.height, img.width)];
  if (height != null) return [scaled(height, img.width, img.height), height];
  return fail("resize needs at least one of width and height");
}

function resize(img, { width = null, height = null } = {}, limits = {}) {
  const [w, h] = targetSize(img, width, height);
  const maxSide = limits.max_side;
  if (!Number.isInteger(maxSide)) fail("resize needs the server's limits (max_side)");
  const valid = (side) => Number.isInteger(side) && side >= 1 && side <= maxSide;
  if (!valid(w) || !valid(h)) {
    fail(`resize to ${w}x${h}: each side must be an integer in 1..${maxSide}`);
  }
  if (w === img.width && h === img.height) {
    return { width: w, height: h, data: img.data.slice() };
  }
  const data = resample(premultiply(img.data), img.width, img.height, 4, w, h, "bilinear");
  return { width: w, height: h, data: unpremultiply(data) };
}

// --- rotate / flip: Image.transpose, exact ---------------------------------------------

// Build an image of `width` x `height` whose pixel (x, y) is img's pixel source(x, y).
function remap(img, width, height, source) {
  const out = newImage(width, height);
  // A Uint32Array view needs 4-byte alignment; a subarray of a larger buffer may lack it.
  const bytes = img.data.byteOffset % 4 === 0 ? img.data : img.data.slice();
  const src32 = new Uint32Array(bytes.buffer, bytes.byteOffset, img.width * img.height);
  const dst32 = new Uint32Array(out.data.buffer);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const [sx, sy] = source(x, y);
      dst32[y * width + x] = src32[sy * img.width + sx];
    }
  }
  return out;
}

function rotate(img, { degrees = 90 } = {}) {
  const { width: w, height: h } = img;
  switch (degrees) {
    case 0:
      return { width: w, height: h, data: img.data.slice() };
    case 90: // counter-clockwise, like Image.Transpose.ROTATE_90
      return remap(img, h, w, (x, y) => [w - 1 - y, x]);
    case 180:
      return remap(img, w, h, (x, y) => [w - 1 - x, h - 1 - y]);
    case 270:
      return remap(img, h, w, (x, y) => [y, h - 1 - x]);
    default:
      return fail(`rotate.degrees must be 0, 90, 180 or 270, got ${degrees}`);
  }
}

function flip(img, { direction = "horizontal" } = {}) {
  const { width: w, height: h } = img;
  if (direction === "horizontal") return remap(img, w, h, (x, y) => [w - 1 - x, y]);
  if (direction === "vertical") return remap(img, w, h, (x, y) => [x, h - 1 - y]);
  return fail(`flip.direction must be "horizontal" or "vertical", got ${direction}`);
}

const OPS = { autocontrast, blur, grayscale, resize, rotate, flip };

/**
 * The ops this module implements: the server's `client` ops (OpSpec.client, served per op
 * by GET /api/pipelines) but rembg, which needs a model and runs in the model worker
 * (model-worker.js, rembg-ops.js). tests/test_ops.py keeps the two lists equal.
 */
export const CLIENT_OPS = Object.freeze(Object.keys(OPS));

/**
 * Apply the op `name` with `params` (the server's param names and defaults) to `img`
 * and return a new image; throws RangeError for an unknown op or invalid params.
 * `limits`: the server's (GET /api/pipelines `limits`: resize checks `max_side`).
 */
export function applyOp(name, params, img, limits = {}) {
  if (!Object.hasOwn(OPS, name)) {
    fail(`unknown client op ${JSON.stringify(name)}; known: ${CLIENT_OPS.join(", ")}`);
  }
  return OPS[name](img, params ?? {}, limits);
}
