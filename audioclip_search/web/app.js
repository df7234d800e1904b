/* AudioCLIP Search web page: plain JavaScript, no build step, no external resources.
 *
 * URL parameters run a search on load: ?q=frog&target=audio&k=24&label=animals&where=...
 * or ?similar=audio:<id>. Every value from the index is inserted as text, never as HTML.
 */
"use strict";

const AUDIO_EXT = [".wav", ".flac", ".ogg", ".oga", ".mp3", ".m4a", ".aac", ".aiff", ".aif", ".opus", ".wma"];
const IMAGE_EXT = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"];
const KIND_NAMES = { audio: "Sound", image: "Picture", text: "Text" };
const $ = (id) => document.getElementById(id);

const state = { q: "", file: null, fileKind: null, target: "all", k: 12, where: "", label: "", similar: null };
let filePreviewUrl = null;
let searchSeq = 0;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function svgIcon(paths) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", "icon");
  svg.setAttribute("aria-hidden", "true");
  for (const d of paths) {
    const p = document.createElementNS(ns, "path");
    p.setAttribute("d", d);
    svg.append(p);
  }
  return svg;
}
const ICON_SIMILAR = ["M12 3v3M12 18v3M3 12h3M18 12h3", "M12 8a4 4 0 1 0 0 8 4 4 0 0 0 0-8z"];
const ICON_OPEN = ["M14 4h6v6", "M20 4l-9 9", "M18 14v5a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V7a1 1 0 0 1 1-1h5"];

function fmtTime(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  const m = Math.floor(seconds / 60);
  const s = seconds - m * 60;
  return `${m}:${s < 10 ? "0" : ""}${s.toFixed(1)}`;
}

function extOf(name) {
  const i = (name || "").lastIndexOf(".");
  return i < 0 ? "" : name.slice(i).toLowerCase();
}

function kindOfFile(file) {
  const type = (file.type || "").toLowerCase();
  const ext = extOf(file.name);
  if (type.startsWith("audio/") || AUDIO_EXT.includes(ext)) return "audio";
  if (type.startsWith("image/") || IMAGE_EXT.includes(ext)) return "image";
  return null;
}

