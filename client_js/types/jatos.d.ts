/**
 * @typedef {import('./cohort.js').BatchChannel} BatchChannel
 * @typedef {import('./cohort.js').ConnectOptions} ConnectOptions
 * @typedef {import('./cohort.js').SessionEvent} SessionEvent
 * @typedef {import('./jsonpatch.js').Operation} Operation
 * @typedef {(result?: any) => void} SuccessCallback
 * @typedef {(error: CommandError) => void} FailCallback
 */
/**
 * @typedef {import('./session-api.js').SessionApi} SessionApi
 * @typedef {SessionApi} BatchSessionApi
 */
/**
 * @typedef {(...args: any[]) => any} Callback
 */
/**
 * The jatos object: the jatos.js API (JATOS 3.x) and Cohort's additions
 * (marked "(Cohort)"). README.md lists every function with its status.
 * @typedef {Object} Jatos
 * @property {string} version
 * @property {SessionApi} batchSession
 * @property {boolean} batchSessionVersioning send versioned patches (default true, as in JATOS)
 * @property {boolean} batchSessionPipelining (Cohort) several versioned writes in flight (default false)
 * @property {(callback: (path: string, op: string) => void) => void} onBatchSession
 * @property {(callback: (error: any) => void) => void} onError
 * @property {(channel: BatchChannel|null) => void} attachBatchChannel (Cohort)
 * @property {(options: ConnectOptions) => Promise<Jatos>} connectBatch (Cohort)
 * @property {BatchChannel|null} batchChannel (Cohort) the live channel under everything
 * @property {(callback: () => void) => void} onConnected
 * @property {(callback: () => void) => void} onDisconnected
 * @property {(callback: (change: {state: string, previous: string}) => void) => void} onConnectionChange (Cohort)
 * @property {() => boolean} isConnected
 *
 * @property {SessionApi} groupSession
 * @property {boolean} groupSessionVersioning
 * @property {boolean} groupSessionPipelining (Cohort)
 * @property {(callbacks?: import('./groups.js').GroupCallbacks) => Promise<import('./groups.js').GroupInfo>} joinGroup
 * @property {(onSuccess?: Callback, onError?: Callback) => Promise<any>} leaveGroup
 * @property {(onSuccess?: Callback, onFail?: Callback) => Promise<import('./groups.js').GroupInfo>} reassignGroup
 * @property {(onSuccess?: Callback, onFail?: Callback) => Promise<any>} setGroupFixed
 * @property {(msg: any) => Promise<any>} sendGroupMsg
 * @property {(recipient: string, msg: any) => Promise<any>} sendGroupMsgTo
 * @property {() => boolean} hasJoinedGroup
 * @property {() => boolean} hasOpenGroupChannel
 * @property {() => boolean} isMaxActiveMemberReached
 * @property {() => boolean} isMaxActiveMemberOpen
 * @property {() => boolean} isGroupOpen
 * @property {() => string|null} getGroupState
 * @property {() => boolean} isGroupFixed
 * @property {() => boolean} isWaitingForGroup (Cohort)
 * @property {string|null} groupMemberId
 * @property {string|null} groupResultId
 * @property {string[]} groupMembers
 * @property {string[]} groupChannels
 * @property {string|null} groupState
 *
 * @property {string|null} studyResultId
 * @property {string|null} workerId
 * @property {string|null} batchId
 * @property {string|null} studyId
 * @property {number|null} studyVersion (Cohort)
 * @property {string|null} componentId
 * @property {number|null} componentPos
 * @property {string|null} componentResultId
 * @property {any} studyJsonInput
 * @property {any} studyInput
 * @property {any} componentJsonInput
 * @property {any} componentInput
 * @property {any} batchJsonInput
 * @property {any} batchInput
 * @property {Record<string, any>} studyProperties
 * @property {Record<string, any>} componentProperties
 * @property {Record<string, any>} batchProperties
 * @property {any[]} componentList
 * @property {number|null} studyLength
 * @property {any} studySessionData
 * @property {Record<string, string>} urlQueryParameters
 * @property {Record<string, any>} sessionConfig (Cohort) oTree's session config
 * @property {string|null} runKey (Cohort)
 * @property {boolean} loaded (Cohort)
 * @property {string|null} [confirmationCode] (Cohort) after the end
 * @property {number} httpTimeout
 * @property {number} httpRetry
 * @property {number} httpRetryWait
 * @property {(callback: Callback) => void} onLoad
 * @property {(callback: Callback) => void} onload
 * @property {(url: string) => Promise<Jatos>} loadPage (Cohort)
 * @property {(data: any, onSuccess?: Callback, onFail?: Callback) => Promise<any>} setStudySessionData
 * @property {(id: string|number, resultData?: any, message?: any, onError?: Callback) => Promise<void>} startComponent
 * @property {(pos: number, resultData?: any, message?: any, onError?: Callback) => Promise<void>} startComponentByPos
 * @property {(title: string, resultData?: any, message?: any, onError?: Callback) => Promise<void>} startComponentByTitle
 * @property {(resultData?: any, message?: any, onError?: Callback) => Promise<any>} startNextComponent
 * @property {(resultData?: any, message?: any, onError?: Callback) => Promise<void>} startLastComponent
 * @property {(...args: any[]) => Promise<any>} endStudy
 * @property {(...args: any[]) => Promise<any>} endStudyAjax
 * @property {(...args: any[]) => Promise<any>} endStudyWithoutRedirect
 * @property {(url: string, ...args: any[]) => Promise<any>} endStudyAndRedirect
 * @property {(message?: string, showEndPage?: boolean) => Promise<any>} abortStudy
 * @property {(message?: string, onSuccess?: Callback, onError?: Callback) => Promise<any>} abortStudyAjax
 * @property {(message?: string, onSuccess?: Callback, onError?: Callback) => Promise<any>} abortStudyWithoutRedirect
 * @property {(url: string, message?: string, onSuccess?: Callback, onError?: Callback) => Promise<any>} abortStudyAndRedirect
 * @property {(period: number) => void} setHeartbeatPeriod
 * @property {(config?: Record<string, any>) => any} addAbortButton
 * @property {(show: boolean) => void} showBeforeUnloadWarning
 * @property {(obj?: any) => any} addJatosIds
 *
 * @property {(resultData: any, onSuccess?: Callback, onError?: Callback) => Promise<any>} submitResultData
 * @property {(resultData: any, onSuccess?: Callback, onError?: Callback) => Promise<any>} appendResultData
 * @property {(obj: any, filename: string, onSuccess?: Callback, onError?: Callback) => Promise<any>} uploadResultFile
 * @property {(...args: any[]) => Promise<any>} downloadResultFile `([componentPos], filename, [onSuccess], [onError])`
 * @property {(logMsg: any) => Promise<any>} log
 * @property {() => void} catchAndLogErrors
 * @property {(points: number|null, onSuccess?: Callback, onError?: Callback) => Promise<any>} setBonus (Cohort)
 * @property {(onSuccess?: Callback, onError?: Callback) => Promise<any>} getPayoff (Cohort)
 * @property {(config?: import('./results.js').OverlayConfig) => any} showOverlay
 * @property {() => void} removeOverlay
 * @property {() => void} removeOverlays
 * @property {Record<string, any>} waitSendDataOverlayConfig
 */
