// Pillow's resampler (Resample.c), bit for bit: Image.resize with BILINEAR or LANCZOS on
// 8-bit images of any band count (RGBA as 4 bytes a pixel, L as 1).
//
// The filter weights are computed in doubles exactly as precompute_coeffs does, turned into
// 22-bit fixed point as normalize_coeffs_8bpc does, and every output byte is the clipped
// integer sum, so the result equals Pillow's (tests/test_ops.py and tests/test_rembg_js.py
// check it under node against the installed Pillow). No premultiplication here: the callers
// decide (Image.resize premultiplies RGBA and LA, not RGB or L).

const PRECISION_BITS = 32 - 8 - 2;

function bilinear(x) {
  const ax = Math.abs(x);
  return ax < 1.0 ? 1.0 - ax : 0.0;
}

function sinc(x) {
  if (x === 0.0) return 1.0;
  const px = x * Math.PI;
  return Math.sin(px) / px;
}

function lanczos(x) {
  // truncated sinc, as Resample.c's lanczos_filter
  return -3.0 <= x && x < 3.0 ? sinc(x) * sinc(x / 3) : 0.0;
}

/** Pillow's filters by name: {support, fn}. */
export const FILTERS = Object.freeze({
  bilinear: { support: 1.0, fn: bilinear },
  lanczos: { support: 3.0, fn: lanczos },
});

// precompute_coeffs + normalize_coeffs_8bpc over the whole source: per output pixel, the
// first source index and the fixed-point weights.
function coefficients(inSize, outSize, filter) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = filter.support * filterscale;
  const ss = 1.0 / filterscale;
  const bounds = new Int32Array(outSize * 2);
  const weights = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    // C's (int) cast truncates toward zero, then clamps.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const k = new Float64Array(xmax);
    let total = 0.0;
    for (let x = 0; x < xmax; x++) {
      k[x] = filter.fn((x + xmin - center + 0.5) * ss);
      total += k[x];
    }
    const fixed = new Int32Array(xmax);
    for (let x = 0; x < xmax; x++) {
      const w = total !== 0.0 ? k[x] / total : k[x];
      const scaled = w * (1 << PRECISION_BITS);
      fixed[x] = Math.trunc(w < 0 ? scaled - 0.5 : scaled + 0.5);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
    weights.push(fixed);
  }
  return { bounds, weights };
}

function clip8(ss) {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function horizontal(src, width, height, bands, outWidth, filter) {
  const { bounds, weights } = coefficients(width, outWidth, filter);
  const out = new Uint8ClampedArray(outWidth * height * bands);
  const sums = new Float64Array(bands);
  const half = 1 << (PRECISION_BITS - 1);
  for (let y = 0; y < height; y++) {
    const row = y * width * bands;
    for (let xx = 0; xx < outWidth; xx++) {
      const k = weights[xx];
      const first = row + bounds[xx * 2] * bands;
      sums.fill(half);
      for (let x = 0; x < k.length; x++) {
        const p = first + x * bands;
        for (let c = 0; c < bands; c++) sums[c] += src[p + c] * k[x];
      }
      const o = (y * outWidth + xx) * bands;
      // Integer sums below 2^31 in magnitude: the double holds them exactly, and `>>`
      // (ToInt32) shifts them as C does.
      for (let c = 0; c < bands; c++) out[o + c] = clip8(sums[c]);
    }
  }
  return out;
}

function vertical(src, width, height, bands, outHeight, filter) {
  const { bounds, weights } = coefficients(height, outHeight, filter);
  const stride = width * bands;
  const out = new Uint8ClampedArray(stride * outHeight);
  // Integer sums do not depend on their order: accumulate whole rows for locality.
  const sums = new Int32Array(stride);
  for (let yy = 0; yy < outHeight; yy++) {
    const k = weights[yy];
    sums.fill(1 << (PRECISION_BITS - 1));
    for (let y = 0; y < k.length; y++) {
      const row = (y + bounds[yy * 2]) * stride;
      const weight = k[y];
      for (let i = 0; i < stride; i++) sums[i] += src[row + i] * weight;
    }
    for (let i = 0; i < stride; i++) out[yy * stride + i] = clip8(sums[i]);
  }
  return out;
}

/**
 * `data` (`bands` bytes a pixel, `width` x `height`) resized to `outWidth` x `outHeight`
 * with `filter` ("bilinear" or "lanczos"), as Pillow's ImagingResample: a pass is skipped
 * when its side does not change; returns a new Uint8ClampedArray.
 */
export function resample(data, width, height, bands, outWidth, outHeight, filter) {
  const f = FILTERS[filter];
  if (!f) throw new RangeError(`unknown filter ${JSON.stringify(filter)}`);
  if (outWidth === width && outHeight === height) return data.slice();
  const h = (d, hh) => (outWidth !== width ? horizontal(d, width, hh, bands, outWidth, f) : d);
  const v = (d, ww) => (outHeight !== height ? vertical(d, ww, height, bands, outHeight, f) : d);
  // Pillow 13 (python-pillow/Pillow#9549) runs the vertical pass first when the height
  // shrinks by more than twice as many pixels as the width; the rounding of the
  // intermediate image makes the order visible in the result.
  const shrinkY = height - outHeight;
  if (shrinkY > 0 && shrinkY > 2 * (width - outWidth)) {
    return h(v(data, width), outHeight);
  }
  return v(h(data, height), outWidth);
}
