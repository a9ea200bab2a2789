// The timeline: a scrubber over the batch's positions, the state of any scope at the
// scrubbed point, the events around it, and a chart over the batch's life (events
// per second, participants connected, groups active) in inline SVG.
//
// With the replay API (GET /api/batches/<id>/events|state) the whole history is
// there; without it, the page shows what the console socket delivered since it was
// opened, folded from the snapshot it started with.
import {
  LiveBatch, api, clockTime, cloneJson, comparePos, config, el, normalizeEvent, posTime, pretty, short,
} from './common.js';

const cfg = config();
let replay = !!(cfg.features && cfg.features.replay);
const replayBase = `/api/batches/${encodeURIComponent(cfg.batch)}`;
const MAX_EVENTS = 200000;
const AROUND = 8;

const scrubber = document.getElementById('scrubber');
const scopeSelect = document.getElementById('scope');
const follow = document.getElementById('follow');
const stateBox = document.getElementById('scope-state');
const stateVersion = document.getElementById('state-version');
const eventList = document.getElementById('events');
const chartBox = document.getElementById('chart');
const source = document.getElementById('timeline-source');

const live = new LiveBatch(cfg, { refreshEveryMs: 15000 });
let events = [];          // {pos, kind, scope, ...} in position order
let base = null;          // fallback: the snapshot the events follow
let labels = new Map();   // run id -> label
let stateTimer = null;
let stateSeq = 0;

function normalize(item) {
  // Replay API: {pos, time, event: {...}}; console socket (normalized by LiveBatch).
  return item.event ? normalizeEvent(item.event, item.pos) : item;
}

function labelOf(runId) {
  return labels.get(runId) || live.label(runId);
}

function describe(ev) {
  const who = ev.run && !ev.run.startsWith('experimenter:') ? labelOf(ev.run) : ev.run || '';
  switch (ev.kind) {
    case 'session_patched':
      return ev.ops.map((op) => `${op.op} ${op.path || '/'}${'value' in op ? ` = ${JSON.stringify(op.value)}` : ''}`).join('; ');
    case 'run_started':
      return `${ev.label || ev.worker || ''} (${ev.link_type || 'api'})`;
    case 'component_started':
    case 'data_retrieved':
      return `component ${(ev.component ?? 0) + 1}`;
    case 'run_ended':
      return `${ev.state}${ev.reason ? ` (${ev.reason})` : ''}${ev.message ? `: ${ev.message}` : ''}`;
    case 'member_joined':
    case 'member_left':
    case 'member_presence':
    case 'arrival_queued':
    case 'arrival_ended':
      return `${labelOf(ev.member)}${ev.reason ? ` (${ev.reason})` : ''}${'open' in ev ? (ev.open ? ' back' : ' away') : ''}`;
    case 'group_message':
      return `from ${labelOf(ev.sender)}${ev.to ? ` to ${labelOf(ev.to)}` : ''}`;
    case 'study_session_written':
      return `${ev.size} bytes`;
    default:
      return who;
  }
}

function scopeName(scope) {
  const [kind, id] = scope.split(/:(.*)/s);
  if (kind === 'run') return `run: ${labelOf(id)}`;
  if (id) return `${kind.replace('_', ' ')}: ${short(id)}`;
  return scope.replace('_', ' ');
}

// -- loading -----------------------------------------------------------------------

async function loadHistory(after = '') {
  const found = [];
  for (;;) {
    const query = new URLSearchParams({ limit: '10000' });
    if (after) query.set('after', after);
    const answer = await api(`${replayBase}/events?${query}`, { loginOn401: false });
    if (!answer.ok) {
      const err = new Error((answer.data && (answer.data.message || answer.data.detail)) || `HTTP ${answer.status}`);
      err.status = answer.status;
      throw err;
    }
    found.push(...answer.data.events.map(normalize));
    if (!answer.data.next || found.length >= MAX_EVENTS) break;
    after = answer.data.next;
  }
  return found;
}

function learnLabels(list) {
  for (const ev of list) {
    if (ev.kind === 'run_started') {
      const id = ev.scope.slice(4);
      labels.set(id, ev.label || ev.worker || short(id));
    }
  }
}

