// The web page: pick or drop an image, POST it to /v1/detect, draw the boxes on a canvas.
// The server is asked once with the slider's lowest threshold; moving the slider then only
// filters what came back, so it responds at once.
"use strict";

const LOWEST = 0.01;  // the slider's lowest value: the server is asked once, at this threshold
const $ = (id) => document.getElementById(id);
let image = null;       // the chosen image, as an HTMLImageElement
let detections = [];    // everything the server found at the lowest threshold

function colour(classId) {
  // Same hues as serving/draw.py: golden-ratio steps around the colour wheel.
  const hue = ((classId * 0.618033988749895) % 1) * 360;
  return `hsl(${hue.toFixed(0)}, 85%, 50%)`;
}

async function loadModel() {
  try {
    const names = await (await fetch("/v1/models")).json();
    const name = names.models[0];
    const response = await fetch(`/v1/models/${encodeURIComponent(name)}`);
    const meta = await response.json();
    if (!response.ok) { $("model").textContent = `${name}: ${meta.error}`; return; }
    $("model").textContent =
      `${meta.name} (${meta.variant}, ${meta.input_size} px): ${meta.classes.join(", ")}`;
    $("threshold").value = meta.score_threshold;
    showThreshold();
  } catch (err) {
    $("model").textContent = `the server did not answer (${err})`;
  }
}

function showThreshold() {
  $("threshold-value").textContent = Number($("threshold").value).toFixed(2);
}

async function detect(file) {
  $("status").className = "muted";
  $("status").textContent = `detecting in ${file.name}…`;
  const url = URL.createObjectURL(file);
  const loaded = new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this file"));
    img.src = url;
  });
  const form = new FormData();
  form.append("image", file);
  const started = performance.now();
  let body;
  try {
    const response = await fetch(`/v1/detect?score_threshold=${LOWEST}`, { method: "POST", body: form });
    body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
  } catch (err) {
    $("status").className = "error";
    $("status").textContent = err.message;
    return;
  }
  const roundTrip = performance.now() - started;
  try { image = await loaded; } catch (err) { image = null; }
  detections = body.detections;
  $("status").textContent = "";
  $("latency").textContent =
    `${roundTrip.toFixed(0)} ms round trip, ${body.time_ms.toFixed(1)} ms in the server`;
  $("latency").dataset.ms = roundTrip.toFixed(1);
  render(body.width, body.height);
}

function render(width, height) {
  const threshold = Number($("threshold").value);
  const shown = detections.filter((d) => d.score >= threshold);
  const canvas = $("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  if (image) ctx.drawImage(image, 0, 0, width, height);
  else { ctx.fillStyle = "#444"; ctx.fillRect(0, 0, width, height); }
  const line = Math.max(2, Math.round(Math.min(width, height) / 200));
  const font = Math.max(12, Math.round(Math.min(width, height) / 30));
  ctx.font = `${font}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  // Lowest score first, so that where boxes overlap the best one's label is on top.
  for (const d of [...shown].reverse()) {
    const { xmin, ymin, xmax, ymax } = d.box;
    ctx.strokeStyle = ctx.fillStyle = colour(d.class_id);
    ctx.lineWidth = line;
    ctx.strokeRect(xmin, ymin, xmax - xmin, ymax - ymin);
    const text = `${d.label} ${d.score.toFixed(2)}`;
    const lift = font + 2 * line;
    const y = ymin - lift >= 0 ? ymin - lift : ymin;
    ctx.fillRect(xmin, y, ctx.measureText(text).width + 2 * line, lift);
    ctx.fillStyle = "#000";
    ctx.fillText(text, xmin + line, y + line);
  }
  $("figure").hidden = false;
  $("count").textContent = `${shown.length} of ${detections.length} detections`;
  $("count").dataset.shown = shown.length;
  const list = $("detections");
  list.replaceChildren(...shown.map((d) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour(d.class_id);
    const b = d.box;
    item.append(swatch, `${d.label} ${d.score.toFixed(2)} at (${b.xmin.toFixed(0)}, ` +
      `${b.ymin.toFixed(0)}) to (${b.xmax.toFixed(0)}, ${b.ymax.toFixed(0)})`);
    return item;
  }));
}

function choose(files) {
  if (files && files.length) detect(files[0]);
}

document.addEventListener("DOMContentLoaded", () => {
  loadModel();
  $("file").addEventListener("change", (e) => choose(e.target.files));
  $("threshold").addEventListener("input", () => {
    showThreshold();
    if (detections.length || image) render($("canvas").width, $("canvas").height);
  });
  const drop = $("drop");
  for (const kind of ["dragenter", "dragover"]) {
    drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const kind of ["dragleave", "drop"]) {
    drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => choose(e.dataTransfer.files));
  showThreshold();
});
