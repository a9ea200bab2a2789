// @ts-check
/**
 * What the batch session and the group session of jatos.js have in common:
 * `createSessionApi` builds the `get`, `getAll`, `find`, `defined`, `test`,
 * `set`, `setAll`, `add`, `remove`, `replace`, `move`, `copy`, `clear`
 * functions of jatos.js (plus Cohort's `update` and `increment`) over one
 * scope of a channel; `withCallbacks` settles a JATOS-style call (a Promise
 * and the onSuccess / onFail callbacks).
 * @module session-api
 */

import { CommandError } from './cohort.js';
import { cloneJson, deepEqual, getPointer } from './jsonpatch.js';

/**
 * @typedef {import('./cohort.js').BatchChannel} BatchChannel
 * @typedef {import('./jsonpatch.js').Operation} Operation
 * @typedef {(result?: any) => void} SuccessCallback
 * @typedef {(error: CommandError) => void} FailCallback
 */

/**
 * @typedef {Object} SessionApi
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
 * @property {(fn: (data: any, info: {version: number, attempt: number}) => any, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<import('./cohort.js').UpdateResult>} update
 *   (Cohort) apply the patch `fn` computes from the current data; on a conflict `fn` runs again on the newer data
 * @property {(path: string, by?: number|SuccessCallback, onSuccess?: SuccessCallback|FailCallback, onFail?: FailCallback) => Promise<import('./cohort.js').IncrementResult>} increment
 *   (Cohort) add `by` (default 1) to the number at `path`; resolves with the unique value after this increment
 * @property {(ops: Operation[]|Operation, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>} patch
 *   (Cohort) several JSON Patch operations as one change (one version, all or nothing)
 */

/**
 * @typedef {Object} SessionTarget
 * @property {() => BatchChannel|null} channel the channel to write through
 * @property {() => string|null} scope the scope (null: none now)
 * @property {() => CommandError|null} unavailable why writes cannot go out now (null: they can)
 * @property {() => boolean} versioning send versioned patches (jatos.*SessionVersioning)
 * @property {() => boolean} pipelining let several versioned patches be in flight (Cohort extension)
 * @property {string} label 'batch' or 'group', for messages
 * @property {(onFail: Function|undefined) => Function|undefined} [onFail] the failure callback to use
 *   when the call has none (the group's `onError`)
 */

/**
 * Settles a JATOS-style call: the promise is returned and the callbacks are
 * called (before the promise's own handlers), as jatos.js does. A failure goes
 * to `onFail`, else to `jatos.onError`; with an `onFail` the rejection counts
 * as handled (no "unhandled rejection").
 * @template T
 * @param {any} jatos
 * @param {Promise<T>} promise
 * @param {Function|undefined} onSuccess
 * @param {Function|undefined} onFail
 * @returns {Promise<T>}
 */
export function withCallbacks(jatos, promise, onSuccess, onFail) {
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
  if (typeof onFail === 'function') result.catch(() => {});
  return result;
}

/**
 * Builds a jatos.js session object (batchSession, groupSession) over one scope.
 * Reads work on the channel's local copy and return copies; writes are JSON
 * Patches through the channel. Returns the object and `reset()`, which forgets
 * the write in flight (when the channel is replaced).
 * @param {any} jatos
 * @param {SessionTarget} target
 * @returns {{api: SessionApi, reset: () => void}}
 */
