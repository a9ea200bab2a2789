// @ts-check
/**
 * Groups in jatos.js: `jatos.joinGroup(callbacks)`, `leaveGroup`,
 * `reassignGroup`, `setGroupFixed`, `sendGroupMsg`, `sendGroupMsgTo`, the
 * group fields (`groupMemberId`, `groupResultId`, `groupMembers`,
 * `groupChannels`), the checks (`hasJoinedGroup`, `hasOpenGroupChannel`,
 * `isMaxActiveMemberReached`, `isMaxActiveMemberOpen`, `isGroupOpen`,
 * `getGroupState`, `isGroupFixed`) and `jatos.groupSession`.
 *
 * JATOS opens a second WebSocket per page for the group; Cohort has one
 * channel per page, and a participant's channel listens to its group as long
 * as it is a member (docs/protocol.md): the server sends `group` frames
 * (membership), the group session as the scope `group_session:<G>` and group
 * messages as `group_msg` frames. So membership survives page loads and
 * reconnects: on a later component the group is there as soon as the channel
 * is open, and `joinGroup` resolves at once.
 * @module groups
 */

import { CommandError } from './cohort.js';
import { createSessionApi, withCallbacks } from './session-api.js';

/**
 * @typedef {import('./cohort.js').BatchChannel} BatchChannel
 * @typedef {import('./cohort.js').SessionEvent} SessionEvent
 *
 * @typedef {Object} GroupCallbacks (all optional, as in jatos.js)
 * @property {(memberId?: string) => void} [onOpen] this participant is in a group (joined, or
 *   already a member when the page loaded)
 * @property {() => void} [onClose] this participant is out of the group (left, or the page's
 *   channel closed for good)
 * @property {(error: any) => void} [onError] a group call failed and had no onFail of its own
 * @property {(msg: any, sender: string, info: {to: string|null, group: string, pos: string}) => void} [onMessage]
 *   a message from another member (Cohort adds the sender's member id and details)
 * @property {(memberId: string) => void} [onMemberJoin] another member joined
 * @property {(memberId: string) => void} [onMemberOpen] another member's channel opened (also right
 *   after it joined)
 * @property {(memberId: string) => void} [onMemberLeave] another member left
 * @property {(memberId: string) => void} [onMemberClose] another member's channel closed (the server
 *   says so after a grace period)
 * @property {(path: string, op: string) => void} [onGroupSession] the group session changed: once per
 *   operation, own changes included; `('', 'replace')` after a resync
 * @property {() => void} [onUpdate] after any of onMemberJoin, onMemberOpen, onMemberLeave,
 *   onMemberClose, onGroupSession, and when the group is fixed or reassigned
 * @property {() => void} [onWaiting] (Cohort) the batch forms groups by arrival: this participant waits
 *   in the lobby until enough arrive (`joinGroup` resolves when the group forms)
 *
 * @typedef {Object} GroupInfo
 * @property {string} groupResultId the group's id
 * @property {string|null} memberId this participant's member id (its run id)
 * @property {string[]} members active members
 * @property {string[]} channels members whose channel is open
 * @property {string} state `STARTED`, `FIXED` or `FINISHED` (JATOS's names)
 * @property {number|null} maxActiveMembers the batch's limit (null: none)
 * @property {number|null} maxTotalMembers
 */

/**
 * @param {any} fn
 * @param {...any} args
 */
function call(fn, ...args) {
  if (typeof fn !== 'function') return;
  try {
    fn(...args);
  } catch (err) {
    // One throwing callback must not break the channel's frame handling.
    if (typeof console !== 'undefined') console.error(err);
  }
}

/**
 * Installs the group part of jatos.js on `jatos` (which has the batch
 * session installed: groups follow its channel).
 * @param {any} jatos
 */
