// @ts-check
/**
 * The jatos.js-compatible API, built on the Cohort channel (cohort.js).
 *
 * `createJatos(channel)` returns an object shaped like JATOS's `jatos`
 * global. Each part of the jatos.js API is installed by its own function:
 * `installErrorHandling`, `installBatchSession` and `installConnectionEvents`
 * here; groups (`installGroups`, groups.js); the study run, i.e. init data,
 * onLoad, study session, component flow and ending (`installStudyRun`,
 * run.js); result data, files and logs (`installResults`, results.js). The
 * batch and group session objects share session-api.js.
 *
 * Semantics follow the jatos.js reference (JATOS 3.x); the differences are
 * listed in client_js/README.md ("Differences from jatos.js").
 * @module jatos
 */

import { connect, CommandError, DEFAULT_SCOPE } from './cohort.js';
import { installGroups } from './groups.js';
import { installResults } from './results.js';
import { browserHost, installStudyRun } from './run.js';
import { createSessionApi } from './session-api.js';

/** Version of this jatos.js-compatible layer. */
export const JATOS_COMPAT_VERSION = '3.9-cohort.2';

/**
 * @typedef {import('./cohort.js').BatchChannel} BatchChannel
 * @typedef {import('./cohort.js').ConnectOptions} ConnectOptions
 * @typedef {import('./cohort.js').SessionEvent} SessionEvent
 * @typedef {import('./jsonpatch.js').Operation} Operation
 * @typedef {(result?: any) => void} SuccessCallback
 * @typedef {(error: CommandError) => void} FailCallback
 */

/**
 * @typedef {import('./session-api.js').SessionApi} SessionApi
 * @typedef {SessionApi} BatchSessionApi
 */

/**
 * @typedef {(...args: any[]) => any} Callback
 */

