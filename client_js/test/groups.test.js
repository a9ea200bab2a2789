// The jatos.js group API (groups.js) against a REAL stack: joining, the
// group fields and checks, member events, the group session, group messages,
// leaving, reassigning, fixing, group-by-arrival, and membership across
// reconnects and page loads. Every call in promise and in callback form, and
// failures with their reasons.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { createJatos } from '../src/jatos.js';
import { SKIP, freshBatch, session, sleep, waitFor, withTimeout } from '../testing/gateway.js';

const TIMEOUT = { timeout: 30000 };

/**
 * Callbacks for joinGroup that record every call as [name, ...args].
 * @param {any[]} log
 */
function recorder(log) {
  const names = ['onOpen', 'onClose', 'onError', 'onMessage', 'onMemberJoin', 'onMemberOpen', 'onMemberLeave', 'onMemberClose', 'onGroupSession', 'onUpdate', 'onWaiting'];
  return Object.fromEntries(names.map((name) => [name, (/** @type {any[]} */ ...args) => log.push([name, ...args])]));
}

/**
 * Calls a jatos function in callback form and says which callback ran and
 * how the returned promise settled.
 * @param {(onSuccess: Function, onFail: Function) => Promise<any>} call
 */
async function viaCallbacks(call) {
  /** @type {any[]} */
  const calls = [];
  const promise = call(
    (/** @type {any} */ r) => calls.push(['success', r]),
    (/** @type {any} */ e) => calls.push(['fail', e]),
  );
  let settled;
  try {
    settled = ['resolved', await promise];
  } catch (err) {
    settled = ['rejected', err];
  }
  assert.equal(calls.length, 1, `exactly one callback: ${JSON.stringify(calls)}`);
  return { callback: calls[0][0], arg: calls[0][1], settled: settled[0], value: settled[1] };
}

/** @param {any[]} log @param {string} name */
const named = (log, name) => log.filter((e) => e[0] === name).map((e) => e.slice(1));

/**
 * `n` participants of a fresh batch with these group limits, each a jatos
 * object on its own channel (alternating gateways).
 * @param {any} t
 * @param {number} n
 * @param {any} groups
 */
async function people(t, n, groups) {
  const env = session(t);
  const { batchId, participants } = await freshBatch(n, { groups });
  const out = [];
  for (let i = 0; i < n; i++) {
    const { jatos, channel } = await env.jatos(participants[i], { gw: i });
    out.push({ jatos, channel, run: participants[i].run_id, participant: participants[i] });
  }
  return { env, batchId, people: out };
}

