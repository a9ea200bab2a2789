// The classic-script build (dist/jatos.js): up to date, runs without a module
// system in a browser-like global, and works against a REAL gateway.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';

import { SKIP, WebSocket, freshBatch, gateway, session, waitFor, withTimeout } from '../testing/gateway.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const TIMEOUT = { timeout: 30000 };

/**
 * Runs dist/jatos.js as a classic script in a fresh global that has what a
 * browser page has (and a global WebSocket, as browsers do).
 */
function loadClassicBuild() {
  const code = readFileSync(join(root, 'dist', 'jatos.js'), 'utf8');
  const context = vm.createContext({
    console,
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    URL,
    TextDecoder,
    crypto: globalThis.crypto,
    WebSocket,
  });
  vm.runInContext(code, context, { filename: 'dist/jatos.js' });
  return context;
}

describe('dist/jatos.js (classic script)', () => {
  test('is up to date with src/', () => {
    const run = spawnSync(process.execPath, [join(root, 'build.mjs'), '--check'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr || run.stdout);
  });

  test('types/*.d.ts are up to date with the JSDoc in src/ (npm run types)', { timeout: 120000 }, () => {
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    assert.ok(existsSync(tsc), 'typescript is a devDependency: run `npm ci` in client_js');
    const out = mkdtempSync(join(tmpdir(), 'cohort-types-'));
    try {
      const run = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.types.json'), '--outDir', out], {
        encoding: 'utf8',
        cwd: root,
      });
      assert.equal(run.status, 0, run.stdout + run.stderr);
      const fresh = readdirSync(out).sort();
      const committed = readdirSync(join(root, 'types')).sort();
      assert.deepEqual(committed, fresh, 'the same files: run `npm run types` in client_js');
      for (const file of fresh) {
        assert.equal(
          readFileSync(join(root, 'types', file), 'utf8'),
          readFileSync(join(out, file), 'utf8'),
          `types/${file} is out of date: run \`npm run types\` in client_js`,
        );
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  test('defines the jatos and cohort globals without a module system', () => {
    const g = loadClassicBuild();
    assert.equal(typeof g.jatos, 'object');
    assert.equal(typeof g.jatos.connectBatch, 'function');
    for (const name of ['get', 'getAll', 'set', 'setAll', 'add', 'remove', 'replace', 'move', 'copy', 'test', 'clear', 'find', 'defined']) {
      assert.equal(typeof g.jatos.batchSession[name], 'function', name);
    }
    assert.equal(g.jatos.batchSessionVersioning, true);
    assert.equal(typeof g.jatos.onBatchSession, 'function');
    // Groups, results and the extensions are in the classic build too.
    for (const name of ['joinGroup', 'leaveGroup', 'reassignGroup', 'setGroupFixed', 'sendGroupMsg', 'sendGroupMsgTo', 'hasJoinedGroup',
      'isMaxActiveMemberReached', 'isMaxActiveMemberOpen', 'isGroupOpen', 'submitResultData', 'appendResultData',
      'uploadResultFile', 'downloadResultFile', 'log', 'onConnected', 'onDisconnected', 'isConnected', 'showOverlay']) {
      assert.equal(typeof g.jatos[name], 'function', name);
    }
    for (const name of ['update', 'increment', 'set', 'find']) assert.equal(typeof g.jatos.groupSession[name], 'function', name);
    assert.equal(typeof g.jatos.batchSession.update, 'function');
    assert.equal(typeof g.cohort.connect, 'function');
    assert.equal(typeof g.cohort.applyPatch, 'function');
    assert.deepEqual(g.cohort.applyPatch({}, [{ op: 'add', path: '/a', value: 1 }]), { a: 1 });
    // Module-private helpers stay private.
    assert.equal(g.randomPrefix, undefined);
    assert.equal(g.Emitter, undefined);
  });

  test('jatos.connectBatch and the batch session work against the gateway', { ...TIMEOUT, skip: SKIP }, async (t) => {
    const env = session(t);
    const { participants } = await freshBatch(2);
    const other = await env.jatos(participants[1], { gw: 1 });
    const g = loadClassicBuild();
    const jatos = g.jatos;
    const seen = [];
    jatos.onBatchSession((/** @type {string} */ path, /** @type {string} */ op) => seen.push(`${op} ${path}`));
    // As a page would: the ws_url handed out by the gateway, global WebSocket.
    await withTimeout(jatos.connectBatch({ url: participants[0].ws_url }), 8000, 'connectBatch');
    env.track(jatos.batchChannel);
    await jatos.batchSession.set('greeting', 'hello');
    assert.equal(jatos.batchSession.get('greeting'), 'hello');
    await waitFor(() => other.jatos.batchSession.get('greeting') === 'hello', 'the other client sees it');
    await other.channel.whenVersion(jatos.batchChannel.version);
    await other.jatos.batchSession.add('/list', [1]);
    await waitFor(() => jatos.batchSession.defined('/list'), 'this client sees the other write');
    assert.deepEqual(seen, ['add /greeting', 'add /list']);
    const failures = [];
    await assert.rejects(
      jatos.batchSession.remove('/nope', undefined, (/** @type {any} */ e) => failures.push(e.code)),
      (/** @type {any} */ e) => e.code === 'path_not_found',
    );
    assert.deepEqual(failures, ['path_not_found']);
  });
});

describe('the gateway serves the client', { skip: SKIP }, () => {
  /** @param {string} path */
  async function fetchText(path) {
    const res = await fetch(gateway(0) + path);
    return { status: res.status, type: res.headers.get('content-type') || '', text: await res.text() };
  }

  test('GET /client/esm/<module> serves the ES modules', TIMEOUT, async () => {
    for (const name of ['index.js', 'cohort.js', 'jatos.js', 'jsonpatch.js']) {
      const res = await fetchText(`/client/esm/${name}`);
      assert.equal(res.status, 200, name);
      assert.match(res.type, /javascript/, name);
      assert.equal(res.text, readFileSync(join(root, 'src', name), 'utf8'), name);
    }
  });

  test('GET /client/jatos.js is the classic-script build', TIMEOUT, async () => {
    const res = await fetchText('/client/jatos.js');
    assert.equal(res.status, 200);
    assert.match(res.type, /javascript/);
    const classic = res.text === readFileSync(join(root, 'dist', 'jatos.js'), 'utf8');
    const module = res.text === readFileSync(join(root, 'src', 'jatos.js'), 'utf8');
    assert.ok(classic, `served ${module ? 'src/jatos.js (the ES module)' : 'something else'}, not dist/jatos.js`);
  });
});
