// @ts-check
/**
 * Result data, result files and logs in jatos.js: `submitResultData`,
 * `appendResultData`, `uploadResultFile`, `downloadResultFile`, `log`,
 * `catchAndLogErrors`, plus the page helpers `showOverlay` / `removeOverlay`,
 * and Cohort's `setBonus` / `getPayoff`.
 *
 * The calls go to the participant's result endpoints (gateway/results.py,
 * under the run key like the other participant URLs), for the component of
 * the page (`?pos=<componentPos>`):
 *
 * | call | request |
 * |---|---|
 * | submitResultData | `POST /r/<key>/result-data?pos=N` (text body; replaces) |
 * | appendResultData | `POST /r/<key>/result-data/append?pos=N` |
 * | uploadResultFile | `POST /r/<key>/files/<name>?pos=N` (raw body) |
 * | downloadResultFile | `GET /r/<key>/files/<name>[?pos=N]` |
 * | log | `POST /r/<key>/log?pos=N` |
 * | setBonus | `POST /r/<key>/bonus?pos=N` `{"points": p}` |
 * | getPayoff | `GET /r/<key>/payoff` |
 *
 * Writes go into the run's write queue (one at a time, in call order, as
 * jatos.js's request loop), carry an `X-Cohort-Command-Id` that stays the
 * same on every retry (stored once), and a component start or end waits for
 * them. A server without these endpoints answers 404/405 without an error
 * code: the call rejects with `not_available`.
 * @module results
 */

import { CommandError } from './cohort.js';
import { withCallbacks } from './session-api.js';

/**
 * @typedef {Object} OverlayConfig
 * @property {string} [text] default "Please wait."
 * @property {string} [imgUrl] an image instead of the spinner
 * @property {boolean} [showImg] default true
 * @property {string} [style] extra CSS for the box
 */

/** @param {any} data */
const asText = (data) => (typeof data === 'string' ? data : JSON.stringify(data));

/**
 * A 404 or 405 without an error code of the API: the server has no such route.
 * @param {any} error
 */
function unavailable(error) {
  const status = error && error.status;
  if ((status === 404 || status === 405) && /^http_/.test(String(error.code))) {
    const e = new CommandError('not_available', `result storage is not available on this server (${error.message})`);
    /** @type {any} */ (e).status = status;
    return e;
  }
  return error;
}

/**
 * Installs the result part of jatos.js on `jatos` (after the study run, whose
 * `jatos._run` it uses).
 * @param {any} jatos
 * @param {import('./run.js').RunHost} host
 */