export function installGroups(jatos) {
  /** @type {BatchChannel|null} */
  let channel = null;
  /** @type {(() => void)[]} */
  let offs = [];
  /** @type {GroupCallbacks} */
  let callbacks = {};

  /** The group as the last `group` frame told it. */
  const group = {
    /** @type {string|null} */
    id: null,
    state: '',
    /** @type {string[]} */
    members: [],
    /** @type {string[]} */
    closed: [],
    /** @type {number|null} */
    maxActive: null,
    /** @type {number|null} */
    maxTotal: null,
  };

  /** @type {{promise: Promise<GroupInfo>, resolve: (info: GroupInfo) => void, reject: (e: any) => void, waiting: boolean}|null} */
  let joining = null;
  let reassigning = false;
  /** @type {Promise<any>|null} */
  let fixing = null;
  /** False after a reconnect until the server has mentioned the group again. */
  let confirmed = true;
  /**
   * The frame of a group this participant is in but whose session state has
   * not arrived yet (on open the server sends the group frame first): the
   * group counts as joined once both are there.
   * @type {any}
   */
  let pendingGroup = null;

  jatos.groupMemberId = null;
  jatos.groupResultId = null;
  jatos.groupMembers = [];
  jatos.groupChannels = [];
  /** `STARTED`, `FIXED`, `FINISHED` or null (as jatos.js's groupState). */
  jatos.groupState = null;
  jatos.groupSessionVersioning = true;
  /** (Cohort) with versioning on: several group session writes in flight. */
  jatos.groupSessionPipelining = false;

  /** @returns {string|null} this participant's member id (its run id) */
  const me = () => (channel && channel.run) || (jatos.studyResultId ? String(jatos.studyResultId) : null);

  /** @returns {string[]} members whose channel is open */
  const openMembers = () => group.members.filter((m) => !group.closed.includes(m));

  /** @returns {number|null} */
  const maxActive = () => {
    if (group.maxActive !== null) return group.maxActive;
    const fromBatch = jatos.batchProperties && jatos.batchProperties.maxActiveMembers;
    return typeof fromBatch === 'number' ? fromBatch : null;
  };

  /** @returns {GroupInfo} */
  const info = () => ({
    groupResultId: /** @type {string} */ (group.id),
    memberId: me(),
    members: [...group.members],
    channels: openMembers(),
    state: group.state.toUpperCase(),
    maxActiveMembers: maxActive(),
    maxTotalMembers: group.maxTotal,
  });

  /** Copies the group into the jatos fields. */
  const publish = () => {
    jatos.groupResultId = group.id;
    jatos.groupMemberId = group.id ? me() : null;
    jatos.groupMembers = [...group.members];
    jatos.groupChannels = group.id ? openMembers() : [];
    jatos.groupState = group.id ? group.state.toUpperCase() : null;
  };

  const clearGroup = () => {
    group.id = null;
    group.state = '';
    group.members = [];
    group.closed = [];
    publish();
  };

  /** @returns {string|null} the group session's scope */
  const sessionScope = () => (group.id ? `group_session:${group.id}` : null);

  /**
   * @param {string} code
   * @param {string} message
   */
  const refuse = (code, message) => Promise.reject(new CommandError(code, message));

  /** @param {Function|undefined} onFail */
  const orGroupOnError = (onFail) => (typeof onFail === 'function' ? onFail : callbacks.onError);

  // -------------------------------------------------------- frames in

  /** @param {any} frame */
  const onGroupFrame = (frame) => {
    const mine = me();
    // Server frames leave out fields at their default: `joined` is true unless said.
    if (frame.joined === false) {
      if (!frame.group) {
        // Waiting for a group-by-arrival group ended without one.
        const change = (frame.changes || [])[0] || { kind: 'timeout' };
        if (joining && joining.waiting) {
          const pending = joining;
          joining = null;
          const code = change.kind === 'timeout' ? 'timeout' : change.kind === 'left' ? 'left' : change.kind;
          pending.reject(new CommandError(code, code === 'timeout' ? 'No group formed in time' : `Stopped waiting for a group (${change.kind})`));
        }
        return;
      }
      if (pendingGroup && frame.group === pendingGroup.group) pendingGroup = null;
      if (frame.group !== group.id) return; // about a group we are not in (any more)
      clearGroup();
      if (!reassigning) {
        call(callbacks.onClose);
      }
      return;
    }
    group.maxActive = typeof frame.max_active_members === 'number' ? frame.max_active_members : null;
    group.maxTotal = typeof frame.max_total_members === 'number' ? frame.max_total_members : null;
    const members = Array.isArray(frame.members) ? frame.members.map(String) : [];
    const closed = Array.isArray(frame.closed) ? frame.closed.map(String) : [];
    confirmed = true;
    if (frame.group !== group.id) {
      if (channel && channel.scope(`group_session:${frame.group}`).version === null) {
        pendingGroup = frame; // its session comes next
        return;
      }
      pendingGroup = null;
      // A new group: this participant joined one (or was reassigned, or the page
      // loaded while it is a member). As jatos.js's OPENED: no member callbacks.
      group.id = String(frame.group);
      group.state = frame.state || 'started';
      group.members = members;
      group.closed = closed;
      publish();
      if (joining) {
        const pending = joining;
        joining = null;
        pending.resolve(info());
        call(callbacks.onOpen, mine);
      }
      return;
    }

    /** @type {[string, string][]} callbacks to call, in order: [name, member] */
    const events = [];
    const known = new Set(group.members);
    const open = new Set(openMembers());
    const join = (/** @type {string} */ m) => {
      if (known.has(m) || m === mine) return;
      known.add(m);
      events.push(['onMemberJoin', m]);
      if (!closed.includes(m)) {
        open.add(m);
        events.push(['onMemberOpen', m]);
      }
    };
    const leave = (/** @type {string} */ m) => {
      if (!known.has(m) || m === mine) return;
      if (open.delete(m)) events.push(['onMemberClose', m]);
      known.delete(m);
      events.push(['onMemberLeave', m]);
    };
    let fixedOrFinished = false;
    for (const change of frame.changes || []) {
      const m = change.member ? String(change.member) : '';
      if (change.kind === 'joined') join(m);
      else if (change.kind === 'left') leave(m);
      else if (change.kind === 'open') {
        if (known.has(m) && m !== mine && !open.has(m)) {
          open.add(m);
          events.push(['onMemberOpen', m]);
        }
      } else if (change.kind === 'closed') {
        if (m !== mine && open.delete(m)) events.push(['onMemberClose', m]);
      } else if (change.kind === 'fixed' || change.kind === 'finished') fixedOrFinished = true;
    }
    // The frame's lists are the truth (a resume sends them without changes).
    for (const m of members) if (!known.has(m)) join(m);
    for (const m of [...known]) if (!members.includes(m)) leave(m);
    for (const m of members) {
      if (m === mine) continue;
      if (!closed.includes(m) && !open.has(m)) {
        open.add(m);
        events.push(['onMemberOpen', m]);
      } else if (closed.includes(m) && open.delete(m)) events.push(['onMemberClose', m]);
    }
    const stateChanged = (frame.state || group.state) !== group.state;
    group.state = frame.state || group.state;
    group.members = members;
    group.closed = closed;
    publish();
    for (const [name, member] of events) {
      call(/** @type {any} */ (callbacks)[name], member);
      call(callbacks.onUpdate);
    }
    if ((fixedOrFinished || stateChanged) && events.length === 0) call(callbacks.onUpdate);
  };

  /** @param {any} frame */
  const onMessageFrame = (frame) => {
    if (group.id && frame.group && String(frame.group) !== group.id) return;
    call(callbacks.onMessage, frame.msg, frame.sender, { to: frame.to ?? null, group: frame.group, pos: frame.pos });
  };

  /** @param {SessionEvent} event */
  const onSession = (event) => {
    if (pendingGroup && event.scope === `group_session:${pendingGroup.group}`) {
      const frame = pendingGroup;
      pendingGroup = null;
      onGroupFrame({ ...frame, changes: [] });
      return;
    }
    if (!group.id || event.scope !== sessionScope()) return;
    if (event.kind === 'update' && event.ops) {
      for (const op of event.ops) call(callbacks.onGroupSession, op.path, op.op);
      call(callbacks.onUpdate);
    } else if (event.kind === 'state' && event.previousVersion !== null && event.previousVersion !== event.version) {
      call(callbacks.onGroupSession, '', 'replace');
      call(callbacks.onUpdate);
    }
  };

  /** @param {BatchChannel|null} next */
  const follow = (next) => {
    for (const off of offs) off();
    offs = [];
    // A new channel is a new page (or none): what the old page had is gone.
    if (joining) {
      joining.reject(new CommandError('closed', 'the channel was replaced'));
      joining = null;
    }
    reassigning = false;
    fixing = null;
    pendingGroup = null;
    callbacks = {};
    clearGroup();
    session.reset();
    channel = next;
    if (!channel) return;
    const ch = channel;
    offs = [
      ch.on('group', onGroupFrame),
      ch.on('group_msg', onMessageFrame),
      ch.on('session', onSession),
      ch.on('open', () => {
        if (ch.connects > 1 && group.id) confirmed = false;
      }),
      ch.on('synced', () => {
        if (pendingGroup) {
          // Everything sent on open is here: no session state came, go on without it.
          const frame = pendingGroup;
          pendingGroup = null;
          const scope = ch.scope(`group_session:${frame.group}`);
          if (scope.version === null) scope.version = 0;
          onGroupFrame({ ...frame, changes: [] });
        }
        // After a reconnect the server mentions the group of a member first thing;
        // if it did not, this participant is no longer in it.
        if (!confirmed && group.id) {
          confirmed = true;
          clearGroup();
          call(callbacks.onClose);
        }
      }),
      ch.on('close', (/** @type {any} */ event) => {
        if (!event.willReconnect && group.id) call(callbacks.onClose);
      }),
    ];
    // A channel that is open already may have been told about the group before we listened.
    if (ch.group) onGroupFrame({ ...ch.group, changes: [] });
  };

  // ------------------------------------------------------ group session

  const session = createSessionApi(jatos, {
    label: 'group',
    channel: () => channel,
    scope: sessionScope,
    unavailable: () => {
      if (!channel || channel.closed) return new CommandError('no_channel', 'No open group channel');
      if (!group.id) return new CommandError('not_in_group', "Can't send group session patch: not a member of a group");
      return null;
    },
    versioning: () => !!jatos.groupSessionVersioning,
    pipelining: () => !!jatos.groupSessionPipelining,
    onFail: orGroupOnError,
  });
  /** @type {import('./session-api.js').SessionApi} */
  jatos.groupSession = session.api;

  // ------------------------------------------------------------- calls

  /**
   * `jatos.joinGroup(callbacks)`: joins a group (the fullest open one of the
   * batch, or a new one; with group-by-arrival: waits until enough arrive) and
   * keeps `callbacks` for the group's events. Resolves with the group
   * (`GroupInfo`) once this participant is a member; at once when it already
   * is one (a later component). Failures go to `callbacks.onError` (else
   * `jatos.onError`) and reject the promise: `already_waiting`, `timeout` (no
   * group-by-arrival group formed in time), `left` (left the lobby), `busy`,
   * `no_channel`, `run_ended`.
   * @param {GroupCallbacks} [groupCallbacks]
   * @returns {Promise<GroupInfo>}
   */
  jatos.joinGroup = (groupCallbacks) => {
    callbacks = groupCallbacks && typeof groupCallbacks === 'object' ? groupCallbacks : {};
    const onError = callbacks.onError;
    if (!channel || channel.closed) return withCallbacks(jatos, refuse('no_channel', 'No open batch channel: cannot join a group'), undefined, onError);
    if (group.id) {
      const already = Promise.resolve().then(() => {
        call(callbacks.onOpen, me());
        return info();
      });
      return withCallbacks(jatos, already, undefined, onError);
    }
    if (joining) return withCallbacks(jatos, refuse('busy', 'Can open only one group channel'), undefined, onError);
    /** @type {any} */
    const pending = { waiting: false };
    pending.promise = new Promise((resolve, reject) => {
      pending.resolve = resolve;
      pending.reject = reject;
    });
    joining = pending;
    channel.command('join_group').then(
      (ack) => {
        if (joining !== pending) return;
        if (ack.group) {
          // The group frame comes before the ack: normally resolved already.
          if (group.id === ack.group) {
            joining = null;
            pending.resolve(info());
            call(callbacks.onOpen, me());
          }
        } else {
          pending.waiting = true;
          call(callbacks.onWaiting);
        }
      },
      (error) => {
        if (joining !== pending) return;
        joining = null;
        if (error.code === 'already_in_group' && group.id) {
          pending.resolve(info());
          call(callbacks.onOpen, me());
        } else pending.reject(error);
      },
    );
    return withCallbacks(jatos, pending.promise, undefined, onError);
  };

  /**
   * `jatos.leaveGroup([onSuccess], [onError])`: leaves the group for good (or
   * stops waiting for one). `callbacks.onClose` is called when the server
   * confirms; resolves after that.
   * @param {Function} [onSuccess]
   * @param {Function} [onError]
   * @returns {Promise<any>}
   */
  jatos.leaveGroup = (onSuccess, onError) => {
    const fail = orGroupOnError(onError);
    if (joining && !joining.waiting) return withCallbacks(jatos, refuse('busy', "Can't leave group if not joined yet."), onSuccess, fail);
    if (reassigning) return withCallbacks(jatos, refuse('busy', "Can't leave group during reassigning."), onSuccess, fail);
    if (!channel || channel.closed) return withCallbacks(jatos, refuse('no_channel', 'No open group channel'), onSuccess, fail);
    if (!group.id && !(joining && joining.waiting)) {
      return withCallbacks(jatos, refuse('not_in_group', 'Not a member of a group'), onSuccess, fail);
    }
    return withCallbacks(jatos, channel.command('leave_group'), onSuccess, fail);
  };

  /**
   * `jatos.reassignGroup([onSuccess], [onFail])`: moves this participant to
   * another open group; fails with `no_group` when there is none (nothing
   * changes then). Resolves with the new group (`GroupInfo`).
   * @param {Function} [onSuccess]
   * @param {Function} [onFail]
   * @returns {Promise<GroupInfo>}
   */
  jatos.reassignGroup = (onSuccess, onFail) => {
    const fail = orGroupOnError(onFail);
    if (joining) return withCallbacks(jatos, refuse('busy', "Can't reassign a group if not joined yet."), onSuccess, fail);
    if (reassigning) return withCallbacks(jatos, refuse('busy', "Can't reassign a group twice at the same time."), onSuccess, fail);
    if (!channel || channel.closed) return withCallbacks(jatos, refuse('no_channel', 'No open group channel'), onSuccess, fail);
    if (!group.id) return withCallbacks(jatos, refuse('not_in_group', 'Not a member of a group'), onSuccess, fail);
    reassigning = true;
    const done = channel.command('reassign_group').then(
      () => {
        reassigning = false;
        call(callbacks.onUpdate);
        return info();
      },
      (error) => {
        reassigning = false;
        throw error;
      },
    );
    return withCallbacks(jatos, done, onSuccess, fail);
  };

  /**
   * `jatos.setGroupFixed([onSuccess], [onFail])`: no new members may join;
   * every member is told (onUpdate). Fixing a fixed group succeeds at once.
   * @param {Function} [onSuccess]
   * @param {Function} [onFail]
   * @returns {Promise<any>}
   */
  jatos.setGroupFixed = (onSuccess, onFail) => {
    const fail = orGroupOnError(onFail);
    if (!channel || channel.closed) return withCallbacks(jatos, refuse('no_channel', "Can't fix group. No open group channel."), onSuccess, fail);
    if (!group.id) return withCallbacks(jatos, refuse('not_in_group', "Can't fix group: not a member of a group"), onSuccess, fail);
    if (group.state !== 'started') return withCallbacks(jatos, Promise.resolve({ id: null, version: 0, group: group.id }), onSuccess, fail);
    if (!fixing) {
      const started = channel.command('fix_group');
      fixing = started;
      const clear = () => {
        if (fixing === started) fixing = null;
      };
      started.then(clear, clear);
    }
    return withCallbacks(jatos, fixing, onSuccess, fail);
  };

  /**
   * @param {any} msg
   * @param {string|null} to
   * @returns {Promise<any>}
   */
  const sendMessage = (msg, to) => {
    /** @type {Promise<any>} */
    let sent;
    if (!channel || channel.closed) sent = refuse('no_channel', 'No open group channel');
    else if (!group.id) sent = refuse('not_in_group', "Can't send a group message: not a member of a group");
    else sent = channel.command('group_msg', to === null ? { msg } : { msg, to: String(to) });
    // jatos.js returns nothing: failures go to the group's onError, and the
    // returned promise never counts as an unhandled rejection.
    sent.catch((error) => call(callbacks.onError, error));
    return sent;
  };

  /**
   * `jatos.sendGroupMsg(msg)`: a message to every other member. Resolves once
   * the server took it (jatos.js: returns nothing).
   * @param {any} msg
   * @returns {Promise<any>}
   */
  jatos.sendGroupMsg = (msg) => sendMessage(msg, null);

  /**
   * `jatos.sendGroupMsgTo(recipient, msg)`: a message to one member; fails with
   * `member_not_found` if it is not an active member.
   * @param {string} recipient
   * @param {any} msg
   * @returns {Promise<any>}
   */
  jatos.sendGroupMsgTo = (recipient, msg) => sendMessage(msg, recipient);

  /** @returns {boolean} whether this participant is a member of a group */
  jatos.hasJoinedGroup = () => group.id !== null;
  /** @returns {boolean} whether it is a member and its channel is open now */
  jatos.hasOpenGroupChannel = () => group.id !== null && !!channel && channel.connected;
  /** @returns {boolean} whether the group has as many active members as the batch allows */
  jatos.isMaxActiveMemberReached = () => {
    const max = maxActive();
    return group.id !== null && max !== null && group.members.length >= max;
  };
  /** @returns {boolean} ... and each of them has an open channel */
  jatos.isMaxActiveMemberOpen = () => {
    const max = maxActive();
    return group.id !== null && max !== null && openMembers().length >= max;
  };
  /** @returns {boolean} whether every active member has an open channel */
  jatos.isGroupOpen = () => jatos.hasOpenGroupChannel() && openMembers().length === group.members.length;
  /** @returns {string|null} `STARTED`, `FIXED`, `FINISHED`, or null outside a group */
  jatos.getGroupState = () => (group.id ? group.state.toUpperCase() : null);
  /** @returns {boolean} */
  jatos.isGroupFixed = () => group.state === 'fixed';
  /** @returns {boolean} (Cohort) waiting in a group-by-arrival lobby */
  jatos.isWaitingForGroup = () => !!joining && joining.waiting;

  jatos._onChannel(follow);
}
