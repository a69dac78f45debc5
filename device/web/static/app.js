// emotion-edge live view: the picture (an MJPEG <img>), a card per face with its top-3
// emotions, a 60 s timeline of the largest face, and clear states for "no face", "camera gone"
// and "server unreachable". Everything comes from this device: api/live (Server-Sent Events)
// and stream.mjpg. Reconnects by itself after the daemon restarts.
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
  const $ = (id) => document.getElementById(id);
  const el = {
    app: $("app"), device: $("device"), faceCount: $("face-count"), faceWord: $("face-word"),
    fps: $("fps"), latency: $("latency"), mqtt: $("mqtt"), conn: $("conn"), img: $("stream"),
    overlay: $("overlay"), overlayTitle: $("overlay-title"), overlayDetail: $("overlay-detail"),
    cards: $("cards"), noFace: $("no-face"), legend: $("legend"), canvas: $("timeline"),
  };

  // Read by the browser tests; harmless for people.
  const live = (window.eeLive = { messages: 0, streamStarts: 0, state: null, online: false });
  let labels = [];
  let lastMessageAt = 0;
  let source = null;
  let reconnectTimer = null;
  let streamRetry = null;
  const history = []; // {t, probs: number[] | null}
  const cards = new Map(); // face_id -> {root, rows, tracked}

  function emotionColor(label) {
    if (EMOTION_COLORS[label]) return EMOTION_COLORS[label];
    const i = Math.max(0, labels.indexOf(label));
    return SPARE[i % SPARE.length];
  }

  // -- connection ---------------------------------------------------------------------------
  function connect() {
    clearTimeout(reconnectTimer);
    if (source) source.close();
    source = new EventSource("api/live");
    source.onmessage = (ev) => {
      let state;
      try {
        state = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      lastMessageAt = Date.now();
      live.messages += 1;
      live.state = state;
      if (!live.online) goOnline();
      render(state);
    };
    source.onerror = () => {
      // CONNECTING: the browser retries by itself; CLOSED (e.g. HTTP 503): we do, later.
      if (source.readyState === EventSource.CLOSED) {
        reconnectTimer = setTimeout(connect, 2000);
      }
    };
  }

  function goOnline() {
    live.online = true;
    el.conn.textContent = "live";
    el.conn.className = "pill ok";
    startStream();
  }

  function goOffline() {
    if (live.online) {
      live.online = false;
      stopStream();
      connect(); // a fresh EventSource: the old one may be stuck on a dead connection
    }
    el.conn.textContent = "offline";
    el.conn.className = "pill bad";
    // nothing shown is known any more: no stale faces, figures or "no face"
    renderCards([], false);
    for (const e of [el.faceCount, el.fps, el.latency]) e.textContent = "\u2013";
    el.mqtt.hidden = true;
    setMode("offline", "Server unreachable", "reconnecting by itself\u2026");
  }

  function startStream() {
    clearTimeout(streamRetry);
    live.streamStarts += 1;
    el.img.src = "stream.mjpg?n=" + live.streamStarts;
  }

  function stopStream() {
    clearTimeout(streamRetry);
    el.img.removeAttribute("src");
  }

  el.img.addEventListener("error", () => {
    if (live.online && el.img.getAttribute("src")) {
      clearTimeout(streamRetry);
      streamRetry = setTimeout(startStream, 2000);
    }
  });

  setInterval(() => {
    if (Date.now() - lastMessageAt > OFFLINE_AFTER_MS) goOffline();
  }, 500);

  // -- rendering ----------------------------------------------------------------------------
  function setMode(mode, title, detail) {
    el.app.dataset.state = mode;
    const show = mode === "offline" || mode === "camera" || mode === "connecting";
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

  function render(state) {
    if (JSON.stringify(state.labels) !== JSON.stringify(labels)) {
      labels = state.labels || [];
      buildLegend();
    }
    el.device.textContent = state.device_id ? "\u00b7 " + state.device_id : "";
    el.faceCount.textContent = String(state.face_count);
    el.faceWord.textContent = state.face_count === 1 ? "face" : "faces";
    el.fps.textContent = state.fps.toFixed(1);
    el.latency.textContent = state.latency_ms == null ? "\u2013" : String(Math.round(state.latency_ms));
    renderMqtt(state.mqtt);

    const cam = state.camera || {};
    const cameraBad = Boolean(cam.state && cam.state !== "ok");
    if (cameraBad) {
      const titles = {
        starting: ["Starting camera\u2026", "waiting for the first picture"],
        reopening: ["Camera unavailable", "reopening by itself" + (cam.reopen_count ? " (attempt " + cam.reopen_count + ")" : "") + (cam.last_error ? ": " + cam.last_error : "")],
        stalled: ["Camera stalled", "no new picture for " + (state.frame ? Math.round(state.frame.age_s) + " s" : "a while")],
        ended: ["Video ended", "the source has no more frames"],
      };
      const [title, detail] = titles[cam.state] || ["Camera: " + cam.state, ""];
      setMode("camera", title, detail);
    } else {
      setMode(state.face_count ? "faces" : "noface");
    }
    renderCards(state.faces || [], !cameraBad);
    addSample(state);
    drawTimeline();
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
    const tracked = document.createElement("span");
    tracked.className = "tracked";
    head.append(id, tracked);
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
      card.tracked.textContent = fmtDuration(face.tracked_s);
      face.top.forEach((t, i) => {
        const r = card.rows[i];
        if (!r) return;
        r.name.textContent = t.emotion;
        r.pct.textContent = Math.round(t.confidence * 100) + "%";
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
    const face = (state.faces || [])[0]; // largest first
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
    const x = (t) => ((t - (now - WINDOW_MS)) / WINDOW_MS) * w;
    // grid every 10 s
    g.fillStyle = "rgba(255,255,255,0.07)";
    for (let s = 10; s < 60; s += 10) g.fillRect(Math.round(x(now - s * 1000)), 0, Math.max(1, dpr), h);
    for (let i = 0; i < history.length; i++) {
      const cur = history[i];
      if (!cur.probs) continue;
      const next = history[i + 1];
      const x0 = x(cur.t);
      const x1 = next ? x(next.t) : w;
      if (x1 - x0 > w / 6) continue; // a gap (page was away): leave it empty
      let y = h;
      for (let k = 0; k < labels.length; k++) {
        const ph = cur.probs[k] * h;
        if (ph <= 0) continue;
        g.fillStyle = emotionColor(labels[k]);
        g.fillRect(Math.floor(x0), y - ph, Math.ceil(x1 - x0) + 1, ph + 0.5);
        y -= ph;
      }
    }
  }

  window.addEventListener("resize", drawTimeline);
  setMode("connecting", "Connecting\u2026", "");
  connect();
})();
