// Cohort's extensions of jatos.js against a REAL stack: several versioned
// patches in flight (chains), update(fn) that recomputes on conflict, the
// atomic increment under 200 concurrent participants, connection events.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { CommandError } from '../src/cohort.js';
import { SKIP, api, freshBatch, session, sleep, waitFor, withTimeout } from '../testing/gateway.js';

const TIMEOUT = { timeout: 30000 };

/**
 * Holds a channel's incoming frames until `release()` (as a tab whose
 * network stalls): it keeps sending but sees nothing new.
 * @param {any} channel
 */
function hold(channel) {
  const ws = channel._ws;
  const original = ws.onmessage;
  /** @type {any[]} */
  const held = [];
  ws.onmessage = (/** @type {any} */ event) => held.push(event);
  return {
    release() {
      ws.onmessage = original;
      for (const event of held) original(event);
    },
  };
}

describe('several patches in flight (chains)', { skip: SKIP }, () => {
  test('chained versioned patches expect the versions the earlier ones produce', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const a = await env.open(participants[0]);
    await a.patch([{ op: 'add', path: '/log', value: [] }]);
    const base = a.version;
    const sent = [];
    const ws = a._ws;
    const send = ws.send.bind(ws);
    ws.send = (/** @type {string} */ text) => {
      sent.push(JSON.parse(text));
      send(text);
    };
    const results = await Promise.all(
      [1, 2, 3, 4, 5].map((i) => a.patch([{ op: 'add', path: '/log/-', value: i }], { versioned: true, chain: true })),
    );
    assert.deepEqual(results.map((r) => r.version), [base + 1, base + 2, base + 3, base + 4, base + 5]);
    assert.deepEqual(
      sent.filter((f) => f.type === 'patch').map((f) => f.version),
      [base, base + 1, base + 2, base + 3, base + 4],
      'all five were on the wire before the first answer, each expecting the one before',
    );
    assert.deepEqual(a.data.log, [1, 2, 3, 4, 5]);
  });

  test('jatos.batchSessionPipelining: several writes in flight instead of "busy"', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(2);
    const { jatos } = await env.jatos(participants[0]);
    const other = await env.jatos(participants[1], { gw: 1 });
    await assert.rejects(Promise.all([jatos.batchSession.set('a', 1), jatos.batchSession.set('b', 2)]), { code: 'busy' });
    jatos.batchSessionPipelining = true;
    const writes = ['c', 'd', 'e', 'f'].map((k, i) => jatos.batchSession.set(k, i));
    const versions = (await Promise.all(writes)).map((r) => r.version);
    assert.deepEqual(versions, versions.map((_, i) => versions[0] + i), 'consecutive versions, in call order');
    await other.channel.whenVersion(versions.at(-1));
    assert.deepEqual(other.jatos.batchSession.getAll(), { a: 1, c: 0, d: 1, e: 2, f: 3 });
  });

  test('a chain fails with its first failing patch; nothing after it is applied', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const a = await env.open(participants[0]);
    await a.patch([{ op: 'add', path: '/n', value: 0 }]);
    const base = a.version;
    const outcomes = await Promise.allSettled([
      a.patch([{ op: 'replace', path: '/n', value: 1 }], { versioned: true, chain: true }),
      a.patch([{ op: 'remove', path: '/missing' }], { versioned: true, chain: true }),
      a.patch([{ op: 'replace', path: '/n', value: 3 }], { versioned: true, chain: true }),
      a.patch([{ op: 'replace', path: '/n', value: 4 }], { versioned: true, chain: true }),
    ]);
    assert.equal(outcomes[0].status, 'fulfilled');
    const reasons = outcomes.slice(1).map((o) => /** @type {any} */ (o).reason);
    assert.ok(reasons.every((r) => r instanceof CommandError));
    assert.deepEqual(reasons.map((r) => r.code), ['path_not_found', 'path_not_found', 'path_not_found'], 'they fail with it');
    assert.equal(reasons[1].cause, reasons[0]);
    await sleep(150);
    assert.equal(a.version, base + 1);
    assert.deepEqual(a.data, { n: 1 });
  });

  test('when another client wrote first, the chain fails; a link applied on its version is reported', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(2);
    const a = await env.open(participants[0]);
    const b = await env.open(participants[1], { gw: 0 });
    await a.patch([{ op: 'add', path: '/n', value: 0 }]);
    await b.whenVersion(a.version);
    const base = a.version;
    const frozen = hold(a); // a does not see b's write: it still thinks base is current
    await b.patch([{ op: 'replace', path: '/n', value: 'b' }]);
    const chain = [
      a.patch([{ op: 'replace', path: '/n', value: 'a1' }], { versioned: true, chain: true }),
      a.patch([{ op: 'add', path: '/a2', value: true }], { versioned: true, chain: true }),
    ];
    await sleep(300);
    frozen.release();
    const [first, second] = await Promise.allSettled(chain);
    assert.equal(first.status, 'rejected');
    assert.equal(/** @type {any} */ (first).reason.code, 'version_mismatch');
    assert.equal(second.status, 'rejected', 'the second fails with the first');
    const reason = /** @type {any} */ (second).reason;
    // The server applied it (b's write produced exactly the version it expected):
    // the library says so instead of resolving it (docs: the server's `after` field closes this).
    assert.equal(reason.code, 'chain_broken');
    assert.equal(reason.applied, true);
    assert.equal(reason.version, base + 2);
    assert.equal(reason.cause.code, 'version_mismatch');
    await a.whenVersion(base + 2);
    assert.deepEqual(a.data, { n: 'b', a2: true });
  });
});

