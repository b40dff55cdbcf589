// The page's one DOM helper: el(tag, attrs, ...children). Attributes with a false, null or
// undefined value are left out, `true` sets a bare attribute; children are nodes or text.

export const $ = (id) => document.getElementById(id);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children.filter((c) => c !== null && c !== undefined && c !== false));
  return node;
}

/** Docstring text as one line: msgspec keeps the indentation of wrapped lines. */
export function tidy(text) {
  return (text ?? "").replace(/\s+/g, " ").trim();
}

/** Names that splitting alone does not make readable. */
const WORDS = { bgcolor: "Background colour", autocontrast: "Auto contrast" };

/** "kernelSize" / "alpha_matting" -> "Kernel size" / "Alpha matting". */
export function humanize(name) {
  if (Object.hasOwn(WORDS, name)) return WORDS[name];
  const words = String(name)
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .replace(/[_-]+/g, " ")
    .trim()
    .toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function formatBytes(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MB`;
  return `${Math.max(1, Math.ceil(n / 1024))} KB`;
}

export function formatMs(ms) {
  if (ms >= 60_000) return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

export function formatPixels(n) {
  return n >= 1e6 ? `${(n / 1e6).toFixed(1)} MP` : `${n.toLocaleString("en")} pixels`;
}
