// One form control per JSON Schema kind, for people: a label from the schema's title (or
// the name made readable), the description as help, a plain-words error at the field.
//
// Every builder returns a Field: {node, read(), set(value), setDisabled(why), inputs}.
// read() gives {value} or {error: "plain words"}; a value the server would refuse is an
// error here, never silently replaced by a default ("abc" in a number box is an error).

import { el, humanize, tidy } from "./dom.js";

/** Docstring text with ``code`` spans; everything else stays text (no innerHTML). */
export function helpText(text, id) {
  const p = el("p", { class: "help", id });
  tidy(text)
    .split("``")
    .forEach((part, i) => {
      if (part) p.append(i % 2 ? el("code", {}, part) : part);
    });
  return p;
}

function labelOf(name, schema, prop) {
  return prop.title ?? schema.title ?? humanize(name);
}

function shell(field, id, help) {
  const error = el("p", { class: "field-error", id: `${id}-error`, hidden: true });
  field.node.append(error);
  const described = [help && help.id, error.id].filter(Boolean).join(" ");
  for (const input of field.inputs) input.setAttribute("aria-describedby", described);
  let reason = null;
  return Object.assign(field, {
    id,
    showError(message) {
      error.hidden = !message;
      error.textContent = message ?? "";
      const [typed] = field.inputs; // the box one types in (a slider cannot be wrong)
      if (message) typed.setAttribute("aria-invalid", "true");
      else typed.removeAttribute("aria-invalid");
    },
    setDisabled(why) {
      if (why === reason) return;
      reason = why;
      field.node.classList.toggle("disabled", Boolean(why));
      for (const input of field.inputs)
        input.disabled = Boolean(why) || input.dataset.locked === "1";
      field.node.title = why ?? "";
    },
    get disabled() {
      return Boolean(reason);
    },
  });
}

// --- the kinds -------------------------------------------------------------------------

function booleanField(id, label, schema, value) {
  const input = el("input", { type: "checkbox", id, checked: value === true });
  const node = el(
    "div",
    { class: "field" },
    el("div", { class: "field-bool" }, input, el("label", { for: id }, label)),
  );
  return {
    node,
    inputs: [input],
    read: () => ({ value: input.checked }),
    set: (v) => (input.checked = v === true),
  };
}

function enumField(id, label, schema, value) {
  const select = el("select", { id });
  schema.enum.forEach((option, i) => {
    const text = typeof option === "string" ? humanize(option) : String(option);
    select.append(el("option", { value: i, selected: option === value }, text));
  });
  const node = el("div", { class: "field" }, el("label", { for: id }, label), select);
  return {
    node,
    inputs: [select],
    read: () => ({ value: schema.enum[Number(select.value)] }),
    set: (v) => {
      const i = schema.enum.indexOf(v);
      if (i >= 0) select.value = String(i);
    },
  };
}

/** The plain-words reason a number box's text is not a valid value, or null. */
export function numberProblem(text, { integer, min, max, odd }) {
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(text)) {
    return integer ? "Enter a whole number" : "Enter a number";
  }
  const value = Number(text);
  if (integer && !Number.isInteger(value)) return "Enter a whole number";
  if (min !== undefined && max !== undefined && (value < min || value > max)) {
    return `Must be between ${min} and ${max}`;
  }
  if (min !== undefined && value < min) return `Must be at least ${min}`;
  if (max !== undefined && value > max) return `Must be at most ${max}`;
  if (odd && value % 2 !== 1) return `Must be odd (${min}, ${min + 2}, ${min + 4}, …)`;
  return null;
}

function numberField(id, label, schema, value, { nullable, odd: mustBeOdd }) {
  const integer = schema.type === "integer";
  const { minimum: min, maximum: max } = schema;
  // An integer the server wants odd (blur's kernelSize) steps by 2 from an odd minimum.
  const odd = integer && Boolean(mustBeOdd) && min % 2 === 1;
  const step = integer ? (odd ? 2 : 1) : max - min <= 1 ? 0.01 : 0.1;
  const box = el("input", {
    type: "text",
    id,
    value: value ?? "",
    placeholder: nullable ? "auto" : undefined,
    inputmode: integer ? "numeric" : "decimal",
    autocomplete: "off",
    spellcheck: "false",
  });
  const inputs = [box];
  const parts = [el("label", { for: id }, label)];
  const bounded = min !== undefined && max !== undefined && (!integer || max - min <= 1000);
  let slider = null;
  if (bounded && !nullable) {
    slider = el("input", {
      type: "range",
      id: `${id}-slider`,
      min,
      max,
      step,
      value: value ?? min,
      "aria-label": `${label} (slider)`,
    });
    slider.addEventListener("input", () => (box.value = slider.value));
    box.addEventListener("input", () => {
      if (box.value !== "" && Number.isFinite(Number(box.value))) slider.value = box.value;
    });
    parts.push(el("div", { class: "slider-row" }, slider, box));
    inputs.push(slider);
  } else {
    parts.push(box);
  }
  const rules = { integer, min, max, odd };
  return {
    node: el("div", { class: "field field-number" }, ...parts),
    inputs,
    slider,
    read() {
      const text = box.value.trim();
      if (text === "") return nullable ? { value: null } : { error: "Enter a value" };
      const problem = numberProblem(text, rules);
      return problem ? { error: problem } : { value: Number(text) };
    },
    set(v) {
      box.value = v ?? "";
      if (slider && v != null) slider.value = String(v);
    },
  };
}

const hex2 = (n) => n.toString(16).padStart(2, "0");

