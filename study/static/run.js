'use strict';
/* The participant's page: consent, full screen, then per clip a fixation cross, the clip
   and the ratings, then thanks. jsPsych runs the sequence; this file adds the timing.

   Clock: every moment is a performance.now() time (media event timeStamp, a presented
   frame's expectedDisplayTime), turned into the device's epoch seconds with the offset to
   the server measured by pings (the sample with the shortest round trip; re-measured
   before each clip). Clip start = the first frame the compositor presents
   (requestVideoFrameCallback) once the clip plays; end = the `ended` event. A pause or a
   buffer stall ends the stretch and the next `playing` opens a new one (tagged). */

const TOKEN = location.hash.slice(1);
const API = `/api/sessions/${TOKEN}`;
const HEARTBEAT_MS = 500;
const START_TIMEOUT_MS = 10000; // a clip that has not played by then is skipped
const SHORT_STALL_MS = 100; // a shorter buffer stall does not split the clip's stretch
const HAS_RVFC = 'requestVideoFrameCallback' in HTMLVideoElement.prototype;

let clock = {offset_ms: 0, rtt_ms: -1};
let jsPsych = null;
let current = null; // the clip on screen: {clip, video, st}
let pausedHere = false;
let finished = false;
const skipped = new Set();
const ratings = {};

const deviceTs = (perfMs) => (perfMs + clock.offset_ms) / 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function syncClock(n) {
  let best = null;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const r = await fetch('/api/clock', {method: 'POST', cache: 'no-store'});
    const t1 = performance.now();
    const {t} = await r.json();
    if (!best || t1 - t0 < best.rtt_ms) best = {rtt_ms: t1 - t0, offset_ms: t * 1000 - (t0 + t1) / 2};
  }
  clock = best;
}

const clockMeta = () => ({clock_offset_s: clock.offset_ms / 1000, clock_rtt_ms: clock.rtt_ms});

// -- posting, in order, retried while the server is briefly away -----------------------------

const outbox = [];
let sending = false;

function send(what, body) {
  outbox.push({what, body});
  pump();
}

async function pump() {
  if (sending) return;
  sending = true;
  while (outbox.length) {
    const {what, body} = outbox[0];
    try {
      const r = await fetch(`${API}/${what}`, {
        method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body),
      });
      if (r.status >= 500) throw new Error(`HTTP ${r.status}`);
      if (!r.ok) console.warn(what, r.status, await r.text()); // refused for good: next
      outbox.shift();
    } catch (e) {
      await sleep(500);
    }
  }
  sending = false;
}

function mark(action, label, perfMs, tags = [], meta = {}) {
  send('stimulus', {action, label, ts: deviceTs(perfMs), tags, meta: {...meta, ...clockMeta()}});
}

// -- one clip ------------------------------------------------------------------------------

