// The user's place: the image, the pipeline and its form, and what follows from an edit.
//
// Every edit of the form goes through changed(event):
//   - the form is read and checked at its fields; with an error nothing runs and the last
//     valid command stays (the stage says the form has an error);
//   - the URL is updated (replaceState), so a reload or a shared link comes back here;
//   - a slider being dragged (`input` on a range) runs browser ops live on a display-size
//     copy, and nothing on the server; its release (`change`) runs the full preview at
//     once; other edits run it after DEBOUNCE_MS (typing).
// The previewer paints through viewer(): painting tells the freshness marker, the drawer
// (the command of what is shown) and the take-away buttons which request is on screen.

import * as api from "../api.js";
import { sha256Hex } from "../cachekey.js";
import { buildForm } from "../form.js";
import { blobToBase64, decodeBlob } from "../imaging.js";
import { identity } from "./freshness.js";
import { refusal } from "./limits.js";
import { loadUpload, saveUpload } from "./persist.js";
import { summarize } from "./summary.js";
import { readUrl, writeUrl } from "./url-state.js";

const DEBOUNCE_MS = 250;
const URL_MS = 200;
const COMMAND_MS = 150;

function later(fn, ms) {
  let timer = null;
  const call = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  call.cancel = () => clearTimeout(timer);
  return call;
}

const isRange = (event) =>
  event?.target instanceof HTMLInputElement && event.target.type === "range";