export function installResults(jatos, host) {
  /** jatos.js: the overlay shown while data are still being sent at the end. */
  jatos.waitSendDataOverlayConfig = { text: 'Sending data. Please wait.' };

  /** @returns {any} */
  const ctx = () => {
    const run = jatos._run;
    if (!run || run.pos() === null) throw new CommandError('not_initialized', 'jatos.js not yet initialized');
    return run;
  };

  /**
   * A write in the run's queue.
   * @param {string} kind command id prefix
   * @param {string} suffix path after `/r/<key>/`, query included
   * @param {any} body
   * @param {string} contentType
   * @returns {Promise<any>}
   */
  const write = (kind, suffix, body, contentType) => {
    let run;
    try {
      run = ctx();
    } catch (err) {
      return Promise.reject(err);
    }
    const url = run.url(suffix);
    const commandId = run.commandId(kind);
    return run
      .enqueue(() => run.http('POST', url, { body, contentType, commandId }))
      .then((/** @type {any} */ res) => res.body, (/** @type {any} */ err) => {
        throw unavailable(err);
      });
  };

  /** @returns {string} */
  const posQuery = () => `pos=${ctx().pos()}`;

  /**
   * Stores result data of the page's component (replace or append); used by
   * the component flow too.
   * @param {any} resultData
   * @param {boolean} append
   * @returns {Promise<any>}
   */
  jatos._storeResultData = (resultData, append) => {
    let query;
    try {
      query = posQuery();
    } catch (err) {
      return Promise.reject(err);
    }
    return write(append ? 'ra' : 'rd', `${append ? 'result-data/append' : 'result-data'}?${query}`, asText(resultData), 'text/plain; charset=UTF-8');
  };

  /**
   * `jatos.submitResultData(resultData, [onSuccess], [onError])`: replaces
   * this component's result data (a string as is, anything else as JSON).
   * Resolves once the data are stored (after the database commit).
   * @param {any} resultData
   * @param {Function} [onSuccess]
   * @param {Function} [onError]
   * @returns {Promise<any>}
   */
  jatos.submitResultData = (resultData, onSuccess, onError) =>
    withCallbacks(jatos, jatos._storeResultData(resultData, false), onSuccess, onError);

  /**
   * `jatos.appendResultData(resultData, [onSuccess], [onError])`: appends to
   * this component's result data. A retried append is stored once.
   * @param {any} resultData
   * @param {Function} [onSuccess]
   * @param {Function} [onError]
   * @returns {Promise<any>}
   */
  jatos.appendResultData = (resultData, onSuccess, onError) =>
    withCallbacks(jatos, jatos._storeResultData(resultData, true), onSuccess, onError);

  /**
   * `jatos.uploadResultFile(obj, filename, [onSuccess], [onError])`: stores a
   * file of this component: a Blob as is, a string as text, anything else as
   * JSON. The same name again replaces it.
   * @param {any} obj
   * @param {string} filename
   * @param {Function} [onSuccess]
   * @param {Function} [onError]
   * @returns {Promise<any>}
   */
  jatos.uploadResultFile = (obj, filename, onSuccess, onError) => {
    /** @type {Promise<any>} */
    let done;
    if (typeof filename !== 'string' || !filename) {
      done = Promise.reject(new CommandError('bad_filename', 'uploadResultFile: a file name is required'));
    } else {
      const isBlob = typeof Blob !== 'undefined' && obj instanceof Blob;
      const body = isBlob ? obj : asText(obj);
      const type = isBlob ? obj.type || 'application/octet-stream' : typeof obj === 'string' ? 'text/plain; charset=UTF-8' : 'application/json';
      try {
        done = write('file', `files/${encodeURIComponent(filename)}?${posQuery()}`, body, type);
      } catch (err) {
        done = Promise.reject(err);
      }
    }
    return withCallbacks(jatos, done, onSuccess, onError);
  };

  /**
   * `jatos.downloadResultFile([componentPos], filename, [onSuccess], [onError])`:
   * a file this run uploaded (of the component at `componentPos`, else the
   * last one uploaded under that name). Text comes as a string, JSON parsed,
   * anything else as a Blob.
   * @param {...any} args
   * @returns {Promise<any>}
   */
  jatos.downloadResultFile = (...args) => {
    const [first, ...rest] = args;
    const withPos = typeof first === 'number';
    const filename = withPos ? rest[0] : first;
    const [onSuccess, onError] = withPos ? rest.slice(1) : rest;
    /** @type {Promise<any>} */
    let done;
    try {
      const run = ctx();
      if (typeof filename !== 'string' || !filename) throw new CommandError('bad_filename', 'downloadResultFile: a file name is required');
      const url = run.url(`files/${encodeURIComponent(filename)}${withPos ? `?pos=${first}` : ''}`);
      // In the queue, so a download sees the uploads made before it.
      done = run
        .enqueue(() => run.http('GET', url, { as: 'file' }))
        .then((/** @type {any} */ res) => res.body, (/** @type {any} */ err) => {
          throw unavailable(err);
        });
    } catch (err) {
      done = Promise.reject(err);
    }
    return withCallbacks(jatos, done, onSuccess, onError);
  };

  /**
   * `jatos.log(logMsg)`: a line in the run's log (kept with its results).
   * Returns a Promise (jatos.js: nothing); it never counts as unhandled.
   * @param {any} logMsg
   * @returns {Promise<any>}
   */
  jatos.log = (logMsg) => {
    /** @type {Promise<any>} */
    let done;
    try {
      done = write('log', `log?${posQuery()}`, asText(logMsg), 'text/plain; charset=UTF-8');
    } catch (err) {
      done = Promise.reject(err);
    }
    done.catch(() => {});
    return done;
  };

  let catching = false;
  /**
   * `jatos.catchAndLogErrors()`: sends the page's `error` and
   * `unhandledrejection` events and `console.error` / `console.warn` calls to
   * the run's log (jatos.log). Once per page.
   */
  jatos.catchAndLogErrors = () => {
    if (catching) return;
    catching = true;
    const win = host.window;
    if (win && typeof win.addEventListener === 'function') {
      win.addEventListener('error', (/** @type {any} */ e) => {
        jatos.log(`Error: ${e && e.message} (${e && e.filename}:${e && e.lineno}:${e && e.colno})`);
      });
      win.addEventListener('unhandledrejection', (/** @type {any} */ e) => {
        const reason = e && e.reason;
        jatos.log(`Unhandled rejection: ${reason && reason.message ? reason.message : String(reason)}`);
      });
    }
    if (typeof console !== 'undefined') {
      for (const level of /** @type {const} */ (['error', 'warn'])) {
        const original = console[level].bind(console);
        console[level] = (/** @type {any[]} */ ...args) => {
          original(...args);
          jatos.log(`console.${level}: ${args.map((a) => (typeof a === 'string' ? a : safeJson(a))).join(' ')}`);
        };
      }
    }
  };

  /**
   * (Cohort) `jatos.setBonus(points, [onSuccess], [onError])`: this
   * component's bonus in points (oTree's player.payoff); `null` clears it.
   * @param {number|null} points
   * @param {Function} [onSuccess]
   * @param {Function} [onError]
   * @returns {Promise<any>}
   */
  jatos.setBonus = (points, onSuccess, onError) => {
    /** @type {Promise<any>} */
    let done;
    try {
      done = write('bonus', `bonus?${posQuery()}`, JSON.stringify({ points }), 'application/json');
    } catch (err) {
      done = Promise.reject(err);
    }
    return withCallbacks(jatos, done, onSuccess, onError);
  };

  /**
   * (Cohort) `jatos.getPayoff([onSuccess], [onError])`: the participant's
   * payoff so far (participation fee plus bonuses).
   * @param {Function} [onSuccess]
   * @param {Function} [onError]
   * @returns {Promise<any>}
   */
  jatos.getPayoff = (onSuccess, onError) => {
    /** @type {Promise<any>} */
    let done;
    try {
      const run = ctx();
      done = run.http('GET', run.url('payoff')).then((/** @type {any} */ res) => res.body, (/** @type {any} */ err) => {
        throw unavailable(err);
      });
    } catch (err) {
      done = Promise.reject(err);
    }
    return withCallbacks(jatos, done, onSuccess, onError);
  };

  // ------------------------------------------------------------ overlay

  /** @type {any} */
  let overlay = null;

  /**
   * `jatos.showOverlay([config])`: a box in the middle of the page with a
   * text ("Please wait.") and a spinner (or `imgUrl`). No-op without a document.
   * @param {OverlayConfig} [config]
   * @returns {any} the element
   */
  jatos.showOverlay = (config = {}) => {
    const doc = host.document;
    if (!doc) return undefined;
    jatos.removeOverlay();
    const c = config || {};
    const box = doc.createElement('div');
    box.className = 'jatosOverlay';
    box.setAttribute && box.setAttribute('role', 'status');
    box.style.cssText =
      'position:fixed;top:50%;left:50%;transform:translate(-50%,-50%);z-index:10000;' +
      'background:rgba(255,255,255,.95);color:#1d2330;padding:1.5em 2em;border-radius:.6em;' +
      'box-shadow:0 4px 24px rgba(0,0,0,.18);font:1.1rem system-ui,sans-serif;text-align:center;' +
      (typeof c.style === 'string' ? c.style : '');
    if (c.showImg !== false) {
      if (typeof c.imgUrl === 'string' && c.imgUrl) {
        const img = doc.createElement('img');
        img.src = c.imgUrl;
        img.alt = '';
        img.style.cssText = 'display:block;margin:0 auto .8em;max-width:6em';
        box.appendChild(img);
      } else {
        const spinner = doc.createElement('div');
        spinner.className = 'jatosOverlaySpinner';
        spinner.style.cssText =
          'width:2em;height:2em;margin:0 auto .8em;border-radius:50%;border:.25em solid #d5dae3;' +
          'border-top-color:#3a63c8;animation:jatosOverlaySpin 1s linear infinite';
        box.appendChild(spinner);
        if (!doc.getElementById || !doc.getElementById('jatosOverlayStyle')) {
          const style = doc.createElement('style');
          style.id = 'jatosOverlayStyle';
          style.textContent = '@keyframes jatosOverlaySpin{to{transform:rotate(360deg)}}';
          (doc.head || doc.body || doc.documentElement).appendChild(style);
        }
      }
    }
    const text = doc.createElement('div');
    text.textContent = typeof c.text === 'string' ? c.text : 'Please wait.';
    box.appendChild(text);
    (doc.body || doc.documentElement).appendChild(box);
    overlay = box;
    return box;
  };

  /** `jatos.removeOverlay()`: removes the overlay of showOverlay. */
  jatos.removeOverlay = () => {
    if (overlay && overlay.parentNode) overlay.parentNode.removeChild(overlay);
    overlay = null;
  };
  jatos.removeOverlays = jatos.removeOverlay;
}

/** @param {any} value */
function safeJson(value) {
  try {
    return value instanceof Error ? `${value.name}: ${value.message}` : JSON.stringify(value);
  } catch {
    return String(value);
  }
}
