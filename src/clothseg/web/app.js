// clothseg web page: segments a photo through the public API with the key the user enters,
// plus the key's balance (GET /api/account, an extension documented in docs/API.md).
"use strict";

const TASKS_API = "/api/tasks/visual/clothing-segmentation";
const ACCOUNT_API = "/api/account";
const POLL_MS = 1000;
// The server stops a task after 180 s of work; waiting longer also covers a queue.
const GIVE_UP_MS = 5 * 60 * 1000;
const REQUEST_TIMEOUT_MS = 2 * 60 * 1000;
const PHOTO_WAIT_MS = 30 * 1000;
const MAX_UPLOAD_BYTES = 20 * 1024 * 1024;
// The overlay on screen is drawn at most this large; downloads are made at the photo's own size.
const DISPLAY_MAX_SIDE = 1600;
// Okabe-Ito and Paul Tol colours: classes that touch (tops/bottoms, hair/face, body/shoes...)
// stay apart for colour-blind eyes too.
const COLORS = {
  hair: "#F0E442", face: "#56B4E9", head: "#44AA99", clothes: "#DDCC77",
  tops: "#0072B2", bottoms: "#E69F00", dress: "#882255", bag: "#88CCEE",
  shoes: "#332288", acc: "#CC79A7", body: "#009E73", others: "#BBBBBB",
};
// Composite classes contain their parts: off at first, and drawn under the parts when on.
const COMPOSITES = new Set(["head", "clothes"]);
const PHOTO_EXTENSIONS = /\.(jpe?g|jfif|png|bmp|webp|tiff?|rgb|dng|cr2|nef|arw)$/i;

const KEY_HELP = "API keys come from whoever runs this server: the command “clothseg keys create” makes one, "
  + "and “clothseg serve” prints one on its first start.";
const TASK_FAILED = {
  "-1": "The server could not process this photo. Try again; if it fails again, try another photo.",
  "-2": "The server could not store the result (its disk may be full). Try again later, or tell whoever runs it.",
  "-3": "The server could not download the image at that address. Check that it opens as an image in your "
    + "browser, or save the photo and upload it here instead.",
  "-5": "The image at that address is larger than 30 MB. Save a smaller copy and upload it here.",
  "-7": "This file is not an image the server can read. Choose a photo: JPEG, PNG, WebP, BMP, TIFF or camera raw.",
  "-8": "The server took too long on this photo and stopped. Try again with Quality and Detail set to Regular, "
    + "or with a smaller photo.",
  "-11": "No person was found in this photo. clothseg segments people: choose a photo where a person is clearly visible.",
  "-13": "The task was cancelled because the server restarted. Segment the photo again.",
  "-14": "This image is larger than 4096 pixels on a side. Resize it and try again.",
};

/** An error whose message is written for the person using the page. */
class Problem extends Error {}

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let chosen = null;   // {file, stem}: the photo picked, dropped, pasted or sampled
let result = null;   // the shown result, see showResult
let busy = false;

// -- the key and its balance ------------------------------------------------------------
const currentKey = () => $("api-key").value.trim();
$("api-key").value = localStorage.getItem("clothseg-key") || "";
$("api-key").addEventListener("change", () => {
  localStorage.setItem("clothseg-key", currentKey());
  refreshBalance();
});

/** Shows the key's balance under the key and beside the result. */
function showBalance(text) {
  for (const line of document.querySelectorAll(".balance")) line.textContent = text;
}

async function refreshBalance() {
  if (!currentKey()) { showBalance(""); return; }
  try {
    const account = await api("GET", ACCOUNT_API);
    showBalance(`${account.available} credits left (a photo costs ${account.task_cost}).`);
  } catch (err) {
    showBalance(err instanceof Problem ? err.message : "");
  }
}

// -- choosing a photo: picker, drop, paste, samples, URL ------------------------------------
function chooseFile(file, stem) {
  if (!file) return;
  if (!file.type.startsWith("image/") && !PHOTO_EXTENSIONS.test(file.name)) {
    showError(`“${file.name}” is not a photo. Choose a JPEG, PNG, WebP, BMP, TIFF or camera raw file.`);
    return;
  }
  if (file.size > MAX_UPLOAD_BYTES) {
    showError(`“${file.name}” is larger than 20 MB. Save a smaller copy (for example as JPEG) and choose that.`);
    return;
  }
  hideError();
  chosen = { file, stem: stem || fileStem(file.name) };
  $("file-name").textContent = `Chosen: ${file.name}`;
  $("image-url").value = "";
}

