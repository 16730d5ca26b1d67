// clothseg web page: talks to the public API with the key the user enters.
"use strict";

const API = "/api/tasks/visual/clothing-segmentation";
const COLORS = {
  hair: [140, 86, 75], face: [255, 187, 120], head: [227, 119, 194], clothes: [127, 127, 127],
  tops: [31, 119, 180], bottoms: [44, 160, 44], dress: [214, 39, 40], bag: [148, 103, 189],
  shoes: [255, 127, 14], acc: [188, 189, 34], body: [255, 152, 150], others: [23, 190, 207],
};
// Composite classes overlap their parts: drawn only when switched on.
const OFF_BY_DEFAULT = new Set(["head", "clothes"]);
const STATES = {
  "-1": "processing failed", "-2": "storing the result failed", "-3": "the image URL could not be downloaded",
  "-5": "the image at the URL is over 30 MB", "-7": "the file is not a valid image", "-8": "processing timed out",
  "-11": "no person found in the image", "-13": "the task was cancelled", "-14": "the image is too large",
};

const $ = (id) => document.getElementById(id);
let file = null;
let photo = null;
let layers = [];  // {name, color, alpha: Uint8ClampedArray, on}

$("api-key").value = localStorage.getItem("clothseg-key") || "";
$("api-key").addEventListener("change", () => localStorage.setItem("clothseg-key", $("api-key").value.trim()));

function chooseFile(f) {
  file = f || null;
  $("file-name").textContent = file ? file.name : "";
  if (file) $("image-url").value = "";
}
$("file-input").addEventListener("change", (e) => chooseFile(e.target.files[0]));
const zone = $("drop-zone");
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault(); zone.classList.remove("over");
  if (e.dataTransfer.files.length) chooseFile(e.dataTransfer.files[0]);
});
$("image-url").addEventListener("input", () => { if ($("image-url").value) chooseFile(null); });

function showError(text) { $("error").hidden = false; $("error").textContent = text; $("status").textContent = ""; }

async function call(method, url, body) {
  const resp = await fetch(url, { method, body, headers: { "X-API-KEY": $("api-key").value.trim() } });
  let json;
  try { json = await resp.json(); } catch { throw new Error(`the server answered HTTP ${resp.status}`); }
  if (json.status !== 200) throw new Error(`${json.message} (status ${json.status})`);
  return json;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the image could not be shown in the browser"));
    img.src = src;
  });
}

async function submit() {
  $("error").hidden = true;
  const key = $("api-key").value.trim();
  const url = $("image-url").value.trim();
  if (!key) return showError("Enter your API key first.");
  if (!file && !url) return showError("Choose a photo or enter an image URL.");
  localStorage.setItem("clothseg-key", key);
  const form = new FormData();
  if (file) form.append("image_file", file); else form.append("image_url", url);
  for (const [field, id] of [["class_type", "class-type"], ["quality", "quality"], ["detail_mode", "detail-mode"]]) {
    form.append(field, $(id).value);
  }
  form.append("output_type", "3");
  form.append("sync", "0");
  $("submit").disabled = true;
  $("progress").hidden = false; $("progress").value = 0;
  $("status").textContent = "Uploading…";
  try {
    const created = await call("POST", API, form);
    const taskId = created.data.task_id;
    let task;
    for (;;) {
      task = await call("GET", `${API}/${taskId}`);
      $("progress").value = task.data.progress;
      $("status").textContent = `Working… ${task.data.progress}%`;
      if (task.data.state === 1) break;
      if (task.data.state < 0) throw new Error(`${task.message || STATES[task.data.state]} (state ${task.data.state})`);
      await sleep(700);
    }
    await show(task.data);
    $("status").textContent = "Done.";
  } catch (err) {
    showError(err.message);
  } finally {
    $("submit").disabled = false;
    $("progress").hidden = true;
  }
}
$("submit").addEventListener("click", submit);

async function show(data) {
  photo = await loadImage(file ? URL.createObjectURL(file) : $("image-url").value.trim());
  const canvas = $("canvas");
  canvas.width = photo.naturalWidth; canvas.height = photo.naturalHeight;
  const scratch = document.createElement("canvas");
  scratch.width = canvas.width; scratch.height = canvas.height;
  const sctx = scratch.getContext("2d");
  layers = [];
  $("legend").innerHTML = "";
  for (const [name, link] of Object.entries(data.class_masks || {})) {
    const mask = await loadImage(link);
    sctx.clearRect(0, 0, scratch.width, scratch.height);
    sctx.drawImage(mask, 0, 0, scratch.width, scratch.height);
    const px = sctx.getImageData(0, 0, scratch.width, scratch.height).data;
    const alpha = new Uint8ClampedArray(px.length / 4);
    for (let i = 0; i < alpha.length; i++) alpha[i] = px[i * 4];
    const layer = { name, color: COLORS[name] || [0, 0, 0], alpha, on: !OFF_BY_DEFAULT.has(name) };
    layers.push(layer);
    const li = document.createElement("li");
    li.dataset.class = name;
    li.innerHTML = `<input type="checkbox" ${layer.on ? "checked" : ""} aria-label="show ${name}">
      <span class="swatch" style="background: rgb(${layer.color})"></span><span>${name}</span>
      <a href="${link}" download="${name}.png">download</a>`;
    li.querySelector("input").addEventListener("change", (e) => { layer.on = e.target.checked; draw(); });
    $("legend").appendChild(li);
  }
  const zip = $("zip-link");
  zip.hidden = !data.clothes_masks;
  if (data.clothes_masks) zip.href = data.clothes_masks;
  $("result").hidden = false;
  draw();
}

function draw() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  ctx.drawImage(photo, 0, 0);
  const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const px = image.data;
  for (const layer of layers) {
    if (!layer.on) continue;
    const [r, g, b] = layer.color;
    const a = layer.alpha;
    for (let i = 0; i < a.length; i++) {
      if (a[i] === 0) continue;
      const t = (a[i] / 255) * 0.55;
      const j = i * 4;
      px[j] = px[j] * (1 - t) + r * t;
      px[j + 1] = px[j + 1] * (1 - t) + g * t;
      px[j + 2] = px[j + 2] * (1 - t) + b * t;
    }
  }
  ctx.putImageData(image, 0, 0);
  canvas.dataset.drawn = String(layers.filter((l) => l.on).length);
}
