export { installGroups } from "./groups.js";
export { installResults } from "./results.js";
export { connectParticipant } from "./bot.js";
export { BatchChannel, CommandError, DEFAULT_SCOPE, buildSocketUrl, comparePos, connect, fullJitterBackoff, runOfToken } from "./cohort.js";
export { JATOS_COMPAT_VERSION, createJatos, installBatchSession, installConnectionEvents, installErrorHandling } from "./jatos.js";
export { createSessionApi, withCallbacks } from "./session-api.js";
export { HEARTBEAT_PERIOD, HTTP_RETRY, HTTP_RETRY_WAIT, HTTP_TIMEOUT, browserHost, componentPageUrl, installStudyRun, parseRunUrl, renderEndPage, startPage } from "./run.js";
export { errorFromAnswer, httpError, httpRequest } from "./http.js";
export { PatchError, applyOperation, applyPatch, cloneJson, deepEqual, escapePointerToken, getPointer, hasPointer, parsePointer } from "./jsonpatch.js";
