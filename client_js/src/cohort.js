// @ts-check
/**
 * Cohort client core: one live channel to a batch, speaking the wire
 * protocol in docs/protocol.md.
 *
 * - keeps the state of every session scope it receives (`batch_session`,
 *   and `group_session:<G>` while the participant is in group G): `data`,
 *   `version`, and the last stream position `pos`; passes `group` and
 *   `group_msg` frames on as events (groups.js makes jatos.js's groups of them);
 * - applies `update` frames in place, detects gaps (a change whose `v` is not
 *   `version + 1`), asks for a resync and ignores updates until the full
 *   `state` arrives;
 * - sends commands (`patch`) and settles each one's promise on `ack` / `fail`,
 *   but only once the local copy has caught up with the version the server
 *   reported, so a `.then()` always sees its own change (and a
 *   `version_mismatch` handler sees the current version);
 * - reconnects with full-jitter exponential backoff (base 100 ms, cap 5 s),
 *   resumes with `since=<last pos>`, and re-sends every unacknowledged command
 *   with the same id (the server answers a duplicate with the first outcome);
 * - helpers beyond JATOS: chains of versioned patches in flight, `update(fn)`
 *   (recompute on conflict), `increment(path)` (atomic counter), any other
 *   command (`command(type, fields)`), connection states and `synced`.
 *
 * No dependencies in the browser. In Node < 22, pass `WebSocket` from the `ws`
 * package (or import from `@cohort/client`, whose Node entry does it for you).
 * @module cohort
 */

import { applyPatch, cloneJson, getPointer } from './jsonpatch.js';

/** The scope a batch channel writes by default. */
export const DEFAULT_SCOPE = 'batch_session';

/**
 * Close codes after which the channel does not reconnect: [error code, message].
 * @type {Record<number, [string, string]>}
 */
const FATAL_CLOSES = {
  4403: ['forbidden', 'the token was refused'],
  4404: ['batch_not_found', 'the batch does not exist'],
  4410: ['batch_closed', 'the batch was closed'],
};

/**
 * Error for a rejected command or a channel failure. `code` is a protocol
 * error code (`version_mismatch`, `path_not_found`, `test_failed`, ...) or a
 * client code (`closed`, `forbidden`, `batch_not_found`, `batch_closed`, `busy`, `no_channel`,
 * `timeout`).
 */
export class CommandError extends Error {
  /**
   * @param {string} code
   * @param {string} [message]
   * @param {number|null} [version] the scope's current version, for `fail`
   */
  constructor(code, message, version) {
    super(message || code);
    this.name = 'CommandError';
    this.code = code;
    this.version = version ?? null;
  }
}

/**
 * @typedef {import('./jsonpatch.js').Operation} Operation
 *
 * @typedef {Object} Backoff
 * @property {number} [base] first delay ceiling in ms (default 100)
 * @property {number} [cap] largest delay ceiling in ms (default 5000)
 *
 * @typedef {Object} ConnectOptions
 * @property {string | string[]} url `ws(s)://host/ws/batch/<batch>` (a token in its query
 *   is kept), or an `http(s)`/`ws(s)` base URL together with `batch`; relative URLs
 *   resolve against the page in a browser. Several URLs (gateways): each reconnect
 *   moves on to the next one, and resumes there.
 * @property {string} [token] participant token (sent as `?token=`)
 * @property {string} [batch] batch id, when `url` is a base URL
 * @property {any} [WebSocket] WebSocket constructor (default: `globalThis.WebSocket`)
 * @property {string} [since] stream position to resume after (normally left out)
 * @property {Backoff | ((attempt: number) => number)} [backoff] reconnect delays:
 *   full jitter, `random(0, min(cap, base * 2 ** attempt))`, or your own function
 * @property {number} [pingInterval] ms between keep-alive pings (default 20000; 0 = off);
 *   a socket that stays silent for a whole interval after a ping is dropped and reopened
 * @property {number} [settleTimeout] ms to wait for the local copy to reach an
 *   acknowledged version before settling anyway (default 10000)
 *
 * @typedef {Object} SessionEvent
 * @property {string} scope
 * @property {number} version the version after this change
 * @property {any} data the scope's data after this change (live object: do not mutate)
 * @property {Operation[]|null} ops the change's operations, or null for a full state
 * @property {'update'|'state'} kind
 * @property {boolean} resync whether this full state replaced a diverged copy
 * @property {number|null} previousVersion the version before
 *
 * @typedef {Object} PatchOptions
 * @property {boolean} [versioned] send the last version seen; the server applies
 *   the patch only if it is still current (JATOS versioning). Default false.
 * @property {number} [version] expected version to send instead of the last one seen
 *   (implies `versioned`); for recompute-and-retry strategies
 * @property {string} [scope] default `batch_session`
 * @property {string} [id] command id (default: channel prefix + counter); at most 64 chars.
 *   Re-using the id of an earlier command gets that command's answer, never a second application
 * @property {boolean} [chain] (Cohort extension, needs `versioned`) several versioned patches
 *   in flight: while an earlier versioned patch of this channel to the same scope is still
 *   unanswered, this one expects the version that earlier one will produce (instead of the
 *   last version seen), and fails with it. Default false: the expected version is the last one seen
 *
 * @typedef {Object} PatchResult
 * @property {string} id
 * @property {number} version the version this command was committed as
 *
 * @typedef {Object} CommandResult
 * @property {string} id
 * @property {number} version the version of the scope the command changed (0 if none)
 * @property {string} group for group commands: the group the run is in now ('' while waiting
 *   for a group-by-arrival group, or after leaving)
 *
 * @typedef {Object} UpdateOptions
 * @property {string} [scope] default `batch_session`
 * @property {number} [retries] how many times a conflicting patch is recomputed and sent
 *   again (default 50)
 * @property {Backoff} [backoff] delay before each retry, full jitter (default `{base: 10, cap: 500}`)
 *
 * @typedef {Object} UpdateResult
 * @property {string|null} id the command id of the patch that was applied (null: nothing to do)
 * @property {number} version the version it was committed as (or the current one)
 * @property {Operation[]} ops the operations that were applied
 * @property {number} attempts how many patches were sent
 *
 * @typedef {Object} IncrementResult
 * @property {number} value the counter's value right after this increment (unique per increment)
 * @property {number} version the scope's version of that change
 * @property {number} attempts how many patches were sent
 *
 * @typedef {'connecting'|'open'|'reconnecting'|'closed'} ConnectionState
 */

