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
export function fullJitterBackoff({ base, cap }?: Backoff): (attempt: number) => number;
/**
 * Compares two stream entry IDs (`"<ms>-<seq>"`).
 * @param {string} a
 * @param {string} b
 * @returns {number}
 */
export function comparePos(a: string, b: string): number;
/**
 * Builds the socket URL.
 * @param {string} url
 * @param {{token?: string, batch?: string, since?: string|null}} params
 * @returns {string}
 */
export function buildSocketUrl(url: string, { token, batch, since }: {
    token?: string;
    batch?: string;
    since?: string | null;
}): string;
/**
 * The run id in a participant token's claims (`<base64url JSON>.<signature>`),
 * or null. The claims are read, not verified.
 * @param {string} token
 * @returns {string|null}
 */
export function runOfToken(token: string): string | null;
/**
 * Opens a live channel to a batch.
 * @param {ConnectOptions} options
 * @returns {BatchChannel}
 */
export function connect(options: ConnectOptions): BatchChannel;
/** The scope a batch channel writes by default. */
export const DEFAULT_SCOPE: "batch_session";
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
    constructor(code: string, message?: string, version?: number | null);
    code: string;
    version: number;
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
    constructor(options: ConnectOptions);
    _options: ConnectOptions;
    /** @type {string[]} */
    _urls: string[];
    _urlIndex: number;
    _WebSocket: any;
    /** @type {(attempt: number) => number} */
    _backoff: (attempt: number) => number;
    _pingInterval: number;
    _settleTimeout: number;
    /** Per-channel command id prefix (kept across reconnects so re-sent ids stay the same). */
    idPrefix: string;
    _counter: number;
    /** @type {Map<string, ScopeState>} */
    _scopes: Map<string, ScopeState>;
    /** @type {string|null} */
    _pos: string | null;
    /** @type {Set<string>} scopes whose updates are ignored until a full state arrives */
    _awaitingResync: Set<string>;
    /** @type {Map<string, Command>} sent or queued, not yet acknowledged (insertion = id order) */
    _pending: Map<string, Command>;
    /** @type {Set<{scope: string, version: number, settle: () => void, timer: any}>} */
    _waiting: Set<{
        scope: string;
        version: number;
        settle: () => void;
        timer: any;
    }>;
    /** @type {any} */
    _ws: any;
    _attempt: number;
    _closed: boolean;
    /** @type {any} */
    _reconnectTimer: any;
    /** @type {any} */
    _pingTimer: any;
    _silentSincePing: boolean;
    /** Number of sockets opened so far (1 after the first open). */
    connects: number;
    /** @type {ConnectionState} */
    _connectionState: ConnectionState;
    /** Waiting for the pong that follows what the server queued on open. */
    _syncPending: boolean;
    /**
     * The last `group` frame of the participant's current group (null: not in one,
     * as far as this channel was told).
     * @type {any}
     */
    group: any;
    _groupUnconfirmed: boolean;
    /** Resolves with the channel once the first full state of `batch_session` arrived. */
    ready: Promise<any>;
    _resolveReady: (v?: any) => void;
    _rejectReady: (e: any) => void;
    /** @returns {any} the batch session data (live object: read, do not mutate) */
    get data(): any;
    /** @returns {number|null} the last batch session version seen (null before the first state) */
    get version(): number | null;
    /** @returns {string|null} the last stream position seen (sent as `since` on reconnect) */
    get pos(): string | null;
    /** @returns {boolean} whether a socket is open now */
    get connected(): boolean;
    /** @returns {boolean} whether close() was called or the server refused the channel for good */
    get closed(): boolean;
    /** @returns {number} commands sent or queued but not yet acknowledged */
    get pendingCount(): number;
    /**
     * @returns {ConnectionState} `connecting` (before the first open), `open`,
     *   `reconnecting` (after an unexpected close, until the next open), `closed` (for good)
     */
    get connectionState(): ConnectionState;
    /**
     * The run id this channel's participant token names (read from the token's
     * claims, not verified: the gateway does that), or null if it cannot be read.
     * In a group it is this participant's member id.
     * @returns {string|null}
     */
    get run(): string | null;
    /** @param {ConnectionState} next */
    _setConnectionState(next: ConnectionState): void;
    /**
     * The state of one scope (created empty on first use).
     * @param {string} name
     * @returns {ScopeState}
     */
    scope(name: string): ScopeState;
    /**
     * Resolves once the local copy of a scope has reached `version`.
     * @param {number} version
     * @param {string} [scope]
     * @returns {Promise<void>}
     */
    whenVersion(version: number, scope?: string): Promise<void>;
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
    patch(ops: Operation[] | Operation, { versioned, version, scope, id, chain }?: PatchOptions): Promise<PatchResult>;
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
    command(type: string, fields?: Record<string, any>, { id }?: {
        id?: string;
    }): Promise<CommandResult>;
    /**
     * @param {{type: string, fields: any, scope: string|null, ops: Operation[], versioned: boolean, version: number|null, after: Command|null}} spec
     * @param {string|undefined} id
     * @returns {Promise<any>}
     */
    _submit(spec: {
        type: string;
        fields: any;
        scope: string | null;
        ops: Operation[];
        versioned: boolean;
        version: number | null;
        after: Command | null;
    }, id: string | undefined): Promise<any>;
    /**
     * Whether a command's frame can be fixed now: a versioned patch needs the
     * last version seen (before the first state it waits) or, in a chain, the
     * version its predecessor expects.
     * @param {Command} command
     */
    _buildable(command: Command): boolean;
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
    update(fn: (data: any, info: {
        version: number;
        attempt: number;
    }) => any, { scope, retries, backoff }?: UpdateOptions): Promise<UpdateResult>;
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
    increment(path: string, by?: number, { scope, retries, backoff }?: UpdateOptions): Promise<IncrementResult>;
    /**
     * The state of a scope once it has one (waits for the first state).
     * @param {string} scope
     * @returns {Promise<ScopeState>}
     */
    _stateOf(scope: string): Promise<ScopeState>;
    /** @returns {string} a fresh command id: the channel's random prefix and a counter */
    nextId(): string;
    /** Asks the server for the full state again (ignores updates until it arrives). */
    resync(): void;
    /**
     * Closes the channel for good: no reconnect, pending commands are rejected
     * with code `closed` (they may or may not have been applied).
     */
    close(): void;
    /** Opens a socket (called by connect() and on every reconnect). */
    _open(): void;
    /**
     * Detaches and closes a socket, then handles the close at once.
     * @param {any} ws
     * @param {number} code
     * @param {string} reason
     */
    _dropSocket(ws: any, code: number, reason: string): void;
    /**
     * @param {number} code
     * @param {string} reason
     */
    _onSocketClosed(code: number, reason: string): void;
    /** @returns {string} the URL (as given) of the current or next socket */
    get url(): string;
    _scheduleReconnect(): void;
    _startPing(): void;
    /**
     * @param {CommandError} error
     */
    _failAll(error: CommandError): void;
    /**
     * @param {any} frame
     * @returns {boolean} whether it was handed to an open socket
     */
    _send(frame: any): boolean;
    /**
     * @param {string} text
     * @returns {boolean}
     */
    _sendText(text: string): boolean;
    /** @param {Command} command */
    _build(command: Command): void;
    /** @param {Command} command */
    _sendCommand(command: Command): void;
    /** Builds and sends the commands that were waiting for a version (first state, chain). */
    _buildWaiting(): void;
    /** @param {any} raw */
    _onRaw(raw: any): void;
    /** @param {string|undefined} pos */
    _advancePos(pos: string | undefined): void;
    /** @param {any} frame */
    _onState(frame: any): void;
    /** @param {any} frame */
    _onUpdate(frame: any): void;
    /** @param {string} name */
    _requestResync(name: string): void;
    /**
     * Settles a command on `ack` (error null) or `fail`. A patch settles once
     * the local copy has reached the version the server reported; a chained
     * patch also waits for the patch it depends on (their answers may come by
     * different routes, in any order).
     * @param {any} frame
     * @param {CommandError|null} error
     */
    _onAnswer(frame: any, error: CommandError | null): void;
    /**
     * Rejects a command, and with it every later patch of its chain: one not
     * sent yet fails at once, one already sent when its own answer comes.
     * @param {Command} command
     * @param {CommandError} error
     */
    _settleFailed(command: Command, error: CommandError): void;
    /**
     * Calls `settle` once the scope has reached `version` (or after `timeout` ms, if > 0).
     * @param {string} scope
     * @param {number} version
     * @param {() => void} settle
     * @param {number} timeout
     */
    _waitFor(scope: string, version: number, settle: () => void, timeout: number): void;
    _settleWaiting(): void;
}
export type Operation = import("./jsonpatch.js").Operation;
export type Backoff = {
    /**
     * first delay ceiling in ms (default 100)
     */
    base?: number;
    /**
     * largest delay ceiling in ms (default 5000)
     */
    cap?: number;
};
export type ConnectOptions = {
    /**
     * `ws(s)://host/ws/batch/<batch>` (a token in its query
     * is kept), or an `http(s)`/`ws(s)` base URL together with `batch`; relative URLs
     * resolve against the page in a browser. Several URLs (gateways): each reconnect
     * moves on to the next one, and resumes there.
     */
    url: string | string[];
    /**
     * participant token (sent as `?token=`)
     */
    token?: string;
    /**
     * batch id, when `url` is a base URL
     */
    batch?: string;
    /**
     * WebSocket constructor (default: `globalThis.WebSocket`)
     */
    WebSocket?: any;
    /**
     * stream position to resume after (normally left out)
     */
    since?: string;
    /**
     * reconnect delays:
     * full jitter, `random(0, min(cap, base * 2 ** attempt))`, or your own function
     */
    backoff?: Backoff | ((attempt: number) => number);
    /**
     * ms between keep-alive pings (default 20000; 0 = off);
     * a socket that stays silent for a whole interval after a ping is dropped and reopened
     */
    pingInterval?: number;
    /**
     * ms to wait for the local copy to reach an
     * acknowledged version before settling anyway (default 10000)
     */
    settleTimeout?: number;
};
export type SessionEvent = {
    scope: string;
    /**
     * the version after this change
     */
    version: number;
    /**
     * the scope's data after this change (live object: do not mutate)
     */
    data: any;
    /**
     * the change's operations, or null for a full state
     */
    ops: Operation[] | null;
    kind: "update" | "state";
    /**
     * whether this full state replaced a diverged copy
     */
    resync: boolean;
    /**
     * the version before
     */
    previousVersion: number | null;
};
export type PatchOptions = {
    /**
     * send the last version seen; the server applies
     * the patch only if it is still current (JATOS versioning). Default false.
     */
    versioned?: boolean;
    /**
     * expected version to send instead of the last one seen
     * (implies `versioned`); for recompute-and-retry strategies
     */
    version?: number;
    /**
     * default `batch_session`
     */
    scope?: string;
    /**
     * command id (default: channel prefix + counter); at most 64 chars.
     * Re-using the id of an earlier command gets that command's answer, never a second application
     */
    id?: string;
    /**
     * (Cohort extension, needs `versioned`) several versioned patches
     * in flight: while an earlier versioned patch of this channel to the same scope is still
     * unanswered, this one expects the version that earlier one will produce (instead of the
     * last version seen), and fails with it. Default false: the expected version is the last one seen
     */
    chain?: boolean;
};
export type PatchResult = {
    id: string;
    /**
     * the version this command was committed as
     */
    version: number;
};
export type CommandResult = {
    id: string;
    /**
     * the version of the scope the command changed (0 if none)
     */
    version: number;
    /**
     * for group commands: the group the run is in now ('' while waiting
     * for a group-by-arrival group, or after leaving)
     */
    group: string;
};
export type UpdateOptions = {
    /**
     * default `batch_session`
     */
    scope?: string;
    /**
     * how many times a conflicting patch is recomputed and sent
     * again (default 50)
     */
    retries?: number;
    /**
     * delay before each retry, full jitter (default `{base: 10, cap: 500}`)
     */
    backoff?: Backoff;
};
export type UpdateResult = {
    /**
     * the command id of the patch that was applied (null: nothing to do)
     */
    id: string | null;
    /**
     * the version it was committed as (or the current one)
     */
    version: number;
    /**
     * the operations that were applied
     */
    ops: Operation[];
    /**
     * how many patches were sent
     */
    attempts: number;
};
export type IncrementResult = {
    /**
     * the counter's value right after this increment (unique per increment)
     */
    value: number;
    /**
     * the scope's version of that change
     */
    version: number;
    /**
     * how many patches were sent
     */
    attempts: number;
};
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";
export type ScopeState = {
    data: any;
    version: number | null;
};
export type Command = {
    id: string;
    /**
     * `patch`, or another command (`join_group`, `group_msg`, ...)
     */
    type: string;
    /**
     * the other command's fields (besides `type` and `id`)
     */
    fields: any;
    /**
     * the scope a patch writes (null: other commands)
     */
    scope: string | null;
    ops: Operation[];
    versioned: boolean;
    /**
     * explicit expected version (else the last seen, when built)
     */
    version: number | null;
    /**
     * the expected version actually sent (versioned patches)
     */
    expected: number | null;
    /**
     * the earlier patch of a chain this one expects the result of
     */
    after: Command | null;
    /**
     * set when `after` failed after this one was sent
     */
    brokenBy: CommandError | null;
    /**
     * why it failed (once it did)
     */
    error: CommandError | null;
    /**
     * whether the frame was handed to a socket at least once
     */
    sent: boolean;
    answered: boolean;
    /**
     * resolves once it is settled (true: it succeeded)
     */
    done: Promise<boolean>;
    markDone: (ok: boolean) => void;
    /**
     * the exact frame, fixed once built (re-sent as is)
     */
    text: string | null;
    resolve: (r: any) => void;
    reject: (e: CommandError) => void;
};
/**
 * Minimal event emitter (browser-safe). Listener errors are reported as
 * 'error' events; 'error' events nobody listens to go to console.error.
 */
declare class Emitter {
    /** @type {Map<string, Set<Function>>} */
    _listeners: Map<string, Set<Function>>;
    /**
     * Adds a listener; returns a function that removes it.
     * @param {string} event
     * @param {Function} fn
     * @returns {() => void}
     */
    on(event: string, fn: Function): () => void;
    /**
     * @param {string} event
     * @param {Function} fn
     */
    off(event: string, fn: Function): void;
    /**
     * Like `on`, for one call only.
     * @param {string} event
     * @param {Function} fn
     * @returns {() => void}
     */
    once(event: string, fn: Function): () => void;
    /**
     * @param {string} event
     * @param {...any} args
     */
    _emit(event: string, ...args: any[]): void;
}
export {};