function fillScopes() {
  const chosen = scopeSelect.value || new URLSearchParams(location.search).get('scope') || 'batch_session';
  const scopes = new Set(['batch_session', 'batch']);
  for (const ev of events) scopes.add(ev.scope);
  if (base) {
    for (const run of base.runs) scopes.add(`run:${run.id}`);
    for (const group of base.groups) {
      scopes.add(`group:${group.id}`);
      scopes.add(`group_session:${group.id}`);
    }
  }
  const order = (s) => ['batch_session', 'batch', 'group_session', 'group', 'group_chat', 'run'].indexOf(s.split(':')[0]);
  const sorted = [...scopes].sort((a, b) => order(a) - order(b) || a.localeCompare(b));
  scopeSelect.replaceChildren(...sorted.map((s) => el('option', { value: s, selected: s === chosen }, scopeName(s))));
}

// -- state at a point ------------------------------------------------------------------

/** Fallback: fold the base snapshot and the events up to `index` in the browser. */
function localState(scope, index) {
  const fold = new LiveBatch(cfg);
  fold.load(cloneJson(base));
  for (let i = 0; i <= index && i < events.length; i++) fold.fold(cloneJson(events[i]));
  const [kind, id] = scope.split(/:(.*)/s);
  const version = fold.versions[scope] || 0;
  if (scope === 'batch_session') return { version, data: fold.batchSession.data };
  if (scope === 'batch') return { version, data: { label: cfg.label, groups: fold.groupLimits } };
  if (kind === 'run') return { version, data: fold.runs.get(id) ?? null };
  const group = fold.groups.get(id);
  if (kind === 'group') return { version, data: group ? { state: group.state, active: group.members, history: group.history, closed: group.closed, messages: group.messages } : null };
  if (kind === 'group_session') return { version: group ? group.session_version : 0, data: group ? group.session : null };
  if (kind === 'group_chat') return { version, data: group ? { messages: group.messages } : null };
  return { version, data: null };
}

async function showState() {
  const index = Number(scrubber.value);
  const scope = scopeSelect.value || 'batch_session';
  const seq = ++stateSeq;
  if (!events.length) {
    stateBox.textContent = replay ? 'No events yet.' : pretty(base ? localState(scope, -1).data : null);
    return;
  }
  const pos = events[index].pos;
  if (!replay) {
    const found = localState(scope, index);
    stateVersion.textContent = `v${found.version}`;
    stateBox.textContent = pretty(found.data);
    return;
  }
  const answer = await api(`${replayBase}/state?${new URLSearchParams({ scope, at: pos })}`);
  if (seq !== stateSeq) return; // the scrubber moved on meanwhile
  if (!answer.ok) {
    stateVersion.textContent = '';
    stateBox.textContent = `Could not load the state: ${(answer.data && answer.data.message) || answer.status}`;
    return;
  }
  stateVersion.textContent = `v${answer.data.version}`;
  const shown = answer.data.study_session !== undefined
    ? { ...answer.data.data, study_session: answer.data.study_session } : answer.data.data;
  stateBox.textContent = pretty(shown);
  stateBox.dataset.pos = answer.data.pos;
}

function scheduleState() {
  clearTimeout(stateTimer);
  stateTimer = setTimeout(showState, 120);
}

// -- the events around the point -------------------------------------------------------

function showEvents() {
  const index = Number(scrubber.value);
  if (!events.length) {
    eventList.replaceChildren(el('li', { class: 'empty' }, 'No events yet.'));
    return;
  }
  const from = Math.max(0, index - AROUND);
  const to = Math.min(events.length, index + AROUND + 1);
  const items = [];
  for (let i = from; i < to; i++) {
    const ev = events[i];
    items.push(el('li', {
      class: i === index ? 'current' : i > index ? 'after' : '', dataset: { index: i, pos: ev.pos },
      title: `${ev.pos} · ${ev.scope} v${ev.version}`,
      onclick: () => { scrubber.value = i; moved(); },
    },
    el('span', { class: 't' }, clockTime(posTime(ev.pos), true)),
    el('span', {}, el('span', { class: 'kind' }, ev.kind.replaceAll('_', ' ')), ' ',
      el('span', { class: 'muted' }, scopeName(ev.scope)),
      el('span', { class: 'detail' }, describe(ev)))));
  }
  eventList.replaceChildren(...items);
  eventList.querySelector('li.current')?.scrollIntoView({ block: 'nearest' });
}