/**
 * Full-jitter exponential backoff.
 * @param {Backoff} [options]
 * @returns {(attempt: number) => number}
 */
export function fullJitterBackoff({ base = 100, cap = 5000 } = {}) {
  return (attempt) => Math.random() * Math.min(cap, base * 2 ** Math.min(attempt, 30));
}

/** @returns {string} 10 random base-36 characters */
function randomPrefix() {
  const bytes = new Uint8Array(10);
  const cryptoObj = globalThis.crypto;
  if (cryptoObj && typeof cryptoObj.getRandomValues === 'function') cryptoObj.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => (b % 36).toString(36)).join('');
}

/**
 * Compares two stream entry IDs (`"<ms>-<seq>"`).
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
export function comparePos(a, b) {
  const [am, as = '0'] = a.split('-');
  const [bm, bs = '0'] = b.split('-');
  if (am.length !== bm.length) return am.length - bm.length;
  if (am !== bm) return am < bm ? -1 : 1;
  if (as.length !== bs.length) return as.length - bs.length;
  return as === bs ? 0 : as < bs ? -1 : 1;
}

/**
 * Builds the socket URL.
 * @param {string} url
 * @param {{token?: string, batch?: string, since?: string|null}} params
 * @returns {string}
 */
export function buildSocketUrl(url, { token, batch, since }) {
  const location = /** @type {any} */ (globalThis).location;
  const u = new URL(url, location && location.href ? location.href : undefined);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (!/\/ws\/batch\/[^/]+\/?$/.test(u.pathname)) {
    if (!batch) throw new TypeError('connect: url is not a /ws/batch/<batch> URL and no batch was given');
    u.pathname = u.pathname.replace(/\/+$/, '') + '/ws/batch/' + encodeURIComponent(batch);
  }
  if (token) u.searchParams.set('token', token);
  if (since) u.searchParams.set('since', since);
  else u.searchParams.delete('since');
  return u.toString();
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/**
 * The run id in a participant token's claims (`<base64url JSON>.<signature>`),
 * or null. The claims are read, not verified.
 * @param {string} token
 * @returns {string|null}
 */
export function runOfToken(token) {
  const [payload] = String(token || '').split('.');
  if (!payload) return null;
  try {
    const b64 = payload.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (payload.length % 4)) % 4);
    const binary = typeof atob === 'function' ? atob(b64) : '';
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    return claims && typeof claims.run === 'string' ? claims.run : null;
  } catch {
    return null;
  }
}

/**
 * Minimal event emitter (browser-safe). Listener errors are reported as
 * 'error' events; 'error' events nobody listens to go to console.error.
 */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * Adds a listener; returns a function that removes it.
   * @param {string} event
   * @param {Function} fn
   * @returns {() => void}
   */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  /**
   * @param {string} event
   * @param {Function} fn
   */
  off(event, fn) {
    const set = this._listeners.get(event);
    if (set) set.delete(fn);
  }

  /**
   * Like `on`, for one call only.
   * @param {string} event
   * @param {Function} fn
   * @returns {() => void}
   */
  once(event, fn) {
    const off = this.on(event, (/** @type {any[]} */ ...args) => {
      off();
      fn(...args);
    });
    return off;
  }

  /**
   * @param {string} event
   * @param {...any} args
   */
  _emit(event, ...args) {
    const set = this._listeners.get(event);
    if (!set || set.size === 0) {
      // Nobody handles errors: do not lose them (a throwing callback, say).
      if (event === 'error' && typeof console !== 'undefined') console.error(args[0]);
      return;
    }
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        if (event !== 'error') this._emit('error', err);
        else if (typeof console !== 'undefined') console.error(err);
      }
    }
  }
}

