// @ts-check
/**
 * @cohort/client: the browser entry (no dependencies).
 *
 * - `connect(options)` -> BatchChannel: the modern core (cohort.js)
 * - `createJatos(channel)` -> the jatos.js-compatible API (jatos.js), with
 *   groups (groups.js), the study run (run.js: init, onLoad, study session,
 *   component flow, ending) and results (results.js)
 * - `startPage(jatos)`: load the run on a component page (run.js)
 * - `connectParticipant(linkUrl, {WebSocket})`: a participant without a
 *   browser, entering through a study link (bot.js)
 * - the participant's HTTP calls with jatos.js's retries (http.js)
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
  runOfToken,
} from './cohort.js';
export {
  JATOS_COMPAT_VERSION,
  createJatos,
  installBatchSession,
  installConnectionEvents,
  installErrorHandling,
} from './jatos.js';
export { installGroups } from './groups.js';
export { installResults } from './results.js';
export { createSessionApi, withCallbacks } from './session-api.js';
export {
  HEARTBEAT_PERIOD,
  HTTP_RETRY,
  HTTP_RETRY_WAIT,
  HTTP_TIMEOUT,
  browserHost,
  componentPageUrl,
  installStudyRun,
  parseRunUrl,
  renderEndPage,
  startPage,
} from './run.js';
export { errorFromAnswer, httpError, httpRequest } from './http.js';
export { connectParticipant } from './bot.js';
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
