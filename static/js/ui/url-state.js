// The page's place in its URL: the image (a path under the data root, or the hash of an
// upload kept in this browser), the pipeline and its params, and "run on server". A link
// opens the same preview for a colleague (dataset images) and survives a reload (uploads
// too, from IndexedDB). The URL is replaced, not pushed: dragging a slider must not fill
// the history. Other query parameters (?token=) are kept as they are.
//
//   ?pipeline=preprocessing&image=data/datasets/images/val/sample.jpg
//    &params={"autocontrast":true,"blur":{"kernelSize":7}}
//   ?pipeline=rembg&upload=<sha256>&params={"strength":0.85}&server=1

import { canonicalJson, deref, isFlat, opProperties, pipelineProperties } from "../cachekey.js";

const KEYS = ["pipeline", "image", "upload", "params", "server"];

/** The state in `search` (default: this page's): {pipeline, image, upload, params, server}. */
export function readUrl(search = location.search) {
  const query = new URLSearchParams(search);
  let params = null;
  try {
    const text = query.get("params");
    params = text ? JSON.parse(text) : null;
  } catch {
    params = null; // a mangled link: the form starts from the defaults
  }
  if (params !== null && (typeof params !== "object" || Array.isArray(params))) params = null;
  return {
    pipeline: query.get("pipeline"),
    image: query.get("image"),
    upload: query.get("upload"),
    params,
    server: query.get("server") === "1",
  };
}

function isDefault(props, root, name, value) {
  const prop = deref(props[name], root) ?? {};
  return canonicalJson(value ?? null) === canonicalJson(prop.default ?? null);
}

/** `params` with every value at its default left out (an op at its defaults is `true`). */
export function compactParams(pipeline, params) {
  const trim = (props, root, values) =>
    Object.fromEntries(
      Object.entries(values).filter(
        ([name, v]) => !props[name] || !isDefault(props, root, name, v),
      ),
    );
  if (isFlat(pipeline)) return trim(pipelineProperties(pipeline), pipeline.params_schema, params);
  const out = {};
  for (const op of pipeline.ops) {
    const value = params[op.name];
    if (value === undefined || value === false) continue;
    if (value === true || typeof value !== "object") {
      out[op.name] = value;
      continue;
    }
    const kept = trim(opProperties(op), op.params_schema, value);
    out[op.name] = Object.keys(kept).length ? kept : true;
  }
  return out;
}

/** Put the state in the URL (replaceState). `image` is {path} or {sha256} (an upload). */
export function writeUrl({ pipeline, params, image, server }) {
  const query = new URLSearchParams(location.search);
  for (const key of KEYS) query.delete(key);
  query.set("pipeline", pipeline.id);
  if (image?.path) query.set("image", image.path);
  else if (image?.sha256) query.set("upload", image.sha256);
  const compact = compactParams(pipeline, params);
  if (Object.keys(compact).length) query.set("params", JSON.stringify(compact));
  if (server) query.set("server", "1");
  const url = `${location.pathname}?${query.toString()}${location.hash}`;
  if (url !== `${location.pathname}${location.search}${location.hash}`) {
    history.replaceState(history.state, "", url);
  }
}