/**
 * @typedef {Object} CreateJatosOptions
 * @property {import('./run.js').RunHost} [host] how the study run navigates
 *   (default: the browser's `location`; the Node bot passes its own)
 */
/**
 * Creates a jatos.js-compatible object. `channel` may be null and attached
 * later (`jatos.attachBatchChannel(ch)` or `jatos.connectBatch(options)`); on
 * a component page `jatos.loadPage(url)` (or `startPage(jatos)` from run.js)
 * loads the run and opens the channel itself.
 * @param {BatchChannel|null} [channel]
 * @param {CreateJatosOptions} [options]
 * @returns {Jatos}
 */
export function createJatos(channel?: BatchChannel | null, options?: CreateJatosOptions): Jatos;
/**
 * `jatos.onError(callback)`: the deprecated catch-all JATOS calls when a
 * failing function was given no onFail callback. Installed first; other parts
 * report through `jatos._reportError`.
 * @param {any} jatos
 */
export function installErrorHandling(jatos: any): void;
/**
 * Installs `jatos.batchSession`, `jatos.onBatchSession`,
 * `jatos.batchSessionVersioning`, `jatos.batchSessionPipelining` (Cohort),
 * `jatos.attachBatchChannel`, `jatos.connectBatch` and the
 * `jatos.batchChannel` getter. Other parts follow the channel with
 * `jatos._onChannel(fn)`: `fn(channel)` is called for the current channel and
 * every one attached later (null when detached).
 * @param {any} jatos
 * @param {BatchChannel|null} initialChannel
 */
