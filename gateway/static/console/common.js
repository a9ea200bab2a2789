// Cohort console: helpers shared by every page (no build step, no dependencies
// beyond the client library's JSON Patch module, served by the gateway).
import { applyPatch, cloneJson, deepEqual, escapePointerToken } from '/client/esm/jsonpatch.js';

export { applyPatch, cloneJson, deepEqual };

/** The page's JSON config (rendered by gateway/console.py), or {}. */
export function config() {
  const node = document.getElementById('console-config');
  return node ? JSON.parse(node.textContent) : {};
}

function csrfToken() {
  const cfg = config();
  if (cfg.csrf) return cfg.csrf;
  const field = document.querySelector('input[name="csrf"]');
  return field ? field.value : '';
}

/**
 * Call the experimenter API with the session cookie; non-GET requests carry the
 * CSRF token. Answers {ok, status, data} (data: parsed JSON, or text).
 */
export async function api(path, { method = 'GET', body, headers = {}, loginOn401 = true } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } };
  if (method !== 'GET' && method !== 'HEAD') init.headers['X-CSRF-Token'] = csrfToken();
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401 && loginOn401) {
    location.href = `/console/login?next=${encodeURIComponent(location.pathname + location.search)}`;
  }
  const type = response.headers.get('content-type') || '';
  const data = type.includes('json') ? await response.json().catch(() => null) : await response.text();
  return { ok: response.ok, status: response.status, data };
}

/** el('td', {class: 'num', title: 'x'}, 'text', child) */
export function el(tag, attrs = {}, ...children) {
  const svg = ['svg', 'rect', 'path', 'line', 'text', 'g', 'polyline', 'title'].includes(tag);
  const node = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// -- positions and times ---------------------------------------------------------

/** A stream position "ms-seq" as [ms, seq]. */
export function posKey(pos) {
  const [ms, seq] = String(pos || '0-0').split('-');
  return [Number(ms) || 0, Number(seq) || 0];
}

export function comparePos(a, b) {
  const [am, as] = posKey(a);
  const [bm, bs] = posKey(b);
  return am - bm || as - bs;
}

export function posTime(pos) {
  return posKey(pos)[0];
}

export function clockTime(ms, withMs = false) {
  if (!ms) return '–';
  const d = new Date(ms);
  const text = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
  return withMs ? `${text}.${String(d.getMilliseconds()).padStart(3, '0')}` : text;
}

/**
 * An event with its stream position in `pos`. component_started and data_retrieved
 * carry the component's position in their own `pos` field; it is kept as `component`.
 * `streamPos` is the event's stream position (replay API), or a function giving one
 * (console frames, where the event's own field hides it).
 */
export function normalizeEvent(ev, streamPos) {
  if (typeof ev.pos !== 'number') return ev.pos ? ev : { ...ev, pos: streamPos };
  return { ...ev, component: ev.pos, pos: typeof streamPos === 'function' ? streamPos() : streamPos };
}

export function dateTime(ms) {
  if (!ms) return '–';
  const d = new Date(ms);
  return `${d.toLocaleDateString()} ${clockTime(ms)}`;
}

export function ago(ms, now = Date.now()) {
  if (!ms) return 'never';
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 5) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function short(id, n = 8) {
  return id && id.length > n ? id.slice(0, n) : id || '';
}

// -- JSON --------------------------------------------------------------------------

export function pretty(value) {
  return JSON.stringify(value, null, 2);
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** RFC 6902 operations that turn `a` into `b` (applied in order). */
export function diff(a, b, path = '', ops = []) {
  if (deepEqual(a, b)) return ops;
  if (isObject(a) && isObject(b)) {
    for (const key of Object.keys(a)) {
      if (!Object.prototype.hasOwnProperty.call(b, key)) ops.push({ op: 'remove', path: `${path}/${escapePointerToken(key)}` });
    }
    for (const key of Object.keys(b)) {
      const child = `${path}/${escapePointerToken(key)}`;
      if (!Object.prototype.hasOwnProperty.call(a, key)) ops.push({ op: 'add', path: child, value: b[key] });
      else diff(a[key], b[key], child, ops);
    }
  } else if (Array.isArray(a) && Array.isArray(b)) {
    const common = Math.min(a.length, b.length);
    for (let i = 0; i < common; i++) diff(a[i], b[i], `${path}/${i}`, ops);
    for (let i = a.length - 1; i >= b.length; i--) ops.push({ op: 'remove', path: `${path}/${i}` });
    for (let i = common; i < b.length; i++) ops.push({ op: 'add', path: `${path}/-`, value: b[i] });
  } else {
    ops.push({ op: 'replace', path, value: b });
  }
  return ops;
}

/** JSON.parse with a readable error: {ok, value} or {ok: false, message, line, column}. */
export function parseJson(text) {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    const message = String(err.message || err);
    let line = 0;
    let column = 0;
    const at = /position (\d+)/.exec(message);
    const lc = /line (\d+) column (\d+)/.exec(message);
    if (lc) {
      line = Number(lc[1]);
      column = Number(lc[2]);
    } else if (at) {
      const before = text.slice(0, Number(at[1])).split('\n');
      line = before.length;
      column = before[before.length - 1].length + 1;
    }
    return { ok: false, message: message.replace(/^JSON\.parse: /, ''), line, column };
  }
}

// -- clipboard ---------------------------------------------------------------------

export async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = el('textarea', { class: 'offscreen', readonly: true });
    area.value = text;
    area.style.position = 'fixed';
    area.style.left = '-9999px';
    document.body.append(area);
    area.select();
    let done = false;
    try {
      done = document.execCommand('copy');
    } catch {
      done = false;
    }
    area.remove();
    return done;
  }
}

