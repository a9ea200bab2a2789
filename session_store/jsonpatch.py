"""RFC 6902 JSON Patch, applied in place with an undo log.

Patches are on the hot path (every session-data update), so the document is never
copied as a whole. Each change records how to revert itself; when an op fails, the
log is replayed backwards and the caller's document is left exactly as it was:
same values, list order, member order and even the same container objects.
See docs/jsonpatch.md for the decision record and the benchmark.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

__all__ = ["PatchError", "apply_patch"]


class PatchError(Exception):
    """A rejected patch. ``code`` is "bad_patch", "path_not_found" or "test_failed"."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[Any, ...]:
        # Two-argument constructor: the default pickling would call cls(message).
        return (type(self), (self.code, self.message))


# One undo step: a callable and its arguments, e.g. (lst.insert, 3, old_value).
_Step = tuple[Any, ...]
_Handler = Callable[[Any, dict[str, Any], list[_Step]], Any]

_MISSING: Any = object()
_SCALARS = frozenset((str, int, float, bool, type(None)))
_NUMBERS = frozenset((int, float))  # bool is deliberately not a number
_BAD_ESCAPE = re.compile(r"~(?![01])")
# Fast path for array index tokens: one lookup instead of validating and parsing. Anything
# else (a bigger index, "-", or an invalid token) goes through _index().
_SMALL_INDEX = {str(i): i for i in range(1024)}


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _bad(message: str) -> PatchError:
    return PatchError("bad_patch", message)


def _not_found(label: str, ptr: str, depth: int, why: str = "") -> PatchError:
    """path_not_found for the token at ``depth``, naming the prefix that broke."""
    msg = f"{label} {_q(ptr)} does not exist"
    if why:
        msg += f" ({why})"
    elif depth < ptr.count("/") - 1:
        msg += f" ({_q('/'.join(ptr.split('/')[: depth + 2]))} not found)"
    return PatchError("path_not_found", msg)


def _not_container(label: str, ptr: str, depth: int) -> PatchError:
    parent = "/".join(ptr.split("/")[: depth + 1])
    return _not_found(label, ptr, depth, f"{_q(parent)} is not an object or array")


def _index(tok: str, size: int, allow_end: bool, label: str, ptr: str, depth: int) -> int:
    """Array index token -> int. ``allow_end``: an add target, where size and "-" append."""
    # isascii: str.isdigit() also accepts digits such as "²" that int() rejects.
    if tok.isdigit() and tok.isascii():
        if tok[0] == "0" and len(tok) > 1:
            raise _bad(f"{label} {_q(ptr)}: array index {_q(tok)} has leading zeros")
        # The length cap avoids int()'s digit limit; no list is that long anyway.
        i = int(tok) if len(tok) < 19 else size + 1
        if i < size or (allow_end and i == size):
            return i
        raise _not_found(
            label, ptr, depth, f"index {tok} is out of range for an array of {size} items"
        )
    if tok == "-":
        if allow_end:
            return size
        raise _bad(
            f'{label} {_q(ptr)}: "-" (past the end) is only valid at the end of an add target'
        )
    raise _bad(f"{label} {_q(ptr)}: {_q(tok)} is not a valid array index")


def _walk(root: Any, tokens: list[str], stop: int, label: str, ptr: str) -> Any:
    """The value at tokens[:stop]; every step must exist."""
    node = root
    for depth in range(stop):
        tok = tokens[depth]
        kind = type(node)
        if kind is dict:
            node = node.get(tok, _MISSING)
            if node is _MISSING:
                raise _not_found(label, ptr, depth)
        elif kind is list:
            i = _SMALL_INDEX.get(tok, -1)
            if not 0 <= i < len(node):
                i = _index(tok, len(node), False, label, ptr, depth)
            node = node[i]
        else:
            raise _not_container(label, ptr, depth)
    return node