export function installBatchSession(jatos: any, initialChannel: BatchChannel | null): void;
/**
 * `jatos.onConnected(callback)`, `jatos.onDisconnected(callback)`,
 * `jatos.isConnected()` (jatos.js 3.8+): whether the channel to the server is
 * open now, and callbacks for when that changes (several callbacks may be
 * added, as jatos.js's event listeners; each call adds one). Cohort also
 * offers `jatos.onConnectionChange(callback)`: `callback({state, previous})`
 * with the states `connecting`, `open`, `reconnecting`, `closed`.
 * @param {any} jatos
 */
export function installConnectionEvents(jatos: any): void;
/** Version of this jatos.js-compatible layer. */
export const JATOS_COMPAT_VERSION: "3.9-cohort.2";
export type BatchChannel = import("./cohort.js").BatchChannel;
export type ConnectOptions = import("./cohort.js").ConnectOptions;
export type SessionEvent = import("./cohort.js").SessionEvent;
export type Operation = import("./jsonpatch.js").Operation;
export type SuccessCallback = (result?: any) => void;
export type FailCallback = (error: CommandError) => void;
export type SessionApi = import("./session-api.js").SessionApi;
export type BatchSessionApi = SessionApi;
export type Callback = (...args: any[]) => any;
/**
 * The jatos object: the jatos.js API (JATOS 3.x) and Cohort's additions
 * (marked "(Cohort)"). README.md lists every function with its status.
 */
