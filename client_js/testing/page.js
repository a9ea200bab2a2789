// Test support: runs the classic build (dist/jatos.js, as served by the
// gateway) in a fresh global that has what a browser page has: `location`,
// `fetch`, `WebSocket`, and a very small `document` / `window` (just what
// jatos.js touches: elements, text, style, click listeners, beforeunload).
//
// Kept outside test/ so that `node --test test/` does not run it as a test file.

import vm from 'node:vm';

import { WebSocket } from './gateway.js';

/** A minimal DOM element: enough for the abort button and the end page. */
export class FakeElement {
  /** @param {string} tagName */
  constructor(tagName) {
    this.tagName = tagName.toUpperCase();
    /** @type {(FakeElement|string)[]} */
    this.childNodes = [];
    this.style = { cssText: '' };
    this.className = '';
    this.title = '';
    this.type = '';
    /** @type {Record<string, Function[]>} */
    this.listeners = {};
  }

  get firstChild() {
    return this.childNodes[0] || null;
  }

  /** @param {FakeElement|string} child */
  appendChild(child) {
    this.childNodes.push(child);
    return child;
  }

  /** @param {...(FakeElement|string)} children */
  append(...children) {
    for (const child of children) this.appendChild(child);
  }

  /** @param {FakeElement|string} child */
  removeChild(child) {
    this.childNodes = this.childNodes.filter((c) => c !== child);
    return child;
  }

  get textContent() {
    return this.childNodes.map((c) => (typeof c === 'string' ? c : c.textContent)).join('');
  }

  set textContent(text) {
    this.childNodes = [String(text)];
  }

  /** @param {string} type @param {Function} fn */
  addEventListener(type, fn) {
    (this.listeners[type] ||= []).push(fn);
  }

  click() {
    for (const fn of this.listeners.click || []) fn({ type: 'click' });
  }

  /**
   * Depth-first search by class name.
   * @param {string} name
   * @returns {FakeElement[]}
   */
  byClass(name) {
    /** @type {FakeElement[]} */
    const found = [];
    for (const child of this.childNodes) {
      if (typeof child === 'string') continue;
      if (child.className.split(/\s+/).includes(name)) found.push(child);
      found.push(...child.byClass(name));
    }
    return found;
  }
}

/**
 * Loads `code` (dist/jatos.js) as a classic script on the page at `pageUrl`.
 * Returns the page's global and what happened to it.
 * @param {string} code
 * @param {string} pageUrl
 * @param {{confirm?: boolean}} [options] what window.confirm answers
 */
export function loadPage(code, pageUrl, { confirm = true } = {}) {
  /** @type {string[]} */
  const assigned = [];
  /** @type {string[]} */
  const unloadEvents = [];
  /** @type {Set<Function>} */
  const beforeUnload = new Set();
  const document = {
    readyState: 'complete',
    title: '',
    body: new FakeElement('body'),
    documentElement: new FakeElement('html'),
    /** @param {string} tag */
    createElement: (tag) => new FakeElement(tag),
    addEventListener() {},
  };
  const window = {
    /** @type {string[]} */
    confirmed: [],
    /** @param {string} text */
    confirm(text) {
      window.confirmed.push(text);
      return confirm;
    },
    /** @param {string} type @param {Function} fn */
    addEventListener(type, fn) {
      if (type === 'beforeunload') {
        beforeUnload.add(fn);
        unloadEvents.push('add');
      }
    },
    /** @param {string} type @param {Function} fn */
    removeEventListener(type, fn) {
      if (type === 'beforeunload' && beforeUnload.delete(fn)) unloadEvents.push('remove');
    },
  };
  const context = vm.createContext({
    console,
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    URL,
    TextDecoder,
    TextEncoder,
    AbortController,
    crypto: globalThis.crypto,
    fetch,
    WebSocket,
    document,
    window,
    location: {
      href: pageUrl,
      pathname: new URL(pageUrl).pathname,
      assign: (/** @type {string} */ url) => assigned.push(url),
    },
  });
  vm.runInContext(code, context, { filename: 'jatos.js' });
  return { global: context, jatos: context.jatos, document, window, assigned, beforeUnload, unloadEvents };
}