def _copy(value: Any) -> Any:
    """Deep copy of a JSON value; rejects anything that is not JSON (it could alias)."""
    kind = type(value)
    if kind in _SCALARS:  # immutable: shared safely
        return value
    if kind is dict:
        for key in value:
            if type(key) is not str:
                raise _bad(f"value has an object key {key!r} that is not a string")
        return {k: _copy(v) for k, v in value.items()}
    if kind is list:
        return [_copy(v) for v in value]
    raise _bad(f"value contains a {kind.__name__}, which is not a JSON type")


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: 1 == 1.0, but True != 1; object member order does not matter."""
    ta = type(a)
    tb = type(b)
    if ta is tb:
        if ta is dict:
            return len(a) == len(b) and all(_equal(v, b.get(k, _MISSING)) for k, v in a.items())
        if ta is list:
            return len(a) == len(b) and all(map(_equal, a, b))
        return bool(a == b)
    return ta in _NUMBERS and tb in _NUMBERS and bool(a == b)


def _reinsert(mapping: dict[str, Any], key: str, value: Any, pos: int | None) -> None:
    """Undo of a member removal, back at its old position (member order is observable)."""
    mapping[key] = value
    if pos is not None:
        items = list(mapping.items())
        items.insert(pos, items.pop())
        mapping.clear()
        mapping.update(items)


def _insert(root: Any, tokens: list[str], ptr: str, value: Any, undo: list[_Step]) -> Any:
    """RFC "add" of a value the document already owns; returns the (new) root."""
    if not tokens:
        return value  # the caller's document is untouched, so there is nothing to undo
    last = len(tokens) - 1
    parent = _walk(root, tokens, last, "path", ptr)
    key = tokens[last]
    kind = type(parent)
    if kind is dict:
        old = parent.get(key, _MISSING)
        if old is _MISSING:
            undo.append((parent.__delitem__, key))
        else:
            undo.append((parent.__setitem__, key, old))
        parent[key] = value
    elif kind is list:
        i = _SMALL_INDEX.get(key, -1)
        if not 0 <= i <= len(parent):
            i = _index(key, len(parent), True, "path", ptr, last)
        parent.insert(i, value)
        undo.append((parent.__delitem__, i))
    else:
        raise _not_container("path", ptr, last)
    return root


def _take(root: Any, tokens: list[str], label: str, ptr: str, undo: list[_Step]) -> Any:
    """Removes and returns the value at a non-root pointer."""
    last = len(tokens) - 1
    parent = _walk(root, tokens, last, label, ptr)
    key = tokens[last]
    kind = type(parent)
    if kind is dict:
        value = parent.get(key, _MISSING)
        if value is _MISSING:
            raise _not_found(label, ptr, last)
        # Position search only when needed: removing the last member is O(1) to undo.
        pos = None if next(reversed(parent)) == key else list(parent).index(key)
        del parent[key]
        undo.append((_reinsert, parent, key, value, pos))
        return value
    if kind is list:
        i = _SMALL_INDEX.get(key, -1)
        if not 0 <= i < len(parent):
            i = _index(key, len(parent), False, label, ptr, last)
        value = parent.pop(i)
        undo.append((parent.insert, i, value))
        return value
    raise _not_container(label, ptr, last)


def _pointer(op: dict[str, Any], member: str) -> tuple[str, list[str]]:
    """The op's RFC 6901 pointer and its unescaped tokens ([] is the whole document)."""
    ptr = op.get(member, _MISSING)
    if type(ptr) is not str:
        if ptr is _MISSING:
            raise _bad(f'missing "{member}"')
        raise _bad(f'"{member}" must be a string, not {_json_type(ptr)}')
    if not ptr:
        return ptr, []
    if ptr[0] != "/":
        raise _bad(f'{member} {_q(ptr)} is not a JSON pointer (must be "" or start with "/")')
    tokens = ptr.split("/")
    del tokens[0]
    if "~" in ptr:
        if _BAD_ESCAPE.search(ptr):
            raise _bad(f'{member} {_q(ptr)} has a bad escape ("~" must be followed by 0 or 1)')
        # "~1" first, so that "~01" becomes "~1" and not "/" (RFC 6901 section 4).
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in tokens]
    return ptr, tokens


def _value(op: dict[str, Any]) -> Any:
    value = op.get("value", _MISSING)
    if value is _MISSING:
        raise _bad('missing "value"')
    return value


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if type(value) in _NUMBERS else type(value).__name__)


def _op_add(root: Any, op: dict[str, Any], undo: list[_Step]) -> Any:
    ptr, tokens = _pointer(op, "path")
    return _insert(root, tokens, ptr, _copy(_value(op)), undo)