export type Jatos = {
    version: string;
    batchSession: SessionApi;
    /**
     * send versioned patches (default true, as in JATOS)
     */
    batchSessionVersioning: boolean;
    /**
     * (Cohort) several versioned writes in flight (default false)
     */
    batchSessionPipelining: boolean;
    onBatchSession: (callback: (path: string, op: string) => void) => void;
    onError: (callback: (error: any) => void) => void;
    /**
     * (Cohort)
     */
    attachBatchChannel: (channel: BatchChannel | null) => void;
    /**
     * (Cohort)
     */
    connectBatch: (options: ConnectOptions) => Promise<Jatos>;
    /**
     * (Cohort) the live channel under everything
     */
    batchChannel: BatchChannel | null;
    onConnected: (callback: () => void) => void;
    onDisconnected: (callback: () => void) => void;
    /**
     * (Cohort)
     */
    onConnectionChange: (callback: (change: {
        state: string;
        previous: string;
    }) => void) => void;
    isConnected: () => boolean;
    groupSession: SessionApi;
    groupSessionVersioning: boolean;
    /**
     * (Cohort)
     */
    groupSessionPipelining: boolean;
    joinGroup: (callbacks?: import("./groups.js").GroupCallbacks) => Promise<import("./groups.js").GroupInfo>;
    leaveGroup: (onSuccess?: Callback, onError?: Callback) => Promise<any>;
    reassignGroup: (onSuccess?: Callback, onFail?: Callback) => Promise<import("./groups.js").GroupInfo>;
    setGroupFixed: (onSuccess?: Callback, onFail?: Callback) => Promise<any>;
    sendGroupMsg: (msg: any) => Promise<any>;
    sendGroupMsgTo: (recipient: string, msg: any) => Promise<any>;
    hasJoinedGroup: () => boolean;
    hasOpenGroupChannel: () => boolean;
    isMaxActiveMemberReached: () => boolean;
    isMaxActiveMemberOpen: () => boolean;
    isGroupOpen: () => boolean;
    getGroupState: () => string | null;
    isGroupFixed: () => boolean;
    /**
     * (Cohort)
     */
    isWaitingForGroup: () => boolean;
    groupMemberId: string | null;
    groupResultId: string | null;
    groupMembers: string[];
    groupChannels: string[];
    groupState: string | null;
    studyResultId: string | null;
    workerId: string | null;
    batchId: string | null;
    studyId: string | null;
    /**
     * (Cohort)
     */
    studyVersion: number | null;
    componentId: string | null;
    componentPos: number | null;
    componentResultId: string | null;
    studyJsonInput: any;
    studyInput: any;
    componentJsonInput: any;
    componentInput: any;
    batchJsonInput: any;
    batchInput: any;
    studyProperties: Record<string, any>;
    componentProperties: Record<string, any>;
    batchProperties: Record<string, any>;
    componentList: any[];
    studyLength: number | null;
    studySessionData: any;
    urlQueryParameters: Record<string, string>;
    /**
     * (Cohort) oTree's session config
     */
    sessionConfig: Record<string, any>;
    /**
     * (Cohort)
     */
    runKey: string | null;
    /**
     * (Cohort)
     */
    loaded: boolean;
    /**
     * (Cohort) after the end
     */
    confirmationCode?: string | null;
    httpTimeout: number;
    httpRetry: number;
    httpRetryWait: number;
    onLoad: (callback: Callback) => void;
    onload: (callback: Callback) => void;
    /**
     * (Cohort)
     */
    loadPage: (url: string) => Promise<Jatos>;
    setStudySessionData: (data: any, onSuccess?: Callback, onFail?: Callback) => Promise<any>;
    startComponent: (id: string | number, resultData?: any, message?: any, onError?: Callback) => Promise<void>;
    startComponentByPos: (pos: number, resultData?: any, message?: any, onError?: Callback) => Promise<void>;
    startComponentByTitle: (title: string, resultData?: any, message?: any, onError?: Callback) => Promise<void>;
    startNextComponent: (resultData?: any, message?: any, onError?: Callback) => Promise<any>;
    startLastComponent: (resultData?: any, message?: any, onError?: Callback) => Promise<void>;
    endStudy: (...args: any[]) => Promise<any>;
    endStudyAjax: (...args: any[]) => Promise<any>;
    endStudyWithoutRedirect: (...args: any[]) => Promise<any>;
    endStudyAndRedirect: (url: string, ...args: any[]) => Promise<any>;
    abortStudy: (message?: string, showEndPage?: boolean) => Promise<any>;
    abortStudyAjax: (message?: string, onSuccess?: Callback, onError?: Callback) => Promise<any>;
    abortStudyWithoutRedirect: (message?: string, onSuccess?: Callback, onError?: Callback) => Promise<any>;
    abortStudyAndRedirect: (url: string, message?: string, onSuccess?: Callback, onError?: Callback) => Promise<any>;
    setHeartbeatPeriod: (period: number) => void;
    addAbortButton: (config?: Record<string, any>) => any;
    showBeforeUnloadWarning: (show: boolean) => void;
    addJatosIds: (obj?: any) => any;
    submitResultData: (resultData: any, onSuccess?: Callback, onError?: Callback) => Promise<any>;
    appendResultData: (resultData: any, onSuccess?: Callback, onError?: Callback) => Promise<any>;
    uploadResultFile: (obj: any, filename: string, onSuccess?: Callback, onError?: Callback) => Promise<any>;
    /**
     * `([componentPos], filename, [onSuccess], [onError])`
     */
    downloadResultFile: (...args: any[]) => Promise<any>;
    log: (logMsg: any) => Promise<any>;
    catchAndLogErrors: () => void;
    /**
     * (Cohort)
     */
    setBonus: (points: number | null, onSuccess?: Callback, onError?: Callback) => Promise<any>;
    /**
     * (Cohort)
     */
    getPayoff: (onSuccess?: Callback, onError?: Callback) => Promise<any>;
    showOverlay: (config?: import("./results.js").OverlayConfig) => any;
    removeOverlay: () => void;
    removeOverlays: () => void;
    waitSendDataOverlayConfig: Record<string, any>;
};
export type CreateJatosOptions = {
    /**
     * how the study run navigates
     * (default: the browser's `location`; the Node bot passes its own)
     */
    host?: import("./run.js").RunHost;
};
import { CommandError } from './cohort.js';