function forgetFile() {
  chosen = null;
  $("file-name").textContent = "";
}

/** A name to prefix downloads with: the file's name without its extension, safe on every system. */
function fileStem(name) {
  const stem = name.replace(/\.[^.]*$/, "").replace(/[^\w.-]+/g, "_").replace(/^[._]+/, "").slice(0, 80);
  return stem || "photo";
}

function urlFileName(url) {
  try { return decodeURIComponent(new URL(url).pathname.split("/").pop()); } catch { return ""; }
}

const zone = $("drop-zone");
zone.addEventListener("click", () => $("file-input").click());
zone.addEventListener("keydown", (e) => {
  if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file-input").click(); }
});
$("file-input").addEventListener("change", (e) => { chooseFile(e.target.files[0]); e.target.value = ""; });
zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
zone.addEventListener("dragleave", () => zone.classList.remove("over"));
zone.addEventListener("drop", (e) => {
  e.preventDefault();
  zone.classList.remove("over");
  chooseFile(e.dataTransfer.files[0]);
});
document.addEventListener("paste", (e) => {
  const file = [...e.clipboardData.files].find((f) => f.type.startsWith("image/"));
  if (file) {
    e.preventDefault();
    // A pasted image is called image.png: name it by the time so pastes do not collide.
    const time = new Date().toTimeString().slice(0, 8).replaceAll(":", "");
    chooseFile(file, `pasted-${time}`);
    return;
  }
  const text = e.clipboardData.getData("text").trim();
  if (!(e.target instanceof HTMLInputElement) && /^https?:\/\//i.test(text)) {
    e.preventDefault();
    $("image-url").value = text;
    forgetFile();
  }
});
$("image-url").addEventListener("input", () => { if ($("image-url").value) forgetFile(); });
for (const button of document.querySelectorAll("[data-sample]")) {
  button.addEventListener("click", async () => {
    if (busy) return;
    hideError();
    const name = button.dataset.sample;
    const blob = await (await fetch(`/static/samples/${name}`)).blob();
    chooseFile(new File([blob], name, { type: blob.type }));
    run();
  });
}

// -- talking to the API -------------------------------------------------------------------
/** One API call; answers `data` of the envelope or throws a Problem saying what to do next. */
async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method, body, headers: { "X-API-KEY": currentKey() }, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch (err) {
    throw new Problem(err.name === "TimeoutError"
      ? "The server did not answer within 2 minutes. Check that it is still running, then try again."
      : "Could not reach the server. Check your connection and that clothseg is still running, then try again.");
  }
  const json = await response.json().catch(() => null);
  const status = json && typeof json.status === "number" ? json.status : response.status;
  if (status !== 200) throw new Problem(refusal(status, (json && json.message) || ""));
  return json.data || {};
}

/** What an API refusal means for the person at the page. */
function refusal(status, message) {
  if (status === 401) return `This API key was not accepted: it is unknown or was revoked. Check it for typos. ${KEY_HELP}`;
  if (status === 402) {
    return "This key has too few credits left for a photo (each costs 3). Whoever runs this server can add "
      + "some with “clothseg keys credit”.";
  }
  if (status === 413) return "This photo is larger than 20 MB. Save a smaller copy (for example as JPEG) and try again.";
  if (status === 429) {
    return message.includes("queue")
      ? "The server is busy with other photos. Wait a minute, then try again."
      : "Too many requests with this key at once. Wait a few seconds, then try again.";
  }
  if (status === 400 && message.startsWith("image_url")) {
    return "That address cannot be used: enter the full address of an image, starting with https:// or http://.";
  }
  if (status === 400 && message.includes("empty")) return "This file is empty. Choose another photo.";
  if (status === 404) return "The server no longer has this task (results are kept for a limited time). Segment the photo again.";
  if (status >= 500) {
    return "The server ran into an internal error. Try again; if it keeps happening, whoever runs it will find "
      + "the details in its log.";
  }
  return `The server refused the request: ${message || `HTTP ${status}`}.`;
}

