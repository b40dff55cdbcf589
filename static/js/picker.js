// Where the image comes from: the file input, a file dropped anywhere on the page, or the
// dataset browser (ui/dataset-browser.js). Calls onPick({file}) or onPick({path}).
//
// A file dropped outside the drop zone must not make the browser navigate away from the
// page (and lose everything): every drag over the window is caught, an overlay says where
// it will go, and a dropped file is opened as if it had been chosen.

export function setupUpload({ input, zone, overlay }, onPick) {
  input.addEventListener("change", () => {
    if (input.files?.length) onPick({ file: input.files[0] });
    input.value = ""; // the same file chosen again is a new pick
  });
  // The zone is a <label> for the input: click and keyboard (Enter/Space on the input)
  // work without script; these handlers add drag-and-drop, on the whole window.
  let depth = 0;
  const hasFiles = (event) => [...(event.dataTransfer?.types ?? [])].includes("Files");
  const show = (on) => {
    overlay.hidden = !on;
    zone.classList.toggle("dragging", on);
  };
  window.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth += 1;
    show(true);
  });
  window.addEventListener("dragover", (event) => {
    event.preventDefault(); // also for non-files: nothing dropped here navigates away
    if (event.dataTransfer) event.dataTransfer.dropEffect = hasFiles(event) ? "copy" : "none";
  });
  window.addEventListener("dragleave", (event) => {
    if (!hasFiles(event)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) show(false);
  });
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    show(false);
    const file = event.dataTransfer?.files?.[0];
    if (file) onPick({ file });
  });
}
