// The params form, generated from a pipeline's JSON Schema (GET /api/pipelines).
//
// Preprocessing-like pipelines get one fieldset per op with an "enable" checkbox; the
// op's fields show only while it is enabled. Flat pipelines (rembg) get their fields
// directly. The controls themselves (ui/fields.js) are made for people: labels from the
// schema's titles, a model dropdown of the models present, a colour picker, errors at the
// field in plain words. Controls that do not apply are disabled and say why (alpha matting's
// thresholds while matting is off, the background colour with "only mask"). Crop's margins
// say what they leave of the image. Routing keys are not fields: where the work runs is the
// page's decision (app.js).

import { deref, isFlat, opProperties, pipelineProperties } from "./cachekey.js";
import { el, formatPixels as megapixels, humanize } from "./ui/dom.js";
import { helpText, makeField } from "./ui/fields.js";

export { tidy } from "./ui/dom.js";

/** Fields that do not apply while another field has a value: [field, other, value, why]. */
const INAPPLICABLE = [["bgcolor", "only_mask", true, "Not used with “Only mask” on"]];

/** The field's schema with `anyOf [X, null]` unwrapped: {schema, nullable}. */
function unwrap(prop, root) {
  const resolved = deref(prop, root);
  if (!resolved.anyOf) return { schema: resolved, nullable: false };
  const options = resolved.anyOf.map((s) => deref(s, root));
  const real = options.filter((s) => s.type !== "null");
  const schema = real.length === 1 ? real[0] : { anyOf: real };
  return { schema, nullable: real.length < options.length };
}

function fields(idPrefix, properties, root, { skip = [], values = {}, models, odd = [] }) {
  const made = {};
  for (const [name, prop] of Object.entries(properties)) {
    if (skip.includes(name)) continue;
    const { schema, nullable } = unwrap(prop, root);
    const given = values[name];
    const value = given !== undefined ? given : (prop.default ?? schema.default ?? null);
    const field = { schema, nullable, prop, value, models, odd: odd.includes(name) };
    made[name] = makeField(idPrefix, name, field);
    made[name].fallback = prop.default ?? schema.default ?? null;
  }
  return made;
}

/** A group's values and the errors of its enabled fields (each shown at its field). */
function readGroup(made, where) {
  const values = {};
  const errors = [];
  for (const [name, field] of Object.entries(made)) {
    const got = field.read();
    if (got.error && !field.disabled) {
      errors.push({ id: field.id, label: field.label, where, message: got.error, field });
      values[name] = field.fallback;
    } else {
      values[name] = got.error ? field.fallback : got.value;
    }
  }
  return { values, errors };
}

/** Disable what does not apply: `x_y` needs the boolean `x` on; the INAPPLICABLE table. */
function applyDependencies(made, values) {
  for (const [name, field] of Object.entries(made)) {
    let why = null;
    const prefix = Object.keys(made).find(
      (other) =>
        other !== name && name.startsWith(`${other}_`) && typeof values[other] === "boolean",
    );
    if (prefix && values[prefix] !== true) why = `Turn on “${made[prefix].label}” first`;
    for (const [target, other, value, reason] of INAPPLICABLE) {
      if (target === name && values[other] === value) why = reason;
    }
    field.setDisabled(why);
  }
}

// --- ops -------------------------------------------------------------------------------

function opFieldset(op, preset, { models, oddParams }) {
  const root = op.params_schema;
  const values = preset && typeof preset === "object" ? preset : {};
  const odd = oddParams[op.name];
  const made = fields(`f-${op.name}`, opProperties(op), root, { values, models, odd });
  const toggle = el("input", { type: "checkbox", id: `op-${op.name}`, checked: Boolean(preset) });
  const badge = el(
    "span",
    { class: op.client ? "badge badge-client" : "badge badge-server" },
    op.client ? "browser or server" : "server",
  );
  const extra = el("p", { class: "crop-size", id: `op-${op.name}-size`, hidden: true });
  const error = el("p", { class: "field-error", id: `op-${op.name}-error`, hidden: true });
  const body = el(
    "div",
    { class: "op-fields", hidden: !preset },
    ...Object.values(made).map((f) => f.node),
    extra,
  );
  const fieldset = el(
    "fieldset",
    { class: preset ? "op enabled" : "op", "data-op": op.name },
    el("legend", {}, toggle, el("label", { for: toggle.id }, op.title ?? humanize(op.name)), badge),
    helpText(op.summary, `op-${op.name}-help`),
    body,
    error,
  );
  toggle.setAttribute("aria-describedby", `op-${op.name}-help`);
  toggle.addEventListener("change", () => {
    body.hidden = !toggle.checked;
    fieldset.classList.toggle("enabled", toggle.checked);
  });
  return { node: fieldset, toggle, made, extra, error };
}