/**
 * @typedef {Object} ScopeState
 * @property {any} data
 * @property {number|null} version
 *
 * @typedef {Object} Command
 * @property {string} id
 * @property {string} type `patch`, or another command (`join_group`, `group_msg`, ...)
 * @property {any} fields the other command's fields (besides `type` and `id`)
 * @property {string|null} scope the scope a patch writes (null: other commands)
 * @property {Operation[]} ops
 * @property {boolean} versioned
 * @property {number|null} version explicit expected version (else the last seen, when built)
 * @property {number|null} expected the expected version actually sent (versioned patches)
 * @property {Command|null} after the earlier patch of a chain this one expects the result of
 * @property {CommandError|null} brokenBy set when `after` failed after this one was sent
 * @property {CommandError|null} error why it failed (once it did)
 * @property {boolean} sent whether the frame was handed to a socket at least once
 * @property {boolean} answered
 * @property {Promise<boolean>} done resolves once it is settled (true: it succeeded)
 * @property {(ok: boolean) => void} markDone
 * @property {string|null} text the exact frame, fixed once built (re-sent as is)
 * @property {(r: any) => void} resolve
 * @property {(e: CommandError) => void} reject
 */

/**
 * A live channel to one batch. Create it with {@link connect}.
 *
 * Events (`channel.on(name, fn)`, returns an unsubscribe function):
 * - `session` (SessionEvent): after every state change (each version of an
 *   `update`, and every `state`);
 * - `open` (): a socket opened; `close` ({code, reason, willReconnect});
 * - `resync` ({scope, version, data}): a full state replaced a diverged copy;
 * - `error` (Error): protocol `error` frames, socket errors, listener errors;
 * - `message` (object): every frame received, parsed (for debugging and tests);
 * - `connection` ({state, previous}): the connection state changed
 *   (`connecting`, `open`, `reconnecting`, `closed`);
 * - `synced` ({connects}): after each (re)open, once everything the server had
 *   queued for this socket on open (full states, or the changes missed while
 *   away) has been received: the local copy is caught up;
 * - `group` (frame): a `group` frame (membership of the participant's group);
 * - `group_msg` (frame): a group message for this participant.
 */