/**
 * The jatos object: the jatos.js API (JATOS 3.x) and Cohort's additions
 * (marked "(Cohort)"). README.md lists every function with its status.
 * @typedef {Object} Jatos
 * @property {string} version
 * @property {SessionApi} batchSession
 * @property {boolean} batchSessionVersioning send versioned patches (default true, as in JATOS)
 * @property {boolean} batchSessionPipelining (Cohort) several versioned writes in flight (default false)
 * @property {(callback: (path: string, op: string) => void) => void} onBatchSession
 * @property {(callback: (error: any) => void) => void} onError
 * @property {(channel: BatchChannel|null) => void} attachBatchChannel (Cohort)
 * @property {(options: ConnectOptions) => Promise<Jatos>} connectBatch (Cohort)
 * @property {BatchChannel|null} batchChannel (Cohort) the live channel under everything
 * @property {(callback: () => void) => void} onConnected
 * @property {(callback: () => void) => void} onDisconnected
 * @property {(callback: (change: {state: string, previous: string}) => void) => void} onConnectionChange (Cohort)
 * @property {() => boolean} isConnected
 *
 * @property {SessionApi} groupSession
 * @property {boolean} groupSessionVersioning
 * @property {boolean} groupSessionPipelining (Cohort)
 * @property {(callbacks?: import('./groups.js').GroupCallbacks) => Promise<import('./groups.js').GroupInfo>} joinGroup
 * @property {(onSuccess?: Callback, onError?: Callback) => Promise<any>} leaveGroup
 * @property {(onSuccess?: Callback, onFail?: Callback) => Promise<import('./groups.js').GroupInfo>} reassignGroup
 * @property {(onSuccess?: Callback, onFail?: Callback) => Promise<any>} setGroupFixed
 * @property {(msg: any) => Promise<any>} sendGroupMsg
 * @property {(recipient: string, msg: any) => Promise<any>} sendGroupMsgTo
 * @property {() => boolean} hasJoinedGroup
 * @property {() => boolean} hasOpenGroupChannel
 * @property {() => boolean} isMaxActiveMemberReached
 * @property {() => boolean} isMaxActiveMemberOpen
 * @property {() => boolean} isGroupOpen
 * @property {() => string|null} getGroupState
 * @property {() => boolean} isGroupFixed
 * @property {() => boolean} isWaitingForGroup (Cohort)
 * @property {string|null} groupMemberId
 * @property {string|null} groupResultId
 * @property {string[]} groupMembers
 * @property {string[]} groupChannels
 * @property {string|null} groupState
 *
 * @property {string|null} studyResultId
 * @property {string|null} workerId
 * @property {string|null} batchId
 * @property {string|null} studyId
 * @property {number|null} studyVersion (Cohort)
 * @property {string|null} componentId
 * @property {number|null} componentPos
 * @property {string|null} componentResultId
 * @property {any} studyJsonInput
 * @property {any} studyInput
 * @property {any} componentJsonInput
 * @property {any} componentInput
 * @property {any} batchJsonInput
 * @property {any} batchInput
 * @property {Record<string, any>} studyProperties
 * @property {Record<string, any>} componentProperties
 * @property {Record<string, any>} batchProperties
 * @property {any[]} componentList
 * @property {number|null} studyLength
 * @property {any} studySessionData
 * @property {Record<string, string>} urlQueryParameters
 * @property {Record<string, any>} sessionConfig (Cohort) oTree's session config
 * @property {string|null} runKey (Cohort)
 * @property {boolean} loaded (Cohort)
 * @property {string|null} [confirmationCode] (Cohort) after the end
 * @property {number} httpTimeout
 * @property {number} httpRetry
 * @property {number} httpRetryWait
 * @property {(callback: Callback) => void} onLoad
 * @property {(callback: Callback) => void} onload
 * @property {(url: string) => Promise<Jatos>} loadPage (Cohort)
 * @property {(data: any, onSuccess?: Callback, onFail?: Callback) => Promise<any>} setStudySessionData
 * @property {(id: string|number, resultData?: any, message?: any, onError?: Callback) => Promise<void>} startComponent
 * @property {(pos: number, resultData?: any, message?: any, onError?: Callback) => Promise<void>} startComponentByPos
 * @property {(title: string, resultData?: any, message?: any, onError?: Callback) => Promise<void>} startComponentByTitle
 * @property {(resultData?: any, message?: any, onError?: Callback) => Promise<any>} startNextComponent
 * @property {(resultData?: any, message?: any, onError?: Callback) => Promise<void>} startLastComponent
 * @property {(...args: any[]) => Promise<any>} endStudy
 * @property {(...args: any[]) => Promise<any>} endStudyAjax
 * @property {(...args: any[]) => Promise<any>} endStudyWithoutRedirect
 * @property {(url: string, ...args: any[]) => Promise<any>} endStudyAndRedirect
 * @property {(message?: string, showEndPage?: boolean) => Promise<any>} abortStudy
 * @property {(message?: string, onSuccess?: Callback, onError?: Callback) => Promise<any>} abortStudyAjax
 * @property {(message?: string, onSuccess?: Callback, onError?: Callback) => Promise<any>} abortStudyWithoutRedirect
 * @property {(url: string, message?: string, onSuccess?: Callback, onError?: Callback) => Promise<any>} abortStudyAndRedirect
 * @property {(period: number) => void} setHeartbeatPeriod
 * @property {(config?: Record<string, any>) => any} addAbortButton
 * @property {(show: boolean) => void} showBeforeUnloadWarning
 * @property {(obj?: any) => any} addJatosIds
 *
 * @property {(resultData: any, onSuccess?: Callback, onError?: Callback) => Promise<any>} submitResultData
 * @property {(resultData: any, onSuccess?: Callback, onError?: Callback) => Promise<any>} appendResultData
 * @property {(obj: any, filename: string, onSuccess?: Callback, onError?: Callback) => Promise<any>} uploadResultFile
 * @property {(...args: any[]) => Promise<any>} downloadResultFile `([componentPos], filename, [onSuccess], [onError])`
 * @property {(logMsg: any) => Promise<any>} log
 * @property {() => void} catchAndLogErrors
 * @property {(points: number|null, onSuccess?: Callback, onError?: Callback) => Promise<any>} setBonus (Cohort)
 * @property {(onSuccess?: Callback, onError?: Callback) => Promise<any>} getPayoff (Cohort)
 * @property {(config?: import('./results.js').OverlayConfig) => any} showOverlay
 * @property {() => void} removeOverlay
 * @property {() => void} removeOverlays
 * @property {Record<string, any>} waitSendDataOverlayConfig
 */