function showPosition() {
  const index = Number(scrubber.value);
  const ev = events[index];
  document.getElementById('scrub-pos').textContent = ev ? `event ${index + 1} of ${events.length} · ${ev.pos}` : 'no events';
  document.getElementById('scrub-time').textContent = ev ? new Date(posTime(ev.pos)).toLocaleString() : '';
  drawCursor();
}

function moved() {
  showPosition();
  showEvents();
  scheduleState();
  const query = new URLSearchParams(location.search);
  query.set('scope', scopeSelect.value);
  if (events.length) query.set('at', events[Number(scrubber.value)].pos);
  history.replaceState(null, '', `${location.pathname}?${query}`);
}

// -- the chart -------------------------------------------------------------------------

const W = 1000;
const H = 230;
const PAD = { l: 44, r: 44, t: 12, b: 26 };
const SPLIT = 104;     // bars above, lines below
let scale = null;      // {t0, t1, x(t)}

/** Participants connected (in a run, not away) and groups active, after every event. */
function series() {
  const runs = new Map();   // id -> {active, away}
  const groups = new Map(); // id -> active
  if (base) {
    for (const run of base.runs) runs.set(run.id, { active: ['pre', 'started', 'data_retrieved'].includes(run.state), away: !run.connected });
    for (const group of base.groups) groups.set(group.id, group.state !== 'finished');
  }
  const count = () => {
    let connected = 0;
    for (const r of runs.values()) if (r.active && !r.away) connected++;
    let active = 0;
    for (const g of groups.values()) if (g) active++;
    return [connected, active];
  };
  const points = [];
  for (const ev of events) {
    const id = ev.scope.slice(ev.scope.indexOf(':') + 1);
    if (ev.kind === 'run_started') runs.set(id, { active: true, away: false });
    else if (ev.kind === 'run_ended' && runs.has(id)) runs.get(id).active = false;
    else if (ev.kind === 'member_presence' && runs.has(ev.member)) runs.get(ev.member).away = !ev.open;
    else if (ev.kind === 'group_created') groups.set(id, true);
    else if (ev.kind === 'group_finished') groups.set(id, false);
    const [connected, active] = count();
    points.push({ t: posTime(ev.pos), connected, groups: active });
  }
  return points;
}

function niceMax(value) {
  if (value <= 4) return Math.max(1, Math.ceil(value));
  const mag = 10 ** Math.floor(Math.log10(value));
  return [1, 2, 2.5, 5, 10].map((m) => m * mag).find((m) => m >= value);
}

