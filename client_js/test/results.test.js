// Result data, result files and logs (results.js) against a REAL stack. The
// result endpoints (gateway/results.py) may not be mounted by the gateway yet:
// then every call must reject with `not_available` (and the component flow
// still moves on); when they are, the data round-trip.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import { connectParticipant } from '../src/node.js';
import { SKIP, withTimeout } from '../testing/gateway.js';
import { componentPage, createLinks, createStudyBatch, importStudy, linkOn } from '../testing/studies.js';

const TIMEOUT = { timeout: 30000 };
const RUN_ID = `${Date.now().toString(36)}-${process.pid}`;

/** @type {{links: any[]}} */
const world = { links: [] };
let next = 0;

/**
 * @param {import('node:test').TestContext} t
 */
async function participant(t) {
  const link = world.links[next++];
  const jatos = await withTimeout(connectParticipant(linkOn(link), { httpRetryWait: 50 }), 15000, 'enter');
  t.after(() => jatos.close());
  return jatos;
}

/**
 * Resolves with the call's value, or with `null` when the server has no
 * result storage (`not_available`).
 * @param {Promise<any>} promise
 */
async function orUnavailable(promise) {
  try {
    return { value: await promise };
  } catch (err) {
    if (/** @type {any} */ (err).code === 'not_available') return null;
    throw err;
  }
}

describe('result data, files and logs', { skip: SKIP }, () => {
  before(async () => {
    const stored = await importStudy(
      {
        title: `client_js results ${RUN_ID}`,
        uuid: `client-js-results-${RUN_ID}`,
        components: [
          { id: 'one', title: 'One', html_file: 'one.html', reloadable: true },
          { id: 'two', title: 'Two', html_file: 'two.html', reloadable: true },
        ],
      },
      { 'one.html': componentPage('One'), 'two.html': componentPage('Two') },
    );
    const batch = await createStudyBatch(stored.study_id);
    world.links = await createLinks(stored.study_id, batch.id, 'personal_single', 4);
  });

  test('submit, append, upload, download, log (promise and callbacks), or not_available everywhere', TIMEOUT, async (t) => {
    const jatos = await participant(t);
    const first = await orUnavailable(jatos.submitResultData({ answer: 42 }));
    if (first === null) {
      t.diagnostic('this gateway does not mount the result routes: every call says not_available');
      for (const call of [
        () => jatos.appendResultData('x'),
        () => jatos.uploadResultFile('text', 'a.txt'),
        () => jatos.downloadResultFile('a.txt'),
        () => jatos.log('a line'),
        () => jatos.setBonus(1),
      ]) {
        await assert.rejects(call(), { code: 'not_available' });
      }
      const failed = await new Promise((resolve) => jatos.submitResultData('x', undefined, resolve));
      assert.equal(/** @type {any} */ (failed).code, 'not_available');
      // The component flow moves on without result storage, and says nothing.
      const errors = [];
      jatos.onError((/** @type {any} */ e) => errors.push(e));
      await jatos.startNextComponent({ final: true });
      assert.equal(jatos.componentPos, 2);
      assert.deepEqual(errors, []);
      return;
    }
    assert.ok(first.value && typeof first.value === 'object', 'the server answers what it stored');
    const appended = await new Promise((resolve, reject) => jatos.appendResultData(' and more', resolve, reject));
    assert.ok(appended);

    await jatos.uploadResultFile('hello file', 'note.txt');
    assert.equal(await jatos.downloadResultFile('note.txt'), 'hello file', 'text comes back as a string');
    await jatos.uploadResultFile({ a: [1, 2] }, 'data.json');
    assert.deepEqual(await jatos.downloadResultFile('data.json'), { a: [1, 2] }, 'JSON comes back parsed');
    const bytes = new Uint8Array([137, 80, 78, 71, 0, 1, 2, 255]);
    await jatos.uploadResultFile(new Blob([bytes], { type: 'image/png' }), 'pixel.png');
    const blob = await jatos.downloadResultFile(1, 'pixel.png');
    assert.ok(blob instanceof Blob, 'anything else comes back as a Blob');
    assert.deepEqual(new Uint8Array(await blob.arrayBuffer()), bytes);
    const missing = await new Promise((resolve) => jatos.downloadResultFile('nope.txt', undefined, resolve));
    assert.equal(/** @type {any} */ (missing).code, 'file_not_found');
    await jatos.uploadResultFile('second version', 'note.txt');
    assert.equal(await jatos.downloadResultFile('note.txt'), 'second version', 'the same name replaces');

    const logged = await jatos.log('a line for the log');
    assert.ok(logged);

    // Result data with the component flow; the next page still reads this page's files.
    await jatos.startNextComponent({ final: true });
    assert.equal(jatos.componentPos, 2);
    assert.equal(await jatos.downloadResultFile(1, 'note.txt'), 'second version');
    await jatos.endStudy({ last: 'data' }, true, 'done');
    assert.equal(jatos.page.kind, 'end');
  });

  test('calls before the run is loaded fail with not_initialized', TIMEOUT, async () => {
    const { createJatos } = await import('../src/jatos.js');
    const bare = createJatos(null);
    await assert.rejects(bare.submitResultData('x'), { code: 'not_initialized' });
    await assert.rejects(bare.uploadResultFile('x', 'x.txt'), { code: 'not_initialized' });
    await assert.rejects(bare.downloadResultFile('x.txt'), { code: 'not_initialized' });
    await assert.rejects(bare.log('x'), { code: 'not_initialized' });
    await assert.rejects(bare.uploadResultFile('x'), { code: 'bad_filename' });
  });
});