/**
 * @typedef {Object} CreateJatosOptions
 * @property {import('./run.js').RunHost} [host] how the study run navigates
 *   (default: the browser's `location`; the Node bot passes its own)
 */

/**
 * Creates a jatos.js-compatible object. `channel` may be null and attached
 * later (`jatos.attachBatchChannel(ch)` or `jatos.connectBatch(options)`); on
 * a component page `jatos.loadPage(url)` (or `startPage(jatos)` from run.js)
 * loads the run and opens the channel itself.
 * @param {BatchChannel|null} [channel]
 * @param {CreateJatosOptions} [options]
 * @returns {Jatos}
 */
export function createJatos(channel = null, options = {}) {
  /** @type {any} */
  const jatos = { version: JATOS_COMPAT_VERSION };
  const host = (options && options.host) || browserHost();
  installErrorHandling(jatos);
  installBatchSession(jatos, channel);
  installConnectionEvents(jatos);
  installGroups(jatos);
  installStudyRun(jatos, host);
  installResults(jatos, host);
  return jatos;
}

/**
 * `jatos.onError(callback)`: the deprecated catch-all JATOS calls when a
 * failing function was given no onFail callback. Installed first; other parts
 * report through `jatos._reportError`.
 * @param {any} jatos
 */
export function installErrorHandling(jatos) {
  /** @type {((error: any) => void) | null} */
  let onJatosError = null;
  jatos.onError = (/** @type {(error: any) => void} */ callback) => {
    onJatosError = callback;
  };
  /**
   * @param {any} error
   * @param {Function|undefined} onFail
   */
  jatos._reportError = (error, onFail) => {
    if (typeof onFail === 'function') onFail(error);
    else if (onJatosError) onJatosError(error);
  };
}

/**
 * Installs `jatos.batchSession`, `jatos.onBatchSession`,
 * `jatos.batchSessionVersioning`, `jatos.batchSessionPipelining` (Cohort),
 * `jatos.attachBatchChannel`, `jatos.connectBatch` and the
 * `jatos.batchChannel` getter. Other parts follow the channel with
 * `jatos._onChannel(fn)`: `fn(channel)` is called for the current channel and
 * every one attached later (null when detached).
 * @param {any} jatos
 * @param {BatchChannel|null} initialChannel
 */