export class Workspace {
  constructor(deps) {
    // deps: {els, listing, pool, taskId, previewer, stage, freshness, drawer, jobs, live,
    //        takeaway, datasets, crop}
    Object.assign(this, deps);
    this.pipelines = deps.listing.pipelines;
    this.limits = deps.listing.limits ?? null;
    this.models = deps.listing.models ?? [];
    this.oddParams = deps.listing.constants.odd_params;
    this.pipeline = this.pipelines[0];
    this.form = null;
    this.lastRun = null; // {id, body, summary}
    this.placed = false; // start() has read the URL (until then the URL is not written)
    this.picks = 0; // images asked for so far
    this.runLater = later(() => this.run(), DEBOUNCE_MS);
    this.urlLater = later(() => this.#writeUrl(), URL_MS);
    this.commandLater = later((body) => this.drawer.want(body), COMMAND_MS);
    for (const p of this.pipelines)
      this.els.pipeline.append(new Option(`${p.id} (v${p.version})`, p.id));
    this.els.pipeline.addEventListener("change", () => this.showForm({}));
    this.els.server.addEventListener("change", () => this.changed());
    this.els.placementAuto.addEventListener("change", () => this.changed());
    this.els.auto.addEventListener("change", () => this.changed());
    this.els.preview.addEventListener("click", () => this.previewNow());
  }

  get image() {
    return this.previewer.image;
  }

  /** The viewer the previewer paints through (the stage, plus who needs to know). */
  viewer() {
    return {
      showOriginal: (img) => this.stage.showOriginal(img),
      clearResult: (message) => this.stage.clearResult(message),
      showResult: (img, meta) => {
        this.live.stop();
        this.stage.showResult(img, meta);
        const run = this.lastRun;
        this.freshness.painted();
        if (run) this.drawer.shown(run.body);
        const result = this.previewer.state.result;
        this.takeaway.setShown({ image: img, key: result?.key, source: meta.source });
      },
      // A server job's outline until its result arrives: the marker says so.
      showOutline: (img, scale) => {
        this.live.stop();
        this.stage.showOutline(img, scale);
        this.freshness.outline();
      },
    };
  }

  // --- start -----------------------------------------------------------------------------

  /** Open the page where the URL says, else on the example (the seed's image and preview). */
  async start(example) {
    const url = readUrl();
    const hasPlace = url.pipeline || url.image || url.upload;
    const place = hasPlace
      ? url
      : example
        ? { ...example, pipeline: example.pipeline_id, image: example.image_path }
        : {};
    this.els.server.checked ||= Boolean(place.server);
    const pipeline = this.pipelines.find((p) => p.id === place.pipeline) ?? this.pipelines[0];
    this.els.pipeline.value = pipeline.id;
    this.showForm(place.params ?? {}, { quiet: true });
    if (place.image) await this.pick({ path: place.image });
    else if (place.upload) await this.#restoreUpload(place.upload);
    this.placed = true;
    this.changed();
  }

  async #restoreUpload(sha256) {
    const kept = await loadUpload(sha256);
    if (!kept) {
      this.#imageError(
        "The uploaded image of this link is not kept in this browser: open the file again.",
      );
      return;
    }
    await this.pick({ file: new File([kept.blob], kept.name, { type: kept.type }) });
  }

  // --- the form --------------------------------------------------------------------------

  showForm(preset, { quiet = false } = {}) {
    this.pipeline =
      this.pipelines.find((p) => p.id === this.els.pipeline.value) ?? this.pipelines[0];
    const options = { models: this.models, limits: this.limits, oddParams: this.oddParams };
    this.form = buildForm(
      this.els.form,
      this.pipeline,
      (event) => this.changed(event),
      preset,
      options,
    );
    const pixels = this.image?.pixels;
    if (pixels) this.form.setImage(pixels);
    if (!quiet) this.changed();
  }

  /** The form changed (see the module comment). */
  changed(event = null) {
    const { params, errors } = this.form.read();
    const id = errors.length ? null : identity(this.pipeline, params, this.image);
    const auto = this.els.auto.checked;
    this.freshness.want(id, errors, { manual: !auto });
    this.crop.update();
    this.urlLater();
    if (errors.length || !this.image) return;
    const body = this.previewer.body(this.pipeline, params, this.#options());
    this.commandLater(body);
    if (!auto) return;
    if (isRange(event) && event.type === "input") {
      this.runLater.cancel(); // server work waits for the release
      // translucent pixels are computed by the server only (imaging.js): no live copy
      const server = this.#options().server || Boolean(this.image.pixels?.translucent);
      if (this.live.possible(this.pipeline, params, { server })) {
        this.live.update(this.pipeline, params, id);
      }
      return;
    }
    if (isRange(event) && event.type === "change") {
      this.run();
      return;
    }
    this.runLater();
  }

  /** The Preview button: run now, whatever "live preview" says. */
  previewNow() {
    if (!this.image) {
      this.#imageError("Pick an image first.");
      return;
    }
    this.run({ force: true });
  }

  run({ force = false } = {}) {
    this.runLater.cancel();
    if (!this.image) return;
    const { params, errors } = this.form.read();
    if (errors.length) return;
    const id = identity(this.pipeline, params, this.image);
    const inFlight = this.freshness.pending === id;
    const onScreen = this.freshness.shown === id && !this.freshness.isLive;
    if (!force && (inFlight || onScreen)) return;
    const options = this.#options();
    const body = this.previewer.body(this.pipeline, params, options);
    this.lastRun = { id, body, summary: summarize(this.pipeline, params) };
    this.live.stop();
    this.freshness.started(id, "Sending the preview request…");
    this.drawer.want(body);
    this.previewer.run(this.pipeline, params, options);
  }

  /** What a job row is named by: the image and the settings of the run being sent. */
  describe() {
    const name = this.image?.name ?? "";
    return { image: name.slice(name.lastIndexOf("/") + 1), summary: this.lastRun?.summary };
  }

  #options() {
    return { server: this.els.server.checked, auto: this.els.placementAuto.checked };
  }

  #writeUrl() {
    if (!this.form || !this.placed) return; // the URL is the place until start() has taken it
    const params = this.form.read().params;
    writeUrl({
      pipeline: this.pipeline,
      params,
      image: this.image,
      server: this.els.server.checked,
    });
  }

  // --- the image -------------------------------------------------------------------------

  /** A file (upload or drop) or a path under the data root; refused first if too big. */
  async pick({ file, path }) {
    const name = file ? file.name : path;
    const pick = ++this.picks; // the newest pick wins, whichever loads first
    this.#imageError(null);
    this.els.imageName.textContent = `Loading ${name}…`;
    this.freshness.started("loading", `Loading ${name}…`);
    try {
      const image = file ? await this.#uploaded(file) : await this.#fromDataset(path);
      if (pick !== this.picks) return;
      if (!image) return this.freshness.failed("the image was refused");
      this.previewer.setImage(image);
      this.freshness.cleared();
      this.takeaway.setImage(image, this.limits?.save_uploads ?? true);
      this.form.setImage(image.pixels);
      this.datasets.mark(image.path ?? null);
      await this.live.setImage(image.pixels);
      this.els.imageName.textContent = file ? `${file.name} (uploaded)` : path;
      if (file) saveUpload({ sha256: image.sha256, name: file.name, blob: file });
      this.changed();
    } catch (error) {
      if (pick !== this.picks) return;
      this.els.imageName.textContent = this.image ? this.image.name : "No image yet";
      this.#imageError(`Could not use ${name}: ${error.message}`);
      this.freshness.failed(`could not use ${name}`);
    }
  }

  /** The upload was saved under the data root: from now on it is that path. */
  adoptPath(path) {
    if (!this.image) return;
    this.image.path = path;
    delete this.image.base64;
    this.image.name = path;
    this.els.imageName.textContent = path;
    this.takeaway.setImage(this.image, false);
    this.datasets.mark(path);
    this.lastRun = null;
    this.freshness.cleared();
    this.changed();
  }

  #imageError(text) {
    this.els.imageError.hidden = !text;
    this.els.imageError.textContent = text ?? "";
  }

  /** An uploaded file: its exact bytes are what the server hashes, so hash those. */
  async #uploaded(file) {
    const refused = await refusal(file, this.limits);
    if (refused) {
      this.els.imageName.textContent = this.image ? this.image.name : "No image yet";
      this.#imageError(`${file.name}: ${refused}`);
      return null;
    }
    const bytes = new Uint8Array(await file.arrayBuffer());
    const [sha256, base64, pixels] = await Promise.all([
      sha256Hex(bytes),
      blobToBase64(file),
      this.pool ? this.pool.decode(file, this.taskId) : decodeBlob(file),
    ]);
    return { name: file.name, sha256, base64, pixels, bytes: bytes.length };
  }

  /**
   * A dataset image: fetched as the file's bytes (GET /api/datasets/file), so the page hashes
   * exactly what the server hashes for `image_path`; the request still names the path.
   */
  async #fromDataset(path) {
    const blob = await api.fetchBlob(`/api/datasets/file?path=${encodeURIComponent(path)}`);
    const refused = await refusal(blob, this.limits, { upload: false });
    if (refused) {
      this.#imageError(`${path}: ${refused}`);
      return null;
    }
    const bytes = new Uint8Array(await blob.arrayBuffer());
    const [sha256, pixels] = await Promise.all([
      sha256Hex(bytes),
      this.pool ? this.pool.decode(blob, this.taskId) : decodeBlob(blob),
    ]);
    return { name: path, path, sha256, pixels, bytes: bytes.length };
  }
}
