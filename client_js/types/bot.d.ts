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
export function connectParticipant(linkUrl: string, options?: ParticipantOptions): Promise<any>;
export type ParticipantOptions = {
    /**
     * WebSocket constructor (default: the global one)
     */
    WebSocket?: any;
    /**
     * default: the global fetch
     */
    fetch?: (input: string, init?: any) => Promise<any>;
    /**
     * cookie jar (name -> value),
     * sent on page requests and updated from their Set-Cookie headers; share one
     * Map between participants to act as the same browser (general single links)
     */
    cookies?: Map<string, string> | Record<string, string>;
    /**
     * extra options for the batch channel
     */
    channel?: Partial<import("./cohort.js").ConnectOptions>;
    /**
     * jatos.httpTimeout for this participant
     */
    httpTimeout?: number;
    /**
     * jatos.httpRetry
     */
    httpRetry?: number;
    /**
     * jatos.httpRetryWait
     */
    httpRetryWait?: number;
};
/**
 * what the bot's "browser" shows now
 */
export type BotPage = {
    kind: "component" | "end" | "redirect" | "error";
    url?: string;
    /**
     * HTTP status of the last page request
     */
    status?: number;
    /**
     * error code of a refusal page
     */
    code?: string;
    /**
     * the component page's HTML
     */
    html?: string;
    /**
     * end page: the run's state
     */
    state?: string;
    /**
     * end page
     */
    successful?: boolean;
    /**
     * end page
     */
    confirmationCode?: string;
    /**
     * end page
     */
    message?: string;
};