async function download(url) {
  let response;
  try { response = await fetch(url); } catch { response = null; }
  if (!response || !response.ok) {
    throw new Problem("The result could not be fetched from the server. Segment the photo again.");
  }
  return response.blob();
}

// -- one run: submit, poll, show -----------------------------------------------------------
$("segment-form").addEventListener("submit", (e) => { e.preventDefault(); run(); });

async function run() {
  if (busy) return;
  hideError();
  clearResult();
  const url = $("image-url").value.trim();
  if (!currentKey()) return showError(`Enter your API key first. ${KEY_HELP}`, $("api-key"));
  if (!chosen && !url) {
    return showError("Choose a photo first: drop it here, pick a file, paste one, try a sample, "
      + "or enter the address of an image.", zone);
  }
  if (!chosen && !/^https?:\/\/\S+$/i.test(url)) {
    return showError("Enter the full address of the image, starting with https:// or http://.", $("image-url"));
  }
  localStorage.setItem("clothseg-key", currentKey());
  const source = chosen
    ? { file: chosen.file, stem: chosen.stem, name: chosen.file.name }
    : { url, stem: fileStem(urlFileName(url)), name: url };
  const classType = $("class-type").value;
  const form = new FormData();
  if (source.file) form.append("image_file", source.file); else form.append("image_url", source.url);
  form.append("class_type", classType);
  form.append("quality", $("quality").value);
  form.append("detail_mode", $("detail-mode").value);
  // The ZIP holds finer clothing masks: useless for the portrait set, so only asked for otherwise.
  form.append("output_type", classType === "3" ? "1" : "3");
  form.append("sync", "0");

  busy = true;
  $("submit").disabled = true;
  $("progress").hidden = false;
  $("progress").value = 0;
  const started = performance.now();
  const seconds = () => ((performance.now() - started) / 1000).toFixed(1);
  setStatus("Uploading…");
  try {
    const { task_id: taskId } = await api("POST", TASKS_API, form);
    let task;
    for (;;) {
      task = await api("GET", `${TASKS_API}/${taskId}`);
      $("progress").value = task.progress;
      setStatus(`Working… ${task.progress}% · ${seconds()} s`);
      if (task.state === 1) break;
      if (task.state < 0) {
        const advice = TASK_FAILED[task.state] || "The server could not process this photo. Try again.";
        throw new Problem(task.state === -3 ? `${advice} (The server said: ${task.message || "no reason given"}.)` : advice);
      }
      if (performance.now() - started > GIVE_UP_MS) {
        throw new Problem("The server is still working on this photo after 5 minutes; it may be busy. Try again later.");
      }
      await sleep(POLL_MS);
    }
    setStatus("Fetching the masks…");
    await showResult(task, source);
    const done = `Done in ${seconds()} s.`;
    setStatus(done);
    $("elapsed").textContent = done;
  } catch (err) {
    clearResult();
    showError(err instanceof Problem ? err.message
      : `Something went wrong in this page (${err.message}). Reload it and try again.`);
  } finally {
    busy = false;
    $("submit").disabled = false;
    $("progress").hidden = true;
    refreshBalance();
  }
}

function setStatus(text) { $("status").textContent = text; }

function showError(text, field) {
  $("error").textContent = text;
  $("error").hidden = false;
  setStatus("");
  if (field) field.focus();
}

function hideError() { $("error").hidden = true; $("error").textContent = ""; }

// -- the result ----------------------------------------------------------------------------
let scratchContext = null;

/** A mask's values (one byte a pixel) at the given size. */
async function maskAlpha(blob, width, height) {
  const bitmap = await createImageBitmap(blob, {
    resizeWidth: width, resizeHeight: height, resizeQuality: "medium",
    colorSpaceConversion: "none", premultiplyAlpha: "none",
  });
  if (!scratchContext) scratchContext = document.createElement("canvas").getContext("2d", { willReadFrequently: true });
  const canvas = scratchContext.canvas;
  canvas.width = width;
  canvas.height = height;
  scratchContext.drawImage(bitmap, 0, 0);
  bitmap.close();
  const rgba = scratchContext.getImageData(0, 0, width, height).data;
  const alpha = new Uint8Array(width * height);
  for (let i = 0; i < alpha.length; i++) alpha[i] = rgba[i * 4];
  return alpha;
}

