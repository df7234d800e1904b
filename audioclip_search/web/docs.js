/* Renders /openapi.json as a readable endpoint list: works offline (no Swagger UI from a CDN). */
"use strict";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function schemaType(schema) {
  if (!schema) return "";
  if (schema.anyOf) return schema.anyOf.map(schemaType).filter((t) => t && t !== "null").join(" | ");
  if (schema.type === "array") return `${schemaType(schema.items)}[]`;
  if (schema.format === "binary" || schema.contentMediaType) return "file";
  let t = schema.type || (schema.$ref ? schema.$ref.split("/").pop() : "");
  if (schema.minimum !== undefined || schema.maximum !== undefined) t += ` (${schema.minimum ?? ""}…${schema.maximum ?? ""})`;
  return t;
}

function resolve(spec, schema) {
  if (schema && schema.$ref) return schema.$ref.split("/").slice(1).reduce((o, k) => o[k], spec);
  return schema;
}

function paramRows(spec, op) {
  const rows = [];
  for (const p of op.parameters || []) {
    const s = p.schema || {};
    rows.push([p.name, p.in, schemaType(s), s.default !== undefined ? JSON.stringify(s.default) : (p.required ? "required" : ""), p.description || s.description || ""]);
  }
  const content = (op.requestBody && op.requestBody.content) || {};
  for (const [ctype, media] of Object.entries(content)) {
    const schema = resolve(spec, media.schema) || {};
    for (const [name, prop] of Object.entries(schema.properties || {})) {
      rows.push([name, ctype, schemaType(prop), prop.default !== undefined ? JSON.stringify(prop.default) : "", prop.description || ""]);
    }
  }
  return rows;
}

async function main() {
  const spec = await (await fetch("/openapi.json")).json();
  document.getElementById("intro").textContent = `${spec.info.title} ${spec.info.version} — ${spec.info.description || ""}`;
  const root = document.getElementById("endpoints");
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const card = el("section", "endpoint");
      const head = el("div", "endpoint-head");
      head.append(el("span", `method ${method}`, method.toUpperCase()), el("code", "path", path), el("span", "summary", op.summary || ""));
      card.append(head);
      const rows = paramRows(spec, op);
      if (rows.length) {
        const table = el("table", "params");
        const hr = el("tr");
        ["name", "in", "type", "default", "description"].forEach((h) => hr.append(el("th", null, h)));
        table.append(hr);
        for (const r of rows) {
          const tr = el("tr");
          r.forEach((c, i) => tr.append(el("td", i === 0 ? "mono" : null, c)));
          table.append(tr);
        }
        card.append(table);
      }
      if (method === "get" && !path.includes("{") && !(op.parameters || []).length) {
        const a = el("a", "btn try", "Open");
        a.href = path;
        a.target = "_blank";
        card.append(a);
      }
      root.append(card);
    }
  }
}

document.addEventListener("DOMContentLoaded", () => main().catch((e) => {
  document.getElementById("intro").textContent = `Could not load /openapi.json: ${e.message}`;
}));
