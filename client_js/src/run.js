// @ts-check
/**
 * The participant's study run in jatos.js: init data and `jatos.onLoad`, the
 * study session, the component flow, ending and aborting, heartbeats and the
 * abort button (docs/studies.md, "Participant URLs").
 *
 * `installStudyRun(jatos, host)` adds all of it to a jatos object. Everything
 * here is shared by the browser page and the Node bot (`connectParticipant`,
 * src/bot.js); the `host` is the only difference, and it only says how to
 * navigate:
 *
 * - `openComponent(url)`: go to a component page of this run. Browser:
 *   `location.assign(url)` (the next page's jatos.js loads itself). Bot: GET
 *   the page (which starts the component on the server), then
 *   `jatos.loadPage(url)` again.
 * - `redirect(url)`: leave the run for another site (end redirect URL,
 *   `endStudyAndRedirect`). Browser: `location.assign`. Bot: remembered.
 * - `showEndPage(info)`: the end page with the confirmation code. Browser: the
 *   page is replaced by a small one. Bot: remembered.
 * @module run
 */

import { connect, CommandError } from './cohort.js';
import { httpRequest, randomId } from './http.js';
import { withCallbacks as settle } from './session-api.js';

/**
 * @typedef {Object} EndPageInfo
 * @property {'finished'|'aborted'|string} state the run's state the server answered
 * @property {boolean} successful as given to endStudy (false for an abort)
 * @property {string} confirmationCode the server's confirmation code ('' for an abort)
 * @property {string} message as given to endStudy / abortStudy
 *
 * @typedef {Object} RunHost
 * @property {string} kind 'browser' or 'bot'
 * @property {(input: string, init?: any) => Promise<any>} fetch
 * @property {any} [WebSocket] for the batch channel (default: the global one)
 * @property {Partial<import('./cohort.js').ConnectOptions>} [channelOptions] extra options for `connect`
 * @property {(url: string) => Promise<void>} openComponent navigate to a component page of this run
 * @property {(url: string) => void|Promise<void>} redirect leave for another URL
 * @property {(info: EndPageInfo) => void} showEndPage
 * @property {() => Promise<void>} [domReady] resolves when the page's DOM is parsed
 * @property {any} [document] the page's document (browser only: abort button, end page)
 * @property {any} [window] the page's window (browser only: confirm, beforeunload)
 *
 * @typedef {Object} RunLocation
 * @property {string} origin e.g. `https://host:8443`
 * @property {string} prefix path before `/r/` ('' unless served under a sub-path)
 * @property {string} runKey
 * @property {number} pos 1-based component position
 * @property {string} path the file path after `/c/<pos>/`
 */

/** jatos.js defaults (JATOS 3.11). */
export const HTTP_TIMEOUT = 30000;
export const HTTP_RETRY = 5;
export const HTTP_RETRY_WAIT = 1000;
/** jatos.js's heartbeat period (heartbeat.js): 2 minutes. */
export const HEARTBEAT_PERIOD = 120000;

const RUN_PATH = /^(.*?)\/r\/([^/]+)\/c\/(\d+)(?:\/(.*))?$/;

/**
 * Reads the run key and component position from a component page URL
 * (`<origin>[<prefix>]/r/<runKey>/c/<pos>/<path>`); null if it is not one.
 * @param {string} href absolute URL
 * @returns {RunLocation|null}
 */
export function parseRunUrl(href) {
  let url;
  try {
    url = new URL(href);
  } catch {
    return null;
  }
  const m = RUN_PATH.exec(url.pathname);
  if (!m) return null;
  const pos = Number(m[3]);
  if (!Number.isInteger(pos) || pos < 1) return null;
  return { origin: url.origin, prefix: m[1], runKey: m[2], pos, path: m[4] || '' };
}

/**
 * The URL of a component's page: `/r/<runKey>/c/<position>/<htmlFilePath>`.
 * @param {RunLocation} run
 * @param {{position: number, htmlFilePath?: string}} component
 * @returns {string}
 */
export function componentPageUrl(run, component) {
  const file = String(component.htmlFilePath || '')
    .split('/')
    .filter((s) => s !== '')
    .map(encodeURIComponent)
    .join('/');
  return `${run.origin}${run.prefix}/r/${run.runKey}/c/${component.position}/${file}`;
}

/**
 * @param {string} code
 * @param {string} message
 * @returns {Promise<never>}
 */
const refuse = (code, message) => Promise.reject(new CommandError(code, message));