/** An RGBA byte quadruple (bgcolor): a colour picker and an opacity slider. */
function colourField(id, label, schema, value, { nullable }) {
  const start = value ?? [255, 255, 255, 255];
  const set = el("input", { type: "checkbox", id: `${id}-set`, checked: value != null });
  const colour = el("input", {
    type: "color",
    id,
    value: `#${start.slice(0, 3).map(hex2).join("")}`,
  });
  const alpha = el("input", {
    type: "range",
    id: `${id}-alpha`,
    min: 0,
    max: 255,
    step: 1,
    value: start[3],
    "aria-label": `${label} opacity`,
  });
  const shown = el("output", { for: alpha.id }, String(start[3]));
  alpha.addEventListener("input", () => (shown.value = alpha.value));
  const sync = () => {
    colour.disabled = alpha.disabled = (nullable && !set.checked) || set.disabled;
  };
  set.addEventListener("change", sync);
  const head = nullable
    ? el(
        "div",
        { class: "field-bool" },
        set,
        el("label", { for: set.id }, `Use a ${label.toLowerCase()}`),
      )
    : null;
  const node = el(
    "div",
    { class: "field field-colour" },
    head,
    el("label", { for: id, class: "field-label" }, label),
    el("div", { class: "colour-row" }, colour, alpha, shown),
  );
  const field = {
    node,
    inputs: nullable ? [set, colour, alpha] : [colour, alpha],
    read() {
      if (nullable && !set.checked) return { value: null };
      const hex = colour.value.slice(1);
      const rgb = [0, 2, 4].map((i) => Number.parseInt(hex.slice(i, i + 2), 16));
      return { value: [...rgb, Number(alpha.value)] };
    },
    set(v) {
      set.checked = v != null;
      if (v) {
        colour.value = `#${v.slice(0, 3).map(hex2).join("")}`;
        alpha.value = String(v[3]);
        shown.value = String(v[3]);
      }
      sync();
    },
  };
  queueMicrotask(sync);
  return field;
}

function tupleField(id, label, schema, value, { nullable }) {
  const items = schema.prefixItems;
  const rgba = items.length === 4 && items.every((s) => s.minimum === 0 && s.maximum === 255);
  if (rgba) return colourField(id, label, schema, value, { nullable });
  const boxes = items.map((s, i) =>
    el("input", {
      type: "text",
      inputmode: "numeric",
      id: `${id}-${i}`,
      value: value?.[i] ?? "",
      "aria-label": `${label} ${i + 1}`,
    }),
  );
  const node = el(
    "div",
    { class: "field" },
    el("span", { class: "field-label" }, label),
    el("div", { class: "tuple-row" }, ...boxes),
  );
  return {
    node,
    inputs: boxes,
    read() {
      if (nullable && boxes.every((b) => b.value.trim() === "")) return { value: null };
      const values = [];
      for (const [i, box] of boxes.entries()) {
        const s = items[i];
        const problem = numberProblem(box.value.trim(), {
          integer: s.type === "integer",
          min: s.minimum,
          max: s.maximum,
        });
        if (problem) return { error: `Item ${i + 1}: ${problem.toLowerCase()}` };
        values.push(Number(box.value));
      }
      return { value: values };
    },
    set: (v) => boxes.forEach((b, i) => (b.value = v?.[i] ?? "")),
  };
}

/** A model name: a dropdown of the models the server has (missing ones listed, disabled). */
function modelField(id, label, schema, value, { models }) {
  const select = el("select", { id });
  const names = models.map((m) => m.name);
  if (value && !names.includes(value)) models = [{ name: value, present: false }, ...models];
  for (const model of models) {
    const text = model.present ? model.name : `${model.name} (not downloaded)`;
    select.append(
      el(
        "option",
        { value: model.name, selected: model.name === value, disabled: !model.present },
        text,
      ),
    );
  }
  const node = el("div", { class: "field" }, el("label", { for: id }, label), select);
  return {
    node,
    inputs: [select],
    read: () => ({ value: select.value }),
    set: (v) => (select.value = v),
  };
}

function stringField(id, label, schema, value) {
  const input = el("input", { type: "text", id, value: value ?? "", spellcheck: "false" });
  const node = el("div", { class: "field" }, el("label", { for: id }, label), input);
  const pattern = schema.pattern ? new RegExp(schema.pattern) : null;
  return {
    node,
    inputs: [input],
    read() {
      const text = input.value.trim();
      if (!text) return { value: schema.default ?? "" };
      if (pattern && !pattern.test(text)) return { error: "Not an accepted value" };
      return { value: text };
    },
    set: (v) => (input.value = v ?? ""),
  };
}

function kindOf(name, schema, models) {
  if (name === "model" && schema.type === "string" && models?.length) return modelField;
  if (schema.enum) return enumField;
  if (schema.type === "boolean") return booleanField;
  if (schema.type === "integer" || schema.type === "number") return numberField;
  if (schema.type === "array" && Array.isArray(schema.prefixItems)) return tupleField;
  return stringField;
}

/**
 * The Field for property `name`: `schema` is its resolved schema (null unwrapped),
 * `prop` the property as written (title, description, default), `value` its start value,
 * `odd` whether the server refuses even values (GET /api/pipelines `constants.odd_params`).
 */
export function makeField(idPrefix, name, { schema, nullable, prop, value, models, odd }) {
  const id = `${idPrefix}-${name}`;
  const label = labelOf(name, schema, prop);
  const description = prop.description ?? schema.description;
  const builder = kindOf(name, schema, models);
  const field = builder(id, label, schema, value, { nullable, models, odd });
  const help = description ? helpText(description, `${id}-help`) : null;
  if (help) field.node.append(help);
  field.name = name;
  field.label = label;
  return shell(field, id, help);
}
