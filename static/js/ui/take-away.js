// Taking the result with you: download the result shown (the server's own PNG when it ran
// there, else the page's pixels encoded as PNG), download the mask of a background removal
// (its alpha as a grayscale PNG), and save an uploaded image under the data root so its
// command runs as it is (POST /api/datasets/uploads).

import * as api from "../api.js";
import { el } from "./dom.js";

function pngOf(img) {
  const canvas = el("canvas", { width: img.width, height: img.height });
  const data = new ImageData(new Uint8ClampedArray(img.data), img.width, img.height);
  canvas.getContext("2d").putImageData(data, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

/** The alpha band as an opaque grayscale image (white = kept), or null when all opaque. */
export function maskImage(img) {
  const out = new Uint8ClampedArray(img.data.length);
  let any = false;
  for (let i = 0; i < img.data.length; i += 4) {
    const a = img.data[i + 3];
    if (a !== 255) any = true;
    out[i] = out[i + 1] = out[i + 2] = a;
    out[i + 3] = 255;
  }
  return any ? { width: img.width, height: img.height, data: out } : null;
}

function save(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = el("a", { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function stem(name) {
  const base = (name ?? "image").slice((name ?? "").lastIndexOf("/") + 1);
  return base.includes(".") ? base.slice(0, base.lastIndexOf(".")) : base;
}

export class TakeAway {
  constructor({ result, mask, saveUpload, status }, { onSaved }) {
    Object.assign(this, {
      resultButton: result,
      maskButton: mask,
      saveButton: saveUpload,
      status,
      onSaved,
    });
    this.shown = null; // {image, key, source, name}
    this.image = null;
    this.allowed = true;
    result.addEventListener("click", () => this.downloadResult());
    mask.addEventListener("click", () => this.downloadMask());
    saveUpload.addEventListener("click", () => this.saveUpload());
  }

  /** The result now on the stage ({image, key, source}) and the picture's name. */
  setShown(shown) {
    this.shown = shown;
    this.mask = shown ? maskImage(shown.image) : null;
    this.resultButton.disabled = !shown;
    this.maskButton.disabled = !this.mask;
  }

  /** The image being worked on; uploads can be saved when the server allows it. */
  setImage(image, allowed) {
    this.image = image;
    this.allowed = allowed;
    this.saveButton.hidden = !(image && image.base64 != null && allowed);
    this.setShown(null);
  }

  fileName(suffix) {
    const [pipeline, hex] = (this.shown?.key ?? "result:").split(":");
    return `${stem(this.image?.name)}.${pipeline}-${(hex ?? "").slice(0, 8)}${suffix}.png`;
  }

  async downloadResult() {
    if (!this.shown) return;
    const { key, source, image } = this.shown;
    let blob = null;
    if (source.startsWith("server") && key) {
      // the server's own bytes: content-addressed, so the key names the file
      const [pipeline, hex] = key.split(":");
      blob = await api.fetchBlob(`/results/${pipeline}/${pipeline}-${hex}.png`).catch(() => null);
    }
    blob ??= await pngOf(image);
    save(blob, this.fileName(""));
    this.#say(`Saved ${this.fileName("")}`);
  }

  async downloadMask() {
    if (!this.mask) return;
    save(await pngOf(this.mask), this.fileName("-mask"));
    this.#say(`Saved ${this.fileName("-mask")}`);
  }

  async saveUpload() {
    if (!this.image?.base64) return;
    this.saveButton.disabled = true;
    this.#say("Saving under the data root…");
    try {
      const saved = await api.saveUpload({
        image_base64: this.image.base64,
        name: this.image.name,
      });
      this.#say(
        saved.created
          ? `Saved as ${saved.path}: its command runs as it is`
          : `Already saved as ${saved.path}`,
      );
      this.saveButton.hidden = true;
      this.onSaved(saved.path);
    } catch (error) {
      this.#say(`Could not save it: ${error.message}`);
    } finally {
      this.saveButton.disabled = false;
    }
  }

  #say(text) {
    this.status.textContent = text;
  }
}