// Sizes through the geometry ops, as the server computes them (pipelines.output_size).
function afterCrop([w, h], p) {
  return [w - p.left - p.right, h - p.top - p.bottom];
}

function afterResize([w, h], p) {
  const scaled = (side, num, den) => Math.max(1, Math.floor((2 * side * num + den) / (2 * den)));
  if (p.width != null && p.height != null) return [p.width, p.height];
  if (p.width != null) return [p.width, scaled(p.width, h, w)];
  if (p.height != null) return [scaled(p.height, w, h), p.height];
  return [w, h];
}

/**
 * Build the form of `pipeline` into `container`; `onChange(event)` runs on every edit.
 * `preset` is a params object to start from (op keys: true or values; flat pipelines:
 * values); `options.models` the models the server lists, `options.limits` its limits,
 * `options.oddParams` the params that must be odd, per op (the server's `constants`).
 */
export function buildForm(container, pipeline, onChange, preset = {}, options = {}) {
  const { models = [], limits = null, oddParams = {} } = options;
  container.replaceChildren();
  container.append(helpText(pipeline.summary, "pipeline-help"));
  const flat = isFlat(pipeline);
  const groups = {}; // group name ("" for flat) -> {made, ...}
  if (flat) {
    const made = fields("f", pipelineProperties(pipeline), pipeline.params_schema, {
      skip: pipeline.routing_keys,
      values: preset,
      models,
      odd: oddParams[pipeline.ops[0].name],
    });
    container.append(
      el("div", { class: "flat-fields" }, ...Object.values(made).map((f) => f.node)),
    );
    groups[""] = { made };
  } else {
    for (const op of pipeline.ops) {
      groups[op.name] = opFieldset(op, preset[op.name], { models, oddParams });
      container.append(groups[op.name].node);
    }
  }
  let imageSize = null;

  /** {params, errors}: the request's params and the errors now shown at their fields. */
  function read() {
    const params = {};
    const errors = [];
    for (const [name, group] of Object.entries(groups)) {
      if (group.toggle && !group.toggle.checked) continue;
      // dependencies first: a disabled field's error is not the user's to fix
      applyDependencies(group.made, readGroup(group.made, name).values);
      const got = readGroup(group.made, name);
      errors.push(...got.errors);
      if (!name) Object.assign(params, got.values);
      else params[name] = Object.keys(group.made).length ? got.values : true;
    }
    errors.push(...checkSizes(params));
    for (const group of Object.values(groups)) {
      for (const field of Object.values(group.made)) {
        field.showError(errors.find((e) => e.id === field.id)?.message ?? null);
      }
      if (group.error) group.error.hidden = true; // a server's word holds until the next edit
    }
    return { params, errors };
  }

  /** The result's size through crop and resize; errors where a limit is passed. */
  function checkSizes(params) {
    const crop = groups.crop;
    if (crop) {
      crop.extra.hidden = !(imageSize && params.crop);
      if (imageSize && params.crop) {
        const [w, h] = afterCrop(imageSize, params.crop);
        crop.extra.textContent =
          w > 0 && h > 0
            ? `Margins are pixels cut from each edge: ${imageSize[0]}×${imageSize[1]} becomes ${w}×${h}.`
            : `Margins are pixels cut from each edge: these leave nothing of ${imageSize[0]}×${imageSize[1]}.`;
      }
    }
    if (!imageSize || flat) return [];
    const errors = [];
    let size = imageSize;
    if (params.crop) {
      size = afterCrop(size, params.crop);
      if (size[0] <= 0 || size[1] <= 0) {
        const field = size[0] <= 0 ? crop.made.right : crop.made.bottom;
        errors.push({
          id: field.id,
          label: field.label,
          message: "Nothing is left: the margins cover the whole image",
        });
        return errors;
      }
    }
    if (params.resize && limits) {
      size = afterResize(size, params.resize);
      const field = groups.resize.made[params.resize.width != null ? "width" : "height"];
      const [w, h] = size;
      if (params.resize.width == null && params.resize.height == null) {
        errors.push({
          id: field.id,
          label: field.label,
          message: "Give a width, a height or both",
        });
      } else if (w > limits.max_side || h > limits.max_side) {
        errors.push({
          id: field.id,
          label: field.label,
          message: `The result would be ${w}×${h}; each side may be at most ${limits.max_side}`,
        });
      } else if (w * h > limits.max_pixels) {
        errors.push({
          id: field.id,
          label: field.label,
          message: `The result would be ${w}×${h} = ${megapixels(w * h)}; the server allows ${megapixels(limits.max_pixels)}`,
        });
      }
    }
    return errors;
  }

  /** Show a server's 422 detail at its field: true when a field took it. */
  function showServerError(detail) {
    const match =
      /^(.*?) - at `\$\.(?:preview\.)?params(?:\.([A-Za-z0-9_]+))?(?:\.([A-Za-z0-9_]+))?/.exec(
        detail ?? "",
      );
    if (!match) return false;
    const [, message, first, second] = match;
    const group = flat ? groups[""] : groups[first];
    const name = flat ? first : second;
    let field = group?.made[name];
    if (!field && group) {
      field = Object.values(group.made).find((f) => message.includes(f.name));
    }
    const plain = plainWords(message, field?.name);
    if (field) {
      field.showError(plain);
      return true;
    }
    if (group?.error) {
      group.error.hidden = false;
      group.error.textContent = plain;
      return true;
    }
    return false;
  }

  const fieldOf = (group, name) => groups[group]?.made[name];
  const form = {
    read,
    params: () => read().params,
    showServerError,
    /** The image the form's sizes refer to ({width, height} or null). */
    setImage(size) {
      imageSize = size ? [size.width, size.height] : null;
      read();
    },
    get imageSize() {
      return imageSize;
    },
    enabled: (group) => Boolean(groups[group]?.toggle?.checked),
    value: (group, name) => fieldOf(group, name)?.read().value,
    /** Set a field as a user would (its input event fires: the page reacts as to typing). */
    set(group, name, value, type = "input") {
      const field = fieldOf(group, name);
      if (!field) return;
      field.set(value);
      field.inputs[0].dispatchEvent(new Event(type, { bubbles: true }));
    },
    fieldNode: (group, name) => fieldOf(group, name)?.node,
  };
  // `input` fires while a slider moves; `change` covers checkboxes, selects and release.
  container.oninput = onChange;
  container.onchange = onChange;
  read();
  return form;
}

/** msgspec's wording in plain words ("Expected `int` >= 1" -> "Must be at least 1"). */
export function plainWords(message, name) {
  let text = message.trim();
  const bound = /^Expected `(int|float|number)` (>=|<=|>|<) (-?[\d.]+)$/.exec(text);
  if (bound) {
    const [, , op, n] = bound;
    return {
      ">=": `Must be at least ${n}`,
      "<=": `Must be at most ${n}`,
      ">": `Must be more than ${n}`,
      "<": `Must be less than ${n}`,
    }[op];
  }
  if (/^Expected `int`/.test(text)) return "Enter a whole number";
  if (/^Expected `(float|number)`/.test(text)) return "Enter a number";
  if (/^Expected `str` matching regex/.test(text)) return "Not an accepted value";
  if (name && text.startsWith(`${name} `)) text = text.slice(name.length + 1);
  text = text.replace(/, got .*$/, "");
  return text.charAt(0).toUpperCase() + text.slice(1);
}