/**
 * Installs the run part of jatos.js on `jatos`:
 * fields (`studyResultId`, `componentPos`, `studySessionData`, ...),
 * `onLoad`, `loadPage`, `setStudySessionData`, `startComponent`,
 * `startComponentByPos`, `startComponentByTitle`, `startNextComponent`,
 * `startLastComponent`, `endStudy`, `endStudyAjax`, `endStudyWithoutRedirect`,
 * `endStudyAndRedirect`, `abortStudy`, `abortStudyAjax`,
 * `abortStudyWithoutRedirect`, `abortStudyAndRedirect`, `setHeartbeatPeriod`,
 * `addAbortButton`, `showBeforeUnloadWarning`, `addJatosIds`, and the
 * `httpTimeout` / `httpRetry` / `httpRetryWait` settings.
 * @param {any} jatos a jatos object with the error handling and batch session installed
 * @param {RunHost} host
 */
export function installStudyRun(jatos, host) {
  // ---------------------------------------------------------------- fields
  jatos.httpTimeout = HTTP_TIMEOUT;
  jatos.httpRetry = HTTP_RETRY;
  jatos.httpRetryWait = HTTP_RETRY_WAIT;
  jatos.studyResultId = null;
  jatos.workerId = null;
  jatos.batchId = null;
  jatos.studyId = null;
  jatos.studyVersion = null;
  jatos.componentId = null;
  jatos.componentPos = null;
  jatos.componentResultId = null;
  jatos.studyJsonInput = {};
  jatos.studyInput = {};
  jatos.componentJsonInput = {};
  jatos.componentInput = {};
  jatos.batchJsonInput = {};
  jatos.batchInput = {};
  jatos.studyProperties = {};
  jatos.componentProperties = {};
  jatos.batchProperties = {};
  jatos.componentList = [];
  jatos.studyLength = null;
  jatos.studySessionData = {};
  jatos.urlQueryParameters = {};
  jatos.sessionConfig = {};
  jatos.runKey = null;

  /** @type {RunLocation|null} the page being (or last) loaded */
  let run = null;
  /** Page state, reset by every loadPage (a new page in the browser). */
  let loaded = false;
  let startingComponent = false;
  let endingStudy = false;
  /** @type {Function[]} onLoad callbacks waiting for this page's load */
  let onLoadCallbacks = [];
  let heartbeatPeriod = HEARTBEAT_PERIOD;
  /** @type {any} */
  let heartbeatTimer = null;
  let beforeUnloadWarning = true;
  /** Writes go out one after the other (as jatos.js's httpLoop): a later study session wins. */
  /** @type {Promise<any>} */
  let writeQueue = Promise.resolve();
  const commandPrefix = randomId();
  let commandCounter = 0;
  /** @type {number} page loads so far: a load superseded by a newer one is dropped */
  let loadGeneration = 0;

  /** @param {string} kind */
  const newCommandId = (kind) => `${kind}-${commandPrefix}-${++commandCounter}`;

  /**
   * @param {string} suffix path after `/r/<runKey>/`
   * @returns {string}
   */
  const runUrl = (suffix) => {
    if (!run) throw new CommandError('not_initialized', 'jatos.js not yet initialized');
    return `${run.origin}${run.prefix}/r/${run.runKey}/${suffix}`;
  };

  /**
   * @param {string} method
   * @param {string} url
   * @param {{body?: any, contentType?: string, commandId?: string, retry?: boolean, as?: 'auto'|'file'}} [options]
   */
  const http = (method, url, options = {}) =>
    httpRequest(
      { fetch: host.fetch, method, url, body: options.body, contentType: options.contentType, commandId: options.commandId, as: options.as },
      {
        httpTimeout: jatos.httpTimeout,
        httpRetry: options.retry === false ? 0 : jatos.httpRetry,
        httpRetryWait: jatos.httpRetryWait,
      },
    );

  /**
   * Queues a write behind the ones already queued.
   * @template T
   * @param {() => Promise<T>} task
   * @returns {Promise<T>}
   */
  const enqueue = (task) => {
    const result = writeQueue.then(task);
    writeQueue = result.catch(() => {});
    return result;
  };

  /** @returns {Promise<void>} resolves when every write queued so far has settled */
  const writesSettled = () => enqueue(async () => {});

  /**
   * What other parts (results.js) need of the run: its URLs, the HTTP calls
   * with the jatos.js retry settings, the write queue and command ids.
   */
  jatos._run = {
    url: runUrl,
    http,
    enqueue,
    commandId: newCommandId,
    /** @returns {number|null} the position (1-based) of the page's component */
    pos: () => (run ? run.pos : null),
    /** @returns {boolean} */
    loaded: () => loaded,
  };

  // ------------------------------------------------------------- heartbeat

  const stopHeartbeat = () => {
    clearInterval(heartbeatTimer);
    heartbeatTimer = null;
  };

  const startHeartbeat = () => {
    stopHeartbeat();
    if (!run || !(heartbeatPeriod > 0)) return;
    const url = runUrl('heartbeat');
    heartbeatTimer = setInterval(() => {
      // As jatos.js's heartbeat worker: fire and forget, no retries.
      http('POST', url, { retry: false }).catch(() => {});
    }, heartbeatPeriod);
    // A bot must not be kept alive by its heartbeat alone.
    if (heartbeatTimer && typeof heartbeatTimer.unref === 'function') heartbeatTimer.unref();
  };

  /**
   * `jatos.setHeartbeatPeriod(ms)`: how often the page tells the server it is
   * still there (default 2 min, as jatos.js). Takes effect at once.
   * @param {number} period ms
   */
  jatos.setHeartbeatPeriod = (period) => {
    if (typeof period !== 'number' || !(period >= 0)) return;
    heartbeatPeriod = period;
    if (heartbeatTimer) startHeartbeat();
  };

  // ------------------------------------------------------------------ load

  /**
   * `jatos.onLoad(callback)`: called once jatos.js has its init data and the
   * batch channel is open (or its first attempt failed, as in jatos.js);
   * several callbacks are called in the order given; one given after that is
   * called at once. (`jatos.onload` is the same.)
   * @param {Function} callback
   */
  jatos.onLoad = (callback) => {
    if (typeof callback !== 'function') return;
    if (loaded) callback();
    else onLoadCallbacks.push(callback);
  };
  jatos.onload = jatos.onLoad;

  /** @returns {boolean} whether init data and batch channel are there (onLoad has fired) */
  Object.defineProperty(jatos, 'loaded', { get: () => loaded, enumerable: true, configurable: true });

  /** @param {any} init the answer of GET /r/<runKey>/init */
  const setInitData = (init) => {
    const orEmpty = (/** @type {any} */ v) => (v === undefined || v === null ? {} : v);
    jatos.studyResultId = init.studyResultId ?? null;
    jatos.workerId = init.workerId ?? null;
    jatos.batchId = init.batchId ?? null;
    jatos.studyId = init.studyId ?? null;
    jatos.studyVersion = init.studyVersion ?? null;
    jatos.componentId = init.componentId ?? null;
    jatos.componentPos = typeof init.componentPos === 'number' ? init.componentPos : run && run.pos;
    jatos.studyJsonInput = jatos.studyInput = orEmpty(init.studyJsonInput);
    jatos.componentJsonInput = jatos.componentInput = orEmpty(init.componentJsonInput);
    jatos.batchJsonInput = jatos.batchInput = orEmpty(init.batchJsonInput);
    jatos.studyProperties = orEmpty(init.studyProperties);
    jatos.componentProperties = orEmpty(init.componentProperties);
    jatos.batchProperties = orEmpty(init.batchProperties);
    jatos.componentList = Array.isArray(init.componentList) ? init.componentList : [];
    jatos.studyLength = jatos.componentList.length;
    jatos.studySessionData = orEmpty(init.studySessionData);
    jatos.urlQueryParameters = orEmpty(init.urlQueryParameters);
    jatos.sessionConfig = orEmpty(init.sessionConfig);
    jatos.runKey = init.runKey || (run && run.runKey);
  };

  /**
   * Resolves when the channel has its first state, or its first socket
   * closed or failed (jatos.js calls onLoad after the first opening attempt
   * either way; the channel keeps reconnecting in the background).
   * @param {import('./cohort.js').BatchChannel} channel
   * @returns {Promise<void>}
   */
  const channelSettled = (channel) =>
    new Promise((resolve) => {
      const offs = [channel.on('close', () => done()), channel.on('error', () => done())];
      const done = () => {
        for (const off of offs) off();
        resolve();
      };
      channel.ready.then(done, done);
    });

  /**
   * Loads a component page of the run: derives run key and position from
   * the URL, fetches `/r/<runKey>/init?pos=<pos>`, fills the fields, opens the
   * batch channel, starts the heartbeat and calls the onLoad callbacks.
   * Called by itself on a component page (`startPage`) and by the bot after
   * each navigation. Resolves with `jatos`.
   * @param {string} pageUrl absolute URL of the component page
   * @returns {Promise<any>}
   */
  jatos.loadPage = async (pageUrl) => {
    const where = parseRunUrl(pageUrl);
    if (!where) throw new CommandError('not_a_run_page', `not a component page of a run: ${pageUrl}`);
    const generation = ++loadGeneration;
    // A new page: what the old one had going is gone.
    stopHeartbeat();
    const previous = jatos.batchChannel;
    if (previous) {
      jatos.attachBatchChannel(null);
      previous.close();
    }
    run = where;
    loaded = false;
    startingComponent = false;
    endingStudy = false;
    jatos.runKey = where.runKey;
    jatos.componentPos = where.pos;

    const answer = await http('GET', runUrl(`init?pos=${where.pos}`));
    if (generation !== loadGeneration) return jatos;
    const init = answer.body && typeof answer.body === 'object' ? answer.body : {};
    setInitData(init);

    const channelPath = init.channelUrl || `${where.prefix}/ws/batch/${jatos.batchId}?token=${where.runKey}`;
    const channelUrl = new URL(channelPath, pageUrl).toString();
    const channel = connect({
      ...(host.channelOptions || {}),
      url: channelUrl,
      ...(host.WebSocket ? { WebSocket: host.WebSocket } : {}),
    });
    jatos.attachBatchChannel(channel);
    await channelSettled(channel);
    if (generation !== loadGeneration) return jatos;
    startHeartbeat();
    if (host.domReady) await host.domReady();
    if (generation !== loadGeneration) return jatos;
    loaded = true;
    if (!jatos.componentProperties.reloadable && beforeUnloadWarning) addBeforeUnload();
    const callbacks = onLoadCallbacks;
    onLoadCallbacks = [];
    for (const callback of callbacks) {
      try {
        callback();
      } catch (err) {
        // One throwing callback must not keep the others from running.
        if (typeof console !== 'undefined') console.error(err);
      }
    }
    return jatos;
  };

  /** Stops what runs in the background (heartbeat, batch channel): the page is done. */
  const shutDown = () => {
    stopHeartbeat();
    removeBeforeUnload();
    const channel = jatos.batchChannel;
    if (channel) channel.close();
  };
  jatos._shutDown = shutDown;

  // --------------------------------------------------------- study session

  /**
   * `jatos.setStudySessionData(data, [onSuccess], [onFail])`: replaces the
   * study session (`jatos.studySessionData = data`) and stores it on the
   * server (POST /r/<runKey>/study-session). Resolves with `{version}`.
   * Writing into `jatos.studySessionData` is enough when the component ends:
   * every start*Component writes it first.
   * @param {any} data
   * @param {Function} [onSuccess]
   * @param {Function} [onFail]
   * @returns {Promise<any>}
   */
  jatos.setStudySessionData = (data, onSuccess, onFail) => {
    if (!run) return settle(jatos, refuse('not_initialized', 'jatos.js not yet initialized'), onSuccess, onFail);
    jatos.studySessionData = data;
    let body;
    try {
      body = JSON.stringify(data);
    } catch (err) {
      const message = err && /** @type {any} */ (err).message ? /** @type {any} */ (err).message : String(err);
      return settle(jatos, refuse('bad_json', `the study session is not JSON: ${message}`), onSuccess, onFail);
    }
    const url = runUrl('study-session');
    const commandId = newCommandId('ss');
    const write = enqueue(() =>
      http('POST', url, { body: body === undefined ? '' : body, commandId }).then((res) => res.body),
    );
    return settle(jatos, write, onSuccess, onFail);
  };

  // ----------------------------------------------------------- result data

  /**
   * Result data given to start*Component / endStudy: stored as the
   * component's result data (`jatos.submitResultData`, results.js), in the
   * write queue, so the navigation waits for it. A failure is reported to
   * `jatos.onError` and the flow goes on (as jatos.js, which navigates
   * anyway); a server without result storage (`not_available`) is not reported.
   * @param {any} resultData
   * @returns {Promise<{stored: boolean, error?: any}>}
   */
  const offerResultData = (resultData) =>
    jatos._storeResultData(resultData, false).then(
      () => ({ stored: true }),
      (/** @type {any} */ error) => {
        if (error.code !== 'not_available') jatos._reportError(error, undefined);
        return { stored: false, error };
      },
    );
  jatos._offerResultData = offerResultData;

  // -------------------------------------------------------- component flow

  /**
   * Reads `(resultData, [message], [onError])` / `(resultData, [onError])`
   * as jatos.js does.
   * @param {any} param3
   * @param {any} param4
   */
  const messageAndOnError = (param3, param4) => {
    if (typeof param3 === 'string') return { message: param3, onError: typeof param4 === 'function' ? param4 : undefined };
    return { message: undefined, onError: typeof param3 === 'function' ? param3 : undefined };
  };

  /**
   * Writes the result data (if any) and the study session, then navigates to
   * the component at `index` (0-based in `componentList`).
   * @param {number} index
   * @param {any} resultData
   * @returns {Promise<void>}
   */
  const goToComponent = async (index, resultData) => {
    if (!loaded || !run) throw new CommandError('not_initialized', 'jatos.js not yet initialized');
    if (startingComponent) throw new CommandError('busy', 'Can start only one component at the same time');
    if (endingStudy) throw new CommandError('study_ended', "Can't start component if study already ended.");
    const component = jatos.componentList[index];
    if (!component) throw new CommandError('component_not_found', 'Component position does not exist');
    startingComponent = true;
    try {
      if (resultData) offerResultData(resultData);
      // As jatos.js: the study session is stored before the next component,
      // and a failed write does not stop the flow (it is reported).
      jatos.setStudySessionData(jatos.studySessionData).catch(() => {});
      await writesSettled();
      const url = componentPageUrl(run, { position: component.position ?? index + 1, htmlFilePath: component.htmlFilePath });
      removeBeforeUnload();
      await host.openComponent(url);
    } catch (err) {
      startingComponent = false;
      throw err;
    }
  };

  /**
   * Index in componentList of a component given by id (or JATOS uuid).
   * @param {any} id
   */
  const indexOfId = (id) =>
    jatos.componentList.findIndex(
      (/** @type {any} */ c) => String(c.id) === String(id) || (c.uuid !== undefined && String(c.uuid) === String(id)),
    );

  /**
   * `jatos.startComponent(componentId, [resultData], [message], [onError])`:
   * writes result data and study session, then goes to the component with
   * this id (Cohort's ids are strings: the JATOS uuid for imported studies).
   * Resolves once the navigation is under way (the bot: once the next page
   * has loaded).
   * @param {string|number} componentId
   * @param {any} [resultData]
   * @param {any} [param3] message or onError
   * @param {any} [param4] onError
   * @returns {Promise<void>}
   */
  jatos.startComponent = (componentId, resultData, param3, param4) => {
    const { onError } = messageAndOnError(param3, param4);
    const index = indexOfId(componentId);
    const go =
      index < 0 ? refuse('component_not_found', `Component with ID ${componentId} does not exist`) : goToComponent(index, resultData);
    return settle(jatos, go, undefined, onError);
  };

  /**
   * `jatos.startComponentByPos(position, [resultData], [message], [onError])`
   * (positions start at 1).
   * @param {number} position
   * @param {any} [resultData]
   * @param {any} [param3]
   * @param {any} [param4]
   * @returns {Promise<void>}
   */
  jatos.startComponentByPos = (position, resultData, param3, param4) => {
    const { onError } = messageAndOnError(param3, param4);
    const valid = Number.isInteger(position) && position >= 1 && position <= jatos.componentList.length;
    const go = valid ? goToComponent(position - 1, resultData) : refuse('component_not_found', 'Component position does not exist');
    return settle(jatos, go, undefined, onError);
  };

  /**
   * `jatos.startComponentByTitle(title, [resultData], [message], [onError])`:
   * the first component (lowest position) with this title.
   * @param {string} title
   * @param {any} [resultData]
   * @param {any} [param3]
   * @param {any} [param4]
   * @returns {Promise<void>}
   */
  jatos.startComponentByTitle = (title, resultData, param3, param4) => {
    const { onError } = messageAndOnError(param3, param4);
    const index = jatos.componentList.findIndex((/** @type {any} */ c) => c.title === title);
    const go = index < 0 ? refuse('component_not_found', `Component with title ${title} does not exist`) : goToComponent(index, resultData);
    return settle(jatos, go, undefined, onError);
  };

  /** @returns {number} index of the last active component, -1 if none */
  const lastActiveIndex = () => {
    for (let i = jatos.componentList.length - 1; i >= 0; i--) if (jatos.componentList[i].active !== false) return i;
    return -1;
  };

  /**
   * `jatos.startNextComponent([resultData], [message], [onError])`: the next
   * active component; on the last active one it ends the study
   * (`endStudy(resultData, true, message)`), as jatos.js 3.8+.
   * @param {any} [resultData]
   * @param {any} [param2] message or onError
   * @param {any} [param3] onError
   * @returns {Promise<any>}
   */
  jatos.startNextComponent = (resultData, param2, param3) => {
    const { message, onError } = messageAndOnError(param2, param3);
    const current = (jatos.componentPos || 0) - 1; // index of this component
    if (loaded && current >= lastActiveIndex()) {
      return resultData ? jatos.endStudy(resultData, true, message) : jatos.endStudy(true, message);
    }
    let next = -1;
    for (let i = current + 1; i < jatos.componentList.length; i++) {
      if (jatos.componentList[i].active !== false) {
        next = i;
        break;
      }
    }
    const go = next < 0 ? goToComponent(-1, resultData) : goToComponent(next, resultData);
    return settle(jatos, go, undefined, onError);
  };

  /**
   * `jatos.startLastComponent([resultData], [message], [onError])`: the last
   * active component.
   * @param {any} [resultData]
   * @param {any} [param2]
   * @param {any} [param3]
   * @returns {Promise<void>}
   */
  jatos.startLastComponent = (resultData, param2, param3) => {
    const { onError } = messageAndOnError(param2, param3);
    return settle(jatos, goToComponent(lastActiveIndex(), resultData), undefined, onError);
  };

  // ---------------------------------------------------------------- ending

  /**
   * Reads jatos.js's end arguments: `(successful, message, ...rest)` or
   * `(resultData, successful, message, ...rest)`.
   * @param {any[]} args
   */
  const endArgs = (args) => {
    const [p1, ...others] = args;
    if (typeof p1 === 'boolean') return { resultData: undefined, successful: p1, message: others[0], rest: others.slice(1) };
    // A string or an object (null included, as typeof null is 'object' in jatos.js)
    // is result data; undefined is taken the same way (jatos.js would ignore the rest).
    return { resultData: p1, successful: others[0], message: others[1], rest: others.slice(2) };
  };

  /**
   * POSTs /end or /abort (after the writes queued before), then stops the
   * heartbeat and the batch channel. Resolves with the EndPageInfo plus the
   * server's `redirect`.
   * @param {'end'|'abort'} kind
   * @param {any} body
   * @returns {Promise<EndPageInfo & {redirect: string}>}
   */
  const finish = async (kind, body) => {
    if (!run) throw new CommandError('not_initialized', 'jatos.js not yet initialized.');
    if (endingStudy) throw new CommandError('study_ended', 'Can end/abort study only once.');
    endingStudy = true;
    const url = runUrl(kind);
    const commandId = newCommandId(kind);
    try {
      const res = await enqueue(() => http('POST', url, { body: JSON.stringify(body), commandId }));
      const answer = res.body || {};
      shutDown();
      const info = {
        state: answer.state || (kind === 'end' ? 'finished' : 'aborted'),
        successful: kind === 'end' ? body.successful !== false : false,
        confirmationCode: answer.confirmation_code || '',
        message: body.message || '',
        redirect: answer.redirect || '',
      };
      jatos.confirmationCode = info.confirmationCode || null;
      return info;
    } catch (err) {
      // Not ended: the page may try again (jatos.js would stay stuck here).
      endingStudy = false;
      throw err;
    }
  };

  /**
   * `jatos.endStudyWithoutRedirect([resultData], [successful], [message], [onSuccess], [onError])`
   * (and its old name `endStudyAjax`): ends the run and stays on the page.
   * Resolves with `{state, successful, confirmationCode, message, redirect}`.
   * @param {...any} args
   * @returns {Promise<any>}
   */
  jatos.endStudyWithoutRedirect = (...args) => {
    const { resultData, successful, message, rest } = endArgs(args);
    const [onSuccess, onError] = rest;
    /** @type {any} */
    const body = { successful: typeof successful === 'boolean' ? successful : true };
    if (typeof message === 'string') body.message = message;
    const work = (async () => {
      if (!run) throw new CommandError('not_initialized', 'jatos.js not yet initialized.');
      if (endingStudy) throw new CommandError('study_ended', 'Can end/abort study only once.');
      if (resultData) offerResultData(resultData);
      return finish('end', body);
    })();
    return settle(jatos, work, onSuccess, onError);
  };
  jatos.endStudyAjax = jatos.endStudyWithoutRedirect;

  /**
   * After an end or abort: the study's end redirect URL if the server gave
   * one, else the end page.
   * @param {EndPageInfo & {redirect: string}} info
   */
  const afterEnd = async (info) => {
    if (info.redirect) await host.redirect(info.redirect);
    else host.showEndPage({ state: info.state, successful: info.successful, confirmationCode: info.confirmationCode, message: info.message });
    return info;
  };

  /**
   * `jatos.endStudy([resultData], [successful], [message], [showEndPage=true])`:
   * ends the run, then goes to the study's end redirect URL, or shows the end
   * page with the confirmation code. `showEndPage` false: stays on the page.
   * Resolves with `{state, successful, confirmationCode, message, redirect}`.
   * @param {...any} args
   * @returns {Promise<any>}
   */
  jatos.endStudy = (...args) => {
    const { resultData, successful, message, rest } = endArgs(args);
    const [showEndPage] = rest;
    const pass = resultData ? [resultData, successful, message] : [typeof successful === 'boolean' ? successful : true, message];
    if (showEndPage !== undefined && !showEndPage) return jatos.endStudyWithoutRedirect(...pass);
    return jatos.endStudyWithoutRedirect(...pass).then(afterEnd);
  };

  /**
   * `jatos.endStudyAndRedirect(url, [resultData], [successful], [message], [onSuccess], [onError])`.
   * @param {string} url
   * @param {...any} args
   * @returns {Promise<any>}
   */
  jatos.endStudyAndRedirect = (url, ...args) =>
    jatos.endStudyWithoutRedirect(...args).then(async (/** @type {any} */ info) => {
      await host.redirect(url);
      return info;
    });

  /**
   * `jatos.abortStudyWithoutRedirect([message], [onSuccess], [onError])` (and
   * its old name `abortStudyAjax`): aborts the run (the server erases the
   * study session) and stays on the page.
   * @param {string} [message]
   * @param {Function} [onSuccess]
   * @param {Function} [onError]
   * @returns {Promise<any>}
   */
  jatos.abortStudyWithoutRedirect = (message, onSuccess, onError) => {
    /** @type {any} */
    const body = {};
    if (typeof message === 'string') body.message = message;
    return settle(jatos, finish('abort', body), onSuccess, onError);
  };
  jatos.abortStudyAjax = jatos.abortStudyWithoutRedirect;

  /**
   * `jatos.abortStudyAndRedirect(url, [message], [onSuccess], [onError])`.
   * @param {string} url
   * @param {string} [message]
   * @param {Function} [onSuccess]
   * @param {Function} [onError]
   * @returns {Promise<any>}
   */
  jatos.abortStudyAndRedirect = (url, message, onSuccess, onError) =>
    jatos.abortStudyWithoutRedirect(message, onSuccess, onError).then(async (/** @type {any} */ info) => {
      await host.redirect(url);
      return info;
    });

  /**
   * `jatos.abortStudy([message], [showEndPage=true])`: aborts the run, then
   * the end redirect URL or the end page (as endStudy).
   * @param {string} [message]
   * @param {boolean} [showEndPage]
   * @returns {Promise<any>}
   */
  jatos.abortStudy = (message, showEndPage = true) => {
    if (!showEndPage) return jatos.abortStudyWithoutRedirect(message);
    return jatos.abortStudyWithoutRedirect(message).then(afterEnd);
  };

  // ------------------------------------------------------------ page bits

  /** @param {any} event */
  const onBeforeUnload = (event) => {
    event.preventDefault();
    event.returnValue = 'Are you sure you want to leave?';
  };
  let beforeUnloadAdded = false;
  const addBeforeUnload = () => {
    if (!host.window || beforeUnloadAdded) return;
    host.window.addEventListener('beforeunload', onBeforeUnload, { capture: true });
    beforeUnloadAdded = true;
  };
  const removeBeforeUnload = () => {
    if (!host.window || !beforeUnloadAdded) return;
    host.window.removeEventListener('beforeunload', onBeforeUnload, { capture: true });
    beforeUnloadAdded = false;
  };

  /**
   * `jatos.showBeforeUnloadWarning(show)`: the browser's "leave this page?"
   * warning, on by default for a component that is not reloadable (as
   * jatos.js). No-op in Node.
   * @param {boolean} show
   */
  jatos.showBeforeUnloadWarning = (show) => {
    beforeUnloadWarning = !!show;
    if (show) addBeforeUnload();
    else removeBeforeUnload();
  };

  /**
   * `jatos.addAbortButton([config])`: a small fixed button (bottom right)
   * that aborts the study after a confirmation. Options as jatos.js: `text`
   * ("Cancel"), `confirm` (true), `confirmText`, `tooltip`, `msg` (the abort
   * message), `style` (extra CSS), `action` (called with `msg` instead of
   * `jatos.abortStudy`). Returns the element (undefined without a document).
   * @param {{text?: string, confirm?: boolean, confirmText?: string, tooltip?: string, msg?: string, style?: string, action?: Function}} [config]
   * @returns {any}
   */
  jatos.addAbortButton = (config = {}) => {
    const doc = host.document;
    if (!doc) return undefined;
    const c = config || {};
    const text = typeof c.text === 'string' ? c.text : 'Cancel';
    const confirm = typeof c.confirm === 'boolean' ? c.confirm : true;
    const confirmText = typeof c.confirmText === 'string' ? c.confirmText : 'Do you really want to cancel this study?';
    const tooltip = typeof c.tooltip === 'string' ? c.tooltip : 'Cancels this study and deletes all already submitted data';
    const msg = typeof c.msg === 'string' ? c.msg : 'Worker decided to abort';
    let style =
      'color:black;font-family:sans-serif;font-size:20px;letter-spacing:2px;position:fixed;' +
      'bottom:1em;right:1em;opacity:0.6;z-index:9999;cursor:pointer;background:none;border:0;' +
      'text-shadow:-1px 0 white,0 1px white,1px 0 white,0 -1px white;';
    if (typeof c.style === 'string') style += ';' + c.style;
    const button = doc.createElement('button');
    button.type = 'button';
    button.className = 'jatosAbortButton';
    button.textContent = text;
    button.title = tooltip;
    button.style.cssText = style;
    button.addEventListener('click', () => {
      const win = host.window;
      if (confirm && !(win && typeof win.confirm === 'function' && win.confirm(confirmText))) return;
      if (typeof c.action === 'function') c.action(msg);
      else jatos.abortStudy(msg).catch(() => {});
    });
    (doc.body || doc.documentElement).appendChild(button);
    return button;
  };

  /**
   * `jatos.addJatosIds([obj])`: adds the run's ids to `obj` (as jatos.js).
   * @param {any} [obj]
   * @returns {any}
   */
  jatos.addJatosIds = (obj = {}) => {
    obj.studyId = jatos.studyId;
    obj.studyTitle = jatos.studyProperties.title;
    obj.batchId = jatos.batchId;
    obj.batchTitle = jatos.batchProperties.title;
    obj.componentId = jatos.componentId;
    obj.componentPos = jatos.componentPos;
    obj.componentTitle = jatos.componentProperties.title;
    obj.workerId = jatos.workerId;
    obj.studyResultId = jatos.studyResultId;
    obj.componentResultId = jatos.componentResultId;
    obj.groupResultId = jatos.groupResultId ?? null;
    obj.groupMemberId = jatos.groupMemberId ?? null;
    return obj;
  };
}

