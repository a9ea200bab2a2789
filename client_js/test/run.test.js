// The participant's study run (jatos.onLoad, study session, component flow,
// end and abort) against a REAL stack: a study imported through the
// experimenter API, a batch and links, participants entering by link with
// connectParticipant (the bot path) and the classic build on a component page
// (the browser path).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { connectParticipant, createJatos, httpRequest, parseRunUrl } from '../src/node.js';
import { SKIP, gateway, waitFor, withTimeout } from '../testing/gateway.js';
import { loadPage } from '../testing/page.js';
import { componentPage, createLinks, createStudyBatch, importStudy, linkOn } from '../testing/studies.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const TIMEOUT = { timeout: 30000 };
const RUN_ID = `${Date.now().toString(36)}-${process.pid}`;

/** The study most tests run: 4 components, the second inactive, the third not reloadable. */
const MAIN_STUDY = {
  title: `client_js run test ${RUN_ID}`,
  uuid: `client-js-run-${RUN_ID}`,
  description: 'component flow, study session, end and abort',
  json_input: { studyInput: 'hello', n: 1 },
  components: [
    { id: 'intro', title: 'Intro', html_file: 'intro.html', json_input: { first: true }, reloadable: true },
    { id: 'skipped', title: 'Skipped', html_file: 'skipped.html', active: false },
    { id: 'task', title: 'Task', html_file: 'task/task page.html' },
    { id: 'outro', title: 'Outro', html_file: 'outro.html', reloadable: true },
  ],
  batch: { json_input: { batchInput: 42 } },
};

const MAIN_FILES = {
  'intro.html': componentPage('Intro'),
  'skipped.html': componentPage('Skipped'),
  'task/task page.html': componentPage('Task'),
  'outro.html': componentPage('Outro'),
};

/** A study with an end redirect URL. */
const REDIRECT_STUDY = {
  title: `client_js redirect test ${RUN_ID}`,
  uuid: `client-js-redirect-${RUN_ID}`,
  end_redirect_url: 'https://example.org/thanks?study=cohort',
  components: [{ id: 'only', title: 'Only', html_file: 'index.html' }],
};

/** A linear study: no going back. */
const LINEAR_STUDY = {
  title: `client_js linear test ${RUN_ID}`,
  uuid: `client-js-linear-${RUN_ID}`,
  linear: true,
  components: [
    { id: 'one', title: 'One', html_file: 'one.html', reloadable: true },
    { id: 'two', title: 'Two', html_file: 'two.html', reloadable: true },
  ],
};

/** @type {{studyId: string, batch: any, links: any[], general: any, generalSingle: any, redirectLinks: any[], linearLinks: any[]}} */
const world = /** @type {any} */ ({});
let linkIndex = 0;

/** The next unused personal single link (each test uses its own). */
function nextLink(gw = 0) {
  const link = world.links[linkIndex++];
  assert.ok(link, 'enough links were created');
  return linkOn(link, gw);
}

/**
 * Enters by link; the participant is closed after the test.
 * @param {import('node:test').TestContext} t
 * @param {string} url
 * @param {any} [options]
 */
async function enter(t, url, options = {}) {
  const jatos = await withTimeout(connectParticipant(url, { httpRetryWait: 100, ...options }), 15000, `enter ${url}`);
  t.after(() => jatos.close());
  return jatos;
}

/**
 * A fetch that records every request (method, path, command id header, status).
 * @param {(info: {url: string, init: any, attempt: number}) => Promise<any>|undefined} [intercept]
 */
function recordingFetch(intercept) {
  /** @type {{method: string, path: string, commandId: string|null, status: number|null, body: any}[]} */
  const calls = [];
  /** @type {Map<string, number>} */
  const attempts = new Map();
  /** @param {string} url @param {any} init */
  const f = async (url, init = {}) => {
    const headers = init.headers || {};
    const commandId = headers['x-cohort-command-id'] || null;
    const call = { method: init.method || 'GET', path: new URL(url).pathname, commandId, status: /** @type {number|null} */ (null), body: init.body };
    calls.push(call);
    const key = `${call.method} ${url} ${commandId}`;
    const attempt = (attempts.get(key) || 0) + 1;
    attempts.set(key, attempt);
    const special = intercept ? intercept({ url, init, attempt }) : undefined;
    const res = await (special || fetch(url, init));
    call.status = res.status;
    return res;
  };
  return Object.assign(f, { calls });
}