function watchClip(clip) {
  const video = document.querySelector('#jspsych-video-keyboard-response-stimulus');
  const st = {open: false, played: false, ended: false, failed: false, pending: null,
              frames: 0, first: null, last: null, stalls: 0, waitingAt: null, shortStalls: 0};
  current = {clip, video, st};
  const open = (ts, tags, meta) => {
    if (st.open || st.failed) return;
    st.open = true;
    mark('start', clip.name, ts, tags, meta);
  };
  const close = (ts, tags, meta = {}) => {
    if (!st.open) return;
    st.open = false;
    mark('end', clip.name, ts, tags,
      {...meta, frames: st.frames, stalls: st.stalls, short_stalls: st.shortStalls});
  };
  const fail = (why) => {
    if (st.failed || st.ended) return;
    const now = performance.now();
    if (st.open) close(now, ['skipped'], {error: why});
    else {
      mark('start', clip.name, now, ['skipped'], {error: why});
      mark('end', clip.name, now, ['skipped'], {error: why});
    }
    st.failed = true;
    skipped.add(clip.name);
    current = null;
    jsPsych.finishTrial({clip: clip.name, skipped: true, error: why});
  };
  const onFrame = (now, md) => {
    st.frames += 1;
    st.last = md;
    if (!st.first) st.first = md;
    if (st.pending) {
      const p = st.pending;
      st.pending = null;
      clearTimeout(p.timer);
      // the first frame may already be on screen when playback starts: that is the onset
      const frame = p.tags.length === 0 ? st.first : md;
      open(frame.expectedDisplayTime, p.tags, {
        timing: 'frame', media_time: frame.mediaTime,
        playing_event_ms: p.eventTs - frame.expectedDisplayTime,
      });
    }
    if (!st.ended && !st.failed) video.requestVideoFrameCallback(onFrame);
  };
  if (HAS_RVFC) video.requestVideoFrameCallback(onFrame);
  video.addEventListener('playing', (e) => {
    if (st.waitingAt !== null) {
      const stall = e.timeStamp - st.waitingAt;
      const at = st.waitingAt;
      st.waitingAt = null;
      if (stall < SHORT_STALL_MS) {
        st.shortStalls += 1; // a hiccup of a frame or two: the stretch goes on
        return;
      }
      close(at, ['stalled'], {stall_ms: stall});
    }
    if (st.open || st.ended || st.failed) return;
    const tags = st.played ? ['resumed'] : [];
    st.played = true;
    if (HAS_RVFC && !(tags.length === 0 && st.first)) {
      const timer = setTimeout(() => {
        if (!st.pending) return;
        st.pending = null;
        open(e.timeStamp, tags, {timing: 'playing-event', note: 'no frame within 500 ms'});
      }, 500);
      st.pending = {tags, eventTs: e.timeStamp, timer};
    } else if (HAS_RVFC) {
      open(st.first.expectedDisplayTime, tags, {
        timing: 'frame', media_time: st.first.mediaTime,
        playing_event_ms: e.timeStamp - st.first.expectedDisplayTime,
      });
    } else {
      open(e.timeStamp, tags, {timing: 'playing-event'});
    }
  });
  // in the capture phase, so this runs before the plugin's own `onended` ends the trial (and
  // the next trial, perhaps the session's end, is already sent)
  const onEnded = (e) => {
    if (e.target !== video) return;
    document.removeEventListener('ended', onEnded, true);
    st.ended = true;
    st.waitingAt = null;
    const last = st.last;
    close(e.timeStamp, [], {
      media_duration_s: video.duration,
      last_frame_ms: last ? e.timeStamp - last.expectedDisplayTime : null,
    });
    current = null;
  };
  document.addEventListener('ended', onEnded, true);
  video.addEventListener('pause', (e) => {
    if (st.ended || video.ended) return;
    const at = st.waitingAt !== null ? st.waitingAt : e.timeStamp;
    st.waitingAt = null;
    close(at, ['paused']);
  });
  // a buffer stall ends the stretch at its start, once it proves longer than a hiccup
  video.addEventListener('waiting', (e) => {
    if (st.open && !st.ended && st.waitingAt === null) st.waitingAt = e.timeStamp;
  });
  video.addEventListener('stalled', () => { st.stalls += 1; });
  video.addEventListener('error', () => fail(`media error ${video.error && video.error.code}`));
  const sources = video.querySelectorAll('source');
  if (sources.length) {
    sources[sources.length - 1].addEventListener('error', () => fail('cannot load the clip'));
  }
  const startTimeout = () => setTimeout(() => {
    if (st.played || !current || current.st !== st) return;
    if (pausedHere) startTimeout(); // the researcher paused before it started: wait on
    else fail(`did not start in ${START_TIMEOUT_MS / 1000} s`);
  }, START_TIMEOUT_MS);
  startTimeout();
  if (pausedHere) video.pause();
}

// -- pause, resume, abort (the researcher's /control page or Shift+P) --------------------------

function applyPause(paused) {
  if (paused === pausedHere) return;
  pausedHere = paused;
  document.getElementById('paused').hidden = !paused;
  if (paused) {
    jsPsych.pauseExperiment();
    if (current && !current.video.paused) current.video.pause();
  } else {
    jsPsych.resumeExperiment();
    if (current && current.video.paused && !current.st.ended) current.video.play();
  }
}

async function heartbeat() {
  if (finished) return;
  try {
    const r = await fetch(`${API}/heartbeat`, {method: 'POST', cache: 'no-store'});
    if (r.ok) {
      const s = await r.json();
      if (s.state === 'ended' && !finished) {
        finished = true;
        dark(false);
        jsPsych.abortExperiment('The session was ended by the researcher. Thank you.');
        return;
      }
      applyPause(s.paused);
    }
  } catch (e) { /* the server is briefly away: the next beat tries again */ }
}

document.addEventListener('keydown', (e) => {
  if (e.shiftKey && (e.key === 'P' || e.key === 'p')) {
    fetch('/api/control', {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({action: pausedHere ? 'resume' : 'pause'})}).then(heartbeat);
  }
});

window.addEventListener('pagehide', () => {
  if (finished) return;
  // stamped now; the server's heartbeat watchdog ends the session anyway if this is lost
  navigator.sendBeacon(`${API}/end`,
    JSON.stringify({status: 'aborted', ts: deviceTs(performance.now())}));
});

