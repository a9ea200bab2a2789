// Support for the tests that run against a REAL gateway (no mocks).
//
// Environment:
//   COHORT_GATEWAY_URLS  comma-separated http base URLs (one or more gateways)
//   COHORT_ADMIN_TOKEN   the admin token of those gateways
//
// Kept outside test/ so that `node --test test/` does not run it as a test file.

import WebSocket from 'ws';

import { connect } from '../src/cohort.js';
import { createJatos } from '../src/jatos.js';

export { WebSocket };

/** @type {string[]} */
export const GATEWAYS = (process.env.COHORT_GATEWAY_URLS || '')
  .split(',')
  .map((s) => s.trim().replace(/\/+$/, ''))
  .filter(Boolean);
export const ADMIN_TOKEN = process.env.COHORT_ADMIN_TOKEN || '';

/** A skip reason for describe()/test() when no gateway is configured, else false. */
export const SKIP =
  GATEWAYS.length === 0 || !ADMIN_TOKEN ? 'COHORT_GATEWAY_URLS and COHORT_ADMIN_TOKEN are not set' : false;

/** @param {number} i @returns {string} the i-th gateway (wrapping around when there are fewer) */
export function gateway(i = 0) {
  return GATEWAYS[i % GATEWAYS.length];
}

/**
 * One admin API call.
 * @param {string} method
 * @param {string} path
 * @param {any} [body]
 * @param {number} [gw]
 */
export async function api(method, path, body, gw = 0) {
  const res = await fetch(gateway(gw) + path, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, body: json };
}

let batchCounter = 0;

/**
 * Creates a fresh batch; returns its id.
 * @param {string} [label]
 * @param {{max_active_members?: number, max_total_members?: number, form_by_arrival?: number, arrival_timeout_s?: number}} [groups]
 *   group limits (none by default)
 */
export async function createBatch(label = 'client_js test', groups = undefined) {
  batchCounter += 1;
  const id = `js-${Date.now().toString(36)}-${process.pid}-${batchCounter}`;
  const res = await api('POST', '/api/batches', groups ? { id, label, groups } : { id, label });
  if (res.status !== 201) throw new Error(`POST /api/batches: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body.id;
}

/**
 * Issues a participant token for a batch.
 * @param {string} batchId
 * @param {number} [gw]
 * @returns {Promise<{token: string, run_id: string, batch_id: string, ws_url: string}>}
 */
export async function addParticipant(batchId, gw = 0) {
  const res = await api('POST', `/api/batches/${encodeURIComponent(batchId)}/participants`, {}, gw);
  if (res.status !== 201) throw new Error(`POST participants: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/**
 * A promise that rejects after `ms`.
 * @template T
 * @param {Promise<T>} promise
 * @param {number} ms
 * @param {string} what
 * @returns {Promise<T>}
 */
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Polls until `predicate()` is truthy.
 * @param {() => any} predicate
 * @param {string} what
 * @param {number} [ms]
 */
export async function waitFor(predicate, what, ms = 8000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** @param {number} ms */
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Opens channels and closes every one of them at the end of a test.
 * Usage: `const env = session(t)` inside a test, then `await env.open(...)`.
 * @param {import('node:test').TestContext} t
 */
export function session(t) {
  /** @type {import('../src/cohort.js').BatchChannel[]} */
  const channels = [];
  t.after(() => {
    for (const channel of channels) channel.close();
  });
  return {
    /**
     * Opens a channel as `participant` on gateway `gw` and waits for its first state.
     * @param {{token: string, batch_id: string}} participant
     * @param {Partial<import('../src/cohort.js').ConnectOptions> & {gw?: number}} [options]
     */
    async open(participant, { gw = 0, ...options } = {}) {
      const channel = connect({
        url: gateway(gw),
        batch: participant.batch_id,
        token: participant.token,
        WebSocket,
        backoff: { base: 50, cap: 500 },
        ...options,
      });
      channels.push(channel);
      /** @type {any[]} every frame received, in order */
      const frames = [];
      channel.on('message', (/** @type {any} */ frame) => frames.push(frame));
      /** @type {any[]} every session event, in order */
      const sessions = [];
      channel.on('session', (/** @type {any} */ event) =>
        sessions.push({ ...event, data: structuredClone(event.data) }),
      );
      await withTimeout(channel.ready, 8000, `first state on ${gateway(gw)}`);
      return Object.assign(channel, { frames, sessions });
    },

    /**
     * Opens a channel and wraps it in the jatos.js-compatible API.
     * @param {{token: string, batch_id: string}} participant
     * @param {Partial<import('../src/cohort.js').ConnectOptions> & {gw?: number}} [options]
     */
    async jatos(participant, options = {}) {
      const channel = await this.open(participant, options);
      const jatos = createJatos(channel);
      return { jatos, channel };
    },

    /** @param {import('../src/cohort.js').BatchChannel} channel */
    track(channel) {
      channels.push(channel);
      return channel;
    },
  };
}

/**
 * A fresh batch with `n` participants (tokens issued on alternating gateways).
 * @param {number} n
 * @param {{groups?: any, parallel?: number}} [options] group limits of the batch;
 *   how many tokens to ask for at once (default 1)
 */
export async function freshBatch(n = 1, { groups, parallel = 1 } = {}) {
  const batchId = await createBatch('client_js test', groups);
  /** @type {any[]} */
  const participants = new Array(n);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      participants[i] = await addParticipant(batchId, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, parallel) }, worker));
  return { batchId, participants };
}