export function createSessionApi(jatos, target) {
  /** A versioned write in flight (JATOS allows only one at a time with versioning on). */
  /** @type {Promise<any>|null} */
  let sending = null;

  /** @returns {any} the live local copy */
  const data = () => {
    const channel = target.channel();
    const scope = target.scope();
    if (!channel || !scope) return {};
    return channel.scope(scope).data;
  };

  /** @param {Function|undefined} onFail */
  const failure = (onFail) => (typeof onFail === 'function' ? onFail : target.onFail ? target.onFail(onFail) : undefined);

  /**
   * @param {Operation[]} ops
   * @param {Function|undefined} onSuccess
   * @param {Function|undefined} onFail
   * @returns {Promise<any>}
   */
  const send = (ops, onSuccess, onFail) => {
    const fail = failure(onFail);
    const problem = target.unavailable();
    const channel = target.channel();
    const scope = target.scope();
    if (problem || !channel || !scope) {
      const error = problem || new CommandError('no_channel', `No open ${target.label} channel`);
      return withCallbacks(jatos, Promise.reject(error), onSuccess, fail);
    }
    const versioned = !!target.versioning();
    const pipelined = versioned && !!target.pipelining();
    if (versioned && !pipelined && sending) {
      const what = ops.map((op) => `${op.op} ${op.path}`).join(', ');
      const busy = new CommandError('busy', `Can send only one ${target.label} session patch at a time. Patch: ${what}.`);
      return withCallbacks(jatos, Promise.reject(busy), onSuccess, fail);
    }
    const promise = channel.patch(ops, { versioned, scope, chain: pipelined });
    if (versioned && !pipelined) {
      sending = promise;
      const done = () => {
        if (sending === promise) sending = null;
      };
      promise.then(done, done);
    }
    return withCallbacks(jatos, promise, onSuccess, fail);
  };

  /**
   * Runs a channel helper (update, increment) with the JATOS-style callbacks.
   * @param {(channel: BatchChannel, scope: string) => Promise<any>} call
   * @param {Function|undefined} onSuccess
   * @param {Function|undefined} onFail
   */
  const helper = (call, onSuccess, onFail) => {
    const fail = failure(onFail);
    const problem = target.unavailable();
    const channel = target.channel();
    const scope = target.scope();
    if (problem || !channel || !scope) {
      const error = problem || new CommandError('no_channel', `No open ${target.label} channel`);
      return withCallbacks(jatos, Promise.reject(error), onSuccess, fail);
    }
    let promise;
    try {
      promise = call(channel, scope);
    } catch (err) {
      promise = Promise.reject(err);
    }
    return withCallbacks(jatos, promise, onSuccess, fail);
  };

  /** @type {SessionApi} */
  const api = {
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
      return !api.test(path, undefined);
    },
    set(name, value, onSuccess, onFail) {
      return send([{ op: 'add', path: '/' + name, value }], onSuccess, onFail);
    },
    setAll(value, onSuccess, onFail) {
      return send([{ op: 'replace', path: '', value }], onSuccess, onFail);
    },
    add(path, value, onSuccess, onFail) {
      return send([{ op: 'add', path, value }], onSuccess, onFail);
    },
    remove(path, onSuccess, onFail) {
      return send([{ op: 'remove', path }], onSuccess, onFail);
    },
    replace(path, value, onSuccess, onFail) {
      return send([{ op: 'replace', path, value }], onSuccess, onFail);
    },
    move(from, path, onSuccess, onFail) {
      return send([{ op: 'move', from, path }], onSuccess, onFail);
    },
    copy(from, path, onSuccess, onFail) {
      return send([{ op: 'copy', from, path }], onSuccess, onFail);
    },
    clear(onSuccess, onFail) {
      // jatos.js sends {op: "remove", path: "/"}, which its server special-cases;
      // in RFC 6902 that names the member "", so Cohort replaces the root instead.
      return send([{ op: 'replace', path: '', value: {} }], onSuccess, onFail);
    },
    update(fn, onSuccess, onFail) {
      return helper((channel, scope) => channel.update(fn, { scope }), onSuccess, onFail);
    },
    increment(path, by, onSuccess, onFail) {
      if (typeof by === 'function') return api.increment(path, 1, by, /** @type {any} */ (onSuccess));
      const step = by === undefined ? 1 : by;
      return helper((channel, scope) => channel.increment(path, step, { scope }), onSuccess, onFail);
    },
    patch(ops, onSuccess, onFail) {
      return send(Array.isArray(ops) ? ops : [ops], onSuccess, onFail);
    },
  };
  return {
    api,
    reset() {
      sending = null;
    },
  };
}
