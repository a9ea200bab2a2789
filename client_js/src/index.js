// @ts-check
/**
 * @cohort/client: the browser entry (no dependencies).
 *
 * - `connect(options)` -> BatchChannel: the modern core (cohort.js)
 * - `createJatos(channel)` -> the jatos.js-compatible API (jatos.js)
 * - the small in-place JSON Patch implementation (jsonpatch.js)
 *
 * In Node, `import ... from '@cohort/client'` resolves to ./node.js, which
 * supplies the `ws` package as the WebSocket implementation.
 * @module index
 */

export {
  BatchChannel,
  CommandError,
  DEFAULT_SCOPE,
  buildSocketUrl,
  comparePos,
  connect,
  fullJitterBackoff,
} from './cohort.js';
export {
  JATOS_COMPAT_VERSION,
  createJatos,
  installBatchSession,
  installErrorHandling,
} from './jatos.js';
export {
  PatchError,
  applyOperation,
  applyPatch,
  cloneJson,
  deepEqual,
  escapePointerToken,
  getPointer,
  hasPointer,
  parsePointer,
} from './jsonpatch.js';