export function flashButton(button, text) {
  const old = button.dataset.label || button.textContent;
  button.dataset.label = old;
  button.textContent = text;
  clearTimeout(button._flash);
  button._flash = setTimeout(() => { button.textContent = old; }, 1500);
}

// -- the live batch: snapshot + console events, folded like the server's projector ----

const ACTIVE = new Set(['pre', 'started', 'data_retrieved']);

export function isActive(run) {
  return ACTIVE.has(run.state);
}

/**
 * A batch as the console sees it: the `live` snapshot from the console socket,
 * then every committed event folded in (a port of session_store/projector.py
 * for what the console shows). A periodic and an after-events re-fetch of the
 * snapshot brings in what the log does not carry (last seen, connected) and
 * repairs anything this fold does not know.
 *
 * Events: 'change' (after a snapshot or events), 'events' (detail: the events),
 * 'status' (detail: {state, text}).
 */
export class LiveBatch extends EventTarget {
  constructor(cfg, { refreshEveryMs = 4000 } = {}) {
    super();
    this.cfg = cfg;
    this.refreshEveryMs = refreshEveryMs;
    this.pos = '0-0';
    this.runs = new Map();
    this.groups = new Map();
    this.lobby = new Map();
    this.batchSession = { version: 0, data: {} };
    this.versions = {};
    this.groupLimits = {};
    this.loaded = false;
    this.socket = null;
    this.retry = 0;
    this.stopped = false;
    this._refreshTimer = null;
    this._soon = null;
  }

