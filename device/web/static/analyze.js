// emotion-edge image analysis page: send the dropped photo to /api/v1/analyze and show the
// annotated picture and each face's probabilities. No inline script (the page's CSP forbids
// it); pictures are drawn on canvases from the answer's base64 JPEGs, since img-src allows
// only this server.
"use strict";

const PALETTE = ["#22d3ee", "#f97316", "#a3e635", "#e879f9", "#facc15", "#60a5fa", "#f87171", "#34d399"];
const $ = (id) => document.getElementById(id);

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", !!isError);
}

function b64ToBlob(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Blob([bytes], { type: "image/jpeg" });
}

async function drawJpeg(canvas, b64, fit) {
  const bmp = await createImageBitmap(b64ToBlob(b64));
  if (fit) {
    canvas.width = bmp.width;
    canvas.height = bmp.height;
  }
  canvas.getContext("2d").drawImage(bmp, 0, 0, canvas.width, canvas.height);
  bmp.close();
}

function faceCard(face, i) {
  const card = $("face-card").content.firstElementChild.cloneNode(true);
  const color = PALETTE[i % PALETTE.length];
  card.style.borderLeftColor = color;
  card.dataset.index = String(i);
  card.querySelector(".title").textContent =
    `${i + 1}: ${face.emotion} ${Math.round(100 * face.confidence)}%`;
  card.querySelector(".score").textContent =
    `box ${Math.round(face.box.w)}x${Math.round(face.box.h)} px, detector ${face.score.toFixed(2)}`;
  const bars = card.querySelector(".bars");
  const probs = Object.entries(face.probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of probs) {
    const row = document.createElement("div");
    row.className = "row";
    const name = document.createElement("span");
    name.className = "emotion";
    name.textContent = label;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    fill.style.background = color;
    bar.appendChild(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${Math.round(100 * p)}%`;
    row.append(name, bar, pct);
    bars.appendChild(row);
  }
  if (face.crop_jpeg_b64) drawJpeg(card.querySelector(".crop"), face.crop_jpeg_b64, false);
  return card;
}

async function analyse(file) {
  if (!file) return;
  setStatus(`Analysing ${file.name || "the image"}\u2026`);
  $("faces").replaceChildren();
  const form = new FormData();
  form.append("image", file);
  let res, body;
  try {
    const scan = $("fast").checked ? "frame" : "photo";
    res = await fetch(`api/v1/analyze?annotated=true&crops=true&scan=${scan}`, {
      method: "POST",
      body: form,
    });
    body = await res.json();
  } catch (err) {
    setStatus(`The server did not answer (${err.message})`, true);
    return;
  }
  if (!res.ok) {
    setStatus(`${res.status}: ${body.error || "refused"}`, true);
    return;
  }
  const canvas = $("picture");
  await drawJpeg(canvas, body.annotated_jpeg_b64, true);
  canvas.hidden = false;
  canvas.dataset.faces = String(body.face_count);
  const n = body.face_count;
  setStatus(`${n} face${n === 1 ? "" : "s"} in ${body.image.width}x${body.image.height} px, ` +
    `${Math.round(body.elapsed_ms)} ms (request ${body.request_id.slice(0, 8)})`);
  $("faces").replaceChildren(...body.faces.map(faceCard));
  document.body.dataset.done = body.request_id;
}

function init() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => analyse(e.target.files[0]));
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    analyse(e.dataTransfer.files[0]);
  });
  // a photo dropped beside the zone must not make the browser navigate away to it
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") $("file").click();
  });
}

init();
