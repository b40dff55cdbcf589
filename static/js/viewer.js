// Before/after view: the original and the result side by side (stacked on a narrow
// window), each on a canvas, with a line saying where the result came from.

function paint(canvas, img) {
  canvas.width = img.width;
  canvas.height = img.height;
  const imageData = new ImageData(new Uint8ClampedArray(img.data), img.width, img.height);
  canvas.getContext("2d").putImageData(imageData, 0, 0);
}

export class Viewer {
  constructor({ before, after, caption, placeholder }) {
    this.before = before;
    this.after = after;
    this.caption = caption;
    this.placeholder = placeholder;
  }

  showOriginal(img) {
    paint(this.before, img);
    this.before.hidden = false;
  }

  /** Show a result; `meta` = {source, ms}. */
  showResult(img, meta) {
    paint(this.after, img);
    this.after.hidden = false;
    this.placeholder.hidden = true;
    this.after.dataset.source = meta.source;
    const parts = [`${img.width}×${img.height}`, meta.source];
    if (meta.ms != null) parts.push(`${meta.ms.toFixed(0)} ms`);
    this.caption.textContent = parts.join(" · ");
  }

  /** No result to show (yet): say why instead. */
  clearResult(message) {
    this.after.hidden = true;
    delete this.after.dataset.source;
    this.placeholder.hidden = false;
    this.placeholder.textContent = message;
    this.caption.textContent = "";
  }
}
