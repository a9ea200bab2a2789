/**
 * Reads the run key and component position from a component page URL
 * (`<origin>[<prefix>]/r/<runKey>/c/<pos>/<path>`); null if it is not one.
 * @param {string} href absolute URL
 * @returns {RunLocation|null}
 */
export function parseRunUrl(href: string): RunLocation | null;
/**
 * The URL of a component's page: `/r/<runKey>/c/<position>/<htmlFilePath>`.
 * @param {RunLocation} run
 * @param {{position: number, htmlFilePath?: string}} component
 * @returns {string}
 */
export function componentPageUrl(run: RunLocation, component: {
    position: number;
    htmlFilePath?: string;
}): string;
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
export function installStudyRun(jatos: any, host: RunHost): void;
/**
 * The browser's host: navigation is `location.assign`, the end page replaces
 * the document's body.
 * @returns {RunHost}
 */
export function browserHost(): RunHost;
/**
 * The end page (jatos.js shows JATOS's own): a thank-you, the confirmation
 * code of a finished run, or a note that the study was cancelled.
 * @param {any} doc
 * @param {EndPageInfo} info
 */
export function renderEndPage(doc: any, info: EndPageInfo): void;
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
export function startPage(jatos: any, href?: string): Promise<any>;
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
export const HTTP_TIMEOUT: 30000;
export const HTTP_RETRY: 5;
export const HTTP_RETRY_WAIT: 1000;
/** jatos.js's heartbeat period (heartbeat.js): 2 minutes. */
export const HEARTBEAT_PERIOD: 120000;
export type EndPageInfo = {
    /**
     * the run's state the server answered
     */
    state: "finished" | "aborted" | string;
    /**
     * as given to endStudy (false for an abort)
     */
    successful: boolean;
    /**
     * the server's confirmation code ('' for an abort)
     */
    confirmationCode: string;
    /**
     * as given to endStudy / abortStudy
     */
    message: string;
};
export type RunHost = {
    /**
     * 'browser' or 'bot'
     */
    kind: string;
    fetch: (input: string, init?: any) => Promise<any>;
    /**
     * for the batch channel (default: the global one)
     */
    WebSocket?: any;
    /**
     * extra options for `connect`
     */
    channelOptions?: Partial<import("./cohort.js").ConnectOptions>;
    /**
     * navigate to a component page of this run
     */
    openComponent: (url: string) => Promise<void>;
    /**
     * leave for another URL
     */
    redirect: (url: string) => void | Promise<void>;
    showEndPage: (info: EndPageInfo) => void;
    /**
     * resolves when the page's DOM is parsed
     */
    domReady?: () => Promise<void>;
    /**
     * the page's document (browser only: abort button, end page)
     */
    document?: any;
    /**
     * the page's window (browser only: confirm, beforeunload)
     */
    window?: any;
};
export type RunLocation = {
    /**
     * e.g. `https://host:8443`
     */
    origin: string;
    /**
     * path before `/r/` ('' unless served under a sub-path)
     */
    prefix: string;
    runKey: string;
    /**
     * 1-based component position
     */
    pos: number;
    /**
     * the file path after `/c/<pos>/`
     */
    path: string;
};