describe('jatos groups', { skip: SKIP }, () => {
  test('joinGroup (promise and callbacks): members, fields, checks, member events', TIMEOUT, async (t) => {
    const { people: [a, b, c] } = await people(t, 3, { max_active_members: 2 });
    assert.equal(a.jatos.hasJoinedGroup(), false);
    assert.equal(a.jatos.groupResultId, null);
    assert.deepEqual(a.jatos.groupMembers, []);
    assert.equal(a.jatos.isMaxActiveMemberReached(), false);

    /** @type {any[]} */
    const aLog = [];
    const infoA = await a.jatos.joinGroup(recorder(aLog));
    assert.equal(typeof infoA.groupResultId, 'string');
    assert.equal(infoA.memberId, a.run, 'the member id is the run id');
    assert.deepEqual(infoA.members, [a.run]);
    assert.deepEqual(infoA.channels, [a.run]);
    assert.equal(infoA.state, 'STARTED');
    assert.equal(infoA.maxActiveMembers, 2, 'the limit comes with the group frame');
    assert.deepEqual(named(aLog, 'onOpen'), [[a.run]]);
    assert.equal(a.jatos.hasJoinedGroup(), true);
    assert.equal(a.jatos.hasOpenGroupChannel(), true);
    assert.equal(a.jatos.groupResultId, infoA.groupResultId);
    assert.equal(a.jatos.groupMemberId, a.run);
    assert.deepEqual(a.jatos.groupMembers, [a.run]);
    assert.deepEqual(a.jatos.groupChannels, [a.run]);
    assert.equal(a.jatos.getGroupState(), 'STARTED');
    assert.equal(a.jatos.isGroupFixed(), false);
    assert.equal(a.jatos.isMaxActiveMemberReached(), false);
    assert.equal(a.jatos.isMaxActiveMemberOpen(), false);
    assert.equal(a.jatos.isGroupOpen(), true);

    // Callback form: only the callbacks object (as jatos.js); onOpen says it worked.
    /** @type {any[]} */
    const bLog = [];
    const joinedB = b.jatos.joinGroup(recorder(bLog));
    assert.ok(joinedB instanceof Promise);
    const infoB = await joinedB;
    assert.equal(infoB.groupResultId, infoA.groupResultId, 'the fullest open group takes b');
    assert.deepEqual(named(bLog, 'onOpen'), [[b.run]]);
    assert.deepEqual(named(bLog, 'onMemberJoin'), [], 'no member events for members already there (as OPENED)');
    assert.deepEqual([...infoB.members].sort(), [a.run, b.run].sort());

    // a hears of b: join, open, and onUpdate after each.
    await waitFor(() => named(aLog, 'onMemberOpen').length === 1, 'a sees b open');
    assert.deepEqual(named(aLog, 'onMemberJoin'), [[b.run]]);
    assert.deepEqual(named(aLog, 'onMemberOpen'), [[b.run]]);
    assert.ok(named(aLog, 'onUpdate').length >= 2);
    const order = aLog.map((e) => e[0]).filter((n) => n !== 'onUpdate');
    assert.deepEqual(order, ['onOpen', 'onMemberJoin', 'onMemberOpen']);
    for (const p of [a, b]) {
      assert.deepEqual([...p.jatos.groupMembers].sort(), [a.run, b.run].sort());
      assert.deepEqual([...p.jatos.groupChannels].sort(), [a.run, b.run].sort());
      assert.equal(p.jatos.isMaxActiveMemberReached(), true);
      assert.equal(p.jatos.isMaxActiveMemberOpen(), true);
      assert.equal(p.jatos.isGroupOpen(), true);
    }

    // The group is full: c gets a group of its own.
    const infoC = await c.jatos.joinGroup();
    assert.notEqual(infoC.groupResultId, infoA.groupResultId);
    assert.deepEqual(c.jatos.groupMembers, [c.run]);
    await sleep(150);
    assert.deepEqual(named(aLog, 'onMemberJoin'), [[b.run]], 'a hears nothing of another group');

    // Joining again while a member resolves at once (a later component does this).
    /** @type {any[]} */
    const again = [];
    const infoAgain = await a.jatos.joinGroup(recorder(again));
    assert.equal(infoAgain.groupResultId, infoA.groupResultId);
    assert.deepEqual(named(again, 'onOpen'), [[a.run]]);
  });

  test('groupSession: reads, every write (promise and callbacks), onGroupSession, versioning', TIMEOUT, async (t) => {
    const { people: [a, b, c] } = await people(t, 3, { max_active_members: 2 });
    /** @type {any[]} */
    const aLog = [];
    /** @type {any[]} */
    const bLog = [];
    await a.jatos.joinGroup(recorder(aLog));
    await b.jatos.joinGroup(recorder(bLog));
    await c.jatos.joinGroup();
    const gs = a.jatos.groupSession;
    assert.deepEqual(gs.getAll(), {});
    assert.equal(a.jatos.groupSessionVersioning, true, 'versioned by default, as in JATOS');

    const r = await gs.set('round', 1);
    assert.equal(r.version, 1, 'the group session has its own versions');
    assert.equal(gs.get('round'), 1);
    await waitFor(() => b.jatos.groupSession.get('round') === 1, 'b sees the write');
    assert.deepEqual(named(bLog, 'onGroupSession'), [['/round', 'add']]);
    assert.deepEqual(named(aLog, 'onGroupSession'), [['/round', 'add']], 'own changes too');
    assert.deepEqual(c.jatos.groupSession.getAll(), {}, 'another group has its own session');

    /** @type {[string, (s: Function, f: Function) => Promise<any>, any][]} */
    const writes = [
      ['setAll', (s, f) => gs.setAll({ round: 1, moves: [] }, s, f), { round: 1, moves: [] }],
      ['add', (s, f) => gs.add('/moves/-', 'x', s, f), { round: 1, moves: ['x'] }],
      ['replace', (s, f) => gs.replace('/round', 2, s, f), { round: 2, moves: ['x'] }],
      ['copy', (s, f) => gs.copy('/round', '/last', s, f), { round: 2, moves: ['x'], last: 2 }],
      ['move', (s, f) => gs.move('/last', '/prev', s, f), { round: 2, moves: ['x'], prev: 2 }],
      ['remove', (s, f) => gs.remove('/prev', s, f), { round: 2, moves: ['x'] }],
      ['clear', (s, f) => gs.clear(s, f), {}],
      ['set', (s, f) => gs.set('done', true, s, f), { done: true }],
    ];
    for (const [name, call, expected] of writes) {
      const outcome = await viaCallbacks(call);
      assert.equal(outcome.callback, 'success', `${name}: onSuccess`);
      assert.equal(outcome.settled, 'resolved', `${name}: the promise resolves`);
      assert.deepEqual(gs.getAll(), expected, `${name}: applied locally`);
    }
    assert.equal(gs.find('/done'), true);
    assert.equal(gs.defined('/done'), true);
    assert.equal(gs.test('/done', true), true);
    await waitFor(() => b.jatos.groupSession.test('/done', true), 'b caught up');

    // Failures carry the reason; onFail, else the group's onError.
    const failed = await viaCallbacks((s, f) => gs.remove('/missing', s, f));
    assert.equal(failed.callback, 'fail');
    assert.equal(failed.arg.code, 'path_not_found');
    await assert.rejects(gs.replace('/nope', 1), { code: 'path_not_found' });
    await waitFor(() => named(aLog, 'onError').length === 1, "the group's onError when there is no onFail");
    assert.equal(named(aLog, 'onError')[0][0].code, 'path_not_found');

    // Versioning: one write in flight, as jatos.js; concurrent writers: one wins.
    const first = gs.set('k', 1);
    await assert.rejects(gs.set('k', 2), { code: 'busy' });
    await first;
    await waitFor(() => b.jatos.groupSession.get('k') === 1, 'b has k');
    const results = await Promise.allSettled([gs.set('winner', 'a'), b.jatos.groupSession.set('winner', 'b')]);
    const rejected = results.filter((x) => x.status === 'rejected');
    assert.equal(rejected.length, 1, JSON.stringify(results));
    assert.equal(/** @type {any} */ (rejected[0]).reason.code, 'version_mismatch');

    // update(fn) on the group session: recomputed on conflict.
    const [ua, ub] = await Promise.all([
      gs.update((d) => ({ op: 'add', path: '/log', value: [...(d.log || []), 'a'] })),
      b.jatos.groupSession.update((d) => ({ op: 'add', path: '/log', value: [...(d.log || []), 'b'] })),
    ]);
    assert.ok(ua.attempts + ub.attempts >= 3, 'one of them was recomputed');
    for (const p of [a, b]) await waitFor(() => (p.jatos.groupSession.get('log') || []).length === 2, 'both entries');
    assert.deepEqual([...gs.get('log')].sort(), ['a', 'b']);

    // Outside a group: nothing to write to.
    const { people: [loner] } = await people(t, 1, { max_active_members: 2 });
    await assert.rejects(loner.jatos.groupSession.set('x', 1), { code: 'not_in_group' });
    const outside = await viaCallbacks((s, f) => loner.jatos.groupSession.add('/x', 1, s, f));
    assert.equal(outside.callback, 'fail');
    assert.equal(outside.arg.code, 'not_in_group');
    assert.deepEqual(loner.jatos.groupSession.getAll(), {});
  });

  test('sendGroupMsg and sendGroupMsgTo: to the others, to one, failures', TIMEOUT, async (t) => {
    const { people: [a, b, c] } = await people(t, 3, { max_active_members: 3 });
    /** @type {any[][]} */
    const logs = [[], [], []];
    await a.jatos.joinGroup(recorder(logs[0]));
    await b.jatos.joinGroup(recorder(logs[1]));
    await c.jatos.joinGroup(recorder(logs[2]));
    assert.equal(a.jatos.groupResultId, c.jatos.groupResultId);

    const sent = await a.jatos.sendGroupMsg({ text: 'hi all' });
    assert.equal(typeof sent.id, 'string');
    await waitFor(() => named(logs[1], 'onMessage').length === 1 && named(logs[2], 'onMessage').length === 1, 'b and c get it');
    const [msg, sender, details] = named(logs[1], 'onMessage')[0];
    assert.deepEqual(msg, { text: 'hi all' });
    assert.equal(sender, a.run, 'Cohort passes the sender');
    assert.equal(details.to, null);

    await a.jatos.sendGroupMsgTo(b.run, 'just you');
    await waitFor(() => named(logs[1], 'onMessage').length === 2, 'b gets the direct one');
    assert.equal(named(logs[1], 'onMessage')[1][0], 'just you');
    assert.equal(named(logs[1], 'onMessage')[1][2].to, b.run);
    await sleep(200);
    assert.equal(named(logs[2], 'onMessage').length, 1, 'c does not get it');
    assert.equal(named(logs[0], 'onMessage').length, 0, 'the sender gets nothing');

    // A recipient who is not an active member: rejected, and the group's onError hears it.
    await assert.rejects(a.jatos.sendGroupMsgTo('not-a-member', 'hello?'), { code: 'member_not_found' });
    await waitFor(() => named(logs[0], 'onError').length === 1, 'onError');
    assert.equal(named(logs[0], 'onError')[0][0].code, 'member_not_found');
    // Fire and forget (as jatos.js): an ignored failure is not an unhandled rejection.
    a.jatos.sendGroupMsgTo('not-a-member', 'ignored');
    const { people: [loner] } = await people(t, 1, {});
    await assert.rejects(loner.jatos.sendGroupMsg('anyone?'), { code: 'not_in_group' });
    await sleep(200);
  });

  test('reassignGroup, setGroupFixed, leaveGroup (promise and callbacks) and their failures', TIMEOUT, async (t) => {
    const { people: [a, b, c] } = await people(t, 3, { max_active_members: 2 });
    /** @type {any[][]} */
    const logs = [[], [], []];
    const g1 = (await a.jatos.joinGroup(recorder(logs[0]))).groupResultId;
    await b.jatos.joinGroup(recorder(logs[1]));
    const g2 = (await c.jatos.joinGroup(recorder(logs[2]))).groupResultId;
    assert.notEqual(g1, g2);

    // a moves to c's group (the only other one with room).
    const moved = await a.jatos.reassignGroup();
    assert.equal(moved.groupResultId, g2);
    assert.equal(a.jatos.groupResultId, g2);
    assert.deepEqual([...a.jatos.groupMembers].sort(), [a.run, c.run].sort());
    assert.deepEqual(named(logs[0], 'onClose'), [], 'a reassignment is not a close');
    await waitFor(() => named(logs[1], 'onMemberLeave').length === 1, 'b sees a leave');
    assert.deepEqual(named(logs[1], 'onMemberLeave'), [[a.run]]);
    assert.deepEqual(named(logs[1], 'onMemberClose'), [[a.run]]);
    await waitFor(() => named(logs[2], 'onMemberJoin').length === 1, 'c sees a join');
    assert.deepEqual(named(logs[2], 'onMemberJoin'), [[a.run]]);
    assert.deepEqual(b.jatos.groupMembers, [b.run]);

    // b: no other group has room (c's is full): no_group, nothing changes.
    const noGroup = await viaCallbacks((s, f) => b.jatos.reassignGroup(s, f));
    assert.equal(noGroup.callback, 'fail');
    assert.equal(noGroup.arg.code, 'no_group');
    assert.equal(b.jatos.groupResultId, g1);

    // Fixing: everybody is told; fixing a fixed group succeeds at once.
    const fixed = await viaCallbacks((s, f) => c.jatos.setGroupFixed(s, f));
    assert.equal(fixed.callback, 'success');
    assert.equal(c.jatos.getGroupState(), 'FIXED');
    await waitFor(() => a.jatos.isGroupFixed(), 'a sees the group fixed');
    assert.equal(a.jatos.groupState, 'FIXED');
    await a.jatos.setGroupFixed();
    await c.jatos.setGroupFixed();
    // ... and the group still works afterwards.
    await a.jatos.sendGroupMsg('still here');
    await waitFor(() => named(logs[2], 'onMessage').length === 1, 'messages after fixing');

    // Leaving: onClose, the fields are cleared, the group session is out of reach.
    const left = await viaCallbacks((s, f) => b.jatos.leaveGroup(s, f));
    assert.equal(left.callback, 'success');
    assert.deepEqual(named(logs[1], 'onClose'), [[]], 'onClose once');
    assert.equal(b.jatos.hasJoinedGroup(), false);
    assert.equal(b.jatos.groupResultId, null);
    assert.deepEqual(b.jatos.groupMembers, []);
    assert.deepEqual(b.jatos.groupChannels, []);
    assert.equal(b.jatos.getGroupState(), null);
    await assert.rejects(b.jatos.groupSession.set('x', 1), { code: 'not_in_group' });

    // Failures outside a group, with reasons.
    const again = await viaCallbacks((s, f) => b.jatos.leaveGroup(s, f));
    assert.equal(again.arg.code, 'not_in_group');
    await assert.rejects(b.jatos.reassignGroup(), { code: 'not_in_group' });
    await assert.rejects(b.jatos.setGroupFixed(), { code: 'not_in_group' });
    const notFixed = await viaCallbacks((s, f) => b.jatos.setGroupFixed(s, f));
    assert.equal(notFixed.arg.code, 'not_in_group');

    // Nobody rejoins a group it left: b gets a new one.
    const g3 = (await b.jatos.joinGroup()).groupResultId;
    assert.ok(g3 !== g1 && g3 !== g2, `a new group, not ${g1} again (got ${g3})`);
  });

  test('joinGroup failures: no channel, one join at a time, onError', TIMEOUT, async (t) => {
    const bare = createJatos(null);
    /** @type {any[]} */
    const log = [];
    await assert.rejects(bare.joinGroup(recorder(log)), { code: 'no_channel' });
    assert.equal(named(log, 'onError')[0][0].code, 'no_channel');
    await assert.rejects(bare.leaveGroup(), { code: 'no_channel' });
    await assert.rejects(bare.sendGroupMsg('x'), { code: 'no_channel' });
    assert.equal(bare.hasJoinedGroup(), false);
    assert.equal(bare.isGroupOpen(), false);

    const { people: [a] } = await people(t, 1, { max_active_members: 2 });
    const first = a.jatos.joinGroup();
    /** @type {any[]} */
    const second = [];
    await assert.rejects(a.jatos.joinGroup(recorder(second)), { code: 'busy' });
    assert.equal(named(second, 'onError')[0][0].code, 'busy');
    await first;
    assert.equal(a.jatos.hasJoinedGroup(), true);
  });

  test('group by arrival: wait in the lobby, the group forms, or time runs out', TIMEOUT, async (t) => {
    const { people: [a, b, c] } = await people(t, 3, { form_by_arrival: 2, arrival_timeout_s: 1 });
    /** @type {any[][]} */
    const logs = [[], [], []];
    let resolvedA = null;
    const joinA = a.jatos.joinGroup(recorder(logs[0])).then((/** @type {any} */ info) => (resolvedA = info));
    await waitFor(() => named(logs[0], 'onWaiting').length === 1, 'a waits');
    assert.equal(a.jatos.isWaitingForGroup(), true);
    assert.equal(a.jatos.hasJoinedGroup(), false);
    await sleep(100);
    assert.equal(resolvedA, null, 'still waiting');
    const infoB = await b.jatos.joinGroup(recorder(logs[1]));
    const infoA = await joinA;
    assert.equal(infoA.groupResultId, infoB.groupResultId);
    assert.deepEqual([...infoA.members].sort(), [a.run, b.run].sort());
    assert.deepEqual(named(logs[0], 'onOpen'), [[a.run]]);
    assert.equal(a.jatos.isWaitingForGroup(), false);

    // Alone in the lobby: the wait times out (the worker checks every few seconds).
    const started = Date.now();
    await assert.rejects(withTimeout(c.jatos.joinGroup(recorder(logs[2])), 20000, 'lobby timeout'), { code: 'timeout' });
    assert.ok(Date.now() - started >= 900);
    assert.deepEqual(named(logs[2], 'onWaiting'), [[]]);
    assert.equal(named(logs[2], 'onError')[0][0].code, 'timeout');
    assert.equal(c.jatos.hasJoinedGroup(), false);
  });

  test('leaving the lobby rejects the wait with left', TIMEOUT, async (t) => {
    const { people: [a] } = await people(t, 1, { form_by_arrival: 3, arrival_timeout_s: 60 });
    const join = a.jatos.joinGroup();
    join.catch(() => {});
    await waitFor(() => a.jatos.isWaitingForGroup(), 'waiting');
    await a.jatos.leaveGroup();
    await assert.rejects(join, { code: 'left' });
    assert.equal(a.jatos.isWaitingForGroup(), false);
  });

  test('membership survives a reconnect (missed messages and session changes arrive) and a new page', TIMEOUT, async (t) => {
    const { env, people: [a, b] } = await people(t, 2, { max_active_members: 2 });
    /** @type {any[][]} */
    const logs = [[], []];
    const group = (await a.jatos.joinGroup(recorder(logs[0]))).groupResultId;
    await b.jatos.joinGroup(recorder(logs[1]));
    await a.jatos.groupSession.set('n', 0);
    await waitFor(() => b.jatos.groupSession.get('n') === 0, 'b has n');

    // b's network drops; a writes and talks meanwhile.
    const syncs = [];
    b.channel.on('synced', (/** @type {any} */ e) => syncs.push(e));
    b.channel._ws.terminate();
    await waitFor(() => !b.channel.connected, 'b is down');
    await a.jatos.groupSession.replace('/n', 1);
    await a.jatos.sendGroupMsg('while you were away');
    await waitFor(() => b.channel.connected, 'b reconnected', 10000);
    await waitFor(() => syncs.length === 1, 'b synced');
    await waitFor(() => named(logs[1], 'onMessage').length === 1, 'b gets the missed message');
    assert.equal(b.jatos.groupSession.get('n'), 1);
    assert.deepEqual(named(logs[1], 'onGroupSession').at(-1), ['/n', 'replace']);
    assert.equal(b.jatos.groupResultId, group);
    assert.deepEqual(named(logs[1], 'onClose'), [], 'still a member: no close');

    // A jatos made for a channel that was told about the group before: it knows at once.
    const early = await env.open(b.participant, { gw: 1 });
    await waitFor(
      () => early.group !== null && early.scope(`group_session:${group}`).version !== null,
      'the channel has the group frame and the group session',
    );
    const late = createJatos(early);
    assert.equal(late.hasJoinedGroup(), true);
    assert.equal(late.groupResultId, group);
    early.close();

    // A new page of b (a new channel, a new jatos): already a member.
    const page2 = await env.jatos(b.participant, { gw: 0 });
    await waitFor(() => page2.jatos.hasJoinedGroup(), 'the group is there on load');
    assert.equal(page2.jatos.groupResultId, group);
    assert.equal(page2.jatos.groupSession.get('n'), 1);
    const info = await page2.jatos.joinGroup();
    assert.equal(info.groupResultId, group);

    // Left on another page while this one was away: told when it comes back.
    b.channel._ws.terminate();
    await waitFor(() => !b.channel.connected, 'b is down again');
    await page2.jatos.leaveGroup();
    await waitFor(() => syncs.length === 2, 'b synced again', 10000);
    await waitFor(() => named(logs[1], 'onClose').length === 1, 'b learns it is out');
    assert.equal(b.jatos.hasJoinedGroup(), false);
  });

  test('presence: onMemberClose when a member has been gone a while, onMemberOpen when back', { timeout: 60000 }, async (t) => {
    const { env, people: [a, b] } = await people(t, 2, { max_active_members: 2 });
    /** @type {any[]} */
    const log = [];
    await a.jatos.joinGroup(recorder(log));
    await b.jatos.joinGroup();
    await waitFor(() => named(log, 'onMemberOpen').length === 1, 'a sees b');
    b.channel.close();
    await waitFor(() => named(log, 'onMemberClose').length === 1, 'b closed (after the grace period)', 40000);
    assert.deepEqual(named(log, 'onMemberClose'), [[b.run]]);
    assert.deepEqual(a.jatos.groupChannels, [a.run]);
    assert.deepEqual([...a.jatos.groupMembers].sort(), [a.run, b.run].sort(), 'still a member');
    assert.equal(a.jatos.isGroupOpen(), false);
    assert.equal(a.jatos.isMaxActiveMemberReached(), true);
    assert.equal(a.jatos.isMaxActiveMemberOpen(), false);
    await env.jatos(b.participant, { gw: 1 });
    await waitFor(() => named(log, 'onMemberOpen').length === 2, 'b is back', 20000);
    assert.equal(a.jatos.isGroupOpen(), true);
  });
});
