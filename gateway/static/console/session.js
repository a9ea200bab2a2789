// The batch session as a JSON editor: a save is a compare-and-set (JSON Patch from the
// loaded state to the edited one, with the loaded version) pushed to every participant.
// Groups with their members and group sessions below it.
import {
  LiveBatch, api, applyPatch, cloneJson, config, deepEqual, diff, el, groupCard, parseJson, pretty,
} from './common.js';

const cfg = config();
const live = new LiveBatch(cfg);
const editor = document.getElementById('session-editor');
const validity = document.getElementById('session-validity');
const saveButton = document.getElementById('session-save');
const versionBadge = document.getElementById('session-version');
const notice = document.getElementById('session-notice');
const conflictBox = document.getElementById('session-conflict');

let loaded = null;   // {version, data}: what the edit is computed from
let conflict = null; // {version, data}: the server's state after a refused save
let saving = false;

function say(text, kind = '') {
  notice.className = `alert ${kind}`;
  notice.textContent = text;
  notice.classList.toggle('hidden', !text);
}

function edited() {
  const parsed = parseJson(editor.value);
  if (!parsed.ok) return parsed;
  const value = parsed.value;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    return { ok: false, message: 'the batch session is a JSON object ({ … })', line: 0, column: 0 };
  }
  return parsed;
}

function dirty() {
  const parsed = parseJson(editor.value);
  return !loaded || !parsed.ok || !deepEqual(parsed.value, loaded.data);
}

function check() {
  const parsed = edited();
  editor.classList.toggle('invalid', !parsed.ok);
  if (!parsed.ok) {
    const where = parsed.line ? ` (line ${parsed.line}, column ${parsed.column})` : '';
    validity.className = 'validity bad';
    validity.textContent = `Not valid: ${parsed.message}${where}`;
  } else if (!dirty()) {
    validity.className = 'validity';
    validity.textContent = `Valid JSON · unchanged since version ${loaded ? loaded.version : 0}`;
  } else {
    const ops = diff(loaded.data, parsed.value);
    validity.className = 'validity good';
    validity.textContent = `Valid JSON · ${ops.length} change${ops.length === 1 ? '' : 's'} to version ${loaded.version}`;
  }
  saveButton.disabled = saving || conflict !== null || !parsed.ok || !dirty();
  versionBadge.textContent = `v${loaded ? loaded.version : 0}`;
}

function load(version, data, note = '') {
  loaded = { version, data: cloneJson(data) };
  editor.value = pretty(data);
  check();
  if (note) say(note);
}

function showConflict(current, mine, message) {
  conflict = current;
  document.getElementById('conflict-text').textContent = message;
  document.getElementById('conflict-current').textContent = pretty(current.data);
  document.getElementById('conflict-mine').textContent = pretty(mine);
  conflictBox.classList.remove('hidden');
  check();
}

function hideConflict() {
  conflict = null;
  conflictBox.classList.add('hidden');
  check();
}

async function save(base, value) {
  const ops = diff(base.data, value);
  if (!ops.length) {
    say('Nothing to save: the session is already like this.');
    return;
  }
  saving = true;
  check();
  let answer;
  try {
    answer = await api(`${cfg.api}/session`, { method: 'POST', body: { ops, version: base.version } });
  } catch (err) {
    answer = { ok: false, status: 0, data: { message: String(err) } };
  }
  saving = false;
  if (answer.ok) {
    hideConflict();
    load(answer.data.version, value);
    say(`Saved as version ${answer.data.version} and pushed to every participant.`, 'ok');
  } else if (answer.status === 409 && answer.data) {
    showConflict({ version: answer.data.version, data: answer.data.data }, value,
      `You edited version ${base.version}; the session is at version ${answer.data.version} now. ` +
      'Nothing of yours was saved.');
    say('Not saved: the batch session changed meanwhile (see below).', 'warn');
  } else {
    const data = answer.data || {};
    say(`Not saved: ${data.code ? `${data.code}: ` : ''}${data.message || `HTTP ${answer.status}`}`, 'error');
    check();
  }
}

saveButton.addEventListener('click', () => {
  const parsed = edited();
  if (parsed.ok && loaded) save(loaded, parsed.value);
});

document.getElementById('session-format').addEventListener('click', () => {
  const parsed = parseJson(editor.value);
  if (parsed.ok) editor.value = pretty(parsed.value);
  check();
});

document.getElementById('session-revert').addEventListener('click', () => {
  hideConflict();
  load(live.batchSession.version, live.batchSession.data, `Loaded version ${live.batchSession.version}.`);
});

document.getElementById('conflict-rebase').addEventListener('click', () => {
  const parsed = edited();
  if (!conflict || !parsed.ok) return;
  const mine = diff(loaded.data, parsed.value);
  let rebased;
  try {
    rebased = applyPatch(cloneJson(conflict.data), cloneJson(mine));
  } catch (err) {
    say(`Your changes do not apply to version ${conflict.version} (${err.message}). ` +
      'Overwrite, or discard yours and edit again.', 'error');
    return;
  }
  const current = conflict;
  hideConflict();
  loaded = { version: current.version, data: cloneJson(current.data) };
  editor.value = pretty(rebased);
  check();
  say(`Your changes are applied to version ${current.version} in the editor. Check them and save again.`, 'warn');
});

document.getElementById('conflict-overwrite').addEventListener('click', () => {
  const parsed = edited();
  if (!conflict || !parsed.ok) return;
  save(conflict, parsed.value);
});

document.getElementById('conflict-discard').addEventListener('click', () => {
  const current = conflict || live.batchSession;
  hideConflict();
  load(current.version, current.data, `Loaded version ${current.version}; your edit was discarded.`);
});

editor.addEventListener('input', check);
editor.addEventListener('keydown', (ev) => {
  if ((ev.ctrlKey || ev.metaKey) && ev.key === 's') {
    ev.preventDefault();
    if (!saveButton.disabled) saveButton.click();
  }
});

// Live: follow the session while the editor holds no edit of ours; otherwise say so.
live.addEventListener('change', () => {
  renderGroups();
  if (saving) return; // the answer to our save decides what the editor shows
  const current = live.batchSession;
  if (!loaded) {
    load(current.version, current.data);
  } else if (current.version > loaded.version) {
    if (!dirty() && !conflict) {
      load(current.version, current.data, `Updated to version ${current.version} (a change from elsewhere).`);
    } else if (!conflict) {
      say(`The batch session moved on to version ${current.version} while you were editing. ` +
        'Saving will show you both versions.', 'warn');
    }
  }
});

function renderGroups() {
  const groups = [...live.groups.values()];
  document.getElementById('group-count').textContent = groups.length;
  const lobby = [...live.lobby.keys()];
  document.getElementById('groups').replaceChildren(
    ...groups.map((g) => groupCard(live, g)),
    ...(lobby.length ? [el('div', { class: 'group' }, el('h3', {}, 'Waiting for a group'),
      el('ul', {}, lobby.map((m) => el('li', {}, live.label(m)))))] : []),
    ...(groups.length || lobby.length ? [] : [el('p', { class: 'empty' }, 'No groups in this batch yet.')]));
}

live.start();