def _op_remove(root: Any, op: dict[str, Any], undo: list[_Step]) -> Any:
    ptr, tokens = _pointer(op, "path")
    if not tokens:
        raise _bad('path "" (the whole document) cannot be removed')
    _take(root, tokens, "path", ptr, undo)
    return root


def _op_replace(root: Any, op: dict[str, Any], undo: list[_Step]) -> Any:
    ptr, tokens = _pointer(op, "path")
    value = _value(op)
    if not tokens:
        return _copy(value)
    last = len(tokens) - 1
    parent = _walk(root, tokens, last, "path", ptr)
    key: Any = tokens[last]
    kind = type(parent)
    if kind is dict:
        if key not in parent:
            raise _not_found("path", ptr, last)
    elif kind is list:
        i = _SMALL_INDEX.get(key, -1)
        key = i if 0 <= i < len(parent) else _index(key, len(parent), False, "path", ptr, last)
    else:
        raise _not_container("path", ptr, last)
    new = _copy(value)
    undo.append((parent.__setitem__, key, parent[key]))
    parent[key] = new
    return root


def _op_move(root: Any, op: dict[str, Any], undo: list[_Step]) -> Any:
    ptr, tokens = _pointer(op, "path")
    src, src_tokens = _pointer(op, "from")
    n = len(src_tokens)
    if n < len(tokens) and tokens[:n] == src_tokens:
        raise _bad(f"from {_q(src)} cannot be moved into its own child {_q(ptr)}")
    if tokens == src_tokens:
        _walk(root, src_tokens, n, "from", src)  # a no-op, but "from" must still exist
        return root
    # Detached by the removal, so it needs no copy.
    return _insert(root, tokens, ptr, _take(root, src_tokens, "from", src, undo), undo)


def _op_copy(root: Any, op: dict[str, Any], undo: list[_Step]) -> Any:
    ptr, tokens = _pointer(op, "path")
    src, src_tokens = _pointer(op, "from")
    value = _walk(root, src_tokens, len(src_tokens), "from", src)
    return _insert(root, tokens, ptr, _copy(value), undo)


def _op_test(root: Any, op: dict[str, Any], undo: list[_Step]) -> Any:
    ptr, tokens = _pointer(op, "path")
    expected = _value(op)
    actual = _walk(root, tokens, len(tokens), "path", ptr)
    if not _equal(actual, expected):
        raise PatchError(
            "test_failed",
            f"path {_q(ptr)} is {_preview(actual)}, not the tested {_preview(expected)}",
        )
    return root


def _preview(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_OPS: dict[str, _Handler] = {
    "add": _op_add,
    "remove": _op_remove,
    "replace": _op_replace,
    "move": _op_move,
    "copy": _op_copy,
    "test": _op_test,
}


def _rollback(undo: list[_Step]) -> None:
    for step in reversed(undo):
        step[0](*step[1:])


def apply_patch(doc: Any, ops: list[Any]) -> Any:
    """Applies an RFC 6902 patch to ``doc`` in place and returns the result.

    The result is ``doc`` itself unless an op replaced the whole document (path "").
    Raises PatchError, with ``doc`` left exactly as it was, if any op fails.
    """
    if type(ops) is not list:
        raise _bad(f"a patch must be an array of operations, not {_json_type(ops)}")
    undo: list[_Step] = []
    root = doc
    i = 0
    name: Any = None
    try:
        for i in range(len(ops)):  # i is also read by the except clauses
            op = ops[i]
            if type(op) is not dict:
                name = None
                raise _bad(f"an operation must be an object, not {_json_type(op)}")
            name = op.get("op", _MISSING)
            handler = _OPS.get(name) if type(name) is str else None
            if handler is None:
                if name is _MISSING:
                    raise _bad('missing "op"')
                if type(name) is not str:
                    raise _bad(f'"op" must be a string, not {_json_type(name)}')
                raise _bad(f"unknown op {_q(name)}")
            root = handler(root, op, undo)
    except PatchError as exc:
        _rollback(undo)
        where = f"op {i} ({name})" if type(name) is str and name in _OPS else f"op {i}"
        raise PatchError(exc.code, f"{where}: {exc.message}") from None
    except RecursionError:
        _rollback(undo)
        raise _bad(f"op {i}: value is nested too deeply") from None
    except BaseException:
        # Not expected (a bug or an interrupt), but the document stays consistent.
        _rollback(undo)
        raise
    return root