  start() {
    this.connect();
    this._refreshTimer = setInterval(() => this.refresh(), this.refreshEveryMs);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden) this.refresh();
    });
    return this;
  }

  status(state, text) {
    this.dispatchEvent(new CustomEvent('status', { detail: { state, text } }));
    const node = document.getElementById('live-status');
    if (node) {
      node.dataset.state = state;
      node.querySelector('.text').textContent = text;
    }
  }

  connect() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}${this.cfg.ws}`);
    this.socket = socket;
    this.status('connecting', this.retry ? 'reconnecting…' : 'connecting…');
    socket.addEventListener('message', (msg) => this.onFrame(JSON.parse(msg.data)));
    socket.addEventListener('close', (ev) => {
      if (this.socket !== socket || this.stopped) return;
      if (ev.code === 4403 || ev.code === 4404) {
        this.status('closed', ev.code === 4403 ? 'not allowed: log in again' : 'batch not found');
        return;
      }
      this.retry += 1;
      const wait = Math.min(10000, 500 * 2 ** Math.min(this.retry, 5));
      this.status('connecting', `disconnected; retrying in ${Math.round(wait / 1000)} s`);
      setTimeout(() => this.connect(), wait);
    });
  }

  onFrame(frame) {
    if (frame.type === 'live') {
      this.retry = 0;
      this.load(frame.snapshot);
      this.status('live', 'live');
    } else if (frame.type === 'events') {
      // Entries are {pos: stream position, event}, as in the replay API.
      const events = frame.events.map((entry) => normalizeEvent(entry.event, entry.pos));
      const fresh = events.filter((ev) => comparePos(ev.pos, this.pos) > 0);
      let failed = false;
      for (const ev of fresh) {
        try {
          this.fold(ev);
        } catch (err) {
          console.warn('console: could not fold', ev, err);
          failed = true;
        }
      }
      if (fresh.length) {
        this.dispatchEvent(new CustomEvent('events', { detail: fresh }));
        this.emitChange();
      }
      this.refreshSoon(failed ? 50 : 400);
    } else if (frame.type === 'error') {
      this.status('closed', frame.message || frame.code);
    }
  }

  emitChange() {
    this.dispatchEvent(new Event('change'));
  }

  /** Replace everything with a snapshot (socket `live` frame or GET …/live). */
  load(snap) {
    this.pos = snap.pos || '0-0';
    this.versions = snap.versions || {};
    this.groupLimits = snap.group_limits || {};
    this.batchSession = { version: snap.batch_session.version, data: snap.batch_session.data };
    this.runs = new Map(snap.runs.map((run) => [run.id, run]));
    this.groups = new Map(snap.groups.map((group) => [group.id, group]));
    this.lobby = new Map(Object.entries(snap.lobby || {}));
    this.loaded = true;
    this.emitChange();
  }

  refreshSoon(ms = 400) {
    clearTimeout(this._soon);
    this._soon = setTimeout(() => this.refresh(), ms);
  }

  async refresh() {
    if (document.hidden && this.loaded) return;
    let answer;
    try {
      answer = await api(`${this.cfg.api}/live`);
    } catch {
      return;
    }
    if (!answer.ok || !answer.data) return;
    const snap = answer.data;
    if (comparePos(snap.pos, this.pos) >= 0) {
      this.load(snap);
      return;
    }
    // Older than what the socket gave us: take only what the log does not carry.
    for (const fresh of snap.runs) {
      const run = this.runs.get(fresh.id);
      if (run) Object.assign(run, { last_seen_ms: fresh.last_seen_ms, connected: fresh.connected, idle_s: fresh.idle_s });
    }
    this.emitChange();
  }

  label(runId) {
    const run = this.runs.get(runId);
    return run ? run.label || run.worker || short(runId) : short(runId);
  }

  /** One event into the state (the console's part of session_store/projector.py). */
  fold(ev) {
    const scope = ev.scope;
    const id = scope.includes(':') ? scope.slice(scope.indexOf(':') + 1) : '';
    const t = posTime(ev.pos);
    switch (ev.kind) {
      case 'session_patched':
        if (scope === 'batch_session') {
          this.batchSession.data = applyPatch(this.batchSession.data, ev.ops);
          this.batchSession.version = ev.version;
        } else if (scope.startsWith('group_session:')) {
          const group = this.groups.get(id);
          if (group) {
            group.session = applyPatch(group.session ?? {}, ev.ops);
            group.session_version = ev.version;
          }
        }
        break;
      case 'batch_opened':
      case 'batch_settings_changed':
        this.groupLimits = ev.groups || {};
        break;
      case 'run_started':
        this.runs.set(id, {
          id, state: ev.preview ? 'pre' : 'started', component: 0,
          components: (ev.active || []).map(() => ''), label: ev.label || '', worker: ev.worker || '',
          group: '', link_type: ev.link_type || '', study_version: ev.study_version || 0,
          last_seen_ms: t, connected: true, idle_s: 0, reason: '', message: '',
        });
        break;
      case 'component_started': {
        const run = this.runs.get(id);
        if (!run) break;
        const cur = run.component - 1;
        const pos = ev.component ?? ev.pos;
        if (cur >= 0 && ['started', 'data_retrieved'].includes(run.components[cur])) {
          run.components[cur] = cur === pos ? 'reloaded' : 'finished';
        }
        run.component = pos + 1;
        run.components[pos] = 'started';
        if (run.state === 'pre' && pos > 0) run.state = 'started';
        else if (run.state === 'data_retrieved') run.state = 'started';
        run.last_seen_ms = Math.max(run.last_seen_ms || 0, t);
        break;
      }
      case 'data_retrieved': {
        const run = this.runs.get(id);
        if (!run) break;
        run.components[ev.component ?? ev.pos] = 'data_retrieved';
        if (run.state === 'started') run.state = 'data_retrieved';
        run.last_seen_ms = Math.max(run.last_seen_ms || 0, t);
        break;
      }
      case 'run_ended': {
        const run = this.runs.get(id);
        if (!run) break;
        run.state = ev.state;
        run.reason = ev.reason || '';
        run.message = ev.message || '';
        const cur = run.component - 1;
        if (cur >= 0 && ['started', 'data_retrieved'].includes(run.components[cur])) {
          run.components[cur] = { finished: 'finished', aborted: 'aborted' }[ev.state] || 'failed';
        }
        run.connected = false;
        break;
      }
      case 'group_created':
        this.groups.set(id, { id, state: 'started', members: [], history: [], closed: [], messages: 0, session_version: 0, session: {} });
        break;
      case 'member_joined': {
        const group = this.groups.get(id);
        if (group) group.members.push(ev.member);
        const run = this.runs.get(ev.member);
        if (run) run.group = id;
        this.lobby.delete(ev.member);
        break;
      }
      case 'member_left': {
        const group = this.groups.get(id);
        if (group) {
          group.members = group.members.filter((m) => m !== ev.member);
          group.closed = group.closed.filter((m) => m !== ev.member);
          group.history.push(ev.member);
        }
        const run = this.runs.get(ev.member);
        if (run) run.group = '';
        break;
      }
      case 'member_presence': {
        const group = this.groups.get(id);
        if (group) {
          group.closed = group.closed.filter((m) => m !== ev.member);
          if (!ev.open) group.closed.push(ev.member);
        }
        const run = this.runs.get(ev.member);
        if (run) run.connected = !!ev.open;
        break;
      }
      case 'group_fixed':
      case 'group_finished': {
        const group = this.groups.get(id);
        if (group) group.state = ev.kind === 'group_fixed' ? 'fixed' : 'finished';
        break;
      }
      case 'group_message': {
        const group = this.groups.get(id);
        if (group) group.messages += 1;
        break;
      }
      case 'arrival_queued':
        this.lobby.set(ev.member, ev.at_ms || t);
        break;
      case 'arrival_ended':
        this.lobby.delete(ev.member);
        break;
      default:
        this.refreshSoon(50); // a kind this page does not know: take the server's word
    }
    this.versions[scope] = ev.version;
    this.pos = ev.pos;
  }
}

// -- groups (monitor and session pages) ----------------------------------------------

export function groupCard(live, group, { withSession = true } = {}) {
  const members = group.members.map((m) => el('li', { class: group.closed.includes(m) ? 'closed' : '', title: m },
    live.label(m), group.closed.includes(m) ? ' (away)' : ''));
  const left = group.history.length ? el('p', { class: 'muted small' }, `left: ${group.history.map((m) => live.label(m)).join(', ')}`) : null;
  return el('div', { class: 'group', dataset: { group: group.id } },
    el('h3', {}, `Group ${short(group.id)}`, el('span', { class: `badge ${group.state}` }, group.state),
      el('span', { class: 'count', title: 'messages' }, `${group.messages} msg`)),
    members.length ? el('ul', {}, members) : el('p', { class: 'muted small' }, 'no active members'),
    left,
    withSession ? el('h4', {}, `Group session v${group.session_version}`) : null,
    withSession ? el('pre', { class: 'code' }, pretty(group.session ?? {})) : null);
}

// -- page-wide behaviour ---------------------------------------------------------------

function localizeTimes(root = document) {
  for (const node of root.querySelectorAll('time[datetime]')) {
    const ms = Date.parse(node.getAttribute('datetime'));
    if (!Number.isNaN(ms)) {
      node.title = node.getAttribute('datetime');
      node.textContent = dateTime(ms);
    }
  }
}

function autosubmit() {
  for (const form of document.querySelectorAll('form[data-autosubmit]')) {
    form.addEventListener('change', () => form.requestSubmit());
  }
}

localizeTimes();
autosubmit();
