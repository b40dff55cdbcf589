// Limits before work: the server publishes what it refuses (GET /api/pipelines `limits`:
// max_image_bytes, max_pixels, max_body_bytes, max_side) and the page refuses the same
// files first — before uploading them, before decoding them, before any preview — in plain
// words, so it never shows what the server and the CLI would refuse.
//
// The pixel count comes from the file's header (PNG, JPEG, GIF, BMP, WebP): a 24 MP photo
// is refused without being decoded.

import { formatBytes, formatPixels as megapixels } from "./dom.js";

function u16be(b, i) {
  return (b[i] << 8) | b[i + 1];
}
function u16le(b, i) {
  return b[i] | (b[i + 1] << 8);
}
function u32be(b, i) {
  return ((b[i] << 24) >>> 0) + ((b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]);
}
function u24le(b, i) {
  return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16);
}
function i32le(b, i) {
  return b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24);
}

function jpegSize(b) {
  let i = 2;
  while (i + 9 < b.length) {
    if (b[i] !== 0xff) return null;
    const marker = b[i + 1];
    if (marker === 0xff) {
      i += 1;
      continue;
    }
    const length = u16be(b, i + 2);
    // SOF0..SOF15, less DHT (C4), JPG (C8) and DAC (CC)
    if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
      return { width: u16be(b, i + 7), height: u16be(b, i + 5) };
    }
    i += 2 + length;
  }
  return null;
}

function webpSize(b) {
  const chunk = String.fromCharCode(...b.subarray(12, 16));
  if (chunk === "VP8X") return { width: 1 + u24le(b, 24), height: 1 + u24le(b, 27) };
  if (chunk === "VP8L") {
    const bits = b[21] | (b[22] << 8) | (b[23] << 16) | (b[24] << 24);
    return { width: 1 + (bits & 0x3fff), height: 1 + ((bits >> 14) & 0x3fff) };
  }
  if (chunk === "VP8 ") return { width: u16le(b, 26) & 0x3fff, height: u16le(b, 28) & 0x3fff };
  return null;
}

/** {width, height} from the first bytes of an image file, or null (unknown or cut short). */
export function headerSize(bytes) {
  const b = bytes;
  if (b.length < 30) return null;
  if (b[0] === 0x89 && b[1] === 0x50 && b[2] === 0x4e && b[3] === 0x47) {
    return { width: u32be(b, 16), height: u32be(b, 20) };
  }
  if (b[0] === 0xff && b[1] === 0xd8) return jpegSize(b);
  if (b[0] === 0x47 && b[1] === 0x49 && b[2] === 0x46)
    return { width: u16le(b, 6), height: u16le(b, 8) };
  if (b[0] === 0x42 && b[1] === 0x4d)
    return { width: Math.abs(i32le(b, 18)), height: Math.abs(i32le(b, 22)) };
  if (
    String.fromCharCode(...b.subarray(0, 4)) === "RIFF" &&
    String.fromCharCode(...b.subarray(8, 12)) === "WEBP"
  ) {
    return webpSize(b);
  }
  return null;
}

/**
 * Why the server would refuse this image, in plain words, or null. `file` is a Blob (an
 * upload: it travels as base64 in a JSON body) or {size, head} for a dataset image.
 */
export async function refusal(blob, limits, { upload = true } = {}) {
  if (!limits) return null;
  if (blob.size > limits.max_image_bytes) {
    return (
      `This file is ${formatBytes(blob.size)}; the server takes images up to ` +
      `${formatBytes(limits.max_image_bytes)} (max_image_bytes). Re-encode or shrink it first.`
    );
  }
  // base64 is 4/3 of the bytes, plus the JSON around it
  if (upload && Math.ceil(blob.size / 3) * 4 + 4096 > limits.max_body_bytes) {
    return (
      `This file is ${formatBytes(blob.size)}: sent as base64 it would pass the server's ` +
      `request limit of ${formatBytes(limits.max_body_bytes)} (max_body_bytes).`
    );
  }
  const head = new Uint8Array(await blob.slice(0, 256 * 1024).arrayBuffer());
  const size = headerSize(head);
  if (size && size.width * size.height > limits.max_pixels) {
    return (
      `This image is ${size.width}×${size.height} = ${megapixels(size.width * size.height)}; ` +
      `the server takes up to ${megapixels(limits.max_pixels)} (max_pixels). Downscale it first.`
    );
  }
  return null;
}

/** One line for the picker: what the server accepts. */
export function describe(limits) {
  if (!limits) return "";
  return `Up to ${formatBytes(limits.max_image_bytes)} and ${megapixels(limits.max_pixels)}.`;
}
