'use strict';
// Pause / resume / abort the running session (the participant's page follows within 0.5 s).

const $ = (id) => document.getElementById(id);

function show(s) {
  $('status').textContent = s
    ? `${s.session}: ${s.state}${s.paused ? ', paused' : ''}${s.status ? ` (${s.status})` : ''}`
    : 'No session.';
}

async function act(action) {
  $('error').textContent = '';
  const r = await fetch('/api/control', {
    method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({action}),
  });
  const res = await r.json();
  if (!r.ok) $('error').textContent = res.error;
  else show(res.session);
}

async function poll() {
  try {
    show((await (await fetch('/api/control', {cache: 'no-store'})).json()).session);
  } catch (e) {
    $('status').textContent = 'The study server is not running.';
  }
}

for (const a of ['pause', 'resume', 'abort']) $(a).addEventListener('click', () => act(a));
poll();
setInterval(poll, 1000);
