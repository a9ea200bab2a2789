// Test support for study runs against a REAL gateway: builds a study archive
// (a .zip with study.json) in memory, imports it through the experimenter API
// (admin token), creates a batch and links.
//
// Kept outside test/ so that `node --test test/` does not run it as a test file.

import { ADMIN_TOKEN, api, gateway } from './gateway.js';

const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** @param {Uint8Array} bytes */
function crc32(bytes) {
  let crc = 0xffffffff;
  for (const b of bytes) crc = CRC_TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/**
 * A .zip (no compression) of `files` (path -> string or bytes).
 * @param {Record<string, string|Uint8Array>} files
 * @returns {Uint8Array}
 */
export function zip(files) {
  const encoder = new TextEncoder();
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const [path, content] of Object.entries(files)) {
    const name = encoder.encode(path);
    const data = typeof content === 'string' ? encoder.encode(content) : content;
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt16LE(0x0800, 6); // flags: UTF-8 names
    local.writeUInt16LE(0, 8); // method: store
    local.writeUInt32LE(0, 10); // time, date
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    locals.push(local, name, data);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4); // made by
    central.writeUInt16LE(20, 6); // needed
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(0, 10);
    central.writeUInt32LE(0, 12);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    centrals.push(central, name);
    offset += local.length + name.length + data.length;
  }
  const centralSize = centrals.reduce((n, b) => n + b.length, 0);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(Object.keys(files).length, 8);
  end.writeUInt16LE(Object.keys(files).length, 10);
  end.writeUInt32LE(centralSize, 12);
  end.writeUInt32LE(offset, 16);
  return new Uint8Array(Buffer.concat([...locals, ...centrals, end]));
}

/** A minimal component page that loads jatos.js as JATOS studies do (relative URL). */
export function componentPage(title) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>${title}</title>
<script src="jatos.js"></script></head>
<body><h1 id="title">${title}</h1>
<script>jatos.onLoad(function () { document.getElementById('title').dataset.loaded = '1'; });</script>
</body></html>`;
}

/**
 * Imports a study from a study.json definition and its files; returns the
 * gateway's StoredStudy (`study_id`, `version`, ...).
 * @param {any} definition study.json content
 * @param {Record<string, string|Uint8Array>} files assets
 */
export async function importStudy(definition, files) {
  const archive = zip({ 'study.json': JSON.stringify(definition, null, 2), ...files });
  const form = new FormData();
  form.append('file', new Blob([archive], { type: 'application/zip' }), 'study.zip');
  const res = await fetch(gateway(0) + '/api/studies', {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    body: form,
  });
  const body = await res.json().catch(() => null);
  if (res.status !== 201) throw new Error(`POST /api/studies: ${res.status} ${JSON.stringify(body)}`);
  return body;
}

/**
 * @param {string} studyId
 * @param {any} [settings] label, json_input, allowed_link_types, ...
 */
export async function createStudyBatch(studyId, settings = {}) {
  const res = await api('POST', `/api/studies/${encodeURIComponent(studyId)}/batches`, { label: 'client_js run test', ...settings });
  if (res.status !== 201) throw new Error(`POST batches: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/**
 * Creates `count` links of `type`; returns them (each with its `url`, made
 * from the gateway the request went to unless COHORT_PUBLIC_URL is set).
 * @param {string} studyId
 * @param {string} batchId
 * @param {string} type
 * @param {number} count
 * @param {number} [gw] gateway to ask
 */
export async function createLinks(studyId, batchId, type, count, gw = 0) {
  const res = await api(
    'POST',
    `/api/studies/${encodeURIComponent(studyId)}/batches/${encodeURIComponent(batchId)}/links`,
    { type, count },
    gw,
  );
  if (res.status !== 201) throw new Error(`POST links: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

/**
 * The URL of a link on gateway `gw` (the path of the link's url on another base).
 * @param {{code: string}} link
 * @param {number} [gw]
 */
export function linkOn(link, gw = 0) {
  return `${gateway(gw)}/go/${link.code}`;
}
