// @ts-check
/**
 * The jatos.js-compatible API, built on the Cohort channel (cohort.js).
 *
 * `createJatos(channel)` returns an object shaped like JATOS's `jatos`
 * global. Each part of the jatos.js API is installed by its own function
 * (`installBatchSession` here; the study run, i.e. init data, onLoad, study
 * session, component flow and ending, by `installStudyRun` in run.js; groups
 * and results will be installed the same way), so the object grows feature by
 * feature without one big file.
 *
 * Semantics follow the jatos.js reference (JATOS 3.x); the differences are
 * listed in client_js/README.md ("Differences from jatos.js").
 * @module jatos
 */

import { connect, CommandError, DEFAULT_SCOPE } from './cohort.js';
import { cloneJson, deepEqual, getPointer } from './jsonpatch.js';
import { browserHost, installStudyRun } from './run.js';

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
 * @typedef {Object} BatchSessionApi
 * @property {(name: string) => any} get value of a top-level field (a name, not a pointer), cloned
 * @property {() => any} getAll the whole session, cloned
 * @property {(path: string) => any} find value at a JSON pointer, cloned; undefined if none
 * @property {(path: string) => boolean} defined whether a JSON pointer names an existing field
 * @property {(path: string, value: any) => boolean} test local check: is `value` stored at `path`
 * @property {(name: string, value: any, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>} set
 * @property {(value: any, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>} setAll
 * @property {(path: string, value: any, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>} add
 * @property {(path: string, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>} remove
 * @property {(path: string, value: any, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>} replace
 * @property {(from: string, path: string, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>} move
 * @property {(from: string, path: string, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>} copy
 * @property {(onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>} clear
 */

/**
 * @typedef {Object} Jatos
 * @property {string} version
 * @property {BatchSessionApi} batchSession
 * @property {boolean} batchSessionVersioning send versioned patches (default true, as in JATOS)
 * @property {(callback: (path: string, op: string) => void) => void} onBatchSession
 * @property {(callback: (error: any) => void) => void} onError
 * @property {(channel: BatchChannel|null) => void} attachBatchChannel
 * @property {(options: ConnectOptions) => Promise<Jatos>} connectBatch
 * @property {BatchChannel|null} batchChannel
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
  installErrorHandling(jatos);
  installBatchSession(jatos, channel);
  installStudyRun(jatos, (options && options.host) || browserHost());
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
 * Settles a JATOS-style call: the promise is returned and the callbacks are
 * called (before the promise's own handlers), as jatos.js does.
 * @param {any} jatos
 * @param {Promise<any>} promise
 * @param {Function|undefined} onSuccess
 * @param {Function|undefined} onFail
 * @returns {Promise<any>}
 */
function withCallbacks(jatos, promise, onSuccess, onFail) {
  const result = promise.then(
    (value) => {
      if (typeof onSuccess === 'function') onSuccess(value);
      return value;
    },
    (error) => {
      jatos._reportError(error, onFail);
      throw error;
    },
  );
  // With an onFail callback the failure is handled: no "unhandled rejection".
  if (typeof onFail === 'function') result.catch(() => {});
  return result;
}

/**
 * Installs `jatos.batchSession`, `jatos.onBatchSession`,
 * `jatos.batchSessionVersioning`, `jatos.attachBatchChannel`,
 * `jatos.connectBatch` and the `jatos.batchChannel` getter.
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
  /** A versioned write in flight (JATOS allows only one at a time with versioning on). */
  /** @type {Promise<any>|null} */
  let sending = null;

  jatos.batchSessionVersioning = true;

  Object.defineProperty(jatos, 'batchChannel', {
    get: () => channel,
    enumerable: true,
    configurable: true,
  });

  /** @returns {any} the live local copy */
  const data = () => (channel ? channel.data : {});

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

  /** @param {BatchChannel|null} next */
  jatos.attachBatchChannel = (next) => {
    if (unsubscribe) unsubscribe();
    unsubscribe = null;
    channel = next;
    sending = null;
    if (channel) unsubscribe = channel.on('session', onSession);
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
   * @param {Operation} op
   * @param {Function|undefined} onSuccess
   * @param {Function|undefined} onFail
   * @returns {Promise<any>}
   */
  const send = (op, onSuccess, onFail) => {
    if (!channel || channel.closed) {
      return withCallbacks(jatos, Promise.reject(new CommandError('no_channel', 'No open batch channel')), onSuccess, onFail);
    }
    const versioned = !!jatos.batchSessionVersioning;
    if (versioned && sending) {
      const busy = new CommandError('busy', `Can send only one batch session patch at a time. Patch: ${op.op} ${op.path}.`);
      return withCallbacks(jatos, Promise.reject(busy), onSuccess, onFail);
    }
    const promise = channel.patch([op], { versioned });
    if (versioned) {
      sending = promise;
      const done = () => {
        if (sending === promise) sending = null;
      };
      promise.then(done, done);
    }
    return withCallbacks(jatos, promise, onSuccess, onFail);
  };

  /** @type {BatchSessionApi} */
  const batchSession = {
    get(name) {
      return cloneJson(getPointer(data(), '/' + name));
    },
    getAll() {
      return cloneJson(data());
    },
    find(path) {
      return cloneJson(getPointer(data(), path));
    },
    test(path, value) {
      return deepEqual(getPointer(data(), path), value);
    },
    defined(path) {
      return !batchSession.test(path, undefined);
    },
    set(name, value, onSuccess, onFail) {
      return send({ op: 'add', path: '/' + name, value }, onSuccess, onFail);
    },
    setAll(value, onSuccess, onFail) {
      return send({ op: 'replace', path: '', value }, onSuccess, onFail);
    },
    add(path, value, onSuccess, onFail) {
      return send({ op: 'add', path, value }, onSuccess, onFail);
    },
    remove(path, onSuccess, onFail) {
      return send({ op: 'remove', path }, onSuccess, onFail);
    },
    replace(path, value, onSuccess, onFail) {
      return send({ op: 'replace', path, value }, onSuccess, onFail);
    },
    move(from, path, onSuccess, onFail) {
      return send({ op: 'move', from, path }, onSuccess, onFail);
    },
    copy(from, path, onSuccess, onFail) {
      return send({ op: 'copy', from, path }, onSuccess, onFail);
    },
    clear(onSuccess, onFail) {
      // jatos.js sends {op: "remove", path: "/"}, which its server special-cases;
      // in RFC 6902 that names the member "", so Cohort replaces the root instead.
      return send({ op: 'replace', path: '', value: {} }, onSuccess, onFail);
    },
  };
  jatos.batchSession = batchSession;

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
