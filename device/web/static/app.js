// emotion-edge live view: the picture (stream.mjpg drawn on a canvas), a card per face with its
// top-3 emotions, a 60 s timeline of the largest face with a seconds-ago axis, the room's leading
// emotion, and clear states for "no face", "camera gone", "viewer limit reached" and "server
// unreachable". Everything comes from this device: api/live (Server-Sent Events) and
// stream.mjpg, both read with fetch so the page sees refusals and each picture's frame number.
// Reconnects by itself after the daemon restarts.
//
// Truth on screen: each picture part carries X-Frame-Seq and each pushed state frame.seq, both
// from the same snapshot on the device. A picture is drawn only together with the state of the
// same seq, and the cards are rendered from that state in the same task, so the label on a box
// and its card always come from one frame.
"use strict";

(function () {
  const EMOTION_COLORS = {
    angry: "#ef4444",
    disgust: "#84cc16",
    fear: "#a855f7",
    happy: "#facc15",
    sad: "#3b82f6",
    surprise: "#f97316",
    neutral: "#9ca3af",
    contempt: "#14b8a6",
  };
  const SPARE = ["#14b8a6", "#ec4899", "#eab308", "#06b6d4", "#8b5cf6"];
  const WINDOW_MS = 60000;
  const OFFLINE_AFTER_MS = 3500;
  const RETRY_MS = 2000;
  const REFUSED_RETRY_MS = 5000;
  const KEEP_STATES = 64; // states kept by seq, waiting for their picture
  const $ = (id) => document.getElementById(id);
  const el = {
    app: $("app"), device: $("device"), faceCount: $("face-count"), faceWord: $("face-word"),
    fps: $("fps"), latency: $("latency"), mqtt: $("mqtt"), conn: $("conn"), pic: $("stream"),
    overlay: $("overlay"), overlayTitle: $("overlay-title"), overlayDetail: $("overlay-detail"),
    cards: $("cards"), noFace: $("no-face"), hint: $("hint"), legend: $("legend"),
    canvas: $("timeline"), room: $("room"), roomEmotion: $("room-emotion"),
    roomPct: $("room-pct"), frameTag: $("frame-tag"),
  };

  // A random id per page load: the server counts this page's two connections as one viewer.
  const viewer = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) =>
    b.toString(16).padStart(2, "0")).join("");

  // Read by the browser tests; harmless for people.
  const live = (window.eeLive = {
    viewer, messages: 0, streamStarts: 0, pictures: 0, state: null, online: false,
    refused: null, shown: null, axis: [],
  });
  let labels = [];
  let lastMessageAt = 0;
  let push = null; // AbortController of the push channel
  let stream = null; // AbortController of the picture stream
  let reconnectTimer = null;
  let streamRetry = null;
  let pending = null; // {seq, index, bitmap}: a picture waiting for its state
  let streamOk = false; // pictures are arriving
  const bySeq = new Map(); // seq -> state
  const history = []; // {t, probs: number[] | null}
  const cards = new Map(); // face_id -> {root, rows, tracked, held}

  function emotionColor(label) {
    if (EMOTION_COLORS[label]) return EMOTION_COLORS[label];
    const i = Math.max(0, labels.indexOf(label));
    return SPARE[i % SPARE.length];
  }

  // -- connections --------------------------------------------------------------------------
  async function refusal(resp) {
    let n = null;
    try {
      n = (await resp.json()).max_clients;
    } catch (e) {
      // the number is a courtesy; the refusal stands without it
    }
    return n == null ? "?" : String(n);
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (push) push.abort();
    const ctl = (push = new AbortController());
    readPush(ctl).catch(() => {
      if (ctl.signal.aborted) return;
      live.refused = null; // a network error: the server is gone, not full
      reconnectTimer = setTimeout(connect, RETRY_MS);
    });
  }

  async function readPush(ctl) {
    const resp = await fetch("api/live?viewer=" + viewer, { signal: ctl.signal, cache: "no-store" });
    if (resp.status === 401) {
      location.reload(); // the session cookie is gone: the server shows the sign-in form
      return;
    }
    if (resp.status === 503) {
      refused(await refusal(resp));
      return;
    }
    if (!resp.ok || !resp.body) throw new Error("HTTP " + resp.status);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("push channel closed");
      buf += value;
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6));
        if (data.length) onMessage(data.join("\n"));
      }
    }
  }

  function onMessage(text) {
    let state;
    try {
      state = JSON.parse(text);
    } catch (e) {
      return;
    }
    lastMessageAt = Date.now();
    live.messages += 1;
    live.state = state;
    live.refused = null;
    if (!live.online) goOnline();
    render(state);
  }

  function refused(n) {
    live.refused = n;
    live.online = false;
    stopStream();
    if (push) push.abort();
    el.conn.textContent = "full";
    el.conn.className = "pill warn";
    clearFigures();
    setMode("full", "Viewer limit reached (" + n + ")",
      "this device admits " + n + " viewers at once; close another page or raise " +
      "web.max_clients. Trying again every " + REFUSED_RETRY_MS / 1000 + " s\u2026");
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, REFUSED_RETRY_MS);
  }

  function goOnline() {
    live.online = true;
    el.conn.textContent = "live";
    el.conn.className = "pill ok";
    startStream();
  }

  function clearFigures() {
    // nothing shown is known any more: no stale faces, figures or "no face"
    renderCards([], false);
    for (const e of [el.faceCount, el.fps, el.latency]) e.textContent = "\u2013";
    el.mqtt.hidden = true;
    el.room.hidden = true;
    el.frameTag.textContent = "";
    live.shown = null;
  }

  function goOffline() {
    if (live.online) {
      live.online = false;
      stopStream();
      connect(); // a fresh request: the old one may be stuck on a dead connection
    }
    el.conn.textContent = "offline";
    el.conn.className = "pill bad";
    clearFigures();
    setMode("offline", "Server unreachable", "reconnecting by itself\u2026");
  }

  function startStream() {
    clearTimeout(streamRetry);
    if (stream) stream.abort();
    live.streamStarts += 1;
    const ctl = (stream = new AbortController());
    readStream(ctl).catch(() => {
      if (ctl.signal.aborted) return;
      streamOk = false;
      if (live.online) streamRetry = setTimeout(startStream, RETRY_MS);
    });
  }

  function stopStream() {
    clearTimeout(streamRetry);
    if (stream) stream.abort();
    stream = null;
    streamOk = false;
    if (pending) pending.bitmap.close();
    pending = null;
    el.pic.hidden = true;
  }

  function indexOf(buf, pat, from) {
    outer: for (let i = from; i <= buf.length - pat.length; i++) {
      for (let j = 0; j < pat.length; j++) if (buf[i + j] !== pat[j]) continue outer;
      return i;
    }
    return -1;
  }

  // multipart/x-mixed-replace: "--frame\r\n" then parts of headers, a blank line and
  // Content-Length bytes of JPEG, each followed by "\r\n--frame\r\n"
  async function readStream(ctl) {
    const resp = await fetch("stream.mjpg?viewer=" + viewer, { signal: ctl.signal, cache: "no-store" });
    if (resp.status === 503) {
      refused(await refusal(resp));
      return;
    }
    if (!resp.ok || !resp.body) throw new Error("HTTP " + resp.status);
    const reader = resp.body.getReader();
    const SEP = [13, 10, 13, 10];
    const latin1 = new TextDecoder("latin1");
    let buf = new Uint8Array(0);
    let head = null; // {len, seq, index} of the part being read
    for (;;) {
      const { value, done } = await reader.read();
      if (done) throw new Error("picture stream closed");
      const joined = new Uint8Array(buf.length + value.length);
      joined.set(buf);
      joined.set(value, buf.length);
      buf = joined;
      for (;;) {
        if (!head) {
          const end = indexOf(buf, SEP, 0);
          if (end < 0) break;
          head = { len: -1, seq: 0, index: null };
          for (const line of latin1.decode(buf.subarray(0, end)).split("\r\n")) {
            const m = /^([\w-]+):\s*(.*)$/.exec(line);
            if (!m) continue;
            const k = m[1].toLowerCase();
            if (k === "content-length") head.len = parseInt(m[2], 10);
            else if (k === "x-frame-seq") head.seq = parseInt(m[2], 10);
            else if (k === "x-frame-index") head.index = parseInt(m[2], 10);
          }
          if (!(head.len >= 0)) throw new Error("picture part without Content-Length");
          buf = buf.subarray(end + 4);
        }
        if (buf.length < head.len) break;
        const jpeg = buf.slice(0, head.len);
        buf = buf.subarray(head.len);
        const part = head;
        head = null;
        const bitmap = await createImageBitmap(new Blob([jpeg], { type: "image/jpeg" }));
        if (ctl.signal.aborted) {
          bitmap.close();
          return;
        }
        onPicture(part.seq, part.index, bitmap);
      }
    }
  }

  setInterval(() => {
    if (live.refused == null && Date.now() - lastMessageAt > OFFLINE_AFTER_MS) goOffline();
  }, 500);

  // -- pairing pictures and states ----------------------------------------------------------
  function onPicture(seq, index, bitmap) {
    streamOk = true;
    const state = bySeq.get(seq);
    if (state) {
      show({ seq, index, bitmap }, state);
    } else {
      if (pending) pending.bitmap.close();
      pending = { seq, index, bitmap }; // its state is on the way (the same tick sent both)
    }
  }

  function show(pic, state) {
    const c = el.pic;
    if (c.width !== pic.bitmap.width || c.height !== pic.bitmap.height) {
      c.width = pic.bitmap.width;
      c.height = pic.bitmap.height;
    }
    c.getContext("2d").drawImage(pic.bitmap, 0, 0);
    pic.bitmap.close();
    c.hidden = false;
    live.pictures += 1;
    if (pending && pending.seq <= pic.seq) pending = null;
    for (const k of bySeq.keys()) if (k < pic.seq) bySeq.delete(k);
    renderFaces(state, pic.seq); // same task as the drawing: painted together
  }

  // -- rendering ----------------------------------------------------------------------------
  function setMode(mode, title, detail) {
    el.app.dataset.state = mode;
    const show = mode === "offline" || mode === "camera" || mode === "connecting" || mode === "full";
    el.overlay.hidden = !show;
    if (show) {
      el.overlayTitle.textContent = title;
      el.overlayDetail.textContent = detail || "";
    }
  }

  function fmtDuration(s) {
    if (s < 60) return Math.floor(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  function cameraBad(state) {
    const cam = state.camera || {};
    return Boolean(cam.state && cam.state !== "ok");
  }

  function render(state) {
    if (JSON.stringify(state.labels) !== JSON.stringify(labels)) {
      labels = state.labels || [];
      buildLegend();
    }
    el.device.textContent = state.device_id ? "\u00b7 " + state.device_id : "";
    el.fps.textContent = state.fps.toFixed(1);
    el.latency.textContent = state.latency_ms == null ? "\u2013" : String(Math.round(state.latency_ms));
    renderMqtt(state.mqtt);

    const seq = state.frame ? state.frame.seq : 0;
    if (seq) {
      bySeq.set(seq, state);
      while (bySeq.size > KEEP_STATES) bySeq.delete(bySeq.keys().next().value);
    }
    if (cameraBad(state)) {
      const cam = state.camera;
      const titles = {
        starting: ["Starting camera\u2026", "waiting for the first picture"],
        reopening: ["Camera unavailable", "reopening by itself" + (cam.reopen_count ? " (attempt " + cam.reopen_count + ")" : "") + (cam.last_error ? ": " + cam.last_error : "")],
        stalled: ["Camera stalled", "no new picture for " + (state.frame ? Math.round(state.frame.age_s) + " s" : "a while")],
        ended: ["Video ended", "the source has no more frames"],
      };
      const [title, detail] = titles[cam.state] || ["Camera: " + cam.state, ""];
      setMode("camera", title, detail);
      renderFaces(state, null);
    } else if (pending && pending.seq === seq) {
      show(pending, state);
    } else if ((live.shown && live.shown.seq === seq) || !streamOk) {
      // a heartbeat of the frame on screen, or no picture to disagree with
      renderFaces(state, live.shown ? live.shown.seq : null);
    }
    addSample(state);
    drawTimeline();
  }

  // Everything that describes the faces of one frame: cards, face count, room, "no face".
  function renderFaces(state, picSeq) {
    const bad = cameraBad(state);
    const faces = bad ? [] : state.faces || [];
    if (!bad) setMode(faces.length ? "faces" : "noface");
    el.faceCount.textContent = String(faces.length);
    el.faceWord.textContent = faces.length === 1 ? "face" : "faces";
    renderRoom(bad ? null : state.room);
    renderCards(faces, !bad);
    const hint = !bad && !faces.length ? state.hint : null;
    el.hint.hidden = !hint;
    el.hint.textContent = hint || "";
    el.frameTag.textContent = state.frame ? "frame " + state.frame.index : "";
    live.shown = {
      seq: picSeq,
      index: state.frame ? state.frame.index : null,
      width: picSeq == null ? 0 : el.pic.width,
      faces: faces.map((f) => ({ face_id: f.face_id, label: f.label, detected: f.detected })),
    };
  }

  function renderRoom(room) {
    if (!room || !room.face_count || !room.emotion) {
      el.room.hidden = true;
      return;
    }
    el.room.hidden = false;
    el.room.style.setProperty("--emo", emotionColor(room.emotion));
    el.roomEmotion.textContent = room.emotion;
    el.roomPct.textContent = Math.round(room.confidence * 100) + "%";
  }

  function renderMqtt(m) {
    if (!m || !m.enabled) {
      el.mqtt.hidden = true;
      return;
    }
    el.mqtt.hidden = false;
    if (m.connected) {
      el.mqtt.textContent = "MQTT" + (m.spool_depth ? " \u00b7 " + m.spool_depth + " queued" : "");
      el.mqtt.className = "pill ok";
    } else {
      el.mqtt.textContent = "MQTT offline \u00b7 " + (m.spool_depth || 0) + " queued";
      el.mqtt.className = "pill warn";
    }
  }

  function makeCard(face) {
    const root = document.createElement("div");
    root.className = "card";
    root.dataset.faceId = String(face.face_id);
    const head = document.createElement("div");
    head.className = "card-head";
    const id = document.createElement("span");
    id.className = "face-id";
    id.textContent = "#" + face.face_id;
    const held = document.createElement("span");
    held.className = "held";
    held.textContent = "not detected, held";
    const tracked = document.createElement("span");
    tracked.className = "tracked";
    head.append(id, held, tracked);
    root.append(head);
    const rows = [];
    for (let i = 0; i < 3; i++) {
      const row = document.createElement("div");
      row.className = i === 0 ? "row top" : "row";
      const name = document.createElement("span");
      name.className = "emotion";
      const pct = document.createElement("span");
      pct.className = "pct";
      const bar = document.createElement("div");
      bar.className = "bar";
      const fill = document.createElement("div");
      fill.className = "fill";
      bar.append(fill);
      row.append(name, pct, bar);
      root.append(row);
      rows.push({ row, name, pct, fill });
    }
    return { root, rows, tracked };
  }

  function renderCards(faces, sayNoFace) {
    const seen = new Set();
    faces.slice(0, 4).forEach((face, order) => {
      seen.add(face.face_id);
      let card = cards.get(face.face_id);
      if (!card) {
        card = makeCard(face);
        cards.set(face.face_id, card);
      }
      card.root.style.setProperty("--face", face.color);
      card.root.style.order = String(order);
      card.root.classList.toggle("carried", face.detected === false);
      card.tracked.textContent = fmtDuration(face.tracked_s);
      face.top.forEach((t, i) => {
        const r = card.rows[i];
        if (!r) return;
        // whole percents as the device rounded them: the box label says the same number
        const pct = t.percent != null ? t.percent : Math.round(t.confidence * 100);
        r.name.textContent = t.emotion;
        r.pct.textContent = pct + "%";
        r.fill.style.width = (t.confidence * 100).toFixed(2) + "%";
        r.fill.style.setProperty("--emo", emotionColor(t.emotion));
      });
      if (card.root.parentNode !== el.cards) el.cards.append(card.root);
    });
    for (const [id, card] of cards) {
      if (!seen.has(id)) {
        card.root.remove();
        cards.delete(id);
      }
    }
    el.noFace.hidden = faces.length > 0 || !sayNoFace;
  }

  // -- timeline -----------------------------------------------------------------------------
  function buildLegend() {
    el.legend.textContent = "";
    for (const label of labels) {
      const k = document.createElement("span");
      k.className = "key";
      k.style.setProperty("--emo", emotionColor(label));
      k.textContent = label;
      el.legend.append(k);
    }
  }

  function addSample(state) {
    const now = Date.now();
    const face = cameraBad(state) ? null : (state.faces || [])[0]; // largest first
    history.push({ t: now, probs: face ? labels.map((l) => face.probs[l] || 0) : null });
    while (history.length && history[0].t < now - WINDOW_MS) history.shift();
  }

  function drawTimeline() {
    const c = el.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(c.clientWidth * dpr));
    const h = Math.max(1, Math.round(c.clientHeight * dpr));
    if (c.width !== w || c.height !== h) {
      c.width = w;
      c.height = h;
    }
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    const now = Date.now();
    // the axis: a strip at the bottom with "seconds ago" under each 10 s grid line
    const font = Math.max(10 * dpr, Math.min(16 * dpr, Math.round(h * 0.16)));
    const axisH = Math.round(font * 1.35);
    const plotH = Math.max(1, h - axisH);
    const x = (t) => ((t - (now - WINDOW_MS)) / WINDOW_MS) * w;
    g.fillStyle = "rgba(255,255,255,0.10)";
    for (let s = 10; s < 60; s += 10) g.fillRect(Math.round(x(now - s * 1000)), 0, Math.max(1, dpr), plotH);
    for (let i = 0; i < history.length; i++) {
      const cur = history[i];
      if (!cur.probs) continue;
      const next = history[i + 1];
      const x0 = x(cur.t);
      const x1 = next ? x(next.t) : w;
      if (x1 - x0 > w / 6) continue; // a gap (page was away): leave it empty
      let y = plotH;
      for (let k = 0; k < labels.length; k++) {
        const ph = cur.probs[k] * plotH;
        if (ph <= 0) continue;
        g.fillStyle = emotionColor(labels[k]);
        g.fillRect(Math.floor(x0), y - ph, Math.ceil(x1 - x0) + 1, ph + 0.5);
        y -= ph;
      }
    }
    g.fillStyle = "rgba(255,255,255,0.25)";
    g.fillRect(0, plotH, w, Math.max(1, dpr));
    g.font = font + "px system-ui, sans-serif";
    g.fillStyle = "#9aa7b4";
    g.textBaseline = "bottom";
    const ticks = [];
    // every 10 s where the labels fit (e.g. a desktop), else every 20 or 30 s (a phone)
    const room = w / (g.measureText("\u221260 s").width * 1.5);
    const step = room >= 6 ? 10 : room >= 3 ? 20 : 30;
    for (let s = 60; s >= 0; s -= step) {
      const text = s === 0 ? "now" : "\u2212" + s + " s";
      const tx = x(now - s * 1000);
      g.textAlign = s === 60 ? "left" : s === 0 ? "right" : "center";
      g.fillText(text, tx, h);
      ticks.push(text);
    }
    live.axis = ticks;
  }

  window.addEventListener("resize", drawTimeline);
  setMode("connecting", "Connecting\u2026", "");
  connect();
})();