describe('update(fn): recompute on conflict', { skip: SKIP }, () => {
  test('20 concurrent writers append with versioned patches: every entry once', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(20, { parallel: 5 });
    const people = await Promise.all(participants.map((p, i) => env.jatos(p, { gw: i })));
    const results = await Promise.all(
      people.map(({ jatos }, i) =>
        jatos.batchSession.update((/** @type {any} */ data) => [{ op: 'add', path: '/log', value: [...(data.log || []), i] }]),
      ),
    );
    const attempts = results.map((r) => r.attempts);
    assert.ok(attempts.some((n) => n > 1), `some were recomputed: ${attempts}`);
    const last = Math.max(...results.map((r) => r.version));
    await people[0].channel.whenVersion(last);
    const log = people[0].jatos.batchSession.get('log');
    assert.deepEqual([...log].sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i), 'each once');
    assert.equal(results.filter((r) => r.version === last).length, 1);
  });

  test('callbacks, nothing to do, other failures, and the info fn gets', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const { jatos, channel } = await env.jatos(participants[0]);
    /** @type {any[]} */
    const seen = [];
    const done = await new Promise((resolve, reject) => {
      jatos.batchSession.update(
        (/** @type {any} */ data, /** @type {any} */ info) => {
          seen.push([data, info]);
          return { op: 'add', path: '/x', value: 1 };
        },
        resolve,
        reject,
      );
    });
    assert.equal(/** @type {any} */ (done).version, channel.version);
    assert.deepEqual(seen, [[{}, { version: channel.version - 1, attempt: 0 }]]);
    const nothing = await jatos.batchSession.update(() => null);
    assert.deepEqual(nothing, { id: null, version: channel.version, ops: [], attempts: 0 });
    // A failure that is not a conflict is not retried.
    let calls = 0;
    await assert.rejects(
      jatos.batchSession.update(() => {
        calls += 1;
        return { op: 'remove', path: '/missing' };
      }),
      { code: 'path_not_found' },
    );
    assert.equal(calls, 1);
    // fn may read what it got and change nothing in it (a copy).
    await jatos.batchSession.update((/** @type {any} */ d) => {
      d.x = 'scribbled';
      return [];
    });
    assert.equal(jatos.batchSession.get('x'), 1);
  });
});

