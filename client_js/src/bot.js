// @ts-check
/**
 * `connectParticipant(linkUrl, options)`: a participant without a browser (a
 * bot, a load test, a test). It enters a study through a link like a browser
 * does and returns a jatos object that behaves like the one on a component
 * page: the same code (src/run.js) runs the init, study session, component
 * flow and ending; only navigation differs: here it is a GET of the next
 * component page (which starts the component on the server) followed by the
 * init of that page.
 *
 * No dependencies; in Node 20 pass `WebSocket` from the `ws` package (the
 * Node entry, src/node.js, does it for you).
 * @module bot
 */

import { CommandError } from './cohort.js';
import { errorFromAnswer, httpError } from './http.js';
import { createJatos } from './jatos.js';
import { parseRunUrl } from './run.js';

/**
 * @typedef {Object} ParticipantOptions
 * @property {any} [WebSocket] WebSocket constructor (default: the global one)
 * @property {(input: string, init?: any) => Promise<any>} [fetch] default: the global fetch
 * @property {Map<string, string>|Record<string, string>} [cookies] cookie jar (name -> value),
 *   sent on page requests and updated from their Set-Cookie headers; share one
 *   Map between participants to act as the same browser (general single links)
 * @property {Partial<import('./cohort.js').ConnectOptions>} [channel] extra options for the batch channel
 * @property {number} [httpTimeout] jatos.httpTimeout for this participant
 * @property {number} [httpRetry] jatos.httpRetry
 * @property {number} [httpRetryWait] jatos.httpRetryWait
 *
 * @typedef {Object} BotPage what the bot's "browser" shows now
 * @property {'component'|'end'|'redirect'|'error'} kind
 * @property {string} [url]
 * @property {number} [status] HTTP status of the last page request
 * @property {string} [code] error code of a refusal page
 * @property {string} [html] the component page's HTML
 * @property {string} [state] end page: the run's state
 * @property {boolean} [successful] end page
 * @property {string} [confirmationCode] end page
 * @property {string} [message] end page
 */

/**
 * @param {Map<string, string>} jar
 * @param {any} headers fetch Headers
 */
function storeCookies(jar, headers) {
  /** @type {string[]} */
  let lines = [];
  if (headers && typeof headers.getSetCookie === 'function') lines = headers.getSetCookie();
  else if (headers && headers.get('set-cookie')) lines = [headers.get('set-cookie')];
  for (const line of lines) {
    const [pair] = String(line).split(';');
    const eq = pair.indexOf('=');
    if (eq > 0) jar.set(pair.slice(0, eq).trim(), pair.slice(eq + 1).trim());
  }
}

/** @param {Map<string, string>} jar */
function cookieHeader(jar) {
  return [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
}

/**
 * Enters a study through a link (`<gateway>/go/<code>[?label=...&...]`) and
 * loads its first component. Resolves with a jatos object once that page is
 * loaded (as after `jatos.onLoad`); rejects with a CommandError whose `code`
 * is the refusal (`link_used`, `batch_full`, `link_not_found`, ...).
 *
 * Beyond jatos.js the object has `page` (what the "browser" shows: a
 * component, the end page with `confirmationCode`, a redirect, or an error),
 * `reload()` (GET the last component page again: refused for a component
 * that is not reloadable, which also fails the run, as in JATOS), `goTo(url)`
 * and `close()` (stops heartbeat and batch channel).
 * @param {string} linkUrl
 * @param {ParticipantOptions} [options]
 * @returns {Promise<any>}
 */
export async function connectParticipant(linkUrl, options = {}) {
  const fetchFn = options.fetch || /** @type {any} */ (globalThis).fetch;
  if (typeof fetchFn !== 'function') throw new TypeError('connectParticipant: no fetch implementation');
  const jar =
    options.cookies instanceof Map ? options.cookies : new Map(Object.entries(options.cookies || {}));
  /** @type {any} */
  let jatos = null;
  /** @type {string|null} the last component page shown */
  let componentUrl = null;

  /**
   * GETs a page as a browser would (cookies, no automatic redirects).
   * @param {string} url
   */
  const getPage = async (url) => {
    /** @type {Record<string, string>} */
    const headers = { accept: 'text/html,*/*' };
    if (jar.size) headers.cookie = cookieHeader(jar);
    let res;
    try {
      res = await fetchFn(url, { method: 'GET', headers, redirect: 'manual' });
    } catch (err) {
      throw httpError('network', `GET ${url}: ${/** @type {any} */ (err).message || err}`, 0);
    }
    storeCookies(jar, res.headers);
    const text = await res.text();
    return { status: res.status, headers: res.headers, text };
  };

  /**
   * A refused page: remembered as the current page, thrown as an error.
   * @param {string} url
   * @param {{status: number, text: string}} res
   */
  const refused = (url, res) => {
    const error = errorFromAnswer(res.status, res.text, `GET ${url}`);
    jatos.page = { kind: 'error', url, status: res.status, code: error.code, message: error.message };
    return error;
  };

  /** @type {import('./run.js').RunHost} */
  const host = {
    kind: 'bot',
    fetch: fetchFn,
    WebSocket: options.WebSocket,
    channelOptions: options.channel,
    document: null,
    window: null,
    async openComponent(url) {
      const res = await getPage(url);
      if (res.status !== 200) throw refused(url, res);
      jatos.page = { kind: 'component', url, status: res.status, html: res.text };
      componentUrl = url;
      await jatos.loadPage(url);
    },
    redirect(url) {
      jatos.page = { kind: 'redirect', url };
    },
    showEndPage(info) {
      jatos.page = { kind: 'end', ...info };
    },
  };

  jatos = createJatos(null, { host });
  if (typeof options.httpTimeout === 'number') jatos.httpTimeout = options.httpTimeout;
  if (typeof options.httpRetry === 'number') jatos.httpRetry = options.httpRetry;
  if (typeof options.httpRetryWait === 'number') jatos.httpRetryWait = options.httpRetryWait;
  /** @type {BotPage|null} */
  jatos.page = null;
  jatos.cookies = jar;

  /**
   * Navigates to a component page of this run (as typing its URL): GET, then init.
   * @param {string} url
   */
  jatos.goTo = (url) => host.openComponent(new URL(url, linkUrl).toString());

  /** GETs the last component page again (a browser reload). */
  jatos.reload = () => {
    if (!componentUrl) return Promise.reject(new CommandError('no_page', 'no component page to reload'));
    return host.openComponent(componentUrl);
  };

  /** Stops the heartbeat and closes the batch channel (the bot leaves). */
  jatos.close = () => jatos._shutDown();

  // The link: /go/<code> answers with a redirect to the first component.
  const entry = await getPage(linkUrl);
  if (entry.status < 300 || entry.status >= 400) throw refused(linkUrl, entry);
  const location = entry.headers.get('location');
  if (!location) throw refused(linkUrl, entry);
  const first = new URL(location, linkUrl).toString();
  if (!parseRunUrl(first)) {
    throw new CommandError('not_a_run_page', `the link redirected to ${first}, not to a component page`);
  }
  await host.openComponent(first);
  return jatos;
}