function drawChart() {
  if (!events.length) {
    chartBox.replaceChildren(el('p', { class: 'empty' }, 'Nothing to chart yet.'));
    scale = null;
    return;
  }
  // At least 10 s on the axis, and a little room after the last event.
  const first = posTime(events[0].pos);
  const last = posTime(events[events.length - 1].pos);
  const span = Math.max(10000, (last - first) * 1.02);
  const t0 = first;
  const t1 = first + span;
  const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  scale = { t0, t1, x };
  // Events per second, in about 100 buckets (of 0.1 s at least: rates of short bursts).
  const bucketMs = Math.max(100, Math.ceil(span / 100 / 100) * 100);
  const bucketS = bucketMs / 1000;
  const buckets = new Array(Math.ceil(span / bucketMs) + 1).fill(0);
  for (const ev of events) {
    const i = Math.floor((posTime(ev.pos) - t0) / bucketMs);
    if (i >= 0 && i < buckets.length) buckets[i] += 1;
  }
  const rates = buckets.map((n) => n / bucketS);
  const rateMax = niceMax(Math.max(...rates));
  const barTop = PAD.t;
  const barBottom = SPLIT - 8;
  const bw = Math.max(1, ((W - PAD.l - PAD.r) * bucketMs) / (t1 - t0) - 1);
  const bars = rates.map((rate, i) => {
    const h = (rate / rateMax) * (barBottom - barTop);
    return rate ? el('rect', { x: x(t0 + i * bucketMs).toFixed(1), y: (barBottom - h).toFixed(1), width: bw.toFixed(1), height: h.toFixed(1) },
      el('title', {}, `${clockTime(t0 + i * bucketMs, bucketMs < 1000)}: ${rate.toFixed(rate < 10 ? 1 : 0)} events/s (${buckets[i]} in ${bucketS} s)`)) : null;
  });
  // Lines: step functions after each event.
  const points = series();
  const lineTop = SPLIT + 8;
  const lineBottom = H - PAD.b;
  const countMax = niceMax(Math.max(1, ...points.map((p) => Math.max(p.connected, p.groups))));
  const y = (v) => lineBottom - (v / countMax) * (lineBottom - lineTop);
  const step = (key) => {
    let d = `M${x(t0).toFixed(1)},${y(0).toFixed(1)}`;
    let last = 0;
    for (const p of points) {
      d += ` L${x(p.t).toFixed(1)},${y(last).toFixed(1)} L${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`;
      last = p[key];
    }
    return `${d} L${x(t1).toFixed(1)},${y(last).toFixed(1)}`;
  };
  const ticks = [];
  for (let i = 0; i <= 5; i++) {
    const t = t0 + ((t1 - t0) * i) / 5;
    ticks.push(el('line', { class: 'grid-line', x1: x(t), x2: x(t), y1: PAD.t, y2: lineBottom }),
      el('text', { x: x(t), y: H - 8, 'text-anchor': i === 0 ? 'start' : i === 5 ? 'end' : 'middle' },
        i === 0 || span >= 60000 ? clockTime(t) : `+${((t - t0) / 1000).toFixed(span < 20000 ? 1 : 0)} s`));
  }
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Events per second, participants connected and groups active over time' },
    el('g', {}, ticks),
    el('line', { class: 'axis', x1: PAD.l, x2: W - PAD.r, y1: barBottom, y2: barBottom }),
    el('line', { class: 'axis', x1: PAD.l, x2: W - PAD.r, y1: lineBottom, y2: lineBottom }),
    el('text', { x: PAD.l - 6, y: barTop + 10, 'text-anchor': 'end' }, String(rateMax)),
    el('text', { x: PAD.l - 6, y: barBottom, 'text-anchor': 'end' }, '0'),
    el('text', { x: PAD.l - 6, y: lineTop + 10, 'text-anchor': 'end' }, String(countMax)),
    el('text', { x: PAD.l - 6, y: lineBottom, 'text-anchor': 'end' }, '0'),
    el('g', { class: 'bars' }, bars),
    el('path', { class: 'line-connected', d: step('connected') }),
    el('path', { class: 'line-groups', d: step('groups') }),
    el('line', { class: 'cursor', id: 'chart-cursor', x1: 0, x2: 0, y1: PAD.t, y2: lineBottom }));
  svg.addEventListener('click', (ev) => {
    const box = svg.getBoundingClientRect();
    const t = t0 + (((ev.clientX - box.left) / box.width) * W - PAD.l) / (W - PAD.l - PAD.r) * (t1 - t0);
    let index = events.findIndex((e) => posTime(e.pos) > t) - 1;
    if (index < 0) index = t < t0 ? 0 : events.length - 1;
    scrubber.value = index;
    moved();
  });
  const legend = el('div', { class: 'legend' },
    el('span', {}, el('i', { class: 'k-events' }), `events per second (top; over ${bucketS} s)`),
    el('span', {}, el('i', { class: 'k-connected' }), 'participants connected'),
    el('span', {}, el('i', { class: 'k-groups' }), 'groups active'));
  chartBox.replaceChildren(svg, legend);
  drawCursor();
}