function loadPhoto(src) {
  return new Promise((resolve) => {
    const img = $("photo");
    img.onload = () => resolve(true);
    img.onerror = () => resolve(false);
    // A photo host that never answers must not hold the result back: it is then shown without the photo.
    setTimeout(() => resolve(false), PHOTO_WAIT_MS);
    img.src = src;
  });
}

async function showResult(task, source) {
  // The photo loads while the masks download.
  const photoLoaded = loadPhoto(source.file ? URL.createObjectURL(source.file) : source.url);
  const masks = Object.entries(task.class_masks);
  const blobs = await Promise.all(masks.map(([, link]) => download(link)));
  const zip = task.clothes_masks ? await download(task.clothes_masks) : null;
  // The masks have the photo's size as displayed (EXIF orientation applied).
  const first = await createImageBitmap(blobs[0]);
  const width = first.width;
  const height = first.height;
  first.close();
  const scale = Math.min(1, DISPLAY_MAX_SIDE / Math.max(width, height));
  const view = { width: Math.round(width * scale), height: Math.round(height * scale) };
  const layers = await Promise.all(masks.map(async ([name], i) => {
    const alpha = await maskAlpha(blobs[i], view.width, view.height);
    let inside = 0;
    for (const a of alpha) if (a >= 128) inside++;
    return {
      name, blob: blobs[i], alpha, share: inside / alpha.length, rgb: hexRgb(COLORS[name] || "#000000"),
      on: !COMPOSITES.has(name), href: URL.createObjectURL(blobs[i]),
    };
  }));
  const shown = await photoLoaded;
  const expires = Number(new URL(masks[0][1], location.href).searchParams.get("expires")) || null;
  result = {
    source, width, height, view, layers, zip,
    // A photo from another site is shown but its pixels may not be read: downloads then hold
    // the coloured layer and the cut-out matte instead (README, "The web page").
    readable: shown && Boolean(source.file),
    zipHref: zip ? URL.createObjectURL(zip) : null,
    drawOrder: [...layers].sort((a, b) => COMPOSITES.has(b.name) - COMPOSITES.has(a.name)),
  };

  $("result-title").textContent = `Result: ${source.name}`;
  $("lifetime").textContent = expires && task.completed_at
    ? `The server keeps these results for ${lifetime(expires - Number(task.completed_at))}, until `
      + `${new Date(expires * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}; `
      + "the downloads below work as long as this page stays open."
    : "";
  $("photo").alt = shown ? `Your photo, ${source.name}` : "";
  $("photo").hidden = !shown;
  const stack = $("stack");
  stack.style.aspectRatio = `${width} / ${height}`;
  stack.style.setProperty("--aspect", String(width / height));
  stack.classList.toggle("no-photo", !shown);
  // Without the photo there is nothing to cut out on screen; the cut-out download gives the matte.
  document.querySelector("input[name=view][value=cutout]").disabled = !shown;
  const overlay = $("overlay");
  overlay.width = view.width;
  overlay.height = view.height;
  buildLegend();
  $("summary").textContent = summary();
  const zipLink = $("zip-link");
  zipLink.hidden = !zip;
  if (zip) { zipLink.href = result.zipHref; zipLink.download = `${source.stem}-clothes.zip`; }
  const note = $("photo-note");
  note.hidden = result.readable;
  note.textContent = !shown
    ? "This browser cannot display this image format, so the masks are shown on grey. The overlay download "
      + "holds the coloured layer only, the cut-out download the cut-out matte (white = kept)."
    : "This photo is on another site, which does not let the page read its pixels. The overlay download holds "
      + "the coloured layer only, the cut-out download the cut-out matte (white = kept): to get the photo "
      + "itself cut out, save it and upload it here.";
  $("result").hidden = false;
  setView("overlay");
  draw();
  const title = $("result-title");
  title.focus({ preventScroll: true });
  const top = $("result").getBoundingClientRect().top;
  if (top < 0 || top > innerHeight / 3) $("result").scrollIntoView({ block: "start" });
}

