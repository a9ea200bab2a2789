// Results: every export and the payments report to download, and per run its data,
// files and log, with deletion. The run list comes from the experimenter API; result
// data from the results API (gateway/results.py) when this gateway serves it.
import { api, config, dateTime, el, pretty, short } from './common.js';

const cfg = config();
const hasResults = !!(cfg.features && cfg.features.results);
const hasReplay = !!(cfg.features && cfg.features.replay);
const tbody = document.querySelector('#runs tbody');
const notice = document.getElementById('results-notice');
const dialog = document.getElementById('run-dialog');
const filter = document.getElementById('runs-filter');
let runs = [];
let liveRuns = new Map();

const EXPORTS = [
  ['jatos', 'JATOS results archive', '.zip: data, files and metadata'],
  ['data', 'Result data', '.txt: each player\'s data'],
  ['wide-csv', 'oTree wide CSV', 'one row per participant'],
  ['metadata-csv', 'Metadata CSV', 'one row per player'],
  ['metadata-json', 'Metadata JSON', 'JATOS metadata.json'],
  ['payments', 'Payments CSV', 'fee + bonus = payoff'],
  ['payments-json', 'Payments JSON', 'with totals per currency'],
];

function say(text, kind = '') {
  notice.className = `alert ${kind}`;
  notice.textContent = text;
  notice.classList.toggle('hidden', !text);
}

function download(href, title, sub, id) {
  return el('a', { class: 'button', href, download: '', id }, title, el('small', {}, sub));
}

function renderExports() {
  const box = document.getElementById('exports');
  const items = [];
  if (hasResults) {
    for (const [format, title, sub] of EXPORTS) {
      items.push(download(`${cfg.api}/export?format=${format}`, title, sub, `export-${format}`));
    }
  }
  if (hasReplay) {
    items.push(download(`/api/batches/${encodeURIComponent(cfg.batch)}/timeline`, 'Timeline', '.jsonl: every event', 'export-timeline'));
  }
  items.push(download(`${cfg.api}/links.csv`, 'Links CSV', 'every link of the batch', 'export-links'));
  box.replaceChildren(...items);
  if (!hasResults) {
    box.before(el('p', { class: 'alert warn', id: 'results-unavailable' },
      'Result exports and the payments report are not available yet on this gateway ' +
      '(the results API is not mounted). The links and the runs below are.'));
  }
}

async function renderPayments() {
  if (!hasResults) return;
  const answer = await api(`${cfg.api}/payments?format=json`);
  const card = el('section', { class: 'card', id: 'payments-card' },
    el('div', { class: 'section-head' }, el('h2', {}, 'Payments'),
      el('div', { class: 'actions' }, el('a', { class: 'button', href: `${cfg.api}/payments?format=csv`, download: '' }, 'Download CSV'))));
  document.getElementById('exports-card').after(card);
  if (!answer.ok) {
    card.append(el('p', { class: 'alert error' }, `Could not load the payments report: ${(answer.data && answer.data.message) || answer.status}`));
    return;
  }
  const { payments = [], totals = [] } = answer.data;
  if (!payments.length) {
    card.append(el('p', { class: 'empty' }, 'Nobody to pay yet.'));
    return;
  }
  const money = (v) => (v == null ? '–' : Number(v).toFixed(2));
  card.append(el('table', { class: 'grid compact' },
    el('thead', {}, el('tr', {}, ['Participant', 'Worker', 'State', 'Bonus points', 'Fee', 'Payoff', ''].map((h, i) => el('th', { class: i >= 3 && i <= 5 ? 'num' : '' }, h)))),
    el('tbody', {}, payments.map((p) => el('tr', {},
      el('td', { title: p.run_id }, p.label || short(p.run_id)), el('td', {}, el('code', {}, p.worker_id || '')),
      el('td', {}, el('span', { class: `badge ${p.state}` }, p.state.replaceAll('_', ' '))),
      el('td', { class: 'num' }, p.bonus_points ?? 0), el('td', { class: 'num' }, money(p.participation_fee)),
      el('td', { class: 'num' }, el('b', {}, money(p.payoff))), el('td', {}, p.currency))))),
  el('p', { class: 'muted small' }, totals.map((t) => `Total ${money(t.payoff)} ${t.currency} for ${t.participants} participant(s)`).join(' · ')));
}

function runMatches(run) {
  const q = filter.value.trim().toLowerCase();
  if (!q) return true;
  const state = liveRuns.get(run.id)?.state || '';
  return [run.id, run.label, run.worker_id, run.link_type, state, JSON.stringify(run.url_query)]
    .filter(Boolean).join(' ').toLowerCase().includes(q);
}

