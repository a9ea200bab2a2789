// The monitor (oTree style): one row per participant, updated live from the console
// socket, filterable by text and state.
import { LiveBatch, ago, config, el, groupCard, isActive, short } from './common.js';

const cfg = config();
const live = new LiveBatch(cfg);
const tbody = document.querySelector('#monitor tbody');
const empty = document.getElementById('monitor-empty');
const textFilter = document.getElementById('filter-text');
const stateFilter = document.getElementById('filter-state');
const rows = new Map(); // run id -> {tr, sig}

// Filters survive a reload through the URL (?q=…&state=…).
const params = new URLSearchParams(location.search);
textFilter.value = params.get('q') || '';
stateFilter.value = params.get('state') || '';

function componentOf(run) {
  if (!run.component) return { text: '–', title: '', rounds: 1 };
  const def = cfg.components[run.component - 1];
  const total = run.components?.length || cfg.components.length;
  return {
    text: `${run.component}/${total}${def ? ` · ${def.title}` : ''}`,
    title: def ? def.title : '',
    rounds: def ? def.rounds : 1,
  };
}

function roundOf(run, component) {
  if (!run.component) return '–';
  if (run.round) return `${run.round}/${component.rounds}`;
  return component.rounds === 1 ? '1/1' : `–/${component.rounds}`;
}

function stateText(run) {
  const names = { pre: 'preview', data_retrieved: 'data retrieved' };
  return names[run.state] || run.state;
}

function matches(run, component) {
  const state = stateFilter.value;
  if (state === 'active' && !isActive(run)) return false;
  if (state === 'connected' && !run.connected) return false;
  if (state === 'disconnected' && run.connected) return false;
  if (state && !['active', 'connected', 'disconnected'].includes(state) && run.state !== state) return false;
  const q = textFilter.value.trim().toLowerCase();
  if (!q) return true;
  const hay = [run.label, run.worker, run.id, component.text, run.group, run.state, run.link_type, run.reason]
    .filter(Boolean).join(' ').toLowerCase();
  return q.split(/\s+/).every((word) => hay.includes(word));
}

function rowFor(run) {
  const component = componentOf(run);
  const lobby = live.lobby.has(run.id);
  const who = run.label || run.worker || `run ${short(run.id)}`;
  const tr = el('tr', { dataset: { run: run.id }, class: isActive(run) ? '' : 'ended' },
    el('td', {}, who, el('span', { class: 'sub', title: run.id }, `${short(run.id)} · ${run.link_type || 'api'}`)),
    el('td', { title: component.title }, component.text),
    el('td', { class: 'num' }, roundOf(run, component)),
    el('td', {}, el('span', { class: `badge ${run.state}`, title: run.message || '' }, stateText(run)),
      run.reason ? el('span', { class: 'sub' }, run.reason) : null),
    el('td', { title: run.group || '' }, run.group ? short(run.group) : lobby ? el('span', { class: 'muted' }, 'waiting…') : '–'),
    el('td', { class: 'seen', dataset: { ms: run.last_seen_ms || 0 }, title: run.last_seen_ms ? new Date(run.last_seen_ms).toLocaleString() : '' },
      ago(run.last_seen_ms)),
    el('td', {}, el('span', { class: `dot${run.connected ? ' on' : ''}` }), run.connected ? 'yes' : 'no'));
  return { tr, component };
}

function signature(run) {
  return JSON.stringify([run.state, run.component, run.group, run.connected, run.label, run.reason, live.lobby.has(run.id), run.round]);
}

function summary() {
  const runs = [...live.runs.values()];
  const count = (pred) => runs.filter(pred).length;
  const max = cfg.max_total_participants;
  const stats = [
    ['participants', `${runs.length}${max != null ? ` / ${max}` : ''}`],
    ['active', count(isActive)],
    ['connected', count((r) => r.connected)],
    ['finished', count((r) => r.state === 'finished')],
    ['aborted / failed', count((r) => r.state === 'aborted' || r.state === 'failed')],
    ['groups', [...live.groups.values()].filter((g) => g.state !== 'finished').length],
  ];
  document.getElementById('summary').replaceChildren(...stats.map(([name, value]) =>
    el('div', { class: 'stat', dataset: { stat: name } }, el('b', {}, value), el('span', {}, name))));
  const counter = document.getElementById('participant-count');
  if (counter) counter.textContent = `${runs.length}${max != null ? ` / ${max}` : ''}`;
}

function render() {
  let shown = 0;
  const order = [];
  for (const run of live.runs.values()) {
    const sig = signature(run);
    let entry = rows.get(run.id);
    if (!entry || entry.sig !== sig) {
      const { tr, component } = rowFor(run);
      if (entry) {
        entry.tr.replaceWith(tr);
        tr.classList.add('flash');
      }
      entry = { tr, sig, component };
      rows.set(run.id, entry);
    } else {
      const seen = entry.tr.querySelector('td.seen');
      seen.dataset.ms = run.last_seen_ms || 0;
      seen.textContent = ago(run.last_seen_ms);
    }
    const visible = matches(run, entry.component);
    entry.tr.hidden = !visible;
    if (visible) shown += 1;
    order.push(entry.tr);
  }
  for (const [id, entry] of rows) {
    if (!live.runs.has(id)) {
      entry.tr.remove();
      rows.delete(id);
    }
  }
  // Keep entry order; append rows that are new (or were moved) in place.
  order.forEach((tr, i) => {
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
  });
  empty.hidden = live.runs.size > 0 && shown > 0;
  empty.textContent = live.runs.size === 0 ? 'Nobody has entered this batch yet.' : 'No participant matches the filter.';
  summary();
  const groups = [...live.groups.values()];
  document.getElementById('group-count').textContent = groups.length;
  document.getElementById('groups-summary').replaceChildren(
    ...(groups.length ? groups.map((g) => groupCard(live, g, { withSession: false })) : [el('p', { class: 'empty' }, 'No groups.')]));
}

let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    render();
  });
}

function saveFilters() {
  const next = new URLSearchParams();
  if (textFilter.value) next.set('q', textFilter.value);
  if (stateFilter.value) next.set('state', stateFilter.value);
  history.replaceState(null, '', `${location.pathname}${next.size ? `?${next}` : ''}`);
  render();
}

textFilter.addEventListener('input', saveFilters);
stateFilter.addEventListener('change', saveFilters);
live.addEventListener('change', schedule);
setInterval(() => {
  for (const cell of tbody.querySelectorAll('td.seen')) cell.textContent = ago(Number(cell.dataset.ms));
}, 1000);
live.start();
