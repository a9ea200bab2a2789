/**
 * `connect` with `WebSocket` defaulting to the `ws` package.
 * @param {import('./cohort.js').ConnectOptions} options
 * @returns {import('./cohort.js').BatchChannel}
 */
export function connect(options: import("./cohort.js").ConnectOptions): import("./cohort.js").BatchChannel;
/**
 * `createJatos` whose `connectBatch` defaults to the `ws` package.
 * @param {import('./cohort.js').BatchChannel|null} [channel]
 * @param {import('./jatos.js').CreateJatosOptions} [options]
 * @returns {import('./jatos.js').Jatos}
 */
export function createJatos(channel?: import("./cohort.js").BatchChannel | null, options?: import("./jatos.js").CreateJatosOptions): import("./jatos.js").Jatos;
/**
 * `connectParticipant` (src/bot.js) with `WebSocket` defaulting to the `ws`
 * package: enters a study through a link (`<gateway>/go/<code>`) and returns
 * the jatos object of its first component page, loaded.
 * @param {string} linkUrl
 * @param {import('./bot.js').ParticipantOptions} [options]
 * @returns {Promise<any>}
 */
export function connectParticipant(linkUrl: string, options?: import("./bot.js").ParticipantOptions): Promise<any>;
export * from "./index.js";
