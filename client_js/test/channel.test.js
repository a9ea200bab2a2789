// The cohort.js channel against a REAL gateway: state on open, acks and
// failures, two gateways, reconnect with resume, retried command ids.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { CommandError, connect } from '../src/cohort.js';
import {
  GATEWAYS,
  SKIP,
  WebSocket,
  addParticipant,
  api,
  freshBatch,
  gateway,
  session,
  sleep,
  waitFor,
  withTimeout,
} from '../testing/gateway.js';

const TIMEOUT = { timeout: 30000 };

/**
 * Asserts that a promise rejects with a CommandError of this code.
 * @param {Promise<any>} promise
 * @param {string} code
 * @returns {Promise<CommandError>}
 */
async function rejectsWith(promise, code) {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof CommandError, `expected a CommandError, got ${err}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    assert.equal(typeof err.message, 'string');
    assert.ok(err.message.length > 0);
    return err;
  }
  assert.fail(`expected a rejection with ${code}`);
}

/**
 * The versions a channel went through, from its recorded session events.
 * @param {{sessions: any[]}} channel
 */
function versions(channel) {
  return channel.sessions.map((e) => e.version);
}

describe('cohort.js channel', { skip: SKIP }, () => {
  test('sends the full state on open', TIMEOUT, async (t) => {
    const env = session(t);
    const { batchId, participants } = await freshBatch(1);
    const channel = await env.open(participants[0]);
    const first = channel.frames[0];
    assert.equal(first.type, 'state');
    assert.equal(first.scope, 'batch_session');
    assert.equal(typeof first.pos, 'string');
    assert.ok(!first.resync, 'not a resync on a fresh open');
    assert.deepEqual(channel.data, {});
    assert.equal(channel.version, first.version);
    assert.equal(channel.pos, first.pos);
    assert.equal(channel.sessions.length, 1);
    assert.equal(channel.sessions[0].kind, 'state');
    const info = await api('GET', `/api/batches/${batchId}`);
    assert.equal(info.status, 200);
    assert.equal(info.body.versions.batch_session ?? 0, channel.version);

    // The ws_url the gateway hands out works as is (token in its query).
    const direct = env.track(connect({ url: participants[0].ws_url, WebSocket }));
    await withTimeout(direct.ready, 8000, 'state via ws_url');
    assert.equal(direct.version, channel.version);
  });

  test('a state on open reflects earlier changes', TIMEOUT, async (t) => {
    const env = session(t);
    const { batchId, participants } = await freshBatch(1);
    const writer = await env.open(participants[0]);
    await writer.patch([{ op: 'add', path: '/a', value: { b: [1, 2] } }]);
    await writer.patch([{ op: 'add', path: '/a/b/-', value: 3 }]);
    // Same gateway: the ack came after this gateway folded the change in.
    const late = await env.open(await addParticipant(batchId), { gw: 0 });
    assert.equal(late.version, writer.version);
    assert.deepEqual(late.data, { a: { b: [1, 2, 3] } });
    // Another gateway may trail by a read block; the client catches up by updates.
    const elsewhere = await env.open(await addParticipant(batchId, 1), { gw: 1 });
    await elsewhere.whenVersion(writer.version);
    assert.deepEqual(elsewhere.data, { a: { b: [1, 2, 3] } });
  });

  test('patch resolves on ack after the local copy has the change', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const channel = await env.open(participants[0]);
    const v0 = channel.version;
    const result = await channel.patch([{ op: 'add', path: '/x', value: 1 }]);
    assert.equal(result.version, v0 + 1);
    assert.match(result.id, new RegExp(`^${channel.idPrefix}-\\d+$`));
    assert.equal(channel.version, v0 + 1, 'settled only once the update was applied');
    assert.deepEqual(channel.data, { x: 1 });
    const last = channel.sessions.at(-1);
    assert.equal(last.kind, 'update');
    assert.deepEqual(last.ops, [{ op: 'add', path: '/x', value: 1 }]);
    // Several ops in one patch are one version.
    const two = await channel.patch([
      { op: 'add', path: '/y', value: 2 },
      { op: 'remove', path: '/x' },
    ]);
    assert.equal(two.version, v0 + 2);
    assert.deepEqual(channel.data, { y: 2 });
    // A versioned patch with the last version seen is applied.
    const versioned = await channel.patch([{ op: 'replace', path: '/y', value: 3 }], { versioned: true });
    assert.equal(versioned.version, v0 + 3);
    assert.deepEqual(channel.data, { y: 3 });
  });

  test('failures carry their reason and the current version; nothing changes', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const channel = await env.open(participants[0]);
    await channel.patch([{ op: 'add', path: '/n', value: 1 }]);
    const current = channel.version;

    let err = await rejectsWith(channel.patch([{ op: 'remove', path: '/missing' }]), 'path_not_found');
    assert.equal(err.version, current);
    err = await rejectsWith(channel.patch([{ op: 'add', path: '/deep/er', value: 1 }]), 'path_not_found');
    assert.equal(err.version, current);
    err = await rejectsWith(
      channel.patch([
        { op: 'test', path: '/n', value: 2 },
        { op: 'replace', path: '/n', value: 3 },
      ]),
      'test_failed',
    );
    assert.equal(err.version, current);
    err = await rejectsWith(channel.patch([{ op: 'jump', path: '/n' }]), 'bad_patch');
    assert.equal(err.version, current);
    // A patch whose second op fails changes nothing at all (the first op is undone).
    await rejectsWith(
      channel.patch([
        { op: 'add', path: '/partial', value: true },
        { op: 'remove', path: '/nope' },
      ]),
      'path_not_found',
    );
    err = await rejectsWith(channel.patch([{ op: 'add', path: '/v', value: 1 }], { version: current - 1 }), 'version_mismatch');
    assert.equal(err.version, current);
    err = await rejectsWith(channel.patch([{ op: 'add', path: '/s', value: 1 }], { scope: 'nope' }), 'bad_scope');

    await sleep(100);
    assert.equal(channel.version, current, 'no failed command made a version');
    assert.deepEqual(channel.data, { n: 1 });
  });

  test('version_mismatch reports the current version, which the client has seen by then', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(2);
    const a = await env.open(participants[0], { gw: 0 });
    const b = await env.open(participants[1], { gw: 1 });
    const start = a.version;
    // Both write in the same tick with the version they last saw: one wins.
    const results = await Promise.allSettled([
      a.patch([{ op: 'add', path: '/winner', value: 'a' }], { versioned: true }),
      b.patch([{ op: 'add', path: '/winner', value: 'b' }], { versioned: true }),
    ]);
    const ok = results.filter((r) => r.status === 'fulfilled');
    const failed = results.filter((r) => r.status === 'rejected');
    assert.equal(ok.length, 1, `exactly one versioned write wins: ${JSON.stringify(results)}`);
    assert.equal(failed.length, 1);
    const error = /** @type {PromiseRejectedResult} */ (failed[0]).reason;
    assert.equal(error.code, 'version_mismatch');
    assert.equal(error.version, start + 1);
    const loser = results[0].status === 'rejected' ? a : b;
    assert.equal(loser.version, start + 1, 'the loser already has the winning change when it hears of the failure');
    // Retrying with the new version succeeds.
    const retry = await loser.patch([{ op: 'add', path: '/second', value: true }], { versioned: true });
    assert.equal(retry.version, start + 2);
  });

  test('two clients on different gateways see every change, in version order', TIMEOUT, async (t) => {
    if (GATEWAYS.length < 2) t.diagnostic('only one gateway configured: both clients use it');
    const env = session(t);
    const { participants } = await freshBatch(2);
    const a = await env.open(participants[0], { gw: 0 });
    const b = await env.open(participants[1], { gw: 1 });
    await a.patch([{ op: 'add', path: '/log', value: [] }]);
    await b.whenVersion(a.version);
    const start = a.version;
    const n = 25;
    const writes = [];
    for (let i = 0; i < n; i++) {
      writes.push(a.patch([{ op: 'add', path: '/log/-', value: `a${i}` }]));
      writes.push(b.patch([{ op: 'add', path: '/log/-', value: `b${i}` }]));
    }
    const acks = await Promise.all(writes);
    const acked = acks.map((r) => r.version).sort((x, y) => x - y);
    assert.deepEqual(acked, Array.from({ length: 2 * n }, (_, i) => start + 1 + i), 'dense versions, one each');
    await waitFor(() => a.version === start + 2 * n && b.version === start + 2 * n, 'both caught up');
    for (const channel of [a, b]) {
      const seen = versions(channel).filter((v) => v > start);
      assert.deepEqual(seen, Array.from({ length: 2 * n }, (_, i) => start + 1 + i), 'every version, in order, once');
      assert.ok(!channel.frames.some((f) => f.type === 'state' && f.resync), 'no resync');
    }
    assert.deepEqual(a.data, b.data);
    assert.equal(a.data.log.length, 2 * n);
    assert.deepEqual([...a.data.log].sort(), [...Array.from({ length: n }, (_, i) => [`a${i}`, `b${i}`]).flat()].sort());
    // Each client's own writes were applied in the order it sent them.
    for (const who of ['a', 'b']) {
      const mine = a.data.log.filter((/** @type {string} */ s) => s[0] === who);
      assert.deepEqual(mine, Array.from({ length: n }, (_, i) => `${who}${i}`));
    }
  });

  test('reconnects and resumes with since=<pos>: catches up by updates, not a resync', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(2);
    // A fixed reconnect delay so the other client can write meanwhile.
    const a = await env.open(participants[0], { gw: 0, backoff: () => 1000 });
    const b = await env.open(participants[1], { gw: 1 });
    await a.patch([{ op: 'add', path: '/count', value: 0 }]);
    await b.whenVersion(a.version);
    const before = a.version;
    const posBefore = a.pos;
    const closes = [];
    a.on('close', (/** @type {any} */ e) => closes.push(e));
    const resyncs = [];
    a.on('resync', (/** @type {any} */ e) => resyncs.push(e));

    const framesBefore = a.frames.length;
    a._ws.terminate(); // the network drops
    await waitFor(() => closes.length === 1, 'the close event');
    assert.equal(closes[0].willReconnect, true);
    assert.equal(a.connected, false);
    for (let i = 1; i <= 3; i++) await b.patch([{ op: 'replace', path: '/count', value: i }]);
    assert.equal(a.version, before, 'A missed them while away');

    await waitFor(() => a.connects === 2, 'A reconnected');
    await waitFor(() => a.version === before + 3, 'A caught up');
    const after = a.frames.slice(framesBefore).filter((f) => f.type !== 'pong'); // a ping goes out on every open
    assert.ok(after.length > 0 && after.every((f) => f.type === 'update'), `only updates after the resume: ${JSON.stringify(after)}`);
    assert.equal(resyncs.length, 0);
    assert.deepEqual(a.data, { count: 3 });
    assert.deepEqual(a.data, b.data);
    assert.notEqual(a.pos, posBefore);
    assert.deepEqual(versions(a).filter((v) => v > before), [before + 1, before + 2, before + 3]);

    // And it keeps working on the new socket.
    const r = await a.patch([{ op: 'replace', path: '/count', value: 4 }]);
    assert.equal(r.version, before + 4);
    await b.whenVersion(before + 4);
    assert.deepEqual(b.data, { count: 4 });
  });

  test('resumes on another gateway: the position means the same everywhere', TIMEOUT, async (t) => {
    if (GATEWAYS.length < 2) t.diagnostic('only one gateway configured: this resumes on the same one');
    const env = session(t);
    const { participants } = await freshBatch(2);
    // Two URLs: each reconnect moves on to the next gateway.
    const a = await env.open(participants[0], { url: [gateway(0), gateway(1)], backoff: () => 800 });
    const b = await env.open(participants[1], { gw: 0 });
    await a.patch([{ op: 'add', path: '/log', value: [] }]);
    await b.whenVersion(a.version);
    const before = a.version;
    const framesBefore = a.frames.length;
    a._ws.terminate();
    await waitFor(() => !a.connected, 'A disconnected');
    for (const word of ['x', 'y']) await b.patch([{ op: 'add', path: '/log/-', value: word }]);
    await waitFor(() => a.connects === 2, 'A reconnected');
    assert.equal(a.url, gateway(1));
    await waitFor(() => a.version === before + 2, 'A caught up on the other gateway');
    const after = a.frames.slice(framesBefore).filter((f) => f.type !== 'pong'); // a ping goes out on every open
    assert.ok(after.every((f) => f.type === 'update'), `only updates: ${JSON.stringify(after)}`);
    assert.deepEqual(a.data, { log: ['x', 'y'] });
  });

  test('a resume with nothing new sends nothing; a stale position gets a resync', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const a = await env.open(participants[0], { backoff: () => 200 });
    await a.patch([{ op: 'add', path: '/k', value: 1 }]);
    const framesBefore = a.frames.length;
    a._ws.terminate();
    await waitFor(() => a.connects === 2, 'reconnected');
    await sleep(300);
    assert.deepEqual(
      a.frames.slice(framesBefore).filter((f) => f.type !== 'pong'),
      [],
      'up to date: no state, no updates',
    );

    // A channel that claims a position with no state of its own asks for a resync.
    const resyncs = [];
    const b = env.track(
      connect({ url: gateway(0), batch: participants[0].batch_id, token: participants[0].token, WebSocket, since: '1-0' }),
    );
    b.on('resync', (/** @type {any} */ e) => resyncs.push(e));
    await withTimeout(b.ready, 8000, 'state for a stale position');
    assert.equal(resyncs.length, 1);
    assert.deepEqual(b.data, { k: 1 });
  });

  test('a retried command id is applied once and gets the first answer', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const a = await env.open(participants[0]);
    await a.patch([{ op: 'add', path: '/log', value: [] }]);
    const id = `retry-${a.idPrefix}`;
    const first = await a.patch([{ op: 'add', path: '/log/-', value: 'once' }], { id });

    // The same id again, from a new connection of the same participant on another gateway.
    const again = await env.open(participants[0], { gw: 1 });
    const second = await again.patch([{ op: 'add', path: '/log/-', value: 'once' }], { id });
    assert.equal(second.version, first.version, 'the duplicate gets the original version');
    // A duplicate of a failed command fails the same way.
    const badId = `${id}-bad`;
    const f1 = await rejectsWith(a.patch([{ op: 'remove', path: '/nope' }], { id: badId }), 'path_not_found');
    await a.patch([{ op: 'add', path: '/nope', value: 1 }]); // now it would succeed...
    const f2 = await rejectsWith(again.patch([{ op: 'remove', path: '/nope' }], { id: badId }), 'path_not_found');
    assert.equal(f2.version, f1.version, '...but the retry gets the first outcome');
    await sleep(200);
    assert.deepEqual(a.data.log, ['once']);
    assert.deepEqual(again.data, a.data);
  });

  test('commands unacknowledged at a disconnect are re-sent with the same id, applied once', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(2);
    const a = await env.open(participants[0], { backoff: () => 300 });
    const b = await env.open(participants[1], { gw: 1 });
    await a.patch([{ op: 'add', path: '/log', value: [] }]);
    const sent = [];
    a.on('message', () => {});
    const origSend = a._ws.send.bind(a._ws);
    const ws1 = a._ws;
    ws1.send = (/** @type {string} */ text) => {
      sent.push(JSON.parse(text));
      origSend(text);
    };
    // Sent, then the socket dies before any answer can arrive.
    const pending = [1, 2, 3].map((i) => a.patch([{ op: 'add', path: '/log/-', value: `x${i}` }]));
    ws1.terminate();
    // Queued while disconnected: sent after the reconnect.
    pending.push(a.patch([{ op: 'add', path: '/log/-', value: 'x4' }]));
    assert.equal(a.pendingCount, 4);
    const results = await withTimeout(Promise.all(pending), 10000, 'answers after the reconnect');
    assert.equal(a.connects, 2);
    assert.deepEqual(
      sent.map((f) => f.id),
      results.slice(0, 3).map((r) => r.id),
      'the re-sent ids are the ones first sent',
    );
    await b.whenVersion(Math.max(...results.map((r) => r.version)));
    await sleep(200);
    assert.deepEqual([...b.data.log].sort(), ['x1', 'x2', 'x3', 'x4'], 'each applied exactly once');
    assert.deepEqual(a.data, b.data);
  });

  test('versioned commands issued before the first state use the version it brings', TIMEOUT, async (t) => {
    const env = session(t);
    const { batchId, participants } = await freshBatch(1);
    const a = await env.open(participants[0]);
    const { version: before } = await a.patch([{ op: 'add', path: '/z', value: 0 }]);
    const p = await addParticipant(batchId);
    // Same gateway as the writer, so the first state already has version `before`.
    const b = env.track(connect({ url: gateway(0), batch: batchId, token: p.token, WebSocket }));
    const early = b.patch([{ op: 'replace', path: '/z', value: 1 }], { versioned: true });
    const r = await withTimeout(early, 8000, 'the early versioned patch');
    assert.equal(r.version, before + 1);
    assert.deepEqual(b.data, { z: 1 });
  });

  test('a refused token closes the channel for good with a reason', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const other = await freshBatch(1);
    const errors = [];
    const closes = [];
    const channel = env.track(
      connect({ url: gateway(0), batch: participants[0].batch_id, token: other.participants[0].token, WebSocket }),
    );
    channel.on('error', (/** @type {any} */ e) => errors.push(e));
    channel.on('close', (/** @type {any} */ e) => closes.push(e));
    await assert.rejects(channel.ready, { code: 'forbidden' });
    assert.equal(channel.closed, true);
    assert.ok(errors.some((e) => e.code === 'forbidden'));
    assert.equal(closes.at(-1).code, 4403);
    assert.equal(closes.at(-1).willReconnect, false);
    await rejectsWith(channel.patch([{ op: 'add', path: '/a', value: 1 }]), 'closed');

    const missing = env.track(
      connect({ url: gateway(0), batch: 'no-such-batch-' + Date.now(), token: participants[0].token, WebSocket }),
    );
    missing.on('error', () => {});
    await assert.rejects(missing.ready, (/** @type {any} */ e) => e.code === 'forbidden' || e.code === 'batch_not_found');
  });

  test('a closed batch closes the channel for good (4410 batch_closed)', TIMEOUT, async (t) => {
    const env = session(t);
    const { batchId, participants } = await freshBatch(1);
    const a = await env.open(participants[0]);
    await a.patch([{ op: 'add', path: '/before', value: 1 }]);
    const errors = [];
    const closes = [];
    a.on('error', (/** @type {any} */ e) => errors.push(e));
    a.on('close', (/** @type {any} */ e) => closes.push(e));
    const closed = await api('POST', `/api/batches/${batchId}/close`, { force: true });
    assert.equal(closed.status, 200, JSON.stringify(closed.body));
    await waitFor(() => a.closed, 'the channel to close');
    assert.equal(closes.at(-1).code, 4410);
    assert.equal(closes.at(-1).willReconnect, false);
    assert.ok(errors.some((e) => e.code === 'batch_closed'));
    await rejectsWith(a.patch([{ op: 'add', path: '/after', value: 1 }]), 'closed');
    // A new channel with the same token is refused for good too.
    const again = env.track(
      connect({ url: gateway(0), batch: batchId, token: participants[0].token, WebSocket }),
    );
    again.on('error', () => {});
    await assert.rejects(again.ready, (/** @type {any} */ e) =>
      e.code === 'batch_closed' || e.code === 'batch_not_found');
  });

  test('close() stops the channel and rejects what is pending', TIMEOUT, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(1);
    const a = await env.open(participants[0]);
    const closes = [];
    a.on('close', (/** @type {any} */ e) => closes.push(e));
    const pending = a.patch([{ op: 'add', path: '/q', value: 1 }]);
    a.close();
    await rejectsWith(pending, 'closed');
    assert.equal(closes.length, 1);
    assert.equal(closes[0].willReconnect, false);
    await sleep(300);
    assert.equal(a.connects, 1, 'no reconnect after close()');
  });
});