function lifetime(seconds) {
  if (seconds % 3600 === 0) return seconds === 3600 ? "1 hour" : `${seconds / 3600} hours`;
  return `${Math.round(seconds / 60)} minutes`;
}

function hexRgb(hex) {
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
}

function percent(share) {
  if (share === 0) return "0%";
  return share < 0.001 ? "<0.1%" : `${(share * 100).toFixed(1)}%`;
}

/** The text alternative of the result: what was found and how much of the photo it covers. */
function summary() {
  const found = result.layers.filter((l) => l.share > 0).sort((a, b) => b.share - a.share);
  const missing = result.layers.filter((l) => l.share === 0).map((l) => l.name);
  const parts = [found.length
    ? `Found (share of the photo): ${found.map((l) => `${l.name} ${percent(l.share)}`).join(", ")}.`
    : "No class was found in this photo."];
  if (missing.length) parts.push(`Not found: ${missing.join(", ")}.`);
  return parts.join(" ");
}

function buildLegend() {
  const legend = $("legend");
  legend.replaceChildren();
  for (const layer of result.layers) {
    const item = document.createElement("li");
    item.dataset.class = layer.name;
    const label = document.createElement("label");
    const box = document.createElement("input");
    box.type = "checkbox";
    box.checked = layer.on;
    box.addEventListener("change", () => { layer.on = box.checked; draw(); });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = COLORS[layer.name] || "#000000";
    label.append(box, swatch, layer.name);
    const share = document.createElement("span");
    share.className = "share";
    share.textContent = percent(layer.share);
    const link = document.createElement("a");
    link.href = layer.href;
    link.download = `${result.source.stem}-${layer.name}.png`;
    const what = document.createElement("span");
    what.className = "sr-only";
    what.textContent = ` ${layer.name} mask`;
    link.append("Download", what);
    item.append(label, share, link);
    legend.append(item);
  }
}

function setAll(on) {
  for (const layer of result.layers) layer.on = on;
  for (const box of $("legend").querySelectorAll("input")) box.checked = on;
  draw();
}
$("show-all").addEventListener("click", () => setAll(true));
$("hide-all").addEventListener("click", () => setAll(false));

// -- drawing: overlay on screen, cut-out by CSS masking, both at the display size -------------
/** The classes shown, composites first so their parts stay visible on top. */
const shownLayers = () => result.drawOrder.filter((l) => l.on);

/** Paints layers ({rgb, alpha}) over each other into an RGBA buffer ("source-over", straight alpha). */
function paintLayers(layers, width, height) {
  const image = new ImageData(width, height);
  const px = image.data;
  for (const { rgb: [r, g, b], alpha } of layers) {
    for (let i = 0, j = 0; i < alpha.length; i++, j += 4) {
      const a = alpha[i];
      if (a === 0) continue;
      const top = a / 255;
      const below = (px[j + 3] / 255) * (1 - top);
      const out = top + below;
      px[j] = (r * top + px[j] * below) / out;
      px[j + 1] = (g * top + px[j + 1] * below) / out;
      px[j + 2] = (b * top + px[j + 2] * below) / out;
      px[j + 3] = out * 255;
    }
  }
  return image;
}

/** The cut-out matte of layers ({name, alpha}). Parts never overlap, so their soft edges add up
 * (no seam where two meet); a composite covers its parts, so it counts by the maximum. */
function matte(layers, size) {
  const union = new Uint8ClampedArray(size);
  for (const { name, alpha } of layers) {
    if (COMPOSITES.has(name)) continue;
    for (let i = 0; i < size; i++) union[i] += alpha[i];
  }
  for (const { name, alpha } of layers) {
    if (!COMPOSITES.has(name)) continue;
    for (let i = 0; i < size; i++) if (alpha[i] > union[i]) union[i] = alpha[i];
  }
  return union;
}

