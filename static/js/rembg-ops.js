// The rembg op around the model, as the server runs it (pipeline/ops/background.py, pipeline/ops/compose.py
// over rembg 2.0.86), for the page's model worker (model-worker.js). Pure functions, no DOM,
// no runtime: the model's run is the caller's. tests/test_rembg_js.py checks each one under node against
// rembg and Pillow, bit for bit.
//
//   u2netpInput(img)        rembg's BaseSession.normalize for U2netpSession: RGB, 320x320
//                           LANCZOS, / max, (x - mean) / std, float32 NCHW
//   maskFromPrediction(...) U2netpSession.predict after the run: min-max of the first
//                           output, * 255 truncated to uint8, LANCZOS back to the image size
//   finish(img, mask, p)    rembg.remove's naive cut-out (Image.composite), then the server's
//                           strength blend, bgcolor (Image.alpha_composite) or only_mask
//
// Images are {width, height, data: Uint8ClampedArray RGBA}; a mask is a Uint8ClampedArray
// of width x height bytes (mode L). An L result (only_mask) is returned as RGBA with
// R = G = B = L and A = 255, which is what the server's L PNG decodes to.

import { resample } from "./resample.js";

export const U2NETP = Object.freeze({
  side: 320,
  mean: [0.485, 0.456, 0.406],
  std: [0.229, 0.224, 0.225],
});

/** numpy's rint: round half to even. */
export function rint(x) {
  const floor = Math.floor(x);
  const rest = x - floor;
  if (rest > 0.5) return floor + 1;
  if (rest < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** The model's input tensor data (1 x 3 x side x side, float32) for `img`. */
export function u2netpInput(img, { side, mean, std } = U2NETP) {
  // img.convert("RGB").resize((side, side), LANCZOS): RGB is not premultiplied.
  const small = resample(img.data, img.width, img.height, 4, side, side, "lanczos");
  let max = 0;
  for (let i = 0; i < small.length; i += 4) {
    max = Math.max(max, small[i], small[i + 1], small[i + 2]);
  }
  const scale = Math.max(max, 1e-6);
  const plane = side * side;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      // float64 as numpy computes it, then .astype(np.float32)
      out[c * plane + p] = (small[p * 4 + c] / scale - mean[c]) / std[c];
    }
  }
  return out;
}

/**
 * The L mask of `width` x `height` from the model's first output (`pred`: its first
 * side x side plane, float32): min-max normalised in float32, * 255 truncated, LANCZOS.
 */
export function maskFromPrediction(pred, side, width, height) {
  const plane = side * side;
  let lo = Infinity;
  let hi = -Infinity;
  for (let i = 0; i < plane; i++) {
    lo = Math.min(lo, pred[i]);
    hi = Math.max(hi, pred[i]);
  }
  const f = Math.fround;
  const range = f(hi - lo);
  const small = new Uint8ClampedArray(plane);
  for (let i = 0; i < plane; i++) {
    // numpy float32: (pred - mi) / (ma - mi), then * 255, then astype(uint8) truncates
    small[i] = Math.trunc(f(f(f(pred[i] - lo) / range) * 255));
  }
  return resample(small, side, side, 1, width, height, "lanczos");
}

// Paste.c's DIV255: (v + 128) / 255 rounded the way Pillow does it.
function div255(v) {
  const tmp = v + 128;
  return ((tmp >> 8) + tmp) >> 8;
}

/** rembg's naive_cutout: Image.composite(img, transparent, mask), i.e. paste_mask_L. */
export function naiveCutout(img, mask) {
  const src = img.data;
  const out = new Uint8ClampedArray(src.length);
  for (let p = 0, i = 0; i < src.length; p++, i += 4) {
    const m = mask[p];
    for (let c = 0; c < 4; c++) out[i + c] = div255(src[i + c] * m);
  }
  return { width: img.width, height: img.height, data: out };
}

