// A small remote control for the machine's Chromium, for Python tests.
//
// Reads one JSON request per line on stdin: {"id", "op", ...args}; writes one JSON
// answer per line on stdout: {"id", "ok": true, "value"} or {"id", "ok": false,
// "error"}. Uses playwright-core with the Chromium at --executable (never downloads
// a browser). Page errors and console messages are kept and returned by "logs".
//
//   node driver.mjs --executable /usr/bin/chromium --user-data-dir DIR --downloads DIR
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

function arg(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at >= 0 ? process.argv[at + 1] : fallback;
}

const executablePath = arg('executable', '/usr/bin/chromium');
const userDataDir = arg('user-data-dir');
const downloadsPath = arg('downloads');
const timeout = Number(arg('timeout', '15000'));

const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath,
  headless: true,
  acceptDownloads: true,
  downloadsPath,
  viewport: { width: 1360, height: 900 },
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage',
  ],
});
context.setDefaultTimeout(timeout);
const logs = [];
const pages = new Map();
let nextPage = 1;

let dialogAnswer = null; // null: dismiss confirm()/alert() (playwright's default); true: accept

function watch(page) {
  page.on('dialog', (dialog) => {
    logs.push({ type: 'dialog', text: dialog.message() });
    (dialogAnswer ? dialog.accept() : dialog.dismiss()).catch(() => {});
  });
  page.on('pageerror', (err) => logs.push({ type: 'pageerror', text: String(err && err.stack || err) }));
  page.on('console', (msg) => logs.push({ type: msg.type(), text: msg.text() }));
  page.on('requestfailed', (req) => logs.push({ type: 'requestfailed', text: `${req.url()} ${req.failure()?.errorText}` }));
}

const first = context.pages()[0] || await context.newPage();
watch(first);
pages.set(0, first);

// A page function given as source text ("(arg) => ..."), called with one argument.
function pageFunction(source) {
  // eslint-disable-next-line no-new-func
  return new Function('arg', `return (${source})(arg);`);
}

function pageOf(req) {
  const page = pages.get(req.page ?? 0);
  if (!page) throw new Error(`no page ${req.page}`);
  return page;
}

const ops = {
  async newPage() {
    const page = await context.newPage();
    watch(page);
    const id = nextPage++;
    pages.set(id, page);
    return id;
  },
  async closePage(req) {
    await pageOf(req).close();
    pages.delete(req.page);
  },
  async grantClipboard(req) {
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: req.origin });
  },
  async acceptDialogs(req) {
    dialogAnswer = req.accept !== false;
  },
  async viewport(req) {
    await pageOf(req).setViewportSize({ width: req.width, height: req.height });
  },
  async goto(req) {
    const response = await pageOf(req).goto(req.url, { waitUntil: req.waitUntil || 'load' });
    return { status: response ? response.status() : 0, url: pageOf(req).url() };
  },
  async url(req) {
    return pageOf(req).url();
  },
  async click(req) {
    await pageOf(req).locator(req.selector).first().click();
  },
  async clickAndWaitForNavigation(req) {
    const page = pageOf(req);
    await Promise.all([page.waitForNavigation(), page.locator(req.selector).first().click()]);
    return page.url();
  },
  async fill(req) {
    await pageOf(req).locator(req.selector).first().fill(req.value);
  },
  async type(req) {
    await pageOf(req).locator(req.selector).first().pressSequentially(req.value);
  },
  async press(req) {
    await pageOf(req).locator(req.selector).first().press(req.key);
  },
  async select(req) {
    await pageOf(req).locator(req.selector).first().selectOption(req.value);
  },
  async check(req) {
    await pageOf(req).locator(req.selector).first().setChecked(req.checked !== false, { force: !!req.force });
  },
  async waitFor(req) {
    await pageOf(req).locator(req.selector).first().waitFor({ state: req.state || 'visible', timeout: req.timeout });
  },
  async waitText(req) {
    // Until the element's text contains req.text.
    await pageOf(req).waitForFunction(
      ([selector, text]) => [...document.querySelectorAll(selector)].some(
        (n) => (['INPUT', 'TEXTAREA', 'SELECT'].includes(n.tagName) ? n.value : n.textContent).includes(text)),
      [req.selector, req.text], { timeout: req.timeout });
  },
  async waitFunction(req) {
    const handle = await pageOf(req).waitForFunction(pageFunction(req.expression), req.arg ?? null, { timeout: req.timeout, polling: 100 });
    return handle.jsonValue();
  },
  async text(req) {
    return pageOf(req).locator(req.selector).first().innerText();
  },
  async texts(req) {
    return pageOf(req).locator(req.selector).allInnerTexts();
  },
  async value(req) {
    return pageOf(req).locator(req.selector).first().inputValue();
  },
  async count(req) {
    return pageOf(req).locator(req.selector).count();
  },
  async visible(req) {
    return pageOf(req).locator(req.selector).first().isVisible();
  },
  async eval(req) {
    return pageOf(req).evaluate(pageFunction(req.expression), req.arg ?? null);
  },
  async screenshot(req) {
    await pageOf(req).screenshot({ path: req.path, fullPage: req.fullPage !== false });
    return req.path;
  },
  async download(req) {
    const page = pageOf(req);
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator(req.selector).first().click()]);
    const path = `${downloadsPath}/${download.suggestedFilename()}`;
    await download.saveAs(path);
    return { path, filename: download.suggestedFilename(), url: download.url() };
  },
  async cookies(req) {
    return context.cookies(req.urls);
  },
  async logs() {
    return logs.splice(0);
  },
  async close() {
    await context.close();
    return null;
  },
};

const input = createInterface({ input: process.stdin });
for await (const line of input) {
  if (!line.trim()) continue;
  let req;
  try {
    req = JSON.parse(line);
  } catch (err) {
    process.stdout.write(`${JSON.stringify({ id: null, ok: false, error: `bad request: ${err.message}` })}\n`);
    continue;
  }
  const op = ops[req.op];
  let answer;
  try {
    if (!op) throw new Error(`unknown op ${req.op}`);
    const value = await op(req);
    answer = { id: req.id, ok: true, value: value ?? null };
  } catch (err) {
    answer = { id: req.id, ok: false, error: String(err && err.message || err) };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
  if (req.op === 'close') break;
}
await context.close().catch(() => {});
process.exit(0);