describe('increment: an atomic counter', { skip: SKIP }, () => {
  test('200 concurrent participants: values 1..200 once each, total exact, A/B balanced', { timeout: 120000 }, async (t) => {
    const env = session(t);
    const n = 200;
    const { batchId, participants } = await freshBatch(n, { parallel: 10 });
    const channels = await Promise.all(participants.map((p, i) => env.jatos(p, { gw: i, pingInterval: 0 })));
    // The counter also sees unrelated writes meanwhile: they do not conflict with it.
    const noise = channels[0].jatos;
    noise.batchSessionVersioning = false;
    const started = Date.now();
    const [results] = await Promise.all([
      withTimeout(Promise.all(channels.map(({ jatos }) => jatos.batchSession.increment('/assigned'))), 110000, 'increments'),
      (async () => {
        for (let i = 0; i < 20; i++) await noise.batchSession.set(`other${i}`, i);
      })(),
    ]);
    const values = results.map((r) => r.value).sort((x, y) => x - y);
    assert.deepEqual(values, Array.from({ length: n }, (_, i) => i + 1), 'every value once');
    const groups = { A: 0, B: 0 };
    for (const r of results) groups[r.value % 2 ? 'A' : 'B'] += 1;
    assert.deepEqual(groups, { A: n / 2, B: n / 2 }, 'balanced without a hand-written loop');
    const last = Math.max(...results.map((r) => r.version));
    await channels[0].channel.whenVersion(last);
    assert.equal(channels[0].jatos.batchSession.get('assigned'), n);
    const info = await api('GET', `/api/batches/${batchId}`);
    assert.ok(info.body.versions.batch_session >= last);
    t.diagnostic(`${n} increments in ${Date.now() - started} ms, ${results.reduce((s, r) => s + r.attempts, 0)} patches`);
  });

  test('by, callbacks, a missing counter, not a number', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const { jatos } = await env.jatos(participants[0]);
    assert.equal((await jatos.batchSession.increment('/n')).value, 1, 'a missing counter starts at 0');
    assert.equal((await jatos.batchSession.increment('/n', 5)).value, 6);
    assert.equal((await jatos.batchSession.increment('/n', -2)).value, 4);
    const viaCallback = await new Promise((resolve) => jatos.batchSession.increment('/n', resolve));
    assert.equal(/** @type {any} */ (viaCallback).value, 5);
    await jatos.batchSession.set('word', 'x');
    await assert.rejects(jatos.batchSession.increment('/word'), { code: 'not_a_number' });
    await assert.rejects(jatos.batchSession.increment('/no/parent'), { code: 'path_not_found' });
    const failed = await new Promise((resolve) => jatos.batchSession.increment('/word', 1, undefined, resolve));
    assert.equal(/** @type {any} */ (failed).code, 'not_a_number');
  });
});

describe('connection events', { skip: SKIP }, () => {
  test('onConnected, onDisconnected, isConnected, onConnectionChange, channel.connectionState', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const { jatos, channel } = await env.jatos(participants[0], { backoff: () => 300 });
    /** @type {string[]} */
    const events = [];
    jatos.onConnected(() => events.push('connected'));
    jatos.onDisconnected(() => events.push('disconnected'));
    jatos.onConnectionChange((/** @type {any} */ c) => events.push(`${c.previous}->${c.state}`));
    assert.equal(jatos.isConnected(), true);
    assert.equal(channel.connectionState, 'open');
    channel._ws.terminate();
    await waitFor(() => channel.connectionState === 'reconnecting', 'the drop is noticed');
    assert.equal(jatos.isConnected(), false);
    // Writes made while away are queued and go out after the reconnect.
    const queued = jatos.batchSession.set('while', 'away');
    await waitFor(() => jatos.isConnected(), 'reconnected');
    await queued;
    channel.close();
    assert.equal(channel.connectionState, 'closed');
    assert.deepEqual(events, [
      'open->reconnecting',
      'disconnected',
      'reconnecting->open',
      'connected',
      'open->closed',
      'disconnected',
    ]);
  });
});
