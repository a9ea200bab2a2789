// Unit tests of the in-place JSON Patch (no gateway needed).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { PatchError, applyPatch, deepEqual, getPointer, hasPointer, parsePointer } from '../src/jsonpatch.js';

/**
 * @param {any} doc
 * @param {any[]} ops
 */
function failure(doc, ops) {
  try {
    applyPatch(doc, ops);
  } catch (err) {
    assert.ok(err instanceof PatchError, `expected a PatchError, got ${err}`);
    return err;
  }
  assert.fail('the patch applied');
}

describe('JSON Pointer', () => {
  test('parses and unescapes', () => {
    assert.deepEqual(parsePointer(''), []);
    assert.deepEqual(parsePointer('/'), ['']);
    assert.deepEqual(parsePointer('/a~1b/c~0d/~01'), ['a/b', 'c~d', '~1']);
    assert.throws(() => parsePointer('a'), { code: 'bad_patch' });
    assert.throws(() => parsePointer('/a~2'), { code: 'bad_patch' });
  });

  test('reads values, undefined for what is missing', () => {
    const doc = { a: { b: [1, { c: null }] }, '': 5 };
    assert.equal(getPointer(doc, ''), doc);
    assert.equal(getPointer(doc, '/'), 5);
    assert.equal(getPointer(doc, '/a/b/0'), 1);
    assert.equal(getPointer(doc, '/a/b/1/c'), null);
    assert.equal(getPointer(doc, '/a/b/2'), undefined);
    // As jsonpointer.js: "-" and malformed indexes on an array are errors.
    assert.throws(() => getPointer(doc, '/a/b/-'), { code: 'bad_patch' });
    assert.throws(() => getPointer(doc, '/a/b/01'), { code: 'bad_patch' });
    assert.throws(() => getPointer(doc, '/a/b/x'), { code: 'bad_patch' });
    assert.equal(getPointer(doc, '/x/y'), undefined);
    assert.equal(getPointer(doc, '/a/b/0/z'), undefined);
    assert.equal(hasPointer(doc, '/a/b/1/c'), true);
    assert.equal(hasPointer(doc, '/a/b/1/d'), false);
    assert.equal(getPointer(doc, '/toString'), undefined, 'no prototype members');
  });
});

describe('applyPatch', () => {
  test('add, remove, replace, move, copy, test in place', () => {
    const doc = { list: [1, 2], obj: { x: 1 } };
    const same = applyPatch(doc, [
      { op: 'add', path: '/list/1', value: 'mid' },
      { op: 'add', path: '/list/-', value: 'end' },
      { op: 'add', path: '/obj/y', value: { deep: [true] } },
      { op: 'replace', path: '/obj/x', value: 2 },
      { op: 'remove', path: '/list/0' },
      { op: 'copy', from: '/obj/y', path: '/copied' },
      { op: 'move', from: '/obj/x', path: '/moved' },
      { op: 'test', path: '/copied', value: { deep: [true] } },
    ]);
    assert.equal(same, doc, 'the same object, changed in place');
    assert.deepEqual(doc, {
      list: ['mid', 2, 'end'],
      obj: { y: { deep: [true] } },
      copied: { deep: [true] },
      moved: 2,
    });
    assert.notEqual(doc.copied, doc.obj.y, 'copy does not alias');
  });

  test('values are copied in: the document never shares objects with the ops', () => {
    const value = { n: 1 };
    const doc = applyPatch({}, [{ op: 'add', path: '/v', value }]);
    value.n = 2;
    assert.equal(doc.v.n, 1);
  });

  test('the root: replace and add return the new document', () => {
    const doc = { a: 1 };
    assert.deepEqual(applyPatch(doc, [{ op: 'replace', path: '', value: { b: 2 } }]), { b: 2 });
    assert.deepEqual(applyPatch(doc, [{ op: 'add', path: '', value: [] }]), []);
    assert.equal(failure(doc, [{ op: 'remove', path: '' }]).code, 'bad_patch');
  });

  test('failures carry the server codes and the op index', () => {
    const doc = { a: { b: 1 }, l: [0] };
    let err = failure(doc, [{ op: 'test', path: '/a/b', value: 1 }, { op: 'remove', path: '/nope' }]);
    assert.equal(err.code, 'path_not_found');
    assert.equal(err.index, 1);
    assert.equal(failure(doc, [{ op: 'add', path: '/x/y', value: 1 }]).code, 'path_not_found');
    assert.equal(failure(doc, [{ op: 'replace', path: '/zz', value: 1 }]).code, 'path_not_found');
    assert.equal(failure(doc, [{ op: 'add', path: '/l/5', value: 1 }]).code, 'path_not_found');
    assert.equal(failure(doc, [{ op: 'add', path: '/l/01', value: 1 }]).code, 'bad_patch');
    assert.equal(failure(doc, [{ op: 'remove', path: '/l/-' }]).code, 'bad_patch');
    assert.equal(failure(doc, [{ op: 'test', path: '/a/b', value: 2 }]).code, 'test_failed');
    assert.equal(failure(doc, [{ op: 'test', path: '/missing', value: 2 }]).code, 'path_not_found');
    assert.equal(failure(doc, [{ op: 'move', from: '/a', path: '/a/c' }]).code, 'bad_patch');
    assert.equal(failure(doc, [{ op: 'frobnicate', path: '/a' }]).code, 'bad_patch');
    assert.equal(failure(doc, [{ op: 'add', path: '/a' }]).code, 'bad_patch');
    assert.equal(failure(doc, [{ op: 'copy', from: '/nope', path: '/c' }]).code, 'path_not_found');
  });

  test('move onto itself is a no-op that still needs "from"', () => {
    const doc = { a: 1 };
    applyPatch(doc, [{ op: 'move', from: '/a', path: '/a' }]);
    assert.deepEqual(doc, { a: 1 });
    assert.equal(failure(doc, [{ op: 'move', from: '/b', path: '/b' }]).code, 'path_not_found');
  });

  test('deepEqual is JSON equality', () => {
    assert.ok(deepEqual({ a: [1, { b: null }] }, { a: [1, { b: null }] }));
    assert.ok(deepEqual({ a: 1, b: 2 }, { b: 2, a: 1 }));
    assert.ok(!deepEqual({ a: 1 }, { a: 1, b: undefined }));
    assert.ok(!deepEqual([1], { 0: 1 }));
    assert.ok(!deepEqual(1, true));
    assert.ok(deepEqual(undefined, undefined));
  });
});
