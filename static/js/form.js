// The params form, generated from a pipeline's JSON Schema (GET /api/pipelines).
//
// Preprocessing-like pipelines get one fieldset per op with an "enable" checkbox; the
// op's fields show only while it is enabled. Flat pipelines (rembg) get their fields
// directly. Field kinds follow the schema: boolean -> checkbox, enum -> select, bounded
// number -> slider plus number box, nullable number -> number box ("auto" when empty),
// fixed-length integer array (bgcolor) -> one box per item behind a "set" checkbox,
// string -> text box with the schema's pattern. Routing keys are not fields: where the
// work runs is the page's decision (app.js).

import { deref, isFlat, opProperties, pipelineProperties, ROUTING_KEYS } from "./cachekey.js";

/** Docstring text as one line: msgspec keeps the indentation of wrapped lines. */
export function tidy(text) {
  return (text ?? "").replace(/\s+/g, " ").trim();
}

// ``code`` in docstrings becomes <code>; everything else stays text (no innerHTML).
function helpText(text, id) {
  const p = document.createElement("p");
  p.className = "help";
  p.id = id;
  tidy(text)
    .split("``")
    .forEach((part, i) => {
      if (!part) return;
      if (i % 2) {
        const code = document.createElement("code");
        code.textContent = part;
        p.append(code);
      } else {
        p.append(part);
      }
    });
  return p;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    node.setAttribute(key, value === true ? "" : String(value));
  }
  node.append(...children);
  return node;
}

/** The field's schema with `anyOf [X, null]` unwrapped: {schema, nullable}. */
function unwrap(prop, root) {
  const resolved = deref(prop, root);
  if (!resolved.anyOf) return { schema: resolved, nullable: false };
  const options = resolved.anyOf.map((s) => deref(s, root));
  const real = options.filter((s) => s.type !== "null");
  const schema = real.length === 1 ? real[0] : { anyOf: real };
  return { schema, nullable: real.length < options.length };
}

function kindOf(schema) {
  if (schema.enum) return "enum";
  if (schema.type === "boolean") return "boolean";
  if (schema.type === "integer" || schema.type === "number") return "number";
  if (schema.type === "array" && Array.isArray(schema.prefixItems)) return "tuple";
  return "string";
}

// --- one control per kind: each returns {node, read()} -------------------------------

function booleanField(id, name, schema, value) {
  const input = el("input", { type: "checkbox", id, checked: value === true });
  const row = el("div", { class: "field-bool" }, input, el("label", { for: id }, name));
  const node = el("div", { class: "field" }, row);
  return { node, read: () => input.checked };
}

function enumField(id, name, schema, value) {
  const select = el("select", { id });
  schema.enum.forEach((option, i) => {
    select.append(el("option", { value: i, selected: option === value }, String(option)));
  });
  const node = el("div", { class: "field" }, el("label", { for: id }, name), select);
  return { node, read: () => schema.enum[Number(select.value)] };
}

function numberField(id, name, schema, value, nullable, description) {
  const integer = schema.type === "integer";
  const { minimum: min, maximum: max } = schema;
  // An integer documented as odd (blur's kernelSize) steps by 2 from an odd minimum, so
  // the slider cannot land on a value the server refuses.
  const odd = integer && /\bodd\b/i.test(description ?? "") && min % 2 === 1;
  const step = integer ? (odd ? 2 : 1) : max - min <= 1 ? 0.01 : 0.1;
  const box = el("input", {
    type: "number",
    id,
    min,
    max,
    step: integer ? step : "any",
    value: value ?? "",
    placeholder: nullable ? "auto" : undefined,
    inputmode: integer ? "numeric" : "decimal",
  });
  const parts = [el("label", { for: id }, name)];
  const bounded = min !== undefined && max !== undefined && (!integer || max - min <= 1000);
  if (bounded && !nullable) {
    const slider = el("input", {
      type: "range",
      id: `${id}-slider`,
      min,
      max,
      step,
      value: value ?? min,
      "aria-label": `${name} slider`,
    });
    slider.addEventListener("input", () => (box.value = slider.value));
    box.addEventListener("input", () => box.value !== "" && (slider.value = box.value));
    parts.push(el("div", { class: "slider-row" }, slider, box));
  } else {
    parts.push(box);
  }
  const read = () => {
    if (box.value.trim() === "") return nullable ? null : (schema.default ?? min ?? 0);
    const parsed = integer ? Number.parseInt(box.value, 10) : Number.parseFloat(box.value);
    return Number.isFinite(parsed) ? parsed : (schema.default ?? null);
  };
  return { node: el("div", { class: "field field-number" }, ...parts), read };
}