/**
 * The blend's lookup tables over (a0, a), indexed `a0 << 8 | a` (pipeline/ops/compose.py `tables`):
 * the blended alpha a0 - rint(s * (a0 - a)), and the cut-out's share of the colour
 * M = rint(255 * s a / (s a + (1 - s) a0)) (255 where both weights are 0), in float64.
 */
export function blendTables(strength) {
  const alpha = new Uint8Array(65536);
  const share = new Uint8Array(65536);
  const keep = 1.0 - strength;
  for (let a0 = 0; a0 < 256; a0++) {
    for (let a = 0; a < 256; a++) {
      const after = strength * a;
      const total = after + keep * a0;
      alpha[(a0 << 8) | a] = a0 - rint(strength * (a0 - a));
      share[(a0 << 8) | a] = total > 0 ? rint((255 * after) / total) : 255;
    }
  }
  return { alpha, share };
}

/**
 * The server's strength dial (pipeline/ops/compose.py `blend_cutout`): alpha from the table, colours
 * (c M + c0 (255 - M)) / 255 rounded as Pillow's paste does.
 */
export function blendCutout(original, cutout, strength) {
  const before = original.data;
  const after = cutout.data;
  const out = new Uint8ClampedArray(before.length);
  const { alpha, share } = blendTables(strength);
  for (let i = 0; i < before.length; i += 4) {
    const key = (before[i + 3] << 8) | after[i + 3];
    const m = share[key];
    out[i + 3] = alpha[key];
    for (let c = 0; c < 3; c++) out[i + c] = div255(after[i + c] * m + before[i + c] * (255 - m));
  }
  return { width: original.width, height: original.height, data: out };
}

/** The server's `blend_mask` (pipeline/ops/compose.py): 255 - rint(s * (255 - m)). */
export function blendMask(mask, strength) {
  return mask.map((m) => 255 - rint(strength * (255 - m)));
}

/** Image.alpha_composite(solid `color`, img): AlphaComposite.c, 7 bits of precision. */
export function overColor(img, color) {
  const [dr, dg, db, da] = color;
  const src = img.data;
  const out = new Uint8ClampedArray(src.length);
  const shift = (v) => ((v >> 8) + v) >> 8;
  for (let i = 0; i < src.length; i += 4) {
    const sa = src[i + 3];
    if (sa === 0) {
      out[i] = dr;
      out[i + 1] = dg;
      out[i + 2] = db;
      out[i + 3] = da;
      continue;
    }
    const outa255 = sa * 255 + da * (255 - sa);
    const coef1 = Math.floor((sa * 255 * 255 * 128) / outa255);
    const coef2 = 255 * 128 - coef1;
    out[i] = shift(src[i] * coef1 + dr * coef2 + (0x80 << 7)) >> 7;
    out[i + 1] = shift(src[i + 1] * coef1 + dg * coef2 + (0x80 << 7)) >> 7;
    out[i + 2] = shift(src[i + 2] * coef1 + db * coef2 + (0x80 << 7)) >> 7;
    out[i + 3] = shift(outa255 + 0x80);
  }
  return { width: img.width, height: img.height, data: out };
}

function maskImage(mask, width, height) {
  const data = new Uint8ClampedArray(width * height * 4);
  for (let p = 0; p < mask.length; p++) {
    data[p * 4] = data[p * 4 + 1] = data[p * 4 + 2] = mask[p];
    data[p * 4 + 3] = 255;
  }
  return { width, height, data };
}

/**
 * The rembg op's result from its input `img` and the model's `mask`, with the op's params
 * (`strength`, `only_mask`, `bgcolor`; the model-side ones are the caller's): what the
 * page re-runs alone when only these dials move.
 */
export function finish(img, mask, { strength = 1, only_mask = false, bgcolor = null } = {}) {
  if (only_mask) {
    return maskImage(strength < 1 ? blendMask(mask, strength) : mask, img.width, img.height);
  }
  let out = naiveCutout(img, mask);
  if (strength < 1) out = blendCutout(img, out, strength);
  if (bgcolor != null) out = overColor(out, bgcolor);
  return out;
}
