// A short summary of a request's settings, for job rows and downloads: the enabled ops with
// the values that differ from their defaults ("autocontrast · blur 9 · resize width 640",
// "strength 0.85, alpha matting").

import {
  canonicalJson,
  deref,
  enabledSteps,
  isFlat,
  opProperties,
  pipelineProperties,
} from "../cachekey.js";
import { humanize } from "./dom.js";

const MAX = 80;

function changed(properties, root, params) {
  const parts = [];
  for (const [name, value] of Object.entries(params)) {
    const prop = deref(properties[name], root) ?? {};
    if (canonicalJson(value ?? null) === canonicalJson(prop.default ?? null)) continue;
    const label = humanize(name).toLowerCase();
    if (value === true) parts.push(label);
    else if (value === false || value === null) parts.push(`no ${label}`);
    else parts.push(`${label} ${Array.isArray(value) ? value.join("/") : value}`);
  }
  return parts;
}

export function summarize(pipeline, params) {
  let text;
  if (isFlat(pipeline)) {
    const [step] = enabledSteps(pipeline, params);
    const parts = changed(pipelineProperties(pipeline), pipeline.params_schema, step.params);
    text = parts.length ? parts.join(", ") : "defaults";
  } else {
    const steps = enabledSteps(pipeline, params);
    text = steps
      .map(({ name, params: values }) => {
        const op = pipeline.ops.find((o) => o.name === name);
        const props = opProperties(op);
        const parts = changed(props, op.params_schema, values);
        if (Object.keys(props).length === 1 && parts.length === 1) {
          return `${name} ${parts[0].slice(parts[0].indexOf(" ") + 1)}`;
        }
        return parts.length ? `${name} ${parts.join(", ")}` : name;
      })
      .join(" · ");
    text ||= "no ops (the image as it is)";
  }
  return text.length > MAX ? `${text.slice(0, MAX - 1)}…` : text;
}
