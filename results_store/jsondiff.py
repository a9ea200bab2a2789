"""A small JSON diff: the RFC 6902 ops that turn document A into document B.

Used by replay (the change of a scope between two positions). Objects are
compared member by member, arrays by their common prefix and suffix, then pairwise
over the middle, then trailing removals or insertions; scalars of different types
(``1`` and ``1.0``, ``1`` and ``true``) count as different. Applying the result
to A gives a document equal to B as JSON; object member order may differ (new
members come last), which JSON does not give meaning to.
"""

from __future__ import annotations

from typing import Any


def diff(a: Any, b: Any) -> list[dict[str, Any]]:
    ops: list[dict[str, Any]] = []
    _diff(a, b, "", ops)
    return ops


def escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def same(a: Any, b: Any) -> bool:
    """Equal as JSON, with number types told apart (so a diff keeps them exact)."""
    ta = type(a)
    if ta is not type(b):
        return False
    if ta is dict:
        return len(a) == len(b) and all(k in b and same(v, b[k]) for k, v in a.items())
    if ta is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _diff(a: Any, b: Any, path: str, ops: list[dict[str, Any]]) -> None:
    ta, tb = type(a), type(b)
    if ta is dict and tb is dict:
        for key in a:
            if key not in b:
                ops.append({"op": "remove", "path": f"{path}/{escape(key)}"})
        for key, value in b.items():
            if key in a:
                _diff(a[key], value, f"{path}/{escape(key)}", ops)
            else:
                ops.append({"op": "add", "path": f"{path}/{escape(key)}", "value": value})
        return
    if ta is list and tb is list:
        _diff_list(a, b, path, ops)
        return
    if not same(a, b):
        ops.append({"op": "replace", "path": path, "value": b})


def _diff_list(a: list[Any], b: list[Any], path: str, ops: list[dict[str, Any]]) -> None:
    n, m = len(a), len(b)
    start = 0
    while start < n and start < m and same(a[start], b[start]):
        start += 1
    end = 0
    while end < n - start and end < m - start and same(a[n - 1 - end], b[m - 1 - end]):
        end += 1
    a_mid, b_mid = n - start - end, m - start - end
    common = min(a_mid, b_mid)
    for i in range(common):
        _diff(a[start + i], b[start + i], f"{path}/{start + i}", ops)
    # Extra elements of A: remove from the last one down, so indices stay valid.
    for i in range(start + a_mid - 1, start + common - 1, -1):
        ops.append({"op": "remove", "path": f"{path}/{i}"})
    for i in range(common, b_mid):
        ops.append({"op": "add", "path": f"{path}/{start + i}", "value": b[start + i]})
