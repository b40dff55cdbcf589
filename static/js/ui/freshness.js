// Whether the picture on the stage is what the form asks for. A result is never shown as
// current when it is not: the marker says "Current" only when the shown result was made
// from the image, pipeline and params the form holds now; otherwise it says why not —
// what is running (and how far), that the form has an error (the last valid result stays),
// that the preview failed, or that live preview is off.
//
// Requests are compared by their *identity*: the pipeline, the canonical params (every
// default filled in, routing keys left out) and the image's hash or path — the same things
// the cache key hashes, computed without hashing.

import { canonicalJson, enabledSteps } from "../cachekey.js";

/** A request's identity (a string): equal identities give the same picture. */
export function identity(pipeline, params, image) {
  const steps = enabledSteps(pipeline, params);
  return canonicalJson({ p: pipeline.id, s: steps, i: image?.sha256 ?? image?.path ?? null });
}

const LABELS = {
  empty: "No result yet",
  current: "Current",
  live: "Live preview",
  running: "Updating…",
  outline: "Outline",
  invalid: "Out of date",
  failed: "Out of date",
  stale: "Out of date",
};

export class Freshness {
  /** badge, detail: elements; root gets data-state. onChange(state) after every render. */
  constructor({ root, badge, detail }, onChange = () => {}) {
    Object.assign(this, { root, badge, detail, onChange });
    this.wanted = null; // identity the form asks for
    this.errors = []; // the form's field errors
    this.shown = null; // identity of the painted result
    this.isLive = false;
    this.pending = null; // identity of the run in flight
    this.activity = ""; // what the run in flight is doing
    this.outlined = null; // identity of the run in flight whose outline is on the stage
    this.failure = null; // {id, text}
    this.manual = false;
    this.render();
  }

  /** The form changed: what it asks for now (`errors` non-empty: it asks for nothing valid). */
  want(id, errors = [], { manual = false } = {}) {
    Object.assign(this, { wanted: errors.length ? null : id, errors, manual });
    this.render();
  }

  /** A preview run started for `id`. */
  started(id, text = "Starting…") {
    Object.assign(this, { pending: id, activity: text, failure: null, outlined: null });
    this.render();
  }

  /** What the run in flight is doing now ("Queued on the server", "alpha matting 2/3"). */
  progress(text) {
    this.activity = text;
    this.render();
  }

  /** The run in flight's outline is on the stage (a server job's cut-out at <= 256 px). */
  outline() {
    this.outlined = this.pending;
    this.render();
  }

  /** The run in flight painted its result. */
  painted() {
    Object.assign(this, { shown: this.pending, pending: null, isLive: false, failure: null });
    this.outlined = null;
    this.render();
  }

  /** A live preview (display copy) of `id` is on the stage. */
  live(id) {
    Object.assign(this, { shown: id, isLive: true });
    this.render();
  }

  /** The run in flight failed: its words are shown until the next run. */
  failed(text) {
    Object.assign(this, { failure: { id: this.pending, text }, pending: null });
    this.render();
  }

  /** Nothing on the stage any more (a new image). */
  cleared() {
    Object.assign(this, { shown: null, isLive: false, pending: null, failure: null });
    this.render();
  }

  get current() {
    return this.state === "current";
  }

  get state() {
    if (this.errors.length) return "invalid";
    if (this.shown !== null && this.shown === this.wanted && !this.isLive) return "current";
    if (this.pending !== null && this.outlined === this.pending) return "outline";
    if (this.pending !== null) return "running";
    if (this.shown !== null && this.shown === this.wanted && this.isLive) return "live";
    if (this.failure && this.failure.id === this.wanted) return "failed";
    if (this.shown === null && this.wanted === null) return "empty";
    return "stale";
  }

  get text() {
    const state = this.state;
    const shown = this.shown === null ? "" : " The picture is the last result.";
    switch (state) {
      case "invalid": {
        const [first] = this.errors;
        const more = this.errors.length > 1 ? ` (and ${this.errors.length - 1} more)` : "";
        return `The form has an error: ${first.label}: ${first.message}${more}.${shown}`;
      }
      case "running":
        return this.activity;
      case "outline": {
        const doing = this.activity.replace(/\.$/, "");
        return `The model's outline at a small size; the full result is on its way (${doing}).`;
      }
      case "live":
        return "Shown on a display-size copy while you drag; the full image runs on release.";
      case "failed":
        return `The preview did not finish: ${this.failure.text.replace(/\.$/, "")}.${shown}`;
      case "stale":
        if (this.manual) return `Live preview is off: press Preview.${shown}`;
        return this.shown === null ? "Pick an image to start." : `Waiting for the preview.${shown}`;
      case "current":
        return this.activity;
      default:
        return "";
    }
  }

  render() {
    const state = this.state;
    this.root.dataset.state = state;
    this.badge.textContent = LABELS[state];
    this.detail.textContent = this.text;
    this.onChange(state);
  }
}