/** A canvas holding a matte as alpha (colour black) or, for a matte file, as opaque grey levels. */
function matteCanvas(union, width, height, asAlpha) {
  const image = new ImageData(width, height);
  const px = image.data;
  for (let i = 0, j = 0; i < union.length; i++, j += 4) {
    if (asAlpha) { px[j + 3] = union[i]; } else { px[j] = px[j + 1] = px[j + 2] = union[i]; px[j + 3] = 255; }
  }
  return canvasOf(image);
}

function canvasOf(image) {
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas;
}

const toPng = (canvas) => new Promise((resolve) => canvas.toBlob(resolve, "image/png"));

let matteUrl = null;
let cutoutRequest = 0;  // toggles come faster than mattes are made: only the latest may apply

function draw() {
  const { width, height } = result.view;
  const layers = shownLayers();
  const overlay = $("overlay");
  overlay.getContext("2d").putImageData(paintLayers(layers, width, height), 0, 0);
  overlay.dataset.drawn = String(layers.length);
  if (currentView() === "cutout") updateCutout();
}

async function updateCutout() {
  const request = ++cutoutRequest;
  const { width, height } = result.view;
  const layers = shownLayers();
  const png = await toPng(matteCanvas(matte(layers, width * height), width, height, true));
  const url = URL.createObjectURL(png);
  // Decoded before use, so the view never shows a half-applied mask.
  const decoded = new Image();
  decoded.src = url;
  await decoded.decode();
  if (request !== cutoutRequest || !result || currentView() !== "cutout") {
    URL.revokeObjectURL(url);
    return;
  }
  setMatte(url);
  $("stack").dataset.cutout = String(layers.length);
}

/** Masks the photo on screen with a matte image, or unmasks it (null). */
function setMatte(url) {
  if (matteUrl) URL.revokeObjectURL(matteUrl);
  matteUrl = url;
  const photo = $("photo");
  photo.style.maskImage = photo.style.webkitMaskImage = url ? `url("${url}")` : "";
  if (!url) delete $("stack").dataset.cutout;
}

const currentView = () => document.querySelector("input[name=view]:checked").value;

function setView(view) {
  document.querySelector(`input[name=view][value=${view}]`).checked = true;
  const cutout = view === "cutout";
  $("stack").classList.toggle("cutout", cutout);
  $("overlay").hidden = cutout;
  $("overlay-options").disabled = cutout;
  if (cutout) updateCutout(); else setMatte(null);
  applySliders();
}
for (const radio of document.querySelectorAll("input[name=view]")) {
  radio.addEventListener("change", () => setView(radio.value));
}

function applySliders() {
  const opacity = Number($("opacity").value);
  const compare = Number($("compare").value);
  $("opacity-value").textContent = `${opacity}%`;
  $("overlay").style.opacity = String(opacity / 100);
  $("overlay").style.clipPath = `inset(0 ${100 - compare}% 0 0)`;
  $("compare").setAttribute("aria-valuetext", `overlay on the left ${compare}%, original on the right`);
  const divider = $("divider");
  divider.hidden = compare === 100 || compare === 0 || currentView() === "cutout";
  divider.style.left = `${compare}%`;
}
$("opacity").addEventListener("input", applySliders);
$("compare").addEventListener("input", applySliders);

function clearResult() {
  if (!result) return;
  for (const layer of result.layers) URL.revokeObjectURL(layer.href);
  if (result.zipHref) URL.revokeObjectURL(result.zipHref);
  if (result.source.file) URL.revokeObjectURL($("photo").src);
  result = null;
  $("result").hidden = true;
  $("legend").replaceChildren();
  $("photo").removeAttribute("src");
  delete $("overlay").dataset.drawn;
  setMatte(null);
}

// -- downloads: made at the photo's own size ------------------------------------------------
/** The shown classes' masks at full size (the display copies when the photo is small enough). */
async function fullSizeLayers() {
  const { width, height, view } = result;
  const full = view.width === width && view.height === height;
  const layers = [];
  for (const layer of shownLayers()) {
    const alpha = full ? layer.alpha : await maskAlpha(layer.blob, width, height);
    layers.push({ name: layer.name, rgb: layer.rgb, alpha });
  }
  return layers;
}