// -- the sequence ----------------------------------------------------------------------------

// the fixation cross and the clips on a black screen: no white flash between clips
const dark = (on) => document.body.classList.toggle('dark', on);

function esc(text) {
  const d = document.createElement('div');
  d.textContent = text;
  return d.innerHTML;
}

function ratingTrials(cfg, clip) {
  const label = `rating:${clip.name}`;
  const trials = cfg.ratings.map((r, i) => {
    const common = {
      on_start: () => dark(false),
      on_load: () => { if (i === 0) mark('start', label, performance.now(), ['rating']); },
      on_finish: (data) => {
        ratings[clip.name] = ratings[clip.name] || {};
        ratings[clip.name][r.name] = r.kind === 'slider' ? Number(data.response) : data.response[r.name];
        if (i === cfg.ratings.length - 1) {
          mark('end', label, performance.now(), ['rating'], {answers: ratings[clip.name]});
        }
      },
    };
    if (r.kind === 'slider') {
      return {type: jsPsychHtmlSliderResponse, stimulus: `<p class="prompt">${esc(r.prompt)}</p>`,
        min: r.min, max: r.max, slider_start: Math.round((r.min + r.max) / 2),
        labels: r.labels.map(esc), require_movement: false, button_label: 'Continue', ...common};
    }
    return {type: jsPsychSurveyLikert, button_label: 'Continue',
      questions: [{prompt: esc(r.prompt), labels: r.labels.map(esc), required: true, name: r.name}],
      ...common};
  });
  return {timeline: trials, conditional_function: () => !skipped.has(clip.name)};
}

function buildTimeline(cfg) {
  let accepted = false;
  const consent = {
    type: jsPsychHtmlButtonResponse,
    stimulus: `<div class="consent">${esc(cfg.consent)}</div>`,
    choices: ['I agree', 'I do not agree'],
    on_finish: (data) => {
      accepted = data.response === 0;
      send('consent', {accepted, ts: deviceTs(performance.now()),
        clock: {offset_s: clock.offset_ms / 1000, rtt_ms: clock.rtt_ms}});
      if (!accepted) finished = true;
    },
  };
  const clips = [];
  for (const clip of cfg.clips) {
    if (cfg.fixation_s > 0) {
      clips.push({type: jsPsychHtmlKeyboardResponse, stimulus: '<div class="fixation">+</div>',
        choices: 'NO_KEYS', trial_duration: cfg.fixation_s * 1000,
        on_start: () => { dark(true); syncClock(5).catch(() => {}); }});
    }
    clips.push({type: jsPsychVideoKeyboardResponse, stimulus: [clip.url], choices: 'NO_KEYS',
      autoplay: true, trial_ends_after_video: true, width: 0, height: 0,
      on_start: () => dark(true),
      on_load: () => watchClip(clip),
      on_finish: () => { current = null; }});
    if (cfg.ratings.length) clips.push(ratingTrials(cfg, clip));
  }
  const study = {
    timeline: [
      {type: jsPsychFullscreen, fullscreen_mode: true, button_label: 'Start',
        message: '<p>The clips play full screen. Press Start when you are ready.</p>'},
      ...clips,
      {type: jsPsychFullscreen, fullscreen_mode: false, delay_after: 0,
        on_start: () => {
          dark(false);
          finished = true;
          send('end', {status: 'completed', ts: deviceTs(performance.now())});
        }},
    ],
    conditional_function: () => accepted,
  };
  const thanks = {type: jsPsychHtmlKeyboardResponse, choices: 'NO_KEYS',
    stimulus: () => `<div class="thanks">${esc(accepted ? cfg.thanks : 'Thank you. Nothing more to do.')}</div>`};
  return [consent, study, thanks];
}

async function main() {
  if (!TOKEN) throw new Error('no session: start one from the start page');
  const r = await fetch(API, {cache: 'no-store'});
  if (!r.ok) throw new Error('this session is unknown to the server: start one from the start page');
  const cfg = await r.json();
  if (cfg.state !== 'created') throw new Error(`this session is ${cfg.state}: start a new one`);
  document.title = cfg.study;
  await syncClock(8);
  jsPsych = initJsPsych({});
  window.studyDebug = {cfg, clock: () => clock, skipped, ratings};
  setInterval(heartbeat, HEARTBEAT_MS);
  await jsPsych.run(buildTimeline(cfg));
}

main().catch((e) => {
  const p = document.getElementById('fatal');
  p.textContent = String(e.message || e);
  p.hidden = false;
});
