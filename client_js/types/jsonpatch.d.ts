/**
 * Splits a JSON pointer into its unescaped reference tokens.
 * `""` is the whole document; every other pointer starts with `/`.
 * @param {string} pointer
 * @returns {string[]}
 */
export function parsePointer(pointer: string): string[];
/**
 * Escapes one key for use as a JSON pointer token.
 * @param {string} key
 * @returns {string}
 */
export function escapePointerToken(key: string): string;
/**
 * Returns the value a JSON pointer names, or `undefined` if nothing is there.
 * Throws a PatchError (`bad_patch`) if the pointer is malformed, or uses `-`
 * or a malformed index on an array (as jsonpointer.js does).
 * @param {any} doc
 * @param {string} pointer
 * @returns {any}
 */
export function getPointer(doc: any, pointer: string): any;
/**
 * Whether a JSON pointer names an existing member (a member holding `null` exists).
 * @param {any} doc
 * @param {string} pointer
 * @returns {boolean}
 */
export function hasPointer(doc: any, pointer: string): boolean;
/**
 * JSON equality: objects by members (any order), arrays by position.
 * @param {any} a
 * @param {any} b
 * @returns {boolean}
 */
export function deepEqual(a: any, b: any): boolean;
/**
 * Deep copy of a JSON value (`undefined` stays `undefined`).
 * @template T
 * @param {T} value
 * @returns {T}
 */
export function cloneJson<T>(value: T): T;
/**
 * Applies one operation in place and returns the (possibly new) root.
 * Values are copied in (as the server does), so the document never shares
 * objects with the operation.
 * @param {any} doc
 * @param {Operation} op
 * @returns {any}
 */
export function applyOperation(doc: any, op: Operation): any;
/**
 * Applies a patch in place and returns the (possibly new) root: an operation
 * on the path `""` replaces the whole document, so always use the result.
 * Throws a PatchError (with `.index`) on the first failing operation.
 * @param {any} doc
 * @param {Operation[]} ops
 * @returns {any}
 */
export function applyPatch(doc: any, ops: Operation[]): any;
/**
 * A small JSON Patch (RFC 6902) and JSON Pointer (RFC 6901) implementation
 * that applies patches IN PLACE (no deep copy per patch).
 *
 * The client applies patches that the server has already validated and
 * committed, so a failure here means the local copy has diverged: the caller
 * (cohort.js) then asks the server for a full state (resync). A patch that
 * fails half way may leave the document partly changed; callers that need
 * atomicity must work on a copy.
 *
 * No dependencies; runs in browsers and in Node.
 * @module jsonpatch
 */
/**
 * One RFC 6902 operation.
 * @typedef {Object} Operation
 * @property {'add'|'remove'|'replace'|'move'|'copy'|'test'} op
 * @property {string} path JSON pointer
 * @property {any} [value] for add, replace, test
 * @property {string} [from] JSON pointer, for move and copy
 */
/** Error thrown when an operation cannot be applied. `code` uses the wire protocol's codes. */
export class PatchError extends Error {
    /**
     * @param {'path_not_found'|'test_failed'|'bad_patch'} code
     * @param {string} message
     * @param {number} [index] index of the failing operation in the patch
     */
    constructor(code: "path_not_found" | "test_failed" | "bad_patch", message: string, index?: number);
    code: "path_not_found" | "test_failed" | "bad_patch";
    index: number;
}
/**
 * One RFC 6902 operation.
 */
export type Operation = {
    op: "add" | "remove" | "replace" | "move" | "copy" | "test";
    /**
     * JSON pointer
     */
    path: string;
    /**
     * for add, replace, test
     */
    value?: any;
    /**
     * JSON pointer, for move and copy
     */
    from?: string;
};
