'use strict';
// The researcher's start page: fills the form from /api/study, starts a session, hands over.

const $ = (id) => document.getElementById(id);

async function load() {
  const st = await (await fetch('/api/study', {cache: 'no-store'})).json();
  document.title = `${st.study}: start a session`;
  $('study-name').textContent = st.study;
  $('participant').value = st.participant;
  const sel = $('group');
  if (st.groups.length === 0) {
    $('group-label').hidden = true;
  }
  for (const g of st.groups) {
    const o = document.createElement('option');
    o.value = o.textContent = g;
    sel.appendChild(o);
  }
  for (const f of st.metadata) {
    const l = document.createElement('label');
    l.textContent = f.replace(/_/g, ' ');
    const i = document.createElement('input');
    i.name = f;
    i.dataset.field = f;
    i.maxLength = 200;
    i.autocomplete = 'off';
    l.appendChild(i);
    $('fields').appendChild(l);
  }
  $('order-hint').textContent = `${st.clips.length} clips, ${st.order} order.`;
}

async function start(ev) {
  ev.preventDefault();
  $('error').textContent = '';
  const fields = {};
  for (const i of document.querySelectorAll('[data-field]')) fields[i.dataset.field] = i.value;
  const body = {participant: $('participant').value.trim(), group: $('group').value, fields};
  const r = await fetch('/api/sessions', {
    method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body),
  });
  const res = await r.json();
  if (!r.ok) {
    $('error').textContent = res.error || `error ${r.status}`;
    return;
  }
  location.href = `${res.run}#${res.token}`;
}

$('start-form').addEventListener('submit', start);
load().catch((e) => { $('error').textContent = `cannot load the study: ${e}`; });
