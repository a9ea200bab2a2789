// @ts-check
/**
 * @cohort/client, Node entry: the same exports as index.js, but `connect`,
 * `jatos.connectBatch` and `connectParticipant` default to the `ws`
 * package's WebSocket (Node 20 has no global WebSocket).
 * @module node
 */

// @ts-ignore -- the ws package ships no type declarations (@types/ws is not a dependency)
import WebSocket from 'ws';
import { connectParticipant as connectParticipantWith } from './bot.js';
import { connect as connectWith } from './cohort.js';
import { createJatos as createJatosWith } from './jatos.js';

export * from './index.js';

/**
 * `connect` with `WebSocket` defaulting to the `ws` package.
 * @param {import('./cohort.js').ConnectOptions} options
 * @returns {import('./cohort.js').BatchChannel}
 */
export function connect(options) {
  return connectWith({ WebSocket, ...options });
}

/**
 * `createJatos` whose `connectBatch` defaults to the `ws` package.
 * @param {import('./cohort.js').BatchChannel|null} [channel]
 * @param {import('./jatos.js').CreateJatosOptions} [options]
 * @returns {import('./jatos.js').Jatos}
 */
export function createJatos(channel = null, options = {}) {
  const jatos = createJatosWith(channel, options);
  const connectBatch = jatos.connectBatch;
  jatos.connectBatch = (options) => connectBatch({ WebSocket, ...options });
  return jatos;
}

/**
 * `connectParticipant` (src/bot.js) with `WebSocket` defaulting to the `ws`
 * package: enters a study through a link (`<gateway>/go/<code>`) and returns
 * the jatos object of its first component page, loaded.
 * @param {string} linkUrl
 * @param {import('./bot.js').ParticipantOptions} [options]
 * @returns {Promise<any>}
 */
export function connectParticipant(linkUrl, options = {}) {
  return connectParticipantWith(linkUrl, { WebSocket, ...options });
}