function tupleField(id, name, schema, value, nullable) {
  const items = schema.prefixItems;
  const rgba = items.length === 4 && items.every((s) => s.minimum === 0 && s.maximum === 255);
  const names = rgba ? ["R", "G", "B", "A"] : items.map((_, i) => `${name}[${i}]`);
  const start = value ?? items.map((s) => s.maximum ?? s.minimum ?? 0);
  const set = el("input", { type: "checkbox", id: `${id}-set`, checked: value != null });
  const boxes = items.map((s, i) =>
    el("input", {
      type: "number",
      id: `${id}-${i}`,
      min: s.minimum,
      max: s.maximum,
      step: 1,
      value: start[i],
      "aria-label": `${name} ${names[i]}`,
    }),
  );
  const row = el("div", { class: "tuple-row" });
  boxes.forEach((box, i) =>
    row.append(el("span", { class: "tuple-item", "aria-hidden": "true" }, names[i]), box),
  );
  const sync = () => boxes.forEach((box) => (box.disabled = nullable && !set.checked));
  set.addEventListener("change", sync);
  sync();
  const head = nullable
    ? el("div", { class: "field-bool" }, set, el("label", { for: set.id }, `set ${name}`))
    : el("span", { class: "field-label" }, name);
  const node = el("div", { class: "field field-tuple" }, head, row);
  const read = () =>
    nullable && !set.checked ? null : boxes.map((box) => Number.parseInt(box.value, 10) || 0);
  return { node, read };
}

function stringField(id, name, schema, value) {
  const input = el("input", {
    type: "text",
    id,
    value: value ?? "",
    pattern: schema.pattern,
    spellcheck: "false",
  });
  const node = el("div", { class: "field" }, el("label", { for: id }, name), input);
  return { node, read: () => input.value.trim() || (schema.default ?? "") };
}

// Every builder takes (id, name, schema, value, nullable, description).
const BUILDERS = {
  boolean: booleanField,
  enum: enumField,
  number: numberField,
  tuple: tupleField,
  string: stringField,
};

function field(idPrefix, name, prop, root, given) {
  const { schema, nullable } = unwrap(prop, root);
  const id = `${idPrefix}-${name}`;
  const description = prop.description ?? schema.description;
  const value = given !== undefined ? given : (prop.default ?? schema.default ?? null);
  const made = BUILDERS[kindOf(schema)](id, name, schema, value, nullable, description);
  if (description) {
    const help = helpText(description, `${id}-help`);
    made.node.append(help);
    made.node
      .querySelectorAll("input, select")
      .forEach((c) => c.setAttribute("aria-describedby", help.id));
  }
  return made;
}

function fields(idPrefix, properties, root, skip = [], values = {}) {
  const made = {};
  for (const [name, prop] of Object.entries(properties)) {
    if (!skip.includes(name)) made[name] = field(idPrefix, name, prop, root, values[name]);
  }
  return made;
}

function readAll(made) {
  return Object.fromEntries(Object.entries(made).map(([name, f]) => [name, f.read()]));
}

// --- the two layouts -------------------------------------------------------------------

function opFieldset(op, preset) {
  const root = op.params_schema;
  const values = preset && typeof preset === "object" ? preset : {};
  const made = fields(`f-${op.name}`, opProperties(op), root, [], values);
  const toggle = el("input", { type: "checkbox", id: `op-${op.name}`, checked: Boolean(preset) });
  const badge = el(
    "span",
    { class: op.client ? "badge badge-client" : "badge badge-server" },
    op.client ? "browser or server" : "server",
  );
  const body = el(
    "div",
    { class: "op-fields", hidden: !preset },
    ...Object.values(made).map((f) => f.node),
  );
  const fieldset = el(
    "fieldset",
    { class: preset ? "op enabled" : "op", "data-op": op.name },
    el("legend", {}, toggle, el("label", { for: toggle.id }, op.name), badge),
    helpText(op.summary, `op-${op.name}-help`),
    body,
  );
  toggle.setAttribute("aria-describedby", `op-${op.name}-help`);
  toggle.addEventListener("change", () => {
    body.hidden = !toggle.checked;
    fieldset.classList.toggle("enabled", toggle.checked);
  });
  const read = () => {
    if (!toggle.checked) return undefined;
    return Object.keys(made).length ? readAll(made) : true;
  };
  return { node: fieldset, read, toggle };
}

/**
 * Build the form of `pipeline` into `container`; `onChange()` runs on every edit. `preset`
 * is a params object to start from (op keys: true or values; flat pipelines: values).
 * Returns {params()}: the params object of a request (without routing keys).
 */
export function buildForm(container, pipeline, onChange, preset = {}) {
  container.replaceChildren();
  container.append(helpText(pipeline.summary, "pipeline-help"));
  let params;
  if (isFlat(pipeline)) {
    const skip = pipeline.routing_keys ?? ROUTING_KEYS;
    const made = fields("f", pipelineProperties(pipeline), pipeline.params_schema, skip, preset);
    container.append(
      el("div", { class: "flat-fields" }, ...Object.values(made).map((f) => f.node)),
    );
    params = () => readAll(made);
  } else {
    const ops = pipeline.ops.map((op) => [op.name, opFieldset(op, preset[op.name])]);
    for (const [, fs] of ops) container.append(fs.node);
    params = () => {
      const out = {};
      for (const [name, fs] of ops) {
        const value = fs.read();
        if (value !== undefined) out[name] = value;
      }
      return out;
    };
  }
  // `input` fires while a slider moves; `change` covers checkboxes and selects.
  container.oninput = onChange;
  container.onchange = onChange;
  return { params };
}
