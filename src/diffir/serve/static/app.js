// diffir serve: the page. Plain JavaScript, no build step; talks to the JSON API described in serve/app.py.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  models: [],
  image: null,        // {id, name, width, height} of the uploaded image
  maskUpload: null,   // {id, name, ...} of an uploaded mask file
  strokes: [],        // painted mask: [{size, points: [[x, y], ...]}] in image pixels
  result: null,       // {width, height, preview, download, name}
  zoom: "fit",
  split: 0.5,         // share of the width that shows "before"
  polling: null,
};

// ----------------------------------------------------------------------------------------------- messages
function showError(text) {
  $("error").textContent = text;
  $("error").hidden = !text;
}
function setStatus(text) { $("status").textContent = text; }

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = {};
  try { body = await response.json(); } catch (e) { body = {error: `${response.status} ${response.statusText}`}; }
  if (!response.ok) {
    const error = new Error(body.error || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// ----------------------------------------------------------------------------------------------- models
function selectedModel() { return state.models.find((m) => m.name === $("model").value); }

async function loadModels() {
  const {models} = await api("/api/models");
  state.models = models;
  const select = $("model");
  select.innerHTML = "";
  for (const group of ["bundled", "installed"]) {
    const members = models.filter((m) => m.group === group);
    if (!members.length) continue;
    const optgroup = document.createElement("optgroup");
    optgroup.label = group === "bundled" ? "Bundled" : "Installed";
    for (const m of members) {
      const option = new Option(`${m.name}${m.task ? ` (${m.task}${m.task === "sr" ? ` x${m.scale}` : ""})` : ""}`, m.name);
      option.selected = m.default;
      optgroup.append(option);
    }
    select.append(optgroup);
  }
  if (!models.length) showError("no models: install weights in the models folder (see diffir list --official)");
  $("models-hint").hidden = models.some((m) => m.needs_mask);
  modelChanged();
}

function modelChanged() {
  const model = selectedModel();
  $("model-info").textContent = model ? model.description : "";
  const inpaint = Boolean(model && model.needs_mask);
  $("mask-tools").hidden = !inpaint;
  showResult(null);
  updateButtons();
}

// ----------------------------------------------------------------------------------------------- upload
async function uploadFile(file, kind) {
  const name = file.name || (kind === "mask" ? "mask.png" : "pasted.png");
  return api(`/api/uploads?name=${encodeURIComponent(name)}`, {method: "POST", body: file});
}

async function chooseImage(file) {
  if (!file) return;
  showError("");
  setStatus(`uploading ${file.name || "image"}…`);
  try {
    const image = await uploadFile(file, "image");
    state.image = image;
    state.strokes = [];
    state.maskUpload = null;
    $("mask-info").textContent = "";
    $("file-info").textContent = `${image.name}: ${image.width}×${image.height}`;
    setStatus(image.warnings.join(" "));
    $("before-img").src = `/api/uploads/${image.id}/preview`;
    await $("before-img").decode().catch(() => {});
    $("placeholder").hidden = true;
    $("stage").hidden = false;
    const canvas = $("mask-canvas");
    canvas.width = image.width;
    canvas.height = image.height;
    showResult(null);
  } catch (error) {
    setStatus("");
    showError(error.message);
  }
  updateButtons();
}

async function chooseMask(file) {
  if (!file) return;
  showError("");
  try {
    state.maskUpload = await uploadFile(file, "mask");
    state.strokes = [];
    $("mask-info").textContent = `using ${state.maskUpload.name} (${state.maskUpload.width}×${state.maskUpload.height})`;
    redrawMask();
  } catch (error) {
    showError(error.message);
  }
  updateButtons();
}

// ----------------------------------------------------------------------------------------------- mask painter
function canvasPoint(event) {
  const canvas = $("mask-canvas");
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * canvas.width / box.width, (event.clientY - box.top) * canvas.height / box.height];
}

function drawStrokes(context, colour) {
  context.strokeStyle = colour;
  context.fillStyle = colour;
  context.lineCap = "round";
  context.lineJoin = "round";
  for (const stroke of state.strokes) {
    context.lineWidth = stroke.size;
    const [x0, y0] = stroke.points[0];
    context.beginPath();
    context.arc(x0, y0, stroke.size / 2, 0, 2 * Math.PI);
    context.fill();
    context.beginPath();
    context.moveTo(x0, y0);
    for (const [x, y] of stroke.points.slice(1)) context.lineTo(x, y);
    context.stroke();
  }
}

function redrawMask() {
  const canvas = $("mask-canvas");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  drawStrokes(context, "rgba(255, 40, 90, 0.6)");
  updateButtons();
}

function maskBlob() {
  // The painted holes as a mask file: white strokes on black, at the image's own size.
  const canvas = document.createElement("canvas");
  canvas.width = state.image.width;
  canvas.height = state.image.height;
  const context = canvas.getContext("2d");
  context.fillStyle = "#000";
  context.fillRect(0, 0, canvas.width, canvas.height);
  drawStrokes(context, "#fff");
  return new Promise((resolve) => canvas.toBlob(resolve, "image/png"));
}

function setupPainter() {
  const canvas = $("mask-canvas");
  let painting = null;
  canvas.addEventListener("pointerdown", (event) => {
    if (state.result) showResult(null);  // editing the mask again: back from the comparison
    canvas.setPointerCapture(event.pointerId);
    painting = {size: Number($("brush-size").value), points: [canvasPoint(event)]};
    state.strokes.push(painting);
    state.maskUpload = null;
    $("mask-info").textContent = "";
    redrawMask();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!painting) return;
    painting.points.push(canvasPoint(event));
    redrawMask();
  });
  const stop = () => { painting = null; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  $("brush-size").addEventListener("input", () => { $("brush-value").textContent = $("brush-size").value; });
  $("undo").addEventListener("click", () => { state.strokes.pop(); showResult(null); redrawMask(); });
  $("clear").addEventListener("click", () => { state.strokes = []; showResult(null); redrawMask(); });
}

// ----------------------------------------------------------------------------------------------- restore
function updateButtons() {
  const model = selectedModel();
  const needsMask = Boolean(model && model.needs_mask);
  const hasMask = state.strokes.length > 0 || state.maskUpload !== null;
  $("restore").disabled = !state.image || !model || (needsMask && !hasMask) || state.polling !== null;
  $("mask-canvas").hidden = !(needsMask && state.image && !state.result);
  $("undo").disabled = !state.strokes.length;
  $("clear").disabled = !state.strokes.length;
}

async function restore() {
  const model = selectedModel();
  showError("");
  showResult(null);
  const request = {
    image: state.image.id, model: model.name, tile: $("tile").value, precision: $("precision").value,
    seed: $("seed").value, outscale: $("outscale").value,
  };
  try {
    if (model.needs_mask) {
      if (state.maskUpload) {
        request.mask = state.maskUpload.id;
      } else {
        const blob = await maskBlob();
        request.mask = (await uploadFile(new File([blob], "painted_mask.png", {type: "image/png"}), "mask")).id;
      }
    }
    const job = await api("/api/jobs", {method: "POST", headers: {"Content-Type": "application/json"},
                                        body: JSON.stringify(request)});
    follow(job.id);
  } catch (error) {
    showError(error.message);
  }
}

function follow(id) {
  $("progress").hidden = false;
  $("progress").removeAttribute("value");  // indeterminate until tiles are counted
  const poll = async () => {
    let job;
    try {
      job = await api(`/api/jobs/${id}`);
    } catch (error) {
      finish();
      showError(error.message);
      return;
    }
    if (job.state === "queued") {
      setStatus(`queued: ${job.ahead} job${job.ahead === 1 ? "" : "s"} ahead`);
    } else if (job.state === "running") {
      if (job.total > 1) {
        $("progress").max = job.total;
        $("progress").value = job.done;
        const pass = job.stage === "statistics" ? "tiles (statistics pass)" : "tiles";
        setStatus(`restoring: ${job.done} of ${job.total} ${pass}`);
      } else {
        setStatus(job.stage === "loading" ? "loading the model…" : "restoring…");
      }
    } else {
      finish();
      if (job.state === "failed") {
        showError(job.error);
        setStatus("");
      } else {
        setStatus(`done in ${job.seconds.toFixed(1)} s with ${job.model}. ${job.warnings.join(" ")}`);
        await showResult(job.result);
      }
      return;
    }
    state.polling = setTimeout(poll, 300);
  };
  state.polling = setTimeout(poll, 0);
  updateButtons();
}

function finish() {
  clearTimeout(state.polling);
  state.polling = null;
  $("progress").hidden = true;
  updateButtons();
}

// ----------------------------------------------------------------------------------------------- viewer
async function showResult(result) {
  state.result = result;
  const img = $("result-img");
  if (result) {
    img.src = result.preview;
    await loaded(img);
    $("download").href = result.download;
    $("download").setAttribute("download", result.name);
    $("download").textContent = `Download ${result.name}`;
  }
  // Shown only once the result has loaded: the slider never compares against an empty image, and a slow machine
  // cannot offer the download before the page can show what it is.
  $("download").hidden = !result;
  $("divider").hidden = !result;
  img.hidden = !result;
  layout();
  updateButtons();
}

function loaded(img) {
  // decode() where it works; else (or when it rejects, e.g. for an image not yet laid out) the load event.
  return img.decode().catch(() => new Promise((resolve) => {
    if (img.complete && img.naturalWidth) resolve();
    else {
      img.addEventListener("load", resolve, { once: true });
      img.addEventListener("error", resolve, { once: true });
    }
  }));
}

function displaySize() {
  // Natural size of what is shown: the result's when there is one (the input is stretched to it), else the input's.
  const img = state.result ? $("result-img") : $("before-img");
  return [img.naturalWidth || 1, img.naturalHeight || 1];
}

function layout() {
  if (!state.image) return;
  const [width, height] = displaySize();
  const scroll = $("scroll");
  const style = getComputedStyle(scroll);
  const padX = parseFloat(style.paddingLeft) + parseFloat(style.paddingRight);
  const padY = parseFloat(style.paddingTop) + parseFloat(style.paddingBottom);
  const zoom = state.zoom === "fit"
    ? Math.min((scroll.clientWidth - padX - 1) / width, (scroll.clientHeight - padY - 1) / height)
    : Number(state.zoom);
  const w = Math.max(1, Math.round(width * zoom)), h = Math.max(1, Math.round(height * zoom));
  const stage = $("stage");
  stage.style.width = `${w}px`;
  stage.style.height = `${h}px`;
  for (const id of ["result-img", "before-img", "mask-canvas"]) {
    $(id).style.width = `${w}px`;
    $(id).style.height = `${h}px`;
  }
  const split = state.result ? state.split : 1;
  $("before-clip").style.width = `${split * 100}%`;
  $("divider").style.left = `${split * 100}%`;
  const input = `${state.image.width}×${state.image.height}`;
  $("sizes").textContent = state.result
    ? `before ${input} → after ${width}×${height}, shown at ${Math.round(zoom * 100)}%`
    : `${input}, shown at ${Math.round(zoom * 100)}%`;
}

function setupViewer() {
  for (const button of document.querySelectorAll("[data-zoom]")) {
    button.addEventListener("click", () => {
      state.zoom = button.dataset.zoom;
      for (const b of document.querySelectorAll("[data-zoom]")) b.classList.toggle("active", b === button);
      layout();
    });
  }
  const stage = $("stage");
  let dragging = false;
  const move = (event) => {
    const box = stage.getBoundingClientRect();
    state.split = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    layout();
  };
  stage.addEventListener("pointerdown", (event) => {
    if (!state.result) return;
    dragging = true;
    stage.setPointerCapture(event.pointerId);
    move(event);
  });
  stage.addEventListener("pointermove", (event) => { if (dragging) move(event); });
  stage.addEventListener("pointerup", () => { dragging = false; });
  window.addEventListener("resize", layout);
}

// ----------------------------------------------------------------------------------------------- wiring
function setupUpload() {
  const drop = $("drop");
  $("file-input").addEventListener("change", (event) => chooseImage(event.target.files[0]));
  $("mask-input").addEventListener("change", (event) => chooseMask(event.target.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    chooseImage(event.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (event) => {
    const item = [...event.clipboardData.items].find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (item) chooseImage(item.getAsFile());
  });
}

window.addEventListener("DOMContentLoaded", async () => {
  setupUpload();
  setupPainter();
  setupViewer();
  $("model").addEventListener("change", modelChanged);
  $("restore").addEventListener("click", restore);
  try {
    await loadModels();
  } catch (error) {
    showError(error.message);
  }
  document.body.dataset.ready = "true";
});
