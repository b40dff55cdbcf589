// The dataset browser: thumbnails of the images under the data root (made and cached by
// the server: GET /api/datasets/thumbnail), a search by name (the server filters, so it
// scales to 100k files), and pages of PAGE items. Calls onPick({path}).

import { listDatasets, TOKEN } from "../api.js";
import { el, formatBytes } from "./dom.js";

const PAGE = 24;
const SEARCH_MS = 250;

export function thumbnailUrl(path, size = 128) {
  const query = new URLSearchParams({ path, size: String(size) });
  if (TOKEN) query.set("token", TOKEN); // an <img> cannot send the Authorization header
  return `/api/datasets/thumbnail?${query}`;
}

export class DatasetBrowser {
  constructor({ list, prev, next, status, search }, onPick) {
    Object.assign(this, { list, prev, next, status, search, onPick });
    this.offset = 0;
    this.total = 0;
    this.q = "";
    this.current = null; // the path picked, marked in the list
    this.generation = 0;
    prev.addEventListener("click", () => this.load(Math.max(0, this.offset - PAGE)));
    next.addEventListener("click", () => this.load(this.offset + PAGE));
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        this.q = search.value.trim();
        this.load(0);
      }, SEARCH_MS);
    });
  }

  async load(offset = 0) {
    const generation = ++this.generation;
    try {
      const page = await listDatasets(offset, PAGE, this.q);
      if (generation !== this.generation) return;
      this.offset = page.offset;
      this.total = page.total;
      this.#render(page.items);
    } catch (error) {
      this.status.textContent = `Could not list the data root: ${error.message}`;
    }
  }

  /** Mark `path` as the image on the stage. */
  mark(path) {
    this.current = path;
    for (const button of this.list.querySelectorAll(".dataset-item")) {
      button.setAttribute("aria-current", String(button.dataset.path === path));
    }
  }

  #render(items) {
    this.list.replaceChildren(
      ...items.map((item) => {
        const name = item.path.slice(item.path.lastIndexOf("/") + 1);
        const button = el(
          "button",
          {
            type: "button",
            class: "dataset-item",
            title: `${item.path} (${formatBytes(item.bytes)})`,
            "aria-label": item.path,
            "aria-current": String(item.path === this.current),
            "data-path": item.path,
          },
          el("img", {
            src: thumbnailUrl(item.path),
            alt: "",
            loading: "lazy",
            width: 84,
            height: 84,
          }),
          el("span", { "aria-hidden": "true" }, name),
        );
        button.addEventListener("click", () => this.onPick({ path: item.path }));
        return el("li", {}, button);
      }),
    );
    const last = Math.min(this.offset + PAGE, this.total);
    const of = this.total.toLocaleString("en");
    const matching = this.q ? ` matching “${this.q}”` : "";
    this.status.textContent = this.total
      ? `${(this.offset + 1).toLocaleString("en")}–${last.toLocaleString("en")} of ${of}${matching}`
      : this.q
        ? `No image name contains “${this.q}”`
        : "No images under the data root";
    this.prev.disabled = this.offset === 0;
    this.next.disabled = last >= this.total;
  }
}
