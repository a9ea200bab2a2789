// @ts-check
/**
 * The participant's HTTP calls (docs/studies.md, "Participant URLs"), with
 * jatos.js's retry settings: `httpTimeout` per attempt, up to `httpRetry`
 * retries, `httpRetryWait` ms apart.
 *
 * A write that is retried carries the same `X-Cohort-Command-Id` on every
 * attempt, so the server applies it once and answers a retry with the first
 * outcome (the gateway accepts the header on /study-session, /end and /abort).
 *
 * No dependencies: `fetch` and `AbortController` are in every browser and in
 * Node 18+.
 * @module http
 */

import { CommandError } from './cohort.js';

/**
 * @typedef {Object} HttpSettings
 * @property {number} httpTimeout ms before one attempt is given up (and retried)
 * @property {number} httpRetry how many times a failed attempt is retried
 * @property {number} httpRetryWait ms between a failed attempt and the retry
 *
 * @typedef {Object} HttpRequest
 * @property {(input: string, init?: any) => Promise<any>} fetch
 * @property {string} method
 * @property {string} url absolute URL
 * @property {any} [body] request body (sent as is: a string, Blob, ArrayBuffer, FormData)
 * @property {string} [contentType] default `application/json` when there is a body
 * @property {string} [commandId] sent as `X-Cohort-Command-Id` on every attempt
 * @property {Record<string, string>} [headers]
 * @property {'auto'|'file'} [as] how to read the answer: `auto` (JSON when it says so, else
 *   text) or `file` (JSON parsed, text as a string, anything else as a Blob)
 *
 * @typedef {Object} HttpResponse
 * @property {number} status
 * @property {any} body parsed JSON, or the text when the answer is not JSON
 * @property {any} headers the fetch `Headers`
 */

/** Statuses worth another attempt: the server may do better next time. */
const RETRY_STATUSES = new Set([408, 425, 429, 500, 502, 503, 504]);

/**
 * An HTTP failure as a CommandError: `code` is the server's error code when it
 * sent one (`run_ended`, `state_too_large`, ...), else `http_<status>`,
 * `timeout` or `network`; `status` is the HTTP status (0 if there was none).
 * @param {string} code
 * @param {string} message
 * @param {number} status
 * @param {any} [body]
 * @returns {CommandError & {status: number, body: any}}
 */
export function httpError(code, message, status, body) {
  const error = /** @type {any} */ (new CommandError(code, message));
  error.status = status;
  error.body = body;
  return error;
}

/**
 * @param {string} text
 * @param {string|null} type
 * @returns {any}
 */
function parseBody(text, type) {
  if (type && /json/i.test(type)) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

/**
 * The error a refused answer stands for: the JSON `{code, message}` of the
 * API, the `Code: <code>…</code>` of a participant page, or the status.
 * @param {number} status
 * @param {any} body
 * @param {string} what
 */
export function errorFromAnswer(status, body, what) {
  if (body && typeof body === 'object' && typeof body.code === 'string') {
    return httpError(body.code, body.message || body.code, status, body);
  }
  if (typeof body === 'string') {
    const code = /<code>([^<]+)<\/code>/.exec(body);
    const title = /<h1[^>]*>([^<]*)<\/h1>/.exec(body);
    if (code) return httpError(code[1], title ? title[1] : `${what} failed with status ${status}`, status, body);
  }
  return httpError(`http_${status}`, `${what} failed with status ${status}`, status, body);
}

/** @param {number} ms */
const delay = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/**
 * One attempt with a timeout.
 * @param {HttpRequest} request
 * @param {number} timeout
 * @returns {Promise<HttpResponse>}
 */
async function attempt(request, timeout) {
  /** @type {Record<string, string>} */
  const headers = { ...(request.headers || {}) };
  if (request.body !== undefined && request.contentType !== '') {
    // A Blob or FormData says its own type (FormData: with the multipart boundary).
    const own = typeof FormData !== 'undefined' && request.body instanceof FormData;
    if (!own) headers['content-type'] = request.contentType || 'application/json';
  }
  if (request.commandId) headers['x-cohort-command-id'] = request.commandId;
  const controller = typeof AbortController === 'function' ? new AbortController() : null;
  /** @type {any} */
  let timer = null;
  let timedOut = false;
  const timeoutPromise = new Promise((_, reject) => {
    if (!(timeout > 0)) return;
    timer = setTimeout(() => {
      timedOut = true;
      if (controller) controller.abort();
      reject(httpError('timeout', `${request.method} ${request.url}: no answer within ${timeout} ms`, 0));
    }, timeout);
  });
  try {
    const call = (async () => {
      const res = await request.fetch(request.url, {
        method: request.method,
        headers,
        body: request.body,
        signal: controller ? controller.signal : undefined,
      });
      const type = res.headers.get('content-type');
      if (request.as === 'file' && res.status >= 200 && res.status < 300 && !(type && /json|^text\//i.test(type))) {
        return { status: res.status, body: await res.blob(), headers: res.headers };
      }
      const text = await res.text();
      return { status: res.status, body: parseBody(text, type), headers: res.headers };
    })();
    call.catch(() => {}); // lost the race against the timeout: nobody listens any more
    return await Promise.race([call, timeoutPromise]);
  } catch (err) {
    if (timedOut) throw err;
    if (err && /** @type {any} */ (err).code && /** @type {any} */ (err).status !== undefined) throw err;
    const message = err && /** @type {any} */ (err).message ? /** @type {any} */ (err).message : String(err);
    throw httpError('network', `${request.method} ${request.url}: ${message}`, 0);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Sends a request, retrying network failures, timeouts and the statuses in
 * RETRY_STATUSES (`httpRetry` times, `httpRetryWait` ms apart, each attempt
 * limited to `httpTimeout` ms). Resolves with the answer of a 2xx; rejects
 * with a CommandError (`code`, `message`, `status`) otherwise.
 * @param {HttpRequest} request
 * @param {HttpSettings} settings
 * @returns {Promise<HttpResponse>}
 */
export async function httpRequest(request, settings) {
  const retries = Math.max(0, Math.floor(Number(settings.httpRetry) || 0));
  const what = `${request.method} ${request.url}`;
  /** @type {any} */
  let lastError = null;
  for (let i = 0; i <= retries; i++) {
    if (i > 0) await delay(Number(settings.httpRetryWait) || 0);
    try {
      const res = await attempt(request, Number(settings.httpTimeout) || 0);
      if (res.status >= 200 && res.status < 300) return res;
      lastError = errorFromAnswer(res.status, res.body, what);
      if (!RETRY_STATUSES.has(res.status)) throw lastError;
    } catch (err) {
      lastError = err;
      const code = /** @type {any} */ (err).code;
      const status = /** @type {any} */ (err).status;
      const retryable = code === 'network' || code === 'timeout' || RETRY_STATUSES.has(status);
      if (!retryable) throw err;
    }
  }
  throw lastError;
}

/** @returns {string} 12 random base-36 characters */
export function randomId() {
  const bytes = new Uint8Array(12);
  const cryptoObj = globalThis.crypto;
  if (cryptoObj && typeof cryptoObj.getRandomValues === 'function') cryptoObj.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => (b % 36).toString(36)).join('');
}