describe('study runs (connectParticipant, jatos.js run API)', { skip: SKIP }, () => {
  before(async () => {
    const stored = await importStudy(MAIN_STUDY, MAIN_FILES);
    world.studyId = stored.study_id;
    world.batch = await createStudyBatch(stored.study_id);
    world.links = await createLinks(world.studyId, world.batch.id, 'personal_single', 40);
    [world.general] = await createLinks(world.studyId, world.batch.id, 'general_multiple', 1);
    [world.generalSingle] = await createLinks(world.studyId, world.batch.id, 'general_single', 1);
    const redirect = await importStudy(REDIRECT_STUDY, { 'index.html': componentPage('Only') });
    const redirectBatch = await createStudyBatch(redirect.study_id);
    world.redirectLinks = await createLinks(redirect.study_id, redirectBatch.id, 'personal_single', 2);
    const linear = await importStudy(LINEAR_STUDY, { 'one.html': componentPage('One'), 'two.html': componentPage('Two') });
    const linearBatch = await createStudyBatch(linear.study_id);
    world.linearLinks = await createLinks(linear.study_id, linearBatch.id, 'personal_multiple', 1);
  });

  test('a link enters the run and the first page loads: init fills the jatos fields', TIMEOUT, async (t) => {
    const jatos = await enter(t, nextLink() + '?src=test&x=1');
    assert.equal(jatos.loaded, true);
    assert.equal(jatos.page.kind, 'component');
    assert.match(jatos.page.html, /<h1 id="title">Intro<\/h1>/);
    const where = parseRunUrl(jatos.page.url);
    assert.ok(where, jatos.page.url);
    assert.equal(where.pos, 1, 'JATOS positions are 1-based');
    assert.equal(where.path, 'intro.html');
    assert.equal(jatos.runKey, where.runKey);

    assert.equal(typeof jatos.studyResultId, 'string');
    assert.ok(jatos.studyResultId.length > 0);
    assert.equal(typeof jatos.workerId, 'string');
    assert.ok(jatos.workerId.length > 0);
    assert.equal(jatos.batchId, world.batch.id);
    assert.equal(jatos.studyId, world.studyId);
    assert.equal(jatos.componentId, 'intro');
    assert.equal(jatos.componentPos, 1);
    assert.deepEqual(jatos.studyJsonInput, { studyInput: 'hello', n: 1 });
    assert.equal(jatos.studyInput, jatos.studyJsonInput, 'studyInput is the new name of studyJsonInput');
    assert.deepEqual(jatos.componentJsonInput, { first: true });
    assert.deepEqual(jatos.batchJsonInput, { batchInput: 42 });
    assert.equal(jatos.studyProperties.title, MAIN_STUDY.title);
    assert.equal(jatos.studyProperties.uuid, MAIN_STUDY.uuid);
    assert.equal(jatos.componentProperties.title, 'Intro');
    assert.equal(jatos.componentProperties.reloadable, true);
    assert.equal(jatos.studyLength, 4);
    assert.deepEqual(
      jatos.componentList.map((/** @type {any} */ c) => [c.position, c.id, c.title, c.active]),
      [
        [1, 'intro', 'Intro', true],
        [2, 'skipped', 'Skipped', false],
        [3, 'task', 'Task', true],
        [4, 'outro', 'Outro', true],
      ],
    );
    assert.deepEqual(jatos.studySessionData, {});
    assert.deepEqual(jatos.urlQueryParameters, { src: 'test', x: '1' });
    const ids = jatos.addJatosIds({});
    assert.equal(ids.componentTitle, 'Intro');
    assert.equal(ids.studyResultId, jatos.studyResultId);

    // onLoad after the load: called at once.
    let called = 0;
    jatos.onLoad(() => (called += 1));
    assert.equal(called, 1);

    // The batch channel from init works as before (jatos.batchSession).
    assert.ok(jatos.batchChannel, 'the batch channel is open');
    assert.equal(jatos.batchChannel.connected, true);
    await jatos.batchSession.set(`seen-${jatos.studyResultId}`, true);
    assert.equal(jatos.batchSession.get(`seen-${jatos.studyResultId}`), true);
  });

  test('two participants of one batch share the batch session (across gateways)', TIMEOUT, async (t) => {
    const a = await enter(t, nextLink(0));
    const b = await enter(t, nextLink(1));
    assert.equal(a.batchId, b.batchId);
    assert.notEqual(a.studyResultId, b.studyResultId);
    const key = `shared-${RUN_ID}`;
    await a.batchSession.set(key, 'from a');
    await waitFor(() => b.batchSession.get(key) === 'from a', 'b sees a\'s write');
  });

  test('the study session is carried across components; next skips inactive ones', TIMEOUT, async (t) => {
    const jatos = await enter(t, nextLink());
    const firstChannel = jatos.batchChannel;
    jatos.studySessionData.answers = ['a1'];
    jatos.studySessionData.score = 3;
    const result = await jatos.startNextComponent();
    assert.equal(result, undefined);
    assert.equal(jatos.componentPos, 3, 'component 2 is inactive: next is 3');
    assert.equal(jatos.componentId, 'task');
    assert.match(jatos.page.url, /\/c\/3\/task\/task%20page\.html$/);
    assert.match(jatos.page.html, /Task/);
    assert.deepEqual(jatos.studySessionData, { answers: ['a1'], score: 3 }, 'written at the end of component 1, read at init of 3');
    assert.equal(jatos.componentProperties.reloadable, false);
    assert.deepEqual(jatos.componentJsonInput, {}, 'no component input: {} as in jatos.js');
    assert.equal(firstChannel.closed, true, 'the old page\'s channel is gone');
    assert.ok(jatos.batchChannel && jatos.batchChannel !== firstChannel, 'the new page has its own channel');

    // setStudySessionData stores at once (promise and callback).
    const seen = [];
    const answer = await jatos.setStudySessionData({ replaced: true }, (/** @type {any} */ r) => seen.push(r));
    assert.equal(typeof answer.version, 'number');
    assert.deepEqual(seen, [answer]);
    assert.deepEqual(jatos.studySessionData, { replaced: true });

    await jatos.startComponentByTitle('Outro');
    assert.equal(jatos.componentPos, 4);
    assert.deepEqual(jatos.studySessionData, { replaced: true });
    jatos.studySessionData.back = 1;

    await jatos.startComponentByPos(1); // not a linear study: going back is allowed
    assert.equal(jatos.componentPos, 1);
    assert.deepEqual(jatos.studySessionData, { replaced: true, back: 1 });

    await jatos.startLastComponent();
    assert.equal(jatos.componentPos, 4);
    await jatos.startComponent('intro');
    assert.equal(jatos.componentPos, 1);
  });

  test('starting a component that does not exist fails without leaving the page', TIMEOUT, async (t) => {
    const jatos = await enter(t, nextLink());
    const errors = [];
    await assert.rejects(
      jatos.startComponentByPos(9, undefined, (/** @type {any} */ e) => errors.push(e.code)),
      (/** @type {any} */ e) => e.code === 'component_not_found',
    );
    await assert.rejects(jatos.startComponentByPos(0), (/** @type {any} */ e) => e.code === 'component_not_found');
    await assert.rejects(
      jatos.startComponentByTitle('Nope', { result: 1 }, 'a message', (/** @type {any} */ e) => errors.push(e.code)),
      (/** @type {any} */ e) => e.code === 'component_not_found',
    );
    await assert.rejects(jatos.startComponent('nope'), (/** @type {any} */ e) => e.code === 'component_not_found');
    assert.deepEqual(errors, ['component_not_found', 'component_not_found']);
    // The inactive component: the server refuses its page.
    await assert.rejects(jatos.startComponentByPos(2), (/** @type {any} */ e) => e.code === 'component_inactive' && e.status === 409);
    // Still usable: the next start works.
    await jatos.startNextComponent();
    assert.equal(jatos.componentPos, 3);
  });

  test('one component start at a time', TIMEOUT, async (t) => {
    const jatos = await enter(t, nextLink());
    const first = jatos.startNextComponent();
    await assert.rejects(jatos.startNextComponent(), (/** @type {any} */ e) => e.code === 'busy');
    await first;
    assert.equal(jatos.componentPos, 3);
  });

  test('endStudy: confirmation code on the end page; the run is over', TIMEOUT, async (t) => {
    const jatos = await enter(t, nextLink());
    await jatos.startNextComponent();
    const pageUrl = jatos.page.url;
    const info = await jatos.endStudy(true, 'all done');
    assert.equal(info.state, 'finished');
    assert.equal(info.successful, true);
    assert.match(info.confirmationCode, /^[0-9A-Za-z-]{6,}$/);
    assert.equal(info.redirect, '');
    assert.equal(jatos.confirmationCode, info.confirmationCode);
    assert.deepEqual(jatos.page, {
      kind: 'end',
      state: 'finished',
      successful: true,
      confirmationCode: info.confirmationCode,
      message: 'all done',
    });
    assert.equal(jatos.batchChannel.closed, true, 'the batch channel is closed after the end');
    await assert.rejects(jatos.endStudy(), (/** @type {any} */ e) => e.code === 'study_ended' || e.code === 'run_ended');
    // Going back to a page of the run is refused.
    await assert.rejects(jatos.goTo(pageUrl), (/** @type {any} */ e) => e.code === 'run_ended' && e.status === 403);
    await assert.rejects(jatos.setStudySessionData({ late: true }), (/** @type {any} */ e) => e.code === 'run_ended');
    // A personal single link is used up.
    await assert.rejects(connectParticipant(linkOn(world.links[linkIndex - 1])), (/** @type {any} */ e) => e.code === 'link_used');
  });

  test('startNextComponent on the last active component ends the study (with result data)', TIMEOUT, async (t) => {
    const fetchLog = recordingFetch();
    const jatos = await enter(t, nextLink(), { fetch: fetchLog });
    await jatos.startLastComponent();
    assert.equal(jatos.componentPos, 4);
    const info = await jatos.startNextComponent({ trial: 1, rt: 512 }, 'last one');
    assert.equal(info.state, 'finished');
    assert.equal(jatos.page.kind, 'end');
    assert.equal(jatos.page.message, 'last one');
    assert.ok(jatos.page.confirmationCode);
    // The result data was offered (the endpoint comes with the results issue) and did not stop the end.
    const offered = fetchLog.calls.filter((c) => c.path.endsWith('/result-data'));
    assert.equal(offered.length, 1);
    assert.equal(offered[0].body, JSON.stringify({ trial: 1, rt: 512 }));
  });

  test('endStudy with result data and successful=false; endStudyAjax stays on the page', TIMEOUT, async (t) => {
    const jatos = await enter(t, nextLink());
    const successes = [];
    const info = await jatos.endStudyAjax('some,csv,data', false, 'failed on purpose', (/** @type {any} */ r) => successes.push(r));
    assert.equal(info.successful, false);
    assert.equal(info.state, 'finished');
    assert.deepEqual(successes, [info]);
    assert.equal(jatos.page.kind, 'component', 'without redirect: no end page');
  });

  test('abortStudy: the run is aborted and the link used', TIMEOUT, async (t) => {
    const link = nextLink();
    const jatos = await enter(t, link);
    await jatos.setStudySessionData({ secret: 'erase me' });
    const info = await jatos.abortStudy('changed my mind');
    assert.equal(info.state, 'aborted');
    assert.equal(info.confirmationCode, '');
    assert.equal(jatos.page.kind, 'end');
    assert.equal(jatos.page.state, 'aborted');
    assert.equal(jatos.page.message, 'changed my mind');
    await assert.rejects(jatos.abortStudy(), (/** @type {any} */ e) => e.code === 'study_ended' || e.code === 'run_ended');
    await assert.rejects(connectParticipant(link), (/** @type {any} */ e) => e.code === 'link_used');
  });

  test('abortStudyAjax and abortStudyAndRedirect', TIMEOUT, async (t) => {
    const a = await enter(t, nextLink());
    const done = [];
    const info = await a.abortStudyAjax('quiet', (/** @type {any} */ r) => done.push(r.state));
    assert.equal(info.state, 'aborted');
    assert.deepEqual(done, ['aborted']);
    assert.equal(a.page.kind, 'component');

    const b = await enter(t, nextLink());
    await b.abortStudyAndRedirect('https://example.org/aborted', 'bye');
    assert.deepEqual(b.page, { kind: 'redirect', url: 'https://example.org/aborted' });
  });

  test('endStudyAndRedirect goes to the given URL', TIMEOUT, async (t) => {
    const jatos = await enter(t, nextLink());
    const info = await jatos.endStudyAndRedirect('https://example.org/done', true, 'ok');
    assert.equal(info.state, 'finished');
    assert.deepEqual(jatos.page, { kind: 'redirect', url: 'https://example.org/done' });
  });

  test('the study\'s end redirect URL replaces the end page', TIMEOUT, async (t) => {
    const jatos = await enter(t, linkOn(world.redirectLinks[0]));
    assert.equal(jatos.studyProperties.endRedirectUrl, REDIRECT_STUDY.end_redirect_url);
    const info = await jatos.endStudy();
    assert.equal(info.redirect, REDIRECT_STUDY.end_redirect_url);
    assert.deepEqual(jatos.page, { kind: 'redirect', url: REDIRECT_STUDY.end_redirect_url });
  });

  test('reloading a component that is not reloadable is refused and fails the run', TIMEOUT, async (t) => {
    const jatos = await enter(t, nextLink());
    await jatos.reload(); // intro is reloadable
    assert.equal(jatos.componentPos, 1);
    assert.equal(jatos.loaded, true);
    await jatos.startNextComponent();
    assert.equal(jatos.componentId, 'task');
    await assert.rejects(jatos.reload(), (/** @type {any} */ e) => e.code === 'reloaded' && e.status === 409);
    assert.equal(jatos.page.kind, 'error');
    assert.equal(jatos.page.code, 'reloaded');
    // The run has failed: nothing more is accepted.
    await assert.rejects(jatos.setStudySessionData({ after: 'reload' }), (/** @type {any} */ e) => e.code === 'run_ended');
    await assert.rejects(jatos.endStudyAjax(), (/** @type {any} */ e) => e.code === 'run_ended');
  });

  test('a general multiple link makes a new run every time', TIMEOUT, async (t) => {
    const a = await enter(t, linkOn(world.general));
    const b = await enter(t, linkOn(world.general, 1));
    assert.notEqual(a.studyResultId, b.studyResultId);
    assert.notEqual(a.workerId, b.workerId);
  });

  test('a general single link: one run per browser (the cookie jar)', TIMEOUT, async (t) => {
    /** @type {Map<string, string>} */
    const browser = new Map();
    const first = await enter(t, linkOn(world.generalSingle), { cookies: browser });
    assert.ok(browser.size > 0, 'the entry set a cookie');
    await assert.rejects(
      connectParticipant(linkOn(world.generalSingle, 1), { cookies: browser }),
      (/** @type {any} */ e) => e.code === 'already_participated' && e.status === 403,
    );
    const other = await enter(t, linkOn(world.generalSingle)); // another browser
    assert.notEqual(other.studyResultId, first.studyResultId);
  });

  test('a linear study only goes forward', TIMEOUT, async (t) => {
    const jatos = await enter(t, linkOn(world.linearLinks[0]));
    assert.equal(jatos.studyProperties.linearStudy, true);
    await jatos.startNextComponent();
    assert.equal(jatos.componentId, 'two');
    await assert.rejects(jatos.startComponentByPos(1), (/** @type {any} */ e) => e.code === 'linear_study' && e.status === 409);
    await jatos.reload(); // reloadable: allowed, and still at two
    assert.equal(jatos.componentId, 'two');
    const info = await jatos.startNextComponent();
    assert.equal(info.state, 'finished', 'next on the last component ends the study');
  });

  test('retried writes carry the same command id and are applied once', TIMEOUT, async (t) => {
    /** @type {any} */
    let firstAnswer = null;
    // The first attempt of each study-session write reaches the server, but its answer is "lost".
    const lossy = recordingFetch(({ url, init, attempt }) => {
      if (!url.endsWith('/study-session') || attempt !== 1) return undefined;
      return fetch(url, init)
        .then((res) => res.json())
        .then((body) => {
          firstAnswer = body;
          throw new TypeError('connection reset (simulated)');
        });
    });
    const jatos = await enter(t, nextLink(), { fetch: lossy });
    const answer = await jatos.setStudySessionData({ once: 1 });
    const writes = lossy.calls.filter((c) => c.path.endsWith('/study-session'));
    assert.equal(writes.length, 2, 'one retry');
    assert.ok(writes[0].commandId, 'X-Cohort-Command-Id is sent');
    assert.equal(writes[0].commandId, writes[1].commandId, 'the retry has the same command id');
    assert.ok(firstAnswer && typeof firstAnswer.version === 'number');
    assert.equal(answer.version, firstAnswer.version, 'the retry got the first outcome: applied once');
    // A new write is a new command.
    const next = await jatos.setStudySessionData({ once: 2 });
    assert.equal(next.version, answer.version + 1);
    const ids = lossy.calls.filter((c) => c.path.endsWith('/study-session')).map((c) => c.commandId);
    assert.equal(new Set(ids).size, 2);
  });

  test('a timed-out attempt is retried (httpTimeout, httpRetry, httpRetryWait)', TIMEOUT, async (t) => {
    let stalled = 0;
    const slow = recordingFetch(({ url, init, attempt }) => {
      if (!url.endsWith('/end') || attempt > 2) return undefined;
      stalled += 1;
      // Let the request through, but answer only after the client gave up.
      return fetch(url, init).then((res) => new Promise((resolve) => setTimeout(() => resolve(res), 1000)));
    });
    const jatos = await enter(t, nextLink(), { fetch: slow });
    jatos.httpTimeout = 250;
    jatos.httpRetry = 5;
    jatos.httpRetryWait = 20;
    const info = await jatos.endStudyAjax(true);
    assert.equal(stalled, 2);
    const ends = slow.calls.filter((c) => c.path.endsWith('/end'));
    assert.ok(ends.length >= 3, `two stalled attempts, then an answer (${ends.length} attempts)`);
    assert.equal(new Set(ends.map((c) => c.commandId)).size, 1);
    assert.equal(info.state, 'finished');
    assert.ok(info.confirmationCode, 'the first outcome, confirmation code included');

    // With no retries left, the failure is reported.
    const never = recordingFetch(({ url }) => (url.endsWith('/study-session') ? new Promise(() => {}) : undefined));
    const other = await enter(t, nextLink(), { fetch: never });
    other.httpTimeout = 50;
    other.httpRetry = 1;
    other.httpRetryWait = 10;
    await assert.rejects(other.setStudySessionData({ x: 1 }), (/** @type {any} */ e) => e.code === 'timeout');
    assert.equal(never.calls.filter((c) => c.path.endsWith('/study-session')).length, 2);
  });

  test('heartbeats: POST /heartbeat every period (setHeartbeatPeriod)', TIMEOUT, async (t) => {
    const log = recordingFetch();
    const jatos = await enter(t, nextLink(), { fetch: log });
    const beats = () => log.calls.filter((c) => c.path.endsWith('/heartbeat'));
    assert.equal(beats().length, 0, 'default period is 2 minutes');
    jatos.setHeartbeatPeriod(40);
    await waitFor(() => beats().length >= 3, 'three heartbeats', 3000);
    assert.ok(beats().every((c) => c.method === 'POST'));
    await waitFor(() => beats().every((c) => c.status !== null), 'answers');
    assert.ok(beats().every((c) => c.status >= 200 && c.status < 300), JSON.stringify(beats().map((c) => c.status)));
    await jatos.endStudyAjax();
    const after = beats().length;
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(beats().length, after, 'no heartbeat after the end');
  });

  test('a server answer is checked: the same write twice with one command id', TIMEOUT, async (t) => {
    const jatos = await enter(t, nextLink());
    const url = `${gateway(0)}/r/${jatos.runKey}/study-session`;
    const settings = { httpTimeout: 5000, httpRetry: 0, httpRetryWait: 0 };
    const commandId = `manual-${RUN_ID}`;
    const first = await httpRequest({ fetch, method: 'POST', url, body: JSON.stringify({ v: 1 }), commandId }, settings);
    const again = await httpRequest({ fetch, method: 'POST', url, body: JSON.stringify({ v: 2 }), commandId }, settings);
    assert.equal(again.body.version, first.body.version, 'a duplicate is answered with the first outcome');
    await jatos.reload();
    assert.deepEqual(jatos.studySessionData, { v: 1 }, 'and not applied');
  });

  test('the classic build on a component page loads the run by itself (browser path)', TIMEOUT, async (t) => {
    // A participant enters (the bot GETs /go and the first page) ...
    const bot = await enter(t, nextLink());
    bot.studySessionData.fromBot = true;
    await bot.setStudySessionData(bot.studySessionData);
    const pageUrl = bot.page.url;
    bot.close();
    // ... and the page loads jatos.js relative to itself, as JATOS studies do:
    // the gateway serves the classic build there.
    const res = await fetch(new URL('jatos.js', pageUrl));
    assert.equal(res.status, 200);
    const code = await res.text();
    assert.equal(code, readFileSync(join(root, 'dist', 'jatos.js'), 'utf8'), 'the page gets dist/jatos.js');
    const page = loadPage(code, pageUrl);
    const jatos = page.jatos;
    t.after(() => jatos._shutDown());
    const order = [];
    jatos.onLoad(() => order.push('first'));
    jatos.onload(() => order.push('second'));
    await withTimeout(new Promise((resolve) => jatos.onLoad(resolve)), 10000, 'jatos.onLoad in the classic build');
    assert.deepEqual(order, ['first', 'second']);
    assert.equal(jatos.componentPos, 1);
    assert.equal(jatos.componentId, 'intro');
    assert.equal(jatos.studyResultId, bot.studyResultId);
    assert.deepEqual({ ...jatos.studySessionData }, { fromBot: true });
    assert.equal(jatos.batchChannel.connected, true, 'onLoad comes after the batch channel is open');
    assert.deepEqual(page.unloadEvents, [], 'intro is reloadable: no "leave this page?" warning');
    await jatos.batchSession.set(`classic-${RUN_ID}`, 1);
    assert.equal(jatos.batchSession.get(`classic-${RUN_ID}`), 1);

    jatos.studySessionData.fromPage = 2;
    await jatos.startNextComponent();
    assert.equal(page.assigned.length, 1);
    const next = parseRunUrl(page.assigned[0]);
    assert.ok(next);
    assert.equal(next.pos, 3);
    assert.equal(next.runKey, bot.runKey);
    assert.equal(next.path, 'task/task%20page.html');

    // The browser now loads that page (the bot GETs it, which starts the component) ...
    await bot.goTo(page.assigned[0]);
    assert.equal(bot.componentPos, 3);
    assert.deepEqual(bot.studySessionData, { fromBot: true, fromPage: 2 }, 'the session the page wrote');
    bot.close();
    // ... and its jatos.js: a component that is not reloadable gets the browser's warning.
    const task = loadPage(code, page.assigned[0], { confirm: false });
    t.after(() => task.jatos._shutDown());
    await withTimeout(new Promise((resolve) => task.jatos.onLoad(resolve)), 10000, 'onLoad of the task page');
    assert.equal(task.jatos.componentId, 'task');
    assert.deepEqual(task.unloadEvents, ['add']);

    // The abort button: the participant says no to the confirmation, nothing happens.
    const button = task.jatos.addAbortButton({ text: 'Stop', tooltip: 'stop it', style: 'color:red' });
    assert.equal(task.document.body.childNodes.at(-1), button);
    assert.equal(button.textContent, 'Stop');
    assert.equal(button.title, 'stop it');
    assert.match(button.style.cssText, /position:fixed.*;color:red$/);
    button.click();
    assert.deepEqual(task.window.confirmed, ['Do you really want to cancel this study?']);

    // endStudy: the end page with the confirmation code replaces the page.
    const info = await task.jatos.endStudy(true, 'finished in the browser');
    assert.ok(info.confirmationCode);
    assert.equal(task.document.title, 'The study is finished');
    const codes = task.document.body.byClass('cohortConfirmationCode');
    assert.equal(codes.length, 1);
    assert.equal(codes[0].textContent, info.confirmationCode);
    assert.deepEqual(task.unloadEvents, ['add', 'remove'], 'the warning is gone once the study ended');
    assert.deepEqual(task.assigned, [], 'no end redirect URL: no navigation');
  });

  test('the abort button aborts the study after the confirmation (browser path)', TIMEOUT, async (t) => {
    const bot = await enter(t, nextLink());
    const pageUrl = bot.page.url;
    bot.close();
    const code = readFileSync(join(root, 'dist', 'jatos.js'), 'utf8');
    const page = loadPage(code, pageUrl, { confirm: true });
    t.after(() => page.jatos._shutDown());
    await withTimeout(new Promise((resolve) => page.jatos.onLoad(resolve)), 10000, 'onLoad');
    /** @type {string[]} */
    const actions = [];
    const custom = page.jatos.addAbortButton({ confirm: false, msg: 'custom', action: (/** @type {string} */ m) => actions.push(m) });
    custom.click();
    assert.deepEqual(actions, ['custom'], 'action replaces abortStudy; no confirmation asked');
    assert.deepEqual(page.window.confirmed, []);
    const button = page.jatos.addAbortButton();
    assert.equal(button.textContent, 'Cancel');
    button.click();
    assert.equal(page.window.confirmed.length, 1);
    await waitFor(() => page.document.title === 'The study was cancelled', 'the end page of an abort');
    assert.equal(page.document.body.byClass('cohortConfirmationCode').length, 0, 'no confirmation code for an abort');
    await assert.rejects(connectParticipant(linkOn(world.links[linkIndex - 1])), (/** @type {any} */ e) => e.code === 'link_used');
  });

  test('createJatos without a run page: onLoad waits, run calls fail cleanly', TIMEOUT, async () => {
    const jatos = createJatos();
    let called = false;
    jatos.onLoad(() => (called = true));
    assert.equal(called, false);
    await assert.rejects(jatos.setStudySessionData({}), (/** @type {any} */ e) => e.code === 'not_initialized');
    await assert.rejects(jatos.startNextComponent(), (/** @type {any} */ e) => e.code === 'not_initialized');
    await assert.rejects(jatos.endStudy(), (/** @type {any} */ e) => e.code === 'not_initialized');
    await assert.rejects(jatos.abortStudyAjax(), (/** @type {any} */ e) => e.code === 'not_initialized');
    await assert.rejects(jatos.loadPage('https://example.org/not/a/run'), (/** @type {any} */ e) => e.code === 'not_a_run_page');
    assert.equal(jatos.addAbortButton(), undefined, 'no document in Node');
  });

  test('refused links reject with the refusal code', TIMEOUT, async () => {
    await assert.rejects(connectParticipant(`${gateway(0)}/go/no-such-link-${RUN_ID}`), (/** @type {any} */ e) => e.code === 'link_not_found' && e.status === 404);
  });
});