function drawCursor() {
  const cursor = document.getElementById('chart-cursor');
  if (!cursor || !scale || !events.length) return;
  const t = posTime(events[Number(scrubber.value)].pos);
  cursor.setAttribute('x1', scale.x(t));
  cursor.setAttribute('x2', scale.x(t));
}

// -- putting it together ---------------------------------------------------------------

function setRange(keepAt) {
  const atEnd = Number(scrubber.value) >= Number(scrubber.max);
  scrubber.max = Math.max(0, events.length - 1);
  scrubber.disabled = events.length === 0;
  if (keepAt) {
    const index = events.findIndex((ev) => ev.pos === keepAt);
    scrubber.value = index >= 0 ? index : events.length - 1;
  } else if (follow.checked && atEnd) {
    scrubber.value = scrubber.max;
  }
}

let redraw = null;
function append(list) {
  const incoming = list.map(normalize);
  const last = events.length ? events[events.length - 1].pos : null;
  const tail = incoming.filter((ev) => last === null || comparePos(ev.pos, last) > 0);
  const have = tail.length === incoming.length ? null : new Set(events.map((ev) => ev.pos));
  const older = have ? incoming.filter((ev) => comparePos(ev.pos, last) <= 0 && !have.has(ev.pos)) : [];
  if (!tail.length && !older.length) return;
  learnLabels(incoming);
  events.push(...tail);
  if (older.length) {
    const at = events[Number(scrubber.value)]?.pos;
    events = events.concat(older).sort((a, b) => comparePos(a.pos, b.pos));
    scrubber.max = events.length - 1;
    if (at) scrubber.value = events.findIndex((ev) => ev.pos === at);
  }
  const before = scopeSelect.options.length;
  fillScopes();
  setRange();
  showPosition();
  showEvents();
  if (scopeSelect.options.length !== before || follow.checked) scheduleState();
  clearTimeout(redraw);
  redraw = setTimeout(drawChart, 250);
}

async function start() {
  const wanted = new URLSearchParams(location.search).get('at');
  let refused = '';
  if (replay) {
    source.textContent = 'Loading the batch\'s timeline…';
    try {
      events = await loadHistory();
    } catch (err) {
      if (err.status !== 401 && err.status !== 403) {
        source.textContent = `Could not load the timeline: ${err.message}`;
        return;
      }
      replay = false; // the replay API does not take console sessions here
      refused = ` (it refused this session: ${err.message})`;
    }
  }
  if (replay) {
    source.textContent = `The whole life of the batch: ${events.length} events (replay API), then live.` +
      (events.length >= MAX_EVENTS ? ` Only the first ${MAX_EVENTS} are shown.` : '');
    learnLabels(events);
    live.addEventListener('events', (ev) => append(ev.detail));
    // Whatever committed between the history and the socket's (re)connection.
    live.addEventListener('status', async (ev) => {
      if (ev.detail.state !== 'live') return;
      const last = events.length ? events[events.length - 1].pos : '';
      try {
        append(await loadHistory(last));
      } catch { /* the next reconnection tries again */ }
    });
  } else {
    source.textContent = `The replay API is not available on this gateway${refused}: the timeline starts ` +
      'when this page was opened (console socket events folded onto the snapshot at that moment).';
    live.addEventListener('change', () => {
      if (!base && live.loaded) {
        base = {
          pos: live.pos, versions: { ...live.versions }, group_limits: live.groupLimits,
          batch_session: cloneJson(live.batchSession), runs: cloneJson([...live.runs.values()]),
          groups: cloneJson([...live.groups.values()]), lobby: Object.fromEntries(live.lobby),
        };
        for (const run of base.runs) labels.set(run.id, run.label || run.worker || short(run.id));
        fillScopes();
        showState();
      }
    });
    live.addEventListener('events', (ev) => append(ev.detail));
  }
  fillScopes();
  setRange(wanted);
  if (!wanted) scrubber.value = scrubber.max;
  drawChart();
  moved();
  live.start();
}

scrubber.addEventListener('input', moved);
scopeSelect.addEventListener('change', moved);
window.addEventListener('resize', drawCursor);
start();