// ------------------------------------------------------------------- hosts

/**
 * The browser's host: navigation is `location.assign`, the end page replaces
 * the document's body.
 * @returns {RunHost}
 */
export function browserHost() {
  const g = /** @type {any} */ (globalThis);
  return {
    kind: 'browser',
    fetch: (input, init) => g.fetch(input, init),
    WebSocket: undefined,
    document: g.document,
    window: g.window || (g.document ? g : undefined),
    async openComponent(url) {
      g.location.assign(url);
    },
    async redirect(url) {
      g.location.assign(url);
    },
    showEndPage(info) {
      renderEndPage(g.document, info);
    },
    domReady() {
      const doc = g.document;
      if (!doc || doc.readyState !== 'loading') return Promise.resolve();
      return new Promise((resolve) => doc.addEventListener('DOMContentLoaded', () => resolve(), { once: true }));
    },
  };
}

/**
 * The end page (jatos.js shows JATOS's own): a thank-you, the confirmation
 * code of a finished run, or a note that the study was cancelled.
 * @param {any} doc
 * @param {EndPageInfo} info
 */
export function renderEndPage(doc, info) {
  if (!doc || !doc.body) return;
  const aborted = info.state === 'aborted';
  const title = aborted ? 'The study was cancelled' : 'The study is finished';
  doc.title = title;
  const body = doc.body;
  while (body.firstChild) body.removeChild(body.firstChild);
  const box = doc.createElement('main');
  box.className = 'cohortEndPage';
  box.style.cssText = 'font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#1d2330';
  const h1 = doc.createElement('h1');
  h1.style.cssText = 'font-size:1.4rem';
  h1.textContent = title;
  box.appendChild(h1);
  const p = doc.createElement('p');
  p.textContent = aborted ? 'Your data were deleted. Thank you for your time.' : 'Thank you for taking part!';
  box.appendChild(p);
  if (info.confirmationCode) {
    const code = doc.createElement('p');
    code.append('Your confirmation code: ');
    const strong = doc.createElement('code');
    strong.className = 'cohortConfirmationCode';
    strong.style.cssText = 'font-size:1.2rem;user-select:all';
    strong.textContent = info.confirmationCode;
    code.appendChild(strong);
    box.appendChild(code);
  }
  body.appendChild(box);
}

/**
 * On a component page (`/r/<runKey>/c/<pos>/...`), loads the run into
 * `jatos`: init data, batch channel, then the onLoad callbacks. The classic
 * build (dist/jatos.js) calls it by itself; an ES-module page calls
 * `startPage(createJatos())`. Resolves with `jatos`, or with null when the
 * page is not a component page; a failure is logged and reported to
 * `jatos.onError`.
 * @param {any} jatos
 * @param {string} [href] default `location.href`
 * @returns {Promise<any>}
 */
export function startPage(jatos, href) {
  const g = /** @type {any} */ (globalThis);
  const url = href || (g.location && g.location.href);
  if (!url || !parseRunUrl(url)) return Promise.resolve(null);
  return jatos.loadPage(url).catch((/** @type {any} */ error) => {
    if (typeof console !== 'undefined') console.error('jatos.js: could not load the study run:', error);
    jatos._reportError(error, undefined);
    throw error;
  });
}

