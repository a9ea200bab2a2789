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
export function httpError(code: string, message: string, status: number, body?: any): CommandError & {
    status: number;
    body: any;
};
/**
 * The error a refused answer stands for: the JSON `{code, message}` of the
 * API, the `Code: <code>…</code>` of a participant page, or the status.
 * @param {number} status
 * @param {any} body
 * @param {string} what
 */
export function errorFromAnswer(status: number, body: any, what: string): CommandError & {
    status: number;
    body: any;
};
/**
 * Sends a request, retrying network failures, timeouts and the statuses in
 * RETRY_STATUSES (`httpRetry` times, `httpRetryWait` ms apart, each attempt
 * limited to `httpTimeout` ms). Resolves with the answer of a 2xx; rejects
 * with a CommandError (`code`, `message`, `status`) otherwise.
 * @param {HttpRequest} request
 * @param {HttpSettings} settings
 * @returns {Promise<HttpResponse>}
 */
export function httpRequest(request: HttpRequest, settings: HttpSettings): Promise<HttpResponse>;
/** @returns {string} 12 random base-36 characters */
export function randomId(): string;
export type HttpSettings = {
    /**
     * ms before one attempt is given up (and retried)
     */
    httpTimeout: number;
    /**
     * how many times a failed attempt is retried
     */
    httpRetry: number;
    /**
     * ms between a failed attempt and the retry
     */
    httpRetryWait: number;
};
export type HttpRequest = {
    fetch: (input: string, init?: any) => Promise<any>;
    method: string;
    /**
     * absolute URL
     */
    url: string;
    /**
     * request body (sent as is: a string, Blob, ArrayBuffer, FormData)
     */
    body?: any;
    /**
     * default `application/json` when there is a body
     */
    contentType?: string;
    /**
     * sent as `X-Cohort-Command-Id` on every attempt
     */
    commandId?: string;
    headers?: Record<string, string>;
    /**
     * how to read the answer: `auto` (JSON when it says so, else
     * text) or `file` (JSON parsed, text as a string, anything else as a Blob)
     */
    as?: "auto" | "file";
};
export type HttpResponse = {
    status: number;
    /**
     * parsed JSON, or the text when the answer is not JSON
     */
    body: any;
    /**
     * the fetch `Headers`
     */
    headers: any;
};
import { CommandError } from './cohort.js';