export class BatchChannel extends Emitter {
  /** @param {ConnectOptions} options */
  constructor(options) {
    super();
    if (!options || !options.url || (Array.isArray(options.url) && options.url.length === 0)) {
      throw new TypeError('connect: url is required');
    }
    this._options = options;
    /** @type {string[]} */
    this._urls = Array.isArray(options.url) ? [...options.url] : [options.url];
    this._urlIndex = 0;
    this._WebSocket = options.WebSocket || /** @type {any} */ (globalThis).WebSocket;
    if (!this._WebSocket) {
      throw new TypeError('connect: no WebSocket implementation; in Node < 22 pass {WebSocket} from the "ws" package');
    }
    const backoff = options.backoff;
    /** @type {(attempt: number) => number} */
    this._backoff = typeof backoff === 'function' ? backoff : fullJitterBackoff(backoff || {});
    this._pingInterval = options.pingInterval ?? 20000;
    this._settleTimeout = options.settleTimeout ?? 10000;
    /** Per-channel command id prefix (kept across reconnects so re-sent ids stay the same). */
    this.idPrefix = randomPrefix();
    this._counter = 0;
    /** @type {Map<string, ScopeState>} */
    this._scopes = new Map();
    /** @type {string|null} */
    this._pos = options.since || null;
    /** @type {Set<string>} scopes whose updates are ignored until a full state arrives */
    this._awaitingResync = new Set();
    /** @type {Map<string, Command>} sent or queued, not yet acknowledged (insertion = id order) */
    this._pending = new Map();
    /** @type {Set<{scope: string, version: number, settle: () => void, timer: any}>} */
    this._waiting = new Set();
    /** @type {any} */
    this._ws = null;
    this._attempt = 0;
    this._closed = false;
    /** @type {any} */
    this._reconnectTimer = null;
    /** @type {any} */
    this._pingTimer = null;
    this._silentSincePing = false;
    /** Number of sockets opened so far (1 after the first open). */
    this.connects = 0;
    /** @type {ConnectionState} */
    this._connectionState = 'connecting';
    /** Waiting for the pong that follows what the server queued on open. */
    this._syncPending = false;
    /**
     * The last `group` frame of the participant's current group (null: not in one,
     * as far as this channel was told).
     * @type {any}
     */
    this.group = null;
    this._groupUnconfirmed = false;
    /** @type {(v?: any) => void} */
    let resolveReady = () => {};
    /** @type {(e: any) => void} */
    let rejectReady = () => {};
    /** Resolves with the channel once the first full state of `batch_session` arrived. */
    this.ready = new Promise((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    this.ready.catch(() => {});
    this._resolveReady = resolveReady;
    this._rejectReady = rejectReady;
  }

  // ---------------------------------------------------------------- state

  /** @returns {any} the batch session data (live object: read, do not mutate) */
  get data() {
    return this.scope(DEFAULT_SCOPE).data;
  }

  /** @returns {number|null} the last batch session version seen (null before the first state) */
  get version() {
    return this.scope(DEFAULT_SCOPE).version;
  }

  /** @returns {string|null} the last stream position seen (sent as `since` on reconnect) */
  get pos() {
    return this._pos;
  }

  /** @returns {boolean} whether a socket is open now */
  get connected() {
    return !!this._ws && this._ws.readyState === 1;
  }

  /** @returns {boolean} whether close() was called or the server refused the channel for good */
  get closed() {
    return this._closed;
  }

  /** @returns {number} commands sent or queued but not yet acknowledged */
  get pendingCount() {
    return this._pending.size;
  }

  /**
   * @returns {ConnectionState} `connecting` (before the first open), `open`,
   *   `reconnecting` (after an unexpected close, until the next open), `closed` (for good)
   */
  get connectionState() {
    return this._connectionState;
  }

  /**
   * The run id this channel's participant token names (read from the token's
   * claims, not verified: the gateway does that), or null if it cannot be read.
   * In a group it is this participant's member id.
   * @returns {string|null}
   */
  get run() {
    const location = /** @type {any} */ (globalThis).location;
    let token = this._options.token;
    if (!token) {
      try {
        token = new URL(this._urls[0], location && location.href ? location.href : undefined).searchParams.get('token') || '';
      } catch {
        token = '';
      }
    }
    return runOfToken(token || '');
  }

  /** @param {ConnectionState} next */
  _setConnectionState(next) {
    const previous = this._connectionState;
    if (previous === next) return;
    this._connectionState = next;
    this._emit('connection', { state: next, previous });
  }

  /**
   * The state of one scope (created empty on first use).
   * @param {string} name
   * @returns {ScopeState}
   */
  scope(name) {
    let state = this._scopes.get(name);
    if (!state) this._scopes.set(name, (state = { data: {}, version: null }));
    return state;
  }

  /**
   * Resolves once the local copy of a scope has reached `version`.
   * @param {number} version
   * @param {string} [scope]
   * @returns {Promise<void>}
   */
  whenVersion(version, scope = DEFAULT_SCOPE) {
    return new Promise((resolve) => this._waitFor(scope, version, () => resolve(), 0));
  }

  // ------------------------------------------------------------- commands

  /**
   * Sends a JSON Patch to a scope. Resolves with `{id, version}` on `ack`,
   * rejects with a CommandError (`code`, `message`, `version`) on `fail`.
   * Either happens only after the local copy has reached that version.
   * While disconnected the command is queued; it is (re-)sent with the same
   * id on every reconnect until it is answered.
   * @param {Operation[]|Operation} ops
   * @param {PatchOptions} [options]
   * @returns {Promise<PatchResult>}
   */
  patch(ops, { versioned = false, version, scope = DEFAULT_SCOPE, id, chain = false } = {}) {
    if (this._closed) return Promise.reject(new CommandError('closed', 'the channel is closed'));
    const list = Array.isArray(ops) ? ops : [ops];
    const explicit = typeof version === 'number' ? version : null;
    const isVersioned = versioned || explicit !== null;
    /** @type {Command|null} */
    let after = null;
    if (chain && isVersioned && explicit === null) {
      for (const pending of this._pending.values()) {
        if (pending.type === 'patch' && pending.scope === scope && pending.versioned && !pending.answered) after = pending;
      }
    }
    return this._submit({ type: 'patch', fields: null, scope, ops: list, versioned: isVersioned, version: explicit, after }, id);
  }

  /**
   * Sends any other command of the protocol (`join_group`, `leave_group`,
   * `reassign_group`, `fix_group`, `group_msg`, ...). Resolves with the `ack`
   * (`{id, version, group}`), rejects with a CommandError on `fail`. Queued
   * while disconnected and re-sent with the same id after a reconnect, as patches.
   * @param {string} type
   * @param {Record<string, any>} [fields] the command's other fields
   * @param {{id?: string}} [options]
   * @returns {Promise<CommandResult>}
   */
  command(type, fields = {}, { id } = {}) {
    if (this._closed) return Promise.reject(new CommandError('closed', 'the channel is closed'));
    if (type === 'patch') throw new TypeError('command: use patch() for patches');
    return this._submit({ type, fields: fields || {}, scope: null, ops: [], versioned: false, version: null, after: null }, id);
  }

  /**
   * @param {{type: string, fields: any, scope: string|null, ops: Operation[], versioned: boolean, version: number|null, after: Command|null}} spec
   * @param {string|undefined} id
   * @returns {Promise<any>}
   */
  _submit(spec, id) {
    const commandId = id || this.nextId();
    if (this._pending.has(commandId)) {
      return Promise.reject(new CommandError('duplicate_id', `command ${commandId} is already pending`));
    }
    return new Promise((resolve, reject) => {
      /** @type {(ok: boolean) => void} */
      let markDone = () => {};
      /** @type {Promise<boolean>} */
      const done = new Promise((r) => (markDone = r));
      /** @type {Command} */
      const command = {
        id: commandId,
        type: spec.type,
        fields: spec.fields,
        scope: spec.scope,
        ops: spec.ops,
        versioned: spec.versioned,
        version: spec.version,
        expected: null,
        after: spec.after,
        brokenBy: null,
        error: null,
        sent: false,
        answered: false,
        done,
        markDone,
        text: null,
        resolve,
        reject,
      };
      this._pending.set(commandId, command);
      if (this._buildable(command)) {
        this._build(command);
        this._sendCommand(command);
      }
    });
  }

  /**
   * Whether a command's frame can be fixed now: a versioned patch needs the
   * last version seen (before the first state it waits) or, in a chain, the
   * version its predecessor expects.
   * @param {Command} command
   */
  _buildable(command) {
    if (command.type !== 'patch' || !command.versioned || command.version !== null) return true;
    if (command.after) return command.after.expected !== null;
    return this.scope(/** @type {string} */ (command.scope)).version !== null;
  }

  /**
   * Applies a change computed from the current state, retrying on conflict:
   * `fn(data, {version, attempt})` gets a copy of the scope's current data and
   * returns the JSON Patch to apply (an array of operations or one operation;
   * `null`, `undefined` or `[]`: nothing to do). The patch is sent versioned
   * (it applies only to the state `fn` saw); when another write came first
   * (`version_mismatch`) `fn` is called again on the newer state, up to
   * `retries` times. Other failures reject at once. `fn` may be async.
   * @param {(data: any, info: {version: number, attempt: number}) => any} fn
   * @param {UpdateOptions} [options]
   * @returns {Promise<UpdateResult>}
   */
  async update(fn, { scope = DEFAULT_SCOPE, retries = 50, backoff } = {}) {
    if (typeof fn !== 'function') throw new TypeError('update: fn must be a function');
    const delay = fullJitterBackoff(backoff || { base: 10, cap: 500 });
    for (let attempt = 0; ; attempt++) {
      const state = await this._stateOf(scope);
      const version = /** @type {number} */ (state.version);
      let ops = await fn(cloneJson(state.data) ?? {}, { version, attempt });
      if (ops === null || ops === undefined) ops = [];
      if (!Array.isArray(ops)) ops = [ops];
      if (ops.length === 0) return { id: null, version, ops: [], attempts: attempt };
      try {
        const result = await this.patch(ops, { version, scope });
        return { id: result.id, version: result.version, ops, attempts: attempt + 1 };
      } catch (err) {
        if (!(err instanceof CommandError) || err.code !== 'version_mismatch' || attempt >= retries) throw err;
        await sleep(delay(attempt));
      }
    }
  }

  /**
   * Adds `by` to the number at `path` (a JSON pointer) and resolves with the
   * value right after this increment, which is unique: n concurrent increments
   * by 1 of a counter at 0 resolve with 1..n, each once (a balanced A/B
   * assignment is `(await increment('/n')).value % 2`). An existing counter is
   * changed with `test` + `replace` (unversioned: writes to other paths do not
   * conflict with it); a missing one is created with a versioned `add`. Both
   * are recomputed and retried on conflict (`test_failed`, `version_mismatch`).
   * Rejects with `not_a_number` if the value there is not a number.
   * @param {string} path
   * @param {number} [by]
   * @param {UpdateOptions} [options] `retries` defaults to 1000 here
   * @returns {Promise<IncrementResult>}
   */
  async increment(path, by = 1, { scope = DEFAULT_SCOPE, retries = 1000, backoff } = {}) {
    if (typeof by !== 'number' || !Number.isFinite(by)) throw new TypeError('increment: by must be a finite number');
    const delay = fullJitterBackoff(backoff || { base: 10, cap: 500 });
    for (let attempt = 0; ; attempt++) {
      const state = await this._stateOf(scope);
      const version = /** @type {number} */ (state.version);
      let current;
      try {
        current = getPointer(state.data, path);
      } catch (err) {
        throw new CommandError('bad_patch', `increment: ${/** @type {any} */ (err).message || err}`);
      }
      if (current !== undefined && (typeof current !== 'number' || !Number.isFinite(current))) {
        throw new CommandError('not_a_number', `increment: the value at ${path} is not a number`, version);
      }
      const value = (current ?? 0) + by;
      try {
        const result =
          current === undefined
            ? await this.patch([{ op: 'add', path, value }], { version, scope })
            : await this.patch(
                [
                  { op: 'test', path, value: current },
                  { op: 'replace', path, value },
                ],
                { scope },
              );
        return { value, version: result.version, attempts: attempt + 1 };
      } catch (err) {
        const code = err instanceof CommandError ? err.code : '';
        if ((code !== 'test_failed' && code !== 'version_mismatch') || attempt >= retries) throw err;
        await sleep(delay(attempt));
      }
    }
  }

  /**
   * The state of a scope once it has one (waits for the first state).
   * @param {string} scope
   * @returns {Promise<ScopeState>}
   */
  async _stateOf(scope) {
    if (this._closed) throw new CommandError('closed', 'the channel is closed');
    const state = this.scope(scope);
    if (state.version === null) {
      await new Promise((resolve, reject) => {
        const offs = [
          this.on('session', (/** @type {SessionEvent} */ e) => e.scope === scope && done(null)),
          this.on('close', (/** @type {any} */ e) => !e.willReconnect && done(new CommandError('closed', 'the channel is closed'))),
        ];
        /** @param {any} err */
        const done = (err) => {
          for (const off of offs) off();
          if (err) reject(err);
          else resolve(undefined);
        };
      });
    }
    return this.scope(scope);
  }

  /** @returns {string} a fresh command id: the channel's random prefix and a counter */
  nextId() {
    this._counter += 1;
    return `${this.idPrefix}-${this._counter}`;
  }

  /** Asks the server for the full state again (ignores updates until it arrives). */
  resync() {
    for (const name of this._scopes.keys()) this._awaitingResync.add(name);
    this._send({ type: 'resync' });
  }

  /**
   * Closes the channel for good: no reconnect, pending commands are rejected
   * with code `closed` (they may or may not have been applied).
   */
  close() {
    if (this._closed) return;
    this._closed = true;
    clearTimeout(this._reconnectTimer);
    const ws = this._ws;
    this._dropSocket(ws, 1000, 'closed by client');
    this._failAll(new CommandError('closed', 'the channel was closed'));
    this._setConnectionState('closed');
  }

  // ------------------------------------------------------------ internals

  /** Opens a socket (called by connect() and on every reconnect). */
  _open() {
    if (this._closed) return;
    let url;
    let ws;
    try {
      url = buildSocketUrl(this._urls[this._urlIndex % this._urls.length], {
        token: this._options.token,
        batch: this._options.batch,
        since: this._pos,
      });
      ws = new this._WebSocket(url);
    } catch (err) {
      this._emit('error', err);
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    this._awaitingResync.clear();
    ws.onopen = () => {
      if (ws !== this._ws) return;
      this.connects += 1;
      this._startPing();
      // What the server queued on open (states or the resume) comes before this pong.
      this._syncPending = true;
      this._groupUnconfirmed = this.group !== null;
      this._send({ type: 'ping' });
      this._setConnectionState('open');
      this._emit('open');
      for (const command of this._pending.values()) this._sendCommand(command);
    };
    ws.onmessage = (/** @type {any} */ event) => {
      if (ws !== this._ws) return;
      this._silentSincePing = false;
      this._onRaw(event.data);
    };
    ws.onerror = (/** @type {any} */ event) => {
      if (ws !== this._ws) return;
      const message = (event && (event.message || (event.error && event.error.message))) || 'WebSocket error';
      this._emit('error', new CommandError('socket_error', message));
    };
    ws.onclose = (/** @type {any} */ event) => {
      if (ws !== this._ws) return;
      this._onSocketClosed(event ? event.code : 1006, event ? event.reason : '');
    };
  }

  /**
   * Detaches and closes a socket, then handles the close at once.
   * @param {any} ws
   * @param {number} code
   * @param {string} reason
   */
  _dropSocket(ws, code, reason) {
    if (!ws) return;
    const noop = () => {};
    ws.onopen = noop;
    ws.onmessage = noop;
    ws.onerror = noop;
    ws.onclose = noop;
    try {
      if (code !== 1000 && typeof ws.terminate === 'function') ws.terminate();
      else ws.close(code === 1000 ? 1000 : 4000, reason);
    } catch {
      /* already closed */
    }
    if (ws === this._ws) this._onSocketClosed(code, reason);
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  _onSocketClosed(code, reason) {
    this._ws = null;
    clearInterval(this._pingTimer);
    const fatal = FATAL_CLOSES[code];
    if (fatal && !this._closed) {
      this._closed = true;
      this._failAll(new CommandError(fatal[0], reason || fatal[1]));
    }
    this._syncPending = false;
    this._setConnectionState(this._closed ? 'closed' : 'reconnecting');
    this._emit('close', { code, reason, willReconnect: !this._closed });
    if (!this._closed) this._scheduleReconnect();
  }

  /** @returns {string} the URL (as given) of the current or next socket */
  get url() {
    return this._urls[this._urlIndex % this._urls.length];
  }

  _scheduleReconnect() {
    if (this._closed) return;
    this._urlIndex += 1; // with several gateways, try the next one
    clearTimeout(this._reconnectTimer);
    const delay = Math.max(0, this._backoff(this._attempt));
    this._attempt += 1;
    this._reconnectTimer = setTimeout(() => this._open(), delay);
  }

  _startPing() {
    clearInterval(this._pingTimer);
    this._silentSincePing = false;
    if (!this._pingInterval) return;
    this._pingTimer = setInterval(() => {
      const ws = this._ws;
      if (!ws || ws.readyState !== 1) return;
      if (this._silentSincePing) {
        // Nothing at all (not even a pong) for a whole interval: the socket is dead.
        this._dropSocket(ws, 4000, 'keep-alive timeout');
        return;
      }
      this._silentSincePing = true;
      this._send({ type: 'ping' });
    }, this._pingInterval);
  }

  /**
   * @param {CommandError} error
   */
  _failAll(error) {
    const commands = [...this._pending.values()];
    this._pending.clear();
    for (const command of commands) {
      command.answered = true;
      command.markDone(false);
      command.reject(error);
    }
    for (const waiter of this._waiting) {
      clearTimeout(waiter.timer);
      waiter.settle();
    }
    this._waiting.clear();
    this._rejectReady(error);
  }

  /**
   * @param {any} frame
   * @returns {boolean} whether it was handed to an open socket
   */
  _send(frame) {
    return this._sendText(JSON.stringify(frame));
  }

  /**
   * @param {string} text
   * @returns {boolean}
   */
  _sendText(text) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    try {
      ws.send(text);
      return true;
    } catch (err) {
      this._emit('error', err);
      return false;
    }
  }

  /** @param {Command} command */
  _build(command) {
    if (command.type !== 'patch') {
      command.text = JSON.stringify({ ...command.fields, type: command.type, id: command.id });
      return;
    }
    /** @type {any} */
    const frame = { type: 'patch', id: command.id, scope: command.scope, ops: command.ops };
    if (command.versioned) {
      const expected =
        command.version ??
        (command.after ? /** @type {number} */ (command.after.expected) + 1 : this.scope(/** @type {string} */ (command.scope)).version);
      command.expected = expected;
      frame.version = expected;
    }
    command.text = JSON.stringify(frame);
  }

  /** @param {Command} command */
  _sendCommand(command) {
    if (command.text !== null && this._sendText(command.text)) command.sent = true;
  }

  /** Builds and sends the commands that were waiting for a version (first state, chain). */
  _buildWaiting() {
    for (const command of this._pending.values()) {
      if (command.text === null && this._buildable(command)) {
        this._build(command);
        this._sendCommand(command);
      }
    }
  }

  /** @param {any} raw */
  _onRaw(raw) {
    let frame;
    try {
      const text = typeof raw === 'string' ? raw : new TextDecoder().decode(raw);
      frame = JSON.parse(text);
    } catch (err) {
      this._emit('error', new CommandError('bad_frame', 'the server sent a frame that is not JSON'));
      return;
    }
    this._attempt = 0; // the connection works: the next reconnect starts from the base delay
    this._emit('message', frame);
    switch (frame && frame.type) {
      case 'state':
        this._onState(frame);
        break;
      case 'update':
        this._onUpdate(frame);
        break;
      case 'ack':
        this._onAnswer(frame, null);
        break;
      case 'fail':
        // The server omits default fields: a missing version is 0.
        this._onAnswer(frame, new CommandError(frame.code, frame.message, frame.version ?? 0));
        break;
      case 'error':
        this._emit('error', new CommandError(frame.code || 'error', frame.message));
        break;
      case 'pong':
        if (this._syncPending) {
          this._syncPending = false;
          // A member's group is among what the server sends first; not mentioned: out of it.
          if (this._groupUnconfirmed) this.group = null;
          this._groupUnconfirmed = false;
          this._emit('synced', { connects: this.connects });
        }
        break;
      case 'group':
        this._advancePos(frame.pos);
        this._groupUnconfirmed = false;
        // The membership as last told (for listeners that attach later).
        if (frame.joined !== false) this.group = frame;
        else if (this.group && (!frame.group || frame.group === this.group.group)) this.group = null;
        this._emit(frame.type, frame);
        break;
      case 'group_msg':
        this._advancePos(frame.pos);
        this._emit(frame.type, frame);
        break;
      default:
        this._emit('error', new CommandError('bad_frame', `unknown frame type ${JSON.stringify(frame && frame.type)}`));
    }
  }

  /** @param {string|undefined} pos */
  _advancePos(pos) {
    if (typeof pos !== 'string' || !pos) return;
    if (this._pos === null || comparePos(pos, this._pos) > 0) this._pos = pos;
  }

  /** @param {any} frame */
  _onState(frame) {
    const name = frame.scope || DEFAULT_SCOPE;
    const state = this.scope(name);
    const previousVersion = state.version;
    const wasAwaiting = this._awaitingResync.delete(name);
    const version = typeof frame.version === 'number' ? frame.version : 0;
    state.data = frame.data === undefined || frame.data === null ? {} : frame.data;
    state.version = version;
    this._advancePos(frame.pos);
    const resync = !!frame.resync || wasAwaiting;
    // Versioned commands issued before the first state are built now.
    if (previousVersion === null) this._buildWaiting();
    if (resync) this._emit('resync', { scope: name, version, data: state.data });
    /** @type {SessionEvent} */
    const event = {
      scope: name,
      version,
      data: state.data,
      ops: null,
      kind: 'state',
      resync,
      previousVersion,
    };
    this._emit('session', event);
    this._settleWaiting();
    if (name === DEFAULT_SCOPE) this._resolveReady(this);
  }

  /** @param {any} frame */
  _onUpdate(frame) {
    const name = frame.scope || DEFAULT_SCOPE;
    if (this._awaitingResync.has(name)) return;
    const state = this.scope(name);
    if (state.version === null) {
      this._requestResync(name);
      return;
    }
    let current = state.version;
    for (const change of frame.changes || []) {
      if (change.v <= current) continue; // already have it (resume overlap)
      if (change.v !== current + 1) {
        this._requestResync(name);
        return;
      }
      try {
        state.data = applyPatch(state.data, change.ops);
      } catch (err) {
        this._emit('error', err);
        this._requestResync(name);
        return;
      }
      const previousVersion = current;
      state.version = current = change.v;
      /** @type {SessionEvent} */
      const event = {
        scope: name,
        version: change.v,
        data: state.data,
        ops: change.ops,
        kind: 'update',
        resync: false,
        previousVersion,
      };
      this._emit('session', event);
    }
    this._advancePos(frame.pos);
    this._settleWaiting();
  }

  /** @param {string} name */
  _requestResync(name) {
    this._awaitingResync.add(name);
    this._send({ type: 'resync' });
  }

  /**
   * Settles a command on `ack` (error null) or `fail`. A patch settles once
   * the local copy has reached the version the server reported; a chained
   * patch also waits for the patch it depends on (their answers may come by
   * different routes, in any order).
   * @param {any} frame
   * @param {CommandError|null} error
   */
  _onAnswer(frame, error) {
    const command = this._pending.get(frame.id);
    if (!command) return; // not ours, or already answered (a duplicate answer)
    this._pending.delete(frame.id);
    command.answered = true;
    const version = frame.version ?? 0;
    const finish = () => {
      const broken = command.brokenBy;
      if (broken) {
        // The patch it depended on failed: it fails with it, whatever the server said.
        const failure = error
          ? new CommandError(broken.code, `${broken.message} (an earlier patch of this chain failed)`, error.version)
          : new CommandError(
              'chain_broken',
              'the patch was applied on a version another client wrote: the earlier patch of its chain failed',
              version,
            );
        if (!error) /** @type {any} */ (failure).applied = true;
        /** @type {any} */ (failure).cause = broken;
        this._settleFailed(command, failure);
      } else if (error) this._settleFailed(command, error);
      else {
        command.markDone(true);
        command.resolve(command.type === 'patch' ? { id: command.id, version } : { id: command.id, version, group: frame.group || '' });
      }
    };
    const settle = () => {
      const after = command.after;
      if (after && !command.brokenBy) {
        after.done.then((ok) => {
          if (!ok && !command.brokenBy) command.brokenBy = after.error || new CommandError('closed', 'the channel was closed');
          finish();
        });
      } else finish();
    };
    const known = command.scope !== null && this._scopes.has(command.scope);
    if (typeof version === 'number' && known) this._waitFor(/** @type {string} */ (command.scope), version, settle, this._settleTimeout);
    else settle();
  }

  /**
   * Rejects a command, and with it every later patch of its chain: one not
   * sent yet fails at once, one already sent when its own answer comes.
   * @param {Command} command
   * @param {CommandError} error
   */
  _settleFailed(command, error) {
    command.error = error;
    command.markDone(false);
    command.reject(error);
    for (const dependent of [...this._pending.values()]) {
      if (dependent.after !== command || dependent.brokenBy) continue;
      dependent.brokenBy = error;
      if (!dependent.sent) {
        this._pending.delete(dependent.id);
        dependent.answered = true;
        const failure = new CommandError(error.code, `${error.message} (an earlier patch of this chain failed)`, error.version);
        /** @type {any} */ (failure).cause = error;
        this._settleFailed(dependent, failure);
      }
    }
  }

  /**
   * Calls `settle` once the scope has reached `version` (or after `timeout` ms, if > 0).
   * @param {string} scope
   * @param {number} version
   * @param {() => void} settle
   * @param {number} timeout
   */
  _waitFor(scope, version, settle, timeout) {
    const current = this.scope(scope).version;
    if (current !== null && current >= version) {
      settle();
      return;
    }
    const waiter = { scope, version, settle, timer: /** @type {any} */ (null) };
    if (timeout > 0) {
      waiter.timer = setTimeout(() => {
        this._waiting.delete(waiter);
        settle();
      }, timeout);
    }
    this._waiting.add(waiter);
  }

  _settleWaiting() {
    for (const waiter of [...this._waiting]) {
      const current = this.scope(waiter.scope).version;
      if (current !== null && current >= waiter.version) {
        this._waiting.delete(waiter);
        clearTimeout(waiter.timer);
        waiter.settle();
      }
    }
  }
}

/**
 * Opens a live channel to a batch.
 * @param {ConnectOptions} options
 * @returns {BatchChannel}
 */
export function connect(options) {
  const channel = new BatchChannel(options);
  channel._open();
  return channel;
}
