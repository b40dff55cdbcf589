// Small image helpers for the main thread: decode a Blob to RGBA pixels (server results,
// or uploads on a device without OffscreenCanvas workers), base64 for request bodies,
// and summary figures for the debugging hook.

import { el } from "./ui/dom.js";

function canvas(width, height) {
  if (typeof OffscreenCanvas !== "undefined") return new OffscreenCanvas(width, height);
  return el("canvas", { width, height });
}

/**
 * Decode an image Blob to {width, height, data: Uint8ClampedArray RGBA, translucent}.
 *
 * The server decodes by the same rule (pipeline/images.py): EXIF orientation from JPEG APP1 and PNG
 * eXIf only (what createImageBitmap applies), no colour conversion, 16-bit samples cut to
 * their high byte. One thing a canvas cannot do is keep colours under alpha: it stores
 * premultiplied pixels, so colour under alpha 0 comes back as 0 and partial alpha loses
 * precision, and ops that mix neighbours (blur, resize) would then differ from the server
 * by up to 231. `translucent` says that some alpha is below 255: those pixels are not the
 * file's own, so the page must not compute on them and sends the request to the server
 * (preview.js). Opaque pixels are exact.
 */
export async function decodeBlob(blob) {
  const bitmap = await createImageBitmap(blob, {
    colorSpaceConversion: "none",
    premultiplyAlpha: "none",
  });
  const surface = canvas(bitmap.width, bitmap.height);
  const ctx = surface.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const { width, height, data } = ctx.getImageData(0, 0, surface.width, surface.height);
  return { width, height, data, translucent: hasTranslucency(data) };
}

/** True when any alpha byte of RGBA `data` is below 255. */
export function hasTranslucency(data) {
  for (let i = 3; i < data.length; i += 4) {
    if (data[i] !== 255) return true;
  }
  return false;
}

/** Base64 of a Blob's bytes (no data: prefix), without building a huge string by hand. */
export function blobToBase64(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () =>
      resolve(String(reader.result).slice(String(reader.result).indexOf(",") + 1));
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

/** Base64 of raw RGBA bytes (for tests reading the result through window.playground). */
export function bytesToBase64(bytes) {
  let binary = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + chunk));
  }
  return btoa(binary);
}

/** {width, height, mean: [r, g, b, a]}: enough to tell results apart at a glance. */
export function imageStats(img) {
  const sums = [0, 0, 0, 0];
  for (let i = 0; i < img.data.length; i += 4) {
    for (let c = 0; c < 4; c++) sums[c] += img.data[i + c];
  }
  const n = Math.max(1, img.width * img.height);
  return {
    width: img.width,
    height: img.height,
    mean: sums.map((s) => Math.round((s / n) * 100) / 100),
  };
}
