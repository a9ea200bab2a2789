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
export function withCallbacks<T>(jatos: any, promise: Promise<T>, onSuccess: Function | undefined, onFail: Function | undefined): Promise<T>;
/**
 * Builds a jatos.js session object (batchSession, groupSession) over one scope.
 * Reads work on the channel's local copy and return copies; writes are JSON
 * Patches through the channel. Returns the object and `reset()`, which forgets
 * the write in flight (when the channel is replaced).
 * @param {any} jatos
 * @param {SessionTarget} target
 * @returns {{api: SessionApi, reset: () => void}}
 */
export function createSessionApi(jatos: any, target: SessionTarget): {
    api: SessionApi;
    reset: () => void;
};
export type BatchChannel = import("./cohort.js").BatchChannel;
export type Operation = import("./jsonpatch.js").Operation;
export type SuccessCallback = (result?: any) => void;
export type FailCallback = (error: CommandError) => void;
export type SessionApi = {
    /**
     * value of a top-level field (a name, not a pointer), cloned
     */
    get: (name: string) => any;
    /**
     * the whole session, cloned
     */
    getAll: () => any;
    /**
     * value at a JSON pointer, cloned; undefined if none
     */
    find: (path: string) => any;
    /**
     * whether a JSON pointer names an existing field
     */
    defined: (path: string) => boolean;
    /**
     * local check: is `value` stored at `path`
     */
    test: (path: string, value: any) => boolean;
    set: (name: string, value: any, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>;
    setAll: (value: any, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>;
    add: (path: string, value: any, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>;
    remove: (path: string, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>;
    replace: (path: string, value: any, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>;
    move: (from: string, path: string, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>;
    copy: (from: string, path: string, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>;
    clear: (onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>;
    /**
     *   (Cohort) apply the patch `fn` computes from the current data; on a conflict `fn` runs again on the newer data
     */
    update: (fn: (data: any, info: {
        version: number;
        attempt: number;
    }) => any, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<import("./cohort.js").UpdateResult>;
    /**
     *   (Cohort) add `by` (default 1) to the number at `path`; resolves with the unique value after this increment
     */
    increment: (path: string, by?: number | SuccessCallback, onSuccess?: SuccessCallback | FailCallback, onFail?: FailCallback) => Promise<import("./cohort.js").IncrementResult>;
    /**
     *   (Cohort) several JSON Patch operations as one change (one version, all or nothing)
     */
    patch: (ops: Operation[] | Operation, onSuccess?: SuccessCallback, onFail?: FailCallback) => Promise<any>;
};
export type SessionTarget = {
    /**
     * the channel to write through
     */
    channel: () => BatchChannel | null;
    /**
     * the scope (null: none now)
     */
    scope: () => string | null;
    /**
     * why writes cannot go out now (null: they can)
     */
    unavailable: () => CommandError | null;
    /**
     * send versioned patches (jatos.*SessionVersioning)
     */
    versioning: () => boolean;
    /**
     * let several versioned patches be in flight (Cohort extension)
     */
    pipelining: () => boolean;
    /**
     * 'batch' or 'group', for messages
     */
    label: string;
    /**
     * the failure callback to use
     * when the call has none (the group's `onError`)
     */
    onFail?: (onFail: Function | undefined) => Function | undefined;
};
import { CommandError } from './cohort.js';
