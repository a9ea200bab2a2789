// @ts-check
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
  constructor(code, message, index) {
    super(message);
    this.name = 'PatchError';
    this.code = code;
    this.index = index;
  }
}

const ARRAY_INDEX = /^(0|[1-9][0-9]*)$/;
const BAD_ESCAPE = /~([^01]|$)/;

/**
 * Splits a JSON pointer into its unescaped reference tokens.
 * `""` is the whole document; every other pointer starts with `/`.
 * @param {string} pointer
 * @returns {string[]}
 */
export function parsePointer(pointer) {
  if (pointer === '') return [];
  if (typeof pointer !== 'string' || pointer[0] !== '/') {
    throw new PatchError('bad_patch', `invalid JSON pointer ${JSON.stringify(pointer)}`);
  }
  return pointer
    .slice(1)
    .split('/')
    .map((token) => {
      if (BAD_ESCAPE.test(token)) {
        throw new PatchError('bad_patch', `invalid escape in JSON pointer ${JSON.stringify(pointer)}`);
      }
      return token.replace(/~1/g, '/').replace(/~0/g, '~');
    });
}

/**
 * Escapes one key for use as a JSON pointer token.
 * @param {string} key
 * @returns {string}
 */
export function escapePointerToken(key) {
  return String(key).replace(/~/g, '~0').replace(/\//g, '~1');
}

/**
 * @param {any} value
 * @returns {value is Record<string, any>}
 */
function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * Looks a child up in a container; `found` is false if it does not exist.
 * @param {any} container
 * @param {string} token
 * @returns {{found: boolean, value?: any}}
 */
function child(container, token) {
  if (Array.isArray(container)) {
    // As jsonpointer.js (which jatos.js uses): "-" and malformed indexes are errors.
    if (!ARRAY_INDEX.test(token)) {
      throw new PatchError('bad_patch', `${JSON.stringify(token)} is not an array index`);
    }
    const index = Number(token);
    return index < container.length ? { found: true, value: container[index] } : { found: false };
  }
  if (isObject(container) && Object.prototype.hasOwnProperty.call(container, token)) {
    return { found: true, value: container[token] };
  }
  return { found: false };
}

/**
 * Resolves a token list; `found` is false if any step is missing.
 * @param {any} doc
 * @param {string[]} tokens
 * @returns {{found: boolean, value?: any}}
 */
function resolveTokens(doc, tokens) {
  let current = doc;
  for (const token of tokens) {
    const next = child(current, token);
    if (!next.found) return next;
    current = next.value;
  }
  return { found: true, value: current };
}

/**
 * Returns the value a JSON pointer names, or `undefined` if nothing is there.
 * Throws a PatchError (`bad_patch`) if the pointer is malformed, or uses `-`
 * or a malformed index on an array (as jsonpointer.js does).
 * @param {any} doc
 * @param {string} pointer
 * @returns {any}
 */
export function getPointer(doc, pointer) {
  const found = resolveTokens(doc, parsePointer(pointer));
  return found.found ? found.value : undefined;
}

/**
 * Whether a JSON pointer names an existing member (a member holding `null` exists).
 * @param {any} doc
 * @param {string} pointer
 * @returns {boolean}
 */
export function hasPointer(doc, pointer) {
  return resolveTokens(doc, parsePointer(pointer)).found;
}

/**
 * JSON equality: objects by members (any order), arrays by position.
 * @param {any} a
 * @param {any} b
 * @returns {boolean}
 */
export function deepEqual(a, b) {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!deepEqual(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  for (const key of keys) {
    if (!Object.prototype.hasOwnProperty.call(b, key) || !deepEqual(a[key], b[key])) return false;
  }
  return true;
}

/**
 * Deep copy of a JSON value (`undefined` stays `undefined`).
 * @template T
 * @param {T} value
 * @returns {T}
 */
export function cloneJson(value) {
  if (value === undefined || value === null || typeof value !== 'object') return value;
  return JSON.parse(JSON.stringify(value));
}

/**
 * An array index token for a patch (the server's rules): digits without
 * leading zeros, or "-" (past the end) where an add may append.
 * @param {string} token
 * @param {number} size
 * @param {boolean} allowEnd
 * @param {string} ptr for messages
 * @returns {number}
 */
function arrayIndex(token, size, allowEnd, ptr) {
  if (/^[0-9]+$/.test(token)) {
    if (token.length > 1 && token[0] === '0') {
      throw new PatchError('bad_patch', `${JSON.stringify(ptr)}: array index ${JSON.stringify(token)} has leading zeros`);
    }
    const index = Number(token);
    if (index < size || (allowEnd && index === size)) return index;
    throw new PatchError('path_not_found', `${JSON.stringify(ptr)}: index ${token} is out of range`);
  }
  if (token === '-') {
    if (allowEnd) return size;
    throw new PatchError('bad_patch', `${JSON.stringify(ptr)}: "-" is only valid at the end of an add target`);
  }
  throw new PatchError('bad_patch', `${JSON.stringify(ptr)}: ${JSON.stringify(token)} is not an array index`);
}

/**
 * The value at tokens[0..stop); every step must exist (throws otherwise).
 * @param {any} doc
 * @param {string[]} tokens
 * @param {number} stop
 * @param {string} ptr
 * @returns {any}
 */
function walk(doc, tokens, stop, ptr) {
  let node = doc;
  for (let depth = 0; depth < stop; depth++) {
    const token = tokens[depth];
    if (Array.isArray(node)) {
      node = node[arrayIndex(token, node.length, false, ptr)];
    } else if (isObject(node)) {
      if (!Object.prototype.hasOwnProperty.call(node, token)) {
        throw new PatchError('path_not_found', `${JSON.stringify(ptr)} does not exist`);
      }
      node = node[token];
    } else {
      throw new PatchError('path_not_found', `${JSON.stringify(ptr)} does not exist (not an object or array)`);
    }
  }
  return node;
}

/**
 * The parent container of a non-root pointer.
 * @param {any} doc
 * @param {string[]} tokens non-empty
 * @param {string} ptr
 */
function parentOf(doc, tokens, ptr) {
  const parent = walk(doc, tokens, tokens.length - 1, ptr);
  if (parent === null || typeof parent !== 'object') {
    throw new PatchError('path_not_found', `${JSON.stringify(ptr)} does not exist (not an object or array)`);
  }
  return { parent, key: tokens[tokens.length - 1] };
}

/**
 * RFC "add"; returns the (new) root.
 * @param {any} doc
 * @param {string[]} tokens
 * @param {any} value
 * @param {string} ptr
 * @returns {any}
 */
function addAt(doc, tokens, value, ptr) {
  if (tokens.length === 0) return value;
  const { parent, key } = parentOf(doc, tokens, ptr);
  if (Array.isArray(parent)) parent.splice(arrayIndex(key, parent.length, true, ptr), 0, value);
  else parent[key] = value;
  return doc;
}

/**
 * Removes and returns the value at a non-root pointer.
 * @param {any} doc
 * @param {string[]} tokens non-empty
 * @param {string} ptr
 * @returns {any}
 */
function removeAt(doc, tokens, ptr) {
  const { parent, key } = parentOf(doc, tokens, ptr);
  if (Array.isArray(parent)) return parent.splice(arrayIndex(key, parent.length, false, ptr), 1)[0];
  if (!Object.prototype.hasOwnProperty.call(parent, key)) {
    throw new PatchError('path_not_found', `${JSON.stringify(ptr)} does not exist`);
  }
  const value = parent[key];
  delete parent[key];
  return value;
}

/**
 * @param {any} op
 * @param {string} field
 */
function requireField(op, field) {
  if (!(field in op)) throw new PatchError('bad_patch', `'${op.op}' operation without '${field}'`);
}

/**
 * Applies one operation in place and returns the (possibly new) root.
 * Values are copied in (as the server does), so the document never shares
 * objects with the operation.
 * @param {any} doc
 * @param {Operation} op
 * @returns {any}
 */
export function applyOperation(doc, op) {
  if (op === null || typeof op !== 'object') throw new PatchError('bad_patch', 'operation is not an object');
  requireField(op, 'path');
  const path = op.path;
  const tokens = parsePointer(path);
  switch (op.op) {
    case 'add':
      requireField(op, 'value');
      return addAt(doc, tokens, cloneJson(op.value), path);
    case 'remove':
      if (tokens.length === 0) throw new PatchError('bad_patch', 'path "" (the whole document) cannot be removed');
      removeAt(doc, tokens, path);
      return doc;
    case 'replace': {
      requireField(op, 'value');
      if (tokens.length === 0) return cloneJson(op.value);
      const { parent, key } = parentOf(doc, tokens, path);
      if (Array.isArray(parent)) {
        parent[arrayIndex(key, parent.length, false, path)] = cloneJson(op.value);
      } else {
        if (!Object.prototype.hasOwnProperty.call(parent, key)) {
          throw new PatchError('path_not_found', `${JSON.stringify(path)} does not exist`);
        }
        parent[key] = cloneJson(op.value);
      }
      return doc;
    }
    case 'move': {
      requireField(op, 'from');
      const from = /** @type {string} */ (op.from);
      const fromTokens = parsePointer(from);
      const n = fromTokens.length;
      if (n < tokens.length && fromTokens.every((t, i) => tokens[i] === t)) {
        throw new PatchError('bad_patch', `${JSON.stringify(from)} cannot be moved into its own child`);
      }
      if (n === tokens.length && fromTokens.every((t, i) => tokens[i] === t)) {
        walk(doc, fromTokens, n, from); // a no-op, but "from" must exist
        return doc;
      }
      return addAt(doc, tokens, removeAt(doc, fromTokens, from), path);
    }
    case 'copy': {
      requireField(op, 'from');
      const from = /** @type {string} */ (op.from);
      const fromTokens = parsePointer(from);
      const value = walk(doc, fromTokens, fromTokens.length, from);
      return addAt(doc, tokens, cloneJson(value), path);
    }
    case 'test': {
      requireField(op, 'value');
      const actual = walk(doc, tokens, tokens.length, path);
      if (!deepEqual(actual, op.value)) {
        throw new PatchError('test_failed', `test failed at ${JSON.stringify(path)}`);
      }
      return doc;
    }
    default:
      throw new PatchError('bad_patch', `unknown operation ${JSON.stringify(op.op)}`);
  }
}

/**
 * Applies a patch in place and returns the (possibly new) root: an operation
 * on the path `""` replaces the whole document, so always use the result.
 * Throws a PatchError (with `.index`) on the first failing operation.
 * @param {any} doc
 * @param {Operation[]} ops
 * @returns {any}
 */
export function applyPatch(doc, ops) {
  if (!Array.isArray(ops)) throw new PatchError('bad_patch', 'a patch is an array of operations');
  let root = doc;
  for (let i = 0; i < ops.length; i++) {
    try {
      root = applyOperation(root, ops[i]);
    } catch (err) {
      if (err instanceof PatchError) {
        err.index = i;
      }
      throw err;
    }
  }
  return root;
}