function renderRuns() {
  document.getElementById('run-count').textContent = runs.length;
  document.getElementById('runs-empty').classList.toggle('hidden', runs.length > 0);
  tbody.replaceChildren(...runs.filter(runMatches).map((run) => {
    const state = liveRuns.get(run.id)?.state;
    const query = Object.entries(run.url_query || {}).map(([k, v]) => `${k}=${v}`).join('&');
    return el('tr', { dataset: { run: run.id } },
      el('td', {}, el('code', { title: run.id }, short(run.id, 12))),
      el('td', {}, run.label || run.worker_id, query ? el('span', { class: 'sub' }, query) : null),
      el('td', {}, run.link_type, run.preview ? el('span', { class: 'badge' }, 'preview') : null),
      el('td', {}, dateTime(Date.parse(run.created_at))),
      el('td', {}, state ? el('span', { class: `badge ${state}` }, state.replaceAll('_', ' ')) : el('span', { class: 'muted' }, 'archived')),
      el('td', {}, hasResults ? el('button', { type: 'button', class: 'view', onclick: () => openRun(run) }, 'View') : el('span', { class: 'muted' }, 'not available yet')),
      el('td', {}, hasResults ? el('button', { type: 'button', class: 'danger delete', onclick: () => deleteRun(run) }, 'Delete results') : null));
  }));
}

async function loadRuns() {
  const [list, snapshot] = await Promise.all([api(`${cfg.api}/runs?limit=10000`), api(`${cfg.api}/live`)]);
  if (!list.ok) {
    say(`Could not load the runs: ${(list.data && list.data.message) || list.status}`, 'error');
    return;
  }
  runs = list.data;
  liveRuns = new Map(snapshot.ok ? snapshot.data.runs.map((r) => [r.id, r]) : []);
  renderRuns();
}

function fileHref(run, file) {
  const query = new URLSearchParams({ pos: file.pos, round: file.round });
  return `${location.pathname.replace(/\/results$/, '')}/runs/${encodeURIComponent(run.id)}/files/${encodeURIComponent(file.filename)}?${query}`;
}

async function openRun(run) {
  const detail = document.getElementById('run-detail');
  document.getElementById('run-title').textContent = `Run ${short(run.id, 12)} · ${run.label || run.worker_id}`;
  detail.replaceChildren(el('p', { class: 'muted' }, 'Loading…'));
  dialog.showModal();
  const answer = await api(`${cfg.api}/runs/${encodeURIComponent(run.id)}/results`);
  if (!answer.ok) {
    detail.replaceChildren(el('p', { class: 'alert error' }, (answer.data && answer.data.message) || `HTTP ${answer.status}`));
    return;
  }
  const res = answer.data;
  const players = res.players.map((p) => {
    const title = cfg.components[p.pos - 1]?.title || p.component_id;
    let data = p.data;
    try {
      data = pretty(JSON.parse(p.data));
    } catch { /* not JSON: shown as is */ }
    return el('div', { class: 'player' },
      el('h3', {}, `${p.pos}. ${title}${p.round > 1 ? ` · round ${p.round}` : ''}`, el('span', { class: `badge ${p.state}` }, p.state.replaceAll('_', ' ')),
        p.bonus != null ? el('span', { class: 'badge' }, `bonus ${p.bonus}`) : null),
      p.purged_at ? el('p', { class: 'muted' }, 'Deleted.') : p.data == null ? el('p', { class: 'muted' }, 'No result data.') : el('pre', { class: 'code' }, data),
      p.files.length ? el('ul', {}, p.files.map((f) => el('li', {}, el('a', { href: fileHref(run, f), download: f.filename }, f.filename), ` (${f.size} bytes, ${f.media_type})`))) : null,
      bonusForm(run, p));
  });
  const log = res.log.length ? [el('h3', {}, 'Log'), el('pre', { class: 'code' }, res.log.map((l) => `${l.logged_at} ${l.line}`).join('\n'))] : [];
  detail.replaceChildren(el('p', { class: 'muted' }, `State ${res.state.replaceAll('_', ' ')}${res.ended_at ? ` · ended ${dateTime(Date.parse(res.ended_at))}` : ''}`),
    ...(players.length ? players : [el('p', { class: 'empty' }, 'No result data yet.')]), ...log);
}

function bonusForm(run, player) {
  const input = el('input', { type: 'number', step: 'any', value: player.bonus ?? '', placeholder: 'none', 'aria-label': 'Bonus points' });
  const status = el('span', { class: 'muted small' }, player.bonus_set_by ? `set by ${player.bonus_set_by}` : '');
  const form = el('form', { class: 'row bonus' }, el('label', {}, 'Bonus points', input),
    el('button', { type: 'submit' }, 'Set bonus'), status);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const points = input.value.trim() === '' ? null : input.value.trim();
    const answer = await api(`${cfg.api}/runs/${encodeURIComponent(run.id)}/bonus`, {
      method: 'PUT', body: { pos: player.pos, round: player.round, points },
    });
    status.textContent = answer.ok ? 'saved (the payments report uses it)'
      : `not saved: ${(answer.data && answer.data.message) || answer.status}`;
    if (answer.ok) {
      document.getElementById('payments-card')?.remove();
      renderPayments();
    }
  });
  return form;
}

async function deleteRun(run) {
  if (!confirm(`Delete the result data, files and log of run ${short(run.id, 12)} (${run.label || run.worker_id})? This cannot be undone.`)) return;
  const answer = await api(`${cfg.api}/runs/${encodeURIComponent(run.id)}/results`, { method: 'DELETE' });
  if (answer.ok) {
    say(`Deleted the results of run ${short(run.id, 12)}.`, 'ok');
  } else {
    say(`Could not delete: ${(answer.data && answer.data.message) || answer.status}`, 'error');
  }
}

filter.addEventListener('input', renderRuns);
renderExports();
renderPayments();
loadRuns();