export function installBatchSession(jatos, initialChannel) {
  /** @type {BatchChannel|null} */
  let channel = null;
  /** @type {(() => void) | null} */
  let unsubscribe = null;
  /** @type {((path: string, op: string) => void) | null} */
  let onJatosBatchSession = null;
  /** @type {((channel: BatchChannel|null) => void)[]} */
  const hooks = [];

  jatos.batchSessionVersioning = true;
  /** (Cohort) with versioning on: several writes in flight, each expecting the version the one before produces. */
  jatos.batchSessionPipelining = false;

  Object.defineProperty(jatos, 'batchChannel', {
    get: () => channel,
    enumerable: true,
    configurable: true,
  });

  /**
   * @param {string} path
   * @param {string} op
   */
  const notify = (path, op) => {
    if (typeof onJatosBatchSession === 'function') onJatosBatchSession(path, op);
  };

  /** @param {SessionEvent} event */
  const onSession = (event) => {
    if (event.scope !== DEFAULT_SCOPE) return;
    if (event.kind === 'update' && event.ops) {
      // As jatos.js: once per operation, after the whole change is applied.
      for (const op of event.ops) notify(op.path, op.op);
    } else if (event.kind === 'state' && event.previousVersion !== null && event.previousVersion !== event.version) {
      // A full state replaced a copy that had fallen behind (resync or resume
      // without replay): tell the page that everything may have changed.
      notify('', 'replace');
    }
  };

  const { api, reset } = createSessionApi(jatos, {
    label: 'batch',
    channel: () => channel,
    scope: () => DEFAULT_SCOPE,
    unavailable: () => (!channel || channel.closed ? new CommandError('no_channel', 'No open batch channel') : null),
    versioning: () => !!jatos.batchSessionVersioning,
    pipelining: () => !!jatos.batchSessionPipelining,
  });
  /** @type {SessionApi} */
  jatos.batchSession = api;

  /**
   * Follows the batch channel: `fn(channel)` now and on every attach.
   * @param {(channel: BatchChannel|null) => void} fn
   */
  jatos._onChannel = (fn) => {
    hooks.push(fn);
    fn(channel);
  };

  /** @param {BatchChannel|null} next */
  jatos.attachBatchChannel = (next) => {
    if (unsubscribe) unsubscribe();
    unsubscribe = null;
    channel = next;
    reset();
    if (channel) unsubscribe = channel.on('session', onSession);
    for (const hook of hooks) hook(channel);
  };

  /**
   * Opens the batch channel and resolves with `jatos` once the batch
   * session's first state has arrived (as jatos.js is ready only after its
   * batch channel is open).
   * @param {ConnectOptions} options
   * @returns {Promise<any>}
   */
  jatos.connectBatch = (options) => {
    const next = connect(options);
    jatos.attachBatchChannel(next);
    return next.ready.then(() => jatos);
  };

  /**
   * Sets THE callback (one, as in jatos.js: a new call replaces the old one)
   * called with (path, op) for every operation of every batch session change,
   * own changes included.
   * @param {(path: string, op: string) => void} callback
   */
  jatos.onBatchSession = (callback) => {
    onJatosBatchSession = callback;
  };

  jatos.attachBatchChannel(initialChannel);
}

/**
 * `jatos.onConnected(callback)`, `jatos.onDisconnected(callback)`,
 * `jatos.isConnected()` (jatos.js 3.8+): whether the channel to the server is
 * open now, and callbacks for when that changes (several callbacks may be
 * added, as jatos.js's event listeners; each call adds one). Cohort also
 * offers `jatos.onConnectionChange(callback)`: `callback({state, previous})`
 * with the states `connecting`, `open`, `reconnecting`, `closed`.
 * @param {any} jatos
 */
export function installConnectionEvents(jatos) {
  /** @type {Set<Function>} */
  const connected = new Set();
  /** @type {Set<Function>} */
  const disconnected = new Set();
  /** @type {Set<Function>} */
  const changes = new Set();
  /** @type {(() => void) | null} */
  let off = null;
  /** @type {BatchChannel|null} */
  let current = null;

  /**
   * @param {Set<Function>} set
   * @param {any} [arg]
   */
  const call = (set, arg) => {
    for (const fn of [...set]) {
      try {
        fn(arg);
      } catch (err) {
        if (typeof console !== 'undefined') console.error(err);
      }
    }
  };

  jatos._onChannel((/** @type {BatchChannel|null} */ channel) => {
    if (off) off();
    off = null;
    current = channel;
    if (!channel) return;
    off = channel.on('connection', (/** @type {{state: string, previous: string}} */ change) => {
      call(changes, change);
      if (change.state === 'open') call(connected);
      else if (change.previous === 'open') call(disconnected);
    });
  });

  /** @param {Function} callback */
  jatos.onConnected = (callback) => {
    if (typeof callback === 'function') connected.add(callback);
  };
  /** @param {Function} callback */
  jatos.onDisconnected = (callback) => {
    if (typeof callback === 'function') disconnected.add(callback);
  };
  /** @param {Function} callback */
  jatos.onConnectionChange = (callback) => {
    if (typeof callback === 'function') changes.add(callback);
  };
  /** @returns {boolean} whether the channel to the server is open now */
  jatos.isConnected = () => !!current && current.connected;
}
