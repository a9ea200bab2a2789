// @ts-check
/**
 * @cohort/client, Node entry: the same exports as index.js, but `connect`
 * and `jatos.connectBatch` default to the `ws` package's WebSocket (Node 20
 * has no global WebSocket).
 * @module node
 */

// @ts-ignore -- the ws package ships no type declarations (@types/ws is not a dependency)
import WebSocket from 'ws';
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
 * @returns {import('./jatos.js').Jatos}
 */
export function createJatos(channel = null) {
  const jatos = createJatosWith(channel);
  const connectBatch = jatos.connectBatch;
  jatos.connectBatch = (options) => connectBatch({ WebSocket, ...options });
  return jatos;
}
