// Where the image comes from: the file input, a file dropped on the drop zone, or the
// dataset browser (GET /api/datasets, paged). Calls onPick({file}) or onPick({path}).

import { listDatasets } from "./api.js";

const PAGE = 8;

export function setupUpload({ input, zone }, onPick) {
  input.addEventListener("change", () => {
    if (input.files?.length) onPick({ file: input.files[0] });
  });
  // The zone is a <label> for the input: click and keyboard (Enter/Space on the input)
  // work without script; these handlers add drag-and-drop.
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("dragging"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer?.files?.[0];
    if (file) onPick({ file });
  });
}

function formatBytes(n) {
  return n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : `${Math.ceil(n / 1024)} KiB`;
}

export class DatasetBrowser {
  constructor({ list, prev, next, status }, onPick) {
    Object.assign(this, { list, prev, next, status, onPick });
    this.offset = 0;
    this.total = 0;
    prev.addEventListener("click", () => this.load(Math.max(0, this.offset - PAGE)));
    next.addEventListener("click", () => this.load(this.offset + PAGE));
  }

  async load(offset = 0) {
    try {
      const page = await listDatasets(offset, PAGE);
      this.offset = page.offset;
      this.total = page.total;
      this.#render(page.items);
    } catch (error) {
      this.status.textContent = `datasets: ${error.message}`;
    }
  }

  #render(items) {
    this.list.replaceChildren(
      ...items.map((item) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "dataset-item";
        button.textContent = item.path;
        button.title = `${item.path} (${formatBytes(item.bytes)})`;
        button.addEventListener("click", () => this.onPick({ path: item.path }));
        const li = document.createElement("li");
        li.append(button);
        return li;
      }),
    );
    const last = Math.min(this.offset + PAGE, this.total);
    this.status.textContent = this.total
      ? `${this.offset + 1}–${last} of ${this.total}`
      : "no images under the data root";
    this.prev.disabled = this.offset === 0;
    this.next.disabled = last >= this.total;
  }
}
