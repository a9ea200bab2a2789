// The jatos.js-compatible batch session API against a REAL gateway.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { createJatos } from '../src/jatos.js';
import { SKIP, freshBatch, session, waitFor } from '../testing/gateway.js';

const TIMEOUT = { timeout: 30000 };

/**
 * Calls a jatos write in callback form and resolves with what happened:
 * which callback ran (and with what) and how the returned promise settled.
 * @param {(onSuccess: Function, onFail: Function) => Promise<any>} call
 */
async function viaCallbacks(call) {
  const calls = [];
  const promise = call(
    (/** @type {any} */ result) => calls.push(['success', result]),
    (/** @type {any} */ error) => calls.push(['fail', error]),
  );
  assert.ok(promise && typeof promise.then === 'function', 'a write returns a Promise');
  let settled;
  try {
    settled = ['resolved', await promise];
  } catch (err) {
    settled = ['rejected', err];
  }
  // The callback runs before the promise's own handlers.
  assert.equal(calls.length, 1, `exactly one callback: ${JSON.stringify(calls)}`);
  return { callback: calls[0][0], arg: calls[0][1], settled: settled[0], value: settled[1] };
}

describe('jatos.batchSession', { skip: SKIP }, () => {
  test('reads: get takes a top-level name, find a JSON pointer; both return copies', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const { jatos } = await env.jatos(participants[0]);
    await jatos.batchSession.setAll({ a: { a1: 'foo', a2: [1, 2] }, b: 999, 'x/y': 1, n: null });

    assert.deepEqual(jatos.batchSession.get('a'), { a1: 'foo', a2: [1, 2] });
    assert.equal(jatos.batchSession.get('b'), 999);
    assert.equal(jatos.batchSession.get('a1'), undefined, 'get works on the first level only');
    assert.equal(jatos.batchSession.get('c'), undefined);
    assert.equal(jatos.batchSession.find('/a/a1'), 'foo');
    assert.equal(jatos.batchSession.find('/a/a2/1'), 2);
    assert.equal(jatos.batchSession.find('/b'), 999);
    assert.equal(jatos.batchSession.find('/c/d'), undefined);
    assert.equal(jatos.batchSession.find('/x~1y'), 1);
    assert.deepEqual(jatos.batchSession.find(''), jatos.batchSession.getAll());
    assert.deepEqual(jatos.batchSession.getAll(), { a: { a1: 'foo', a2: [1, 2] }, b: 999, 'x/y': 1, n: null });

    // Copies: changing what you got does not change the session.
    jatos.batchSession.get('a').a1 = 'changed';
    jatos.batchSession.getAll().b = 0;
    jatos.batchSession.find('/a/a2').push(3);
    assert.deepEqual(jatos.batchSession.getAll(), { a: { a1: 'foo', a2: [1, 2] }, b: 999, 'x/y': 1, n: null });

    // test and defined are local checks returning booleans.
    assert.equal(jatos.batchSession.test('/b', 999), true);
    assert.equal(jatos.batchSession.test('/b', 10), false);
    assert.equal(jatos.batchSession.test('/a/a1', 'foo'), true);
    assert.equal(jatos.batchSession.test('/a', { a2: [1, 2], a1: 'foo' }), true, 'JSON equality for objects');
    assert.equal(jatos.batchSession.test('/c', undefined), true, 'undefined tests for absence');
    assert.equal(jatos.batchSession.defined('/a'), true);
    assert.equal(jatos.batchSession.defined('/a/a2/1'), true);
    assert.equal(jatos.batchSession.defined('/n'), true, 'a field holding null is defined');
    assert.equal(jatos.batchSession.defined('/c'), false);
    assert.equal(jatos.batchSession.defined('/a/zz'), false);
  });

  test('every write, promise form', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const { jatos, channel } = await env.jatos(participants[0]);
    const bs = jatos.batchSession;
    const v0 = channel.version;

    let r = await bs.set('a', 1234);
    assert.equal(r.version, v0 + 1);
    assert.deepEqual(bs.getAll(), { a: 1234 }, 'visible as soon as the promise resolves');
    await bs.set('b', 'koala');
    assert.deepEqual(bs.getAll(), { a: 1234, b: 'koala' });
    await bs.set('b', 'wombat'); // set overwrites
    assert.equal(bs.get('b'), 'wombat');
    await bs.add('/obj', { foo: 'bar' });
    await bs.add('/obj/baz', [1, 2, 3]);
    await bs.add('/obj/baz/1', 'new');
    await bs.add('/obj/baz/-', 'end');
    assert.deepEqual(bs.find('/obj'), { foo: 'bar', baz: [1, 'new', 2, 3, 'end'] });
    await bs.replace('/a', 789);
    assert.equal(bs.get('a'), 789);
    await bs.remove('/b');
    assert.equal(bs.defined('/b'), false);
    await bs.copy('/obj/foo', '/copied');
    assert.equal(bs.get('copied'), 'bar');
    await bs.move('/copied', '/moved');
    assert.equal(bs.defined('/copied'), false);
    assert.equal(bs.get('moved'), 'bar');
    await bs.setAll({ fresh: true, list: [] });
    assert.deepEqual(bs.getAll(), { fresh: true, list: [] });
    r = await bs.clear();
    assert.deepEqual(bs.getAll(), {});
    assert.equal(r.version, v0 + 13);
    assert.equal(channel.version, v0 + 13, 'one version per write');
    // Chaining, as in the jatos.js docs.
    await bs
      .set('a', 1)
      .then(() => bs.set('b', 2))
      .then(() => bs.set('c', 3));
    assert.deepEqual(bs.getAll(), { a: 1, b: 2, c: 3 });
  });

  test('every write, callback form: onSuccess/onFail run, and the promise settles too', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const { jatos } = await env.jatos(participants[0]);
    const bs = jatos.batchSession;

    /** @type {[string, (s: Function, f: Function) => Promise<any>, any][]} */
    const writes = [
      ['set', (s, f) => bs.set('a', 1, s, f), { a: 1 }],
      ['setAll', (s, f) => bs.setAll({ a: 1, b: { c: 2 } }, s, f), { a: 1, b: { c: 2 } }],
      ['add', (s, f) => bs.add('/b/d', 3, s, f), { a: 1, b: { c: 2, d: 3 } }],
      ['replace', (s, f) => bs.replace('/a', 'x', s, f), { a: 'x', b: { c: 2, d: 3 } }],
      ['remove', (s, f) => bs.remove('/b/c', s, f), { a: 'x', b: { d: 3 } }],
      ['copy', (s, f) => bs.copy('/b', '/e', s, f), { a: 'x', b: { d: 3 }, e: { d: 3 } }],
      ['move', (s, f) => bs.move('/a', '/f', s, f), { b: { d: 3 }, e: { d: 3 }, f: 'x' }],
      ['clear', (s, f) => bs.clear(s, f), {}],
    ];
    for (const [name, call, expected] of writes) {
      const outcome = await viaCallbacks(call);
      assert.equal(outcome.callback, 'success', `${name}: onSuccess`);
      assert.equal(outcome.settled, 'resolved', `${name}: the promise resolves`);
      assert.equal(typeof outcome.arg.version, 'number', `${name}: onSuccess gets the version`);
      assert.deepEqual(bs.getAll(), expected, `${name}: applied locally when onSuccess runs`);
    }

    // Failing writes: onFail gets the error (with the reason), the promise rejects.
    /** @type {[string, (s: Function, f: Function) => Promise<any>, string][]} */
    const failing = [
      ['remove', (s, f) => bs.remove('/missing', s, f), 'path_not_found'],
      ['replace', (s, f) => bs.replace('/missing', 1, s, f), 'path_not_found'],
      ['add', (s, f) => bs.add('/no/parent', 1, s, f), 'path_not_found'],
      ['move', (s, f) => bs.move('/missing', '/x', s, f), 'path_not_found'],
      ['copy', (s, f) => bs.copy('/missing', '/x', s, f), 'path_not_found'],
    ];
    for (const [name, call, code] of failing) {
      const outcome = await viaCallbacks(call);
      assert.equal(outcome.callback, 'fail', `${name}: onFail`);
      assert.equal(outcome.settled, 'rejected', `${name}: the promise rejects`);
      assert.equal(outcome.arg, outcome.value, `${name}: same error to onFail and to the promise`);
      assert.equal(outcome.arg.code, code, `${name}: ${outcome.arg.message}`);
      assert.equal(typeof outcome.arg.version, 'number');
    }
    assert.deepEqual(bs.getAll(), {}, 'failed writes changed nothing');
  });

  test('onBatchSession gets (path, op) for every change, own and others, on any gateway', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(2);
    const a = await env.jatos(participants[0], { gw: 0 });
    const b = await env.jatos(participants[1], { gw: 1 });
    /** @type {any[]} */
    const seenByA = [];
    /** @type {any[]} */
    const seenByB = [];
    a.jatos.onBatchSession((/** @type {string} */ path, /** @type {string} */ op) => {
      let value;
      try {
        value = a.jatos.batchSession.find(path);
      } catch (err) {
        value = `throws ${/** @type {any} */ (err).code}`; // e.g. "/list/-", as jsonpointer.js does
      }
      seenByA.push([path, op, value]);
    });
    b.jatos.onBatchSession((/** @type {string} */ path, /** @type {string} */ op) => seenByB.push([path, op]));

    // Versioning is on: each writer first waits until it has seen the other's change.
    await b.jatos.batchSession.set('color', 'red');
    await a.channel.whenVersion(b.channel.version);
    await a.jatos.batchSession.add('/list', []);
    await b.channel.whenVersion(a.channel.version);
    await b.jatos.batchSession.add('/list/-', 'x');
    await a.channel.whenVersion(b.channel.version);
    await a.jatos.batchSession.move('/color', '/colour');
    await b.channel.whenVersion(a.channel.version);
    await b.jatos.batchSession.remove('/colour');
    await a.channel.whenVersion(b.channel.version);
    await a.jatos.batchSession.clear();
    await b.channel.whenVersion(a.channel.version);

    const expected = [
      ['/color', 'add'],
      ['/list', 'add'],
      ['/list/-', 'add'],
      ['/colour', 'move'],
      ['/colour', 'remove'],
      ['', 'replace'],
    ];
    assert.deepEqual(seenByA.map(([p, o]) => [p, o]), expected);
    assert.deepEqual(seenByB, expected);
    // The callback runs after the change is applied: find(path) sees the new value.
    assert.equal(seenByA[0][2], 'red');
    assert.deepEqual(seenByA[1][2], []);
    assert.equal(seenByA[2][2], 'throws bad_patch');

    // One callback at a time, as in jatos.js: a new one replaces the old one.
    const second = [];
    a.jatos.onBatchSession(() => second.push(1));
    const before = seenByA.length;
    await a.jatos.batchSession.set('z', 1);
    assert.equal(seenByA.length, before);
    assert.equal(second.length, 1);
  });

  test('versioning (default on): concurrent writers, one wins, the other gets version_mismatch', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(2);
    const a = await env.jatos(participants[0], { gw: 0 });
    const b = await env.jatos(participants[1], { gw: 1 });
    assert.equal(a.jatos.batchSessionVersioning, true, 'on by default, as in JATOS');
    await a.jatos.batchSession.set('counter', 0);
    await b.channel.whenVersion(a.channel.version);
    const start = a.channel.version;

    const results = await Promise.allSettled([
      a.jatos.batchSession.replace('/counter', 1),
      b.jatos.batchSession.replace('/counter', 1),
    ]);
    const failed = results.filter((r) => r.status === 'rejected');
    assert.equal(failed.length, 1, JSON.stringify(results));
    const error = /** @type {PromiseRejectedResult} */ (failed[0]).reason;
    assert.equal(error.code, 'version_mismatch');
    assert.equal(error.version, start + 1, 'the error names the current version');
    // JATOS-style retry: recompute from the latest state and send again.
    const loser = results[0].status === 'rejected' ? a : b;
    assert.equal(loser.jatos.batchSession.get('counter'), 1);
    await loser.jatos.batchSession.replace('/counter', loser.jatos.batchSession.get('counter') + 1);
    assert.equal(loser.jatos.batchSession.get('counter'), 2);
  });

  test('versioning on allows one write in flight (as jatos.js); off allows many', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const { jatos } = await env.jatos(participants[0]);
    const first = jatos.batchSession.set('a', 1);
    const failures = [];
    const second = jatos.batchSession.set('b', 2, undefined, (/** @type {any} */ e) => failures.push(e));
    await first;
    await assert.rejects(second, { code: 'busy' });
    assert.equal(failures.length, 1);
    assert.match(failures[0].message, /only one batch session patch at a time/);
    assert.deepEqual(jatos.batchSession.getAll(), { a: 1 });

    jatos.batchSessionVersioning = false;
    await Promise.all([1, 2, 3, 4, 5].map((i) => jatos.batchSession.set(`k${i}`, i)));
    assert.deepEqual(jatos.batchSession.getAll(), { a: 1, k1: 1, k2: 2, k3: 3, k4: 4, k5: 5 });
  });

  test('without a channel, writes fail like jatos.js without a batch channel', TIMEOUT, async () => {
    const jatos = createJatos(null);
    assert.deepEqual(jatos.batchSession.getAll(), {});
    assert.equal(jatos.batchSession.get('a'), undefined);
    const errors = [];
    jatos.onError((/** @type {any} */ e) => errors.push(e));
    await assert.rejects(jatos.batchSession.set('a', 1), { code: 'no_channel', message: 'No open batch channel' });
    assert.equal(errors.length, 1, 'jatos.onError gets failures that have no onFail');
    const outcome = await viaCallbacks((s, f) => jatos.batchSession.clear(s, f));
    assert.equal(outcome.callback, 'fail');
    assert.equal(errors.length, 1, 'with onFail, jatos.onError is not called');
  });

  test('connectBatch opens the channel and resolves once the session is there', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(2);
    const other = await env.jatos(participants[1], { gw: 1 });
    const { version } = await other.jatos.batchSession.set('ready', true);
    const { WebSocket, gateway } = await import('../testing/gateway.js');
    const jatos = createJatos(null);
    const resolved = await jatos.connectBatch({
      url: gateway(0),
      batch: participants[0].batch_id,
      token: participants[0].token,
      WebSocket,
    });
    assert.equal(resolved, jatos);
    env.track(jatos.batchChannel);
    assert.equal(typeof jatos.batchChannel.version, 'number');
    // The state on open comes from this gateway's projection, which may trail a
    // change acknowledged on another gateway by a read block; updates follow.
    await jatos.batchChannel.whenVersion(version);
    assert.equal(jatos.batchSession.get('ready'), true);
    await jatos.batchSession.set('also', 1);
    await waitFor(() => other.jatos.batchSession.get('also') === 1, 'the other client sees it');
  });
});