/** The overlay as a PNG: the photo with the shown classes at the chosen opacity, or the layer alone. */
async function overlayFile() {
  const { width, height, readable, source } = result;
  const layer = canvasOf(paintLayers(await fullSizeLayers(), width, height));
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  if (readable) ctx.drawImage($("photo"), 0, 0, width, height);
  ctx.globalAlpha = Number($("opacity").value) / 100;
  ctx.drawImage(layer, 0, 0);
  return { name: `${source.stem}-${readable ? "overlay" : "overlay-layer"}.png`, blob: await toPng(canvas) };
}

/** The cut-out as a PNG: the photo, transparent outside the shown classes; or the matte alone. */
async function cutoutFile() {
  const { width, height, readable, source } = result;
  const union = matte(await fullSizeLayers(), width * height);
  if (!readable) {
    return { name: `${source.stem}-cutout-matte.png`, blob: await toPng(matteCanvas(union, width, height, false)) };
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.drawImage($("photo"), 0, 0, width, height);
  ctx.globalCompositeOperation = "destination-in";
  ctx.drawImage(matteCanvas(union, width, height, true), 0, 0);
  return { name: `${source.stem}-cutout.png`, blob: await toPng(canvas) };
}

function save({ name, blob }) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

async function saveAll() {
  const { stem } = result.source;
  const files = result.layers.map((l) => ({ name: `${stem}-${l.name}.png`, blob: l.blob }));
  if (result.zip) files.push({ name: `${stem}-clothes.zip`, blob: result.zip });
  files.push(await overlayFile(), await cutoutFile());
  save({ name: `${stem}-clothseg.zip`, blob: await zipStore(files) });
}

/** Runs a download maker with its button disabled, reporting a failure in words. */
function downloadButton(id, make) {
  $(id).addEventListener("click", async () => {
    $(id).disabled = true;
    try { await make(); } catch (err) { showError(`The download could not be made (${err.message}).`); }
    $(id).disabled = false;
  });
}
downloadButton("download-all", saveAll);
downloadButton("download-overlay", async () => save(await overlayFile()));
downloadButton("download-cutout", async () => save(await cutoutFile()));

// -- a ZIP writer (stored, no compression: the PNGs and the ZIP inside are compressed already) --
const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes) {
  let c = 0xFFFFFFFF;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xFF] ^ (c >>> 8);
  return (c ^ 0xFFFFFFFF) >>> 0;
}

/** A ZIP archive of {name, blob} files (names in UTF-8, dated now). */
async function zipStore(files) {
  const now = new Date();
  const time = (now.getHours() << 11) | (now.getMinutes() << 5) | (now.getSeconds() >> 1);
  const date = ((now.getFullYear() - 1980) << 9) | ((now.getMonth() + 1) << 5) | now.getDate();
  const header = (size, fields) => {
    const view = new DataView(new ArrayBuffer(size));
    let at = 0;
    for (const [bytes, value] of fields) {
      if (bytes === 4) view.setUint32(at, value, true); else view.setUint16(at, value, true);
      at += bytes;
    }
    return new Uint8Array(view.buffer);
  };
  const parts = [];
  const central = [];
  let offset = 0;
  for (const { name, blob } of files) {
    const data = new Uint8Array(await blob.arrayBuffer());
    const path = new TextEncoder().encode(name);
    const crc = crc32(data);
    // version 2.0, flag 0x800 = UTF-8 names, method 0 = stored
    const common = [[2, 20], [2, 0x800], [2, 0], [2, time], [2, date], [4, crc], [4, data.length], [4, data.length],
      [2, path.length], [2, 0]];
    const local = header(30, [[4, 0x04034b50], ...common]);
    parts.push(local, path, data);
    central.push(header(46, [[4, 0x02014b50], [2, 20], ...common, [2, 0], [2, 0], [2, 0], [4, 0], [4, offset]]), path);
    offset += local.length + path.length + data.length;
  }
  const centralSize = central.reduce((n, part) => n + part.length, 0);
  const end = header(22, [[4, 0x06054b50], [2, 0], [2, 0], [2, files.length], [2, files.length], [4, centralSize],
    [4, offset], [2, 0]]);
  return new Blob([...parts, ...central, end], { type: "application/zip" });
}

refreshBalance();