/* A stable pseudo-waveform per file (a decoration: the real audio is not decoded here). */
function hashString(text) {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

function waveBars(seed, count) {
  let x = seed || 1;
  const out = [];
  for (let i = 0; i < count; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    const envelope = 0.55 + 0.45 * Math.sin((i / count) * Math.PI * (1.5 + (seed % 5) / 3) + (seed % 7));
    out.push(Math.max(0.08, Math.min(1, ((x % 1000) / 1000) * 0.75 * envelope + 0.15)));
  }
  return out;
}

/* ------------------------------------------------------------------ API */
async function api(url, options = {}) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  if (!response.ok) {
    const message = (body && (body.message || body.detail)) || `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

async function loadInfo() {
  try {
    const info = await api("/api/info");
    const stats = $("stats");
    stats.replaceChildren();
    const t = info.tables || {};
    const add = (n, label) => stats.append(el("span", { class: "stat" }, el("b", { text: String(n) }), ` ${label}`));
    add((t.audio || {}).rows || 0, "sound windows");
    add((t.image || {}).rows || 0, "pictures");
    if ((t.text || {}).rows) add(t.text.rows, "texts");
    stats.append(el("span", { class: "stat", title: info.model.name }, "model ", el("b", { text: info.model.display_name })));
    if (info.title) document.title = info.title;
  } catch (e) {
    $("stats").textContent = "";
  }
}

/* ------------------------------------------------------------------ rendering */
function setStatus(parts, isError = false) {
  const status = $("status");
  status.classList.toggle("error", isError);
  status.replaceChildren(...parts);
}

function describeQuery() {
  const bits = [];
  if (state.similar) bits.push(el("span", { class: "pill" }, `similar to ${state.similar.label || state.similar.modality}`,
    el("button", { type: "button", class: "chip-x", "aria-label": "Clear", onclick: () => { state.similar = null; runSearch(); } }, "×")));
  if (state.q) bits.push(el("strong", { text: `“${state.q}”` }));
  if (state.file) bits.push(el("strong", { text: state.file.name }));
  if (state.label) bits.push(el("span", { class: "pill" }, `label: ${state.label}`,
    el("button", { type: "button", class: "chip-x", "aria-label": "Remove the label filter", onclick: () => { state.label = ""; $("label").value = ""; runSearch(); } }, "×")));
  return bits;
}

function mediaFor(hit) {
  const time = hit.modality === "audio" && hit.start !== null
    ? el("span", { class: "time", title: "The part of the sound that matched", text: `${fmtTime(hit.start)} – ${fmtTime(hit.end)}` }) : null;
  const badge = el("div", { class: "tags" }, el("span", { class: `badge ${hit.modality}`, text: KIND_NAMES[hit.modality] || hit.modality }), time);
  const rank = el("span", { class: "rank", text: `#${hit.rank}` });
  if (hit.modality === "image") {
    const img = el("img", { src: hit.urls.thumbnail, alt: hit.caption || hit.name, loading: "lazy", decoding: "async" });
    const link = el("a", { href: hit.urls.media, target: "_blank", rel: "noopener", title: "Open the full picture" }, img);
    return el("div", { class: "media image" }, badge, rank, link);
  }
  if (hit.modality === "audio") {
    const audio = el("audio", { controls: true, preload: "none", src: hit.urls.play || hit.urls.media });
    const start = hit.start || 0;
    audio.addEventListener("loadedmetadata", () => {
      if (audio.currentTime + 0.05 < start && start < audio.duration) audio.currentTime = start;
    });
    audio.addEventListener("play", () => {
      document.querySelectorAll("audio").forEach((other) => { if (other !== audio) other.pause(); });
    });
    const bars = waveBars(hashString(hit.path), 44);
    const duration = hit.duration || hit.end || 5;
    const wave = el("div", { class: "wave", title: "Click to play from here" });
    bars.forEach((height, i) => {
      const t0 = (i / bars.length) * duration;
      const bar = el("i");
      bar.style.height = `${Math.round(height * 100)}%`;
      if (hit.start !== null && hit.end !== null && t0 + duration / bars.length > hit.start && t0 < hit.end) bar.classList.add("on");
      wave.append(bar);
    });
    wave.addEventListener("click", (event) => {
      const rect = wave.getBoundingClientRect();
      const at = ((event.clientX - rect.left) / rect.width) * duration;
      const seek = () => { audio.currentTime = Math.max(0, at); audio.play(); };
      if (audio.readyState >= 1) seek();
      else { audio.addEventListener("loadedmetadata", seek, { once: true }); audio.load(); }
    });
    return el("div", { class: "media audio" }, badge, rank, wave, audio);
  }
  return el("div", { class: "media text" }, badge, rank, el("blockquote", { text: hit.text || "" }));
}

function card(hit, range) {
  const labels = (hit.labels || []).map((label) => el("button", {
    type: "button", class: "label", title: `Only items labelled “${label}”`, text: label,
    onclick: () => { state.label = label; $("label").value = label; runSearch(); },
  }));
  // relative to this result list: the best hit fills the bar, the weakest shows a fifth of it
  const spread = range.max - range.min;
  const pct = spread > 1e-9 ? 20 + 80 * ((hit.score - range.min) / spread) : 100;
  const bar = el("span");
  bar.style.width = `${pct.toFixed(1)}%`;
  const caption = hit.caption || (hit.modality === "text" ? "" : hit.name);
  const showName = Boolean(hit.caption) || hit.modality === "text";
  const actions = [
    el("button", { type: "button", class: "btn similar", title: "Use this item as the query", onclick: () => findSimilar(hit) },
      svgIcon(ICON_SIMILAR), "Find similar"),
  ];
  if (hit.modality !== "text") {
    actions.push(el("a", { class: "btn ghost", href: hit.urls.media, target: "_blank", rel: "noopener", title: "Open the file" },
      svgIcon(ICON_OPEN), "Open"));
  }
  return el("article", { class: `card ${hit.modality}`, "data-id": hit.id, "data-modality": hit.modality },
    mediaFor(hit),
    el("div", { class: "body" },
      caption ? el("div", { class: "caption", title: showName ? null : hit.path, text: caption }) : null,
      showName ? el("div", { class: "name", title: hit.path, text: hit.name }) : null,
      labels.length ? el("div", { class: "labels" }, labels) : null,
      moreWindows(hit),
      samePaths(hit),
      el("div", { class: "score", title: "Cosine similarity to the query (the bar compares it with the other results)" }, el("div", { class: "bar" }, bar), el("b", { text: hit.score.toFixed(3) }))),
    el("div", { class: "actions" }, actions));
}

// Other matching windows of this file (results are per file; the best window scores it).
function moreWindows(hit) {
  const windows = hit.windows || [];
  if (!windows.length) return null;
  const shown = windows.slice(0, 4).map((w) => el("a", {
    class: "window", href: `${hit.urls.media}#t=${(w.start || 0).toFixed(2)}${w.end !== null ? "," + w.end.toFixed(2) : ""}`,
    target: "_blank", rel: "noopener", title: `Also matches here (score ${w.score.toFixed(3)})`,
    text: w.start !== null ? `${fmtTime(w.start)} – ${fmtTime(w.end)}` : w.score.toFixed(3),
  }));
  const rest = windows.length > 4 ? el("span", { class: "more", text: `+${windows.length - 4} more` }) : null;
  return el("div", { class: "windows", title: "Other parts of this file that match" }, "Also: ", shown, rest);
}

// The same content (same sha256) stored at several paths is one result listing them.
function samePaths(hit) {
  const others = (hit.paths || []).slice(1);
  if (!others.length) return null;
  return el("div", { class: "paths", title: others.join("\n"), text: `Same file also at ${others.length} other path${others.length > 1 ? "s" : ""}` });
}

function render(results) {
  const container = $("results");
  const scores = results.map((r) => r.score);
  const range = { min: Math.min(...scores), max: Math.max(...scores) };
  container.replaceChildren(...results.map((hit) => card(hit, range)));
}

function showIntro(show) {
  $("intro").hidden = !show;
}

/* ------------------------------------------------------------------ searching */
function pushUrl() {
  const params = new URLSearchParams();
  if (state.q) params.set("q", state.q);
  if (state.similar) params.set("similar", `${state.similar.modality}:${state.similar.id}`);
  if (state.target !== "all") params.set("target", state.target);
  if (state.k !== 12) params.set("k", String(state.k));
  if (state.label) params.set("label", state.label);
  if (state.where) params.set("where", state.where);
  const url = params.toString() ? `/?${params}` : "/";
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
}

function common(params) {
  params.set("target", state.target);
  params.set("k", String(state.k));
  if (state.where) params.set("where", state.where);
  if (state.label) params.set("label", state.label);
  return params;
}

async function runSearch({ push = true } = {}) {
  state.q = $("q").value.trim();
  state.where = $("where").value.trim();
  state.label = $("label").value.trim();
  if (!state.q && !state.file && !state.similar) {
    render([]);
    setStatus([]);
    showIntro(true);
    return;
  }
  const seq = ++searchSeq;
  showIntro(false);
  $("go").disabled = true;
  setStatus([el("span", { class: "spinner" }), "Searching…"]);
  if (push) pushUrl();
  try {
    let body;
    if (state.file) {
      const form = common(new FormData());
      if (state.q) form.set("q", state.q);
      if (state.similar) { form.set("item_id", state.similar.id); form.set("item_modality", state.similar.modality); }
      form.set(state.fileKind, state.file, state.file.name);
      body = await api("/api/search", { method: "POST", body: form });
    } else {
      const params = common(new URLSearchParams());
      if (state.q) params.set("q", state.q);
      if (state.similar) { params.set("item_id", state.similar.id); params.set("item_modality", state.similar.modality); }
      body = await api(`/api/search?${params}`);
    }
    if (seq !== searchSeq) return;
    render(body.results);
    const count = body.count === 1 ? "1 result" : `${body.count} results`;
    setStatus(body.count
      ? [el("span", { text: count }), ...describeQuery(), el("span", { text: `· ${Math.round(body.took_ms)} ms` })]
      : ["No results", ...describeQuery(), el("span", { text: "· is anything indexed for this target and filter?" })]);
  } catch (error) {
    if (seq !== searchSeq) return;
    render([]);
    setStatus([el("strong", { text: "Search failed: " }), el("span", { text: error.message })], true);
  } finally {
    if (seq === searchSeq) $("go").disabled = false;
  }
}

async function findSimilar(hit) {
  state.similar = { modality: hit.modality, id: hit.id, label: hit.caption || hit.name };
  state.q = "";
  $("q").value = "";
  clearFile();
  window.scrollTo({ top: 0, behavior: "smooth" });
  await runSearch();
}

function setFile(file) {
  const kind = kindOfFile(file);
  if (!kind) {
    setStatus([el("strong", { text: "Not a sound or a picture: " }), el("span", { text: file.name })], true);
    return false;
  }
  state.file = file;
  state.fileKind = kind;
  state.similar = null;
  if (filePreviewUrl) URL.revokeObjectURL(filePreviewUrl);
  filePreviewUrl = null;
  const preview = $("query-file-preview");
  if (kind === "image") {
    filePreviewUrl = URL.createObjectURL(file);
    preview.src = filePreviewUrl;
  }
  preview.hidden = kind !== "image";
  $("query-file-icon").hidden = kind === "image";
  $("query-file-name").textContent = file.name;
  $("query-file").hidden = false;
  return true;
}

function clearFile() {
  state.file = null;
  state.fileKind = null;
  $("file").value = "";
  $("query-file").hidden = true;
  if (filePreviewUrl) URL.revokeObjectURL(filePreviewUrl);
  filePreviewUrl = null;
}

function setTarget(target) {
  state.target = target;
  document.querySelectorAll("#target button").forEach((b) => b.setAttribute("aria-checked", String(b.dataset.target === target)));
}

function readUrl() {
  const params = new URLSearchParams(location.search);
  $("q").value = params.get("q") || "";
  setTarget(["all", "audio", "image", "text"].includes(params.get("target")) ? params.get("target") : "all");
  const k = parseInt(params.get("k") || "12", 10);
  state.k = Number.isFinite(k) && k > 0 ? k : 12;
  const select = $("k");
  if (![...select.options].some((o) => o.value === String(state.k))) select.append(el("option", { value: String(state.k), text: String(state.k) }));
  select.value = String(state.k);
  $("label").value = params.get("label") || "";
  $("where").value = params.get("where") || "";
  if ($("where").value) $("filters").open = true;
  const similar = params.get("similar");
  state.similar = null;
  if (similar && similar.includes(":")) {
    const [modality, id] = similar.split(":", 2);
    state.similar = { modality, id, label: `${KIND_NAMES[modality] || modality} ${id.slice(0, 8)}` };
  }
}

function init() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if ($("q").value.trim()) state.similar = null;  // typed words start a new search
    runSearch();
  });
  $("file").addEventListener("change", () => { const f = $("file").files[0]; if (f && setFile(f)) runSearch(); });
  $("query-file-clear").addEventListener("click", () => { clearFile(); runSearch(); });
  document.querySelectorAll("#target button").forEach((b) => b.addEventListener("click", () => {
    setTarget(b.dataset.target);
    if (state.q || state.file || state.similar) runSearch();
  }));
  $("k").addEventListener("change", () => { state.k = parseInt($("k").value, 10); if (state.q || state.file || state.similar) runSearch(); });
  document.querySelectorAll(".example").forEach((b) => b.addEventListener("click", () => {
    $("q").value = b.textContent; state.similar = null; runSearch();
  }));
  ["label", "where"].forEach((id) => $(id).addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); runSearch(); } }));

  let depth = 0;
  document.addEventListener("dragenter", (e) => { if (e.dataTransfer && [...e.dataTransfer.types].includes("Files")) { depth++; document.body.classList.add("dragging"); } });
  document.addEventListener("dragleave", () => { depth = Math.max(0, depth - 1); if (!depth) document.body.classList.remove("dragging"); });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    document.body.classList.remove("dragging");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file && setFile(file)) runSearch();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && document.activeElement !== $("q") && !(e.target instanceof HTMLInputElement)) { e.preventDefault(); $("q").focus(); }
  });
  window.addEventListener("popstate", () => { clearFile(); readUrl(); runSearch({ push: false }); });

  loadInfo();
  readUrl();
  if ($("q").value || state.similar) startFromUrl();
  else $("q").focus();
}

async function startFromUrl() {
  const similar = state.similar;
  if (similar) {
    try {
      const item = await api(`/api/items/${encodeURIComponent(similar.modality)}/${encodeURIComponent(similar.id)}`);
      similar.label = item.caption || item.name;
    } catch (e) { /* the search reports a bad id */ }
  }
  await runSearch({ push: false });
}

document.addEventListener("DOMContentLoaded", init);
