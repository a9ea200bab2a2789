"""The JSON diff used by replay: applying diff(a, b) to a gives b, exactly typed."""

from __future__ import annotations

import copy
import random

import pytest

from results_store.jsondiff import diff, same
from session_store.jsonpatch import apply_patch
from tests.timeline_driver import random_json, random_ops


def check(a, b):
    ops = diff(a, b)
    result = apply_patch(copy.deepcopy(a), copy.deepcopy(ops))
    assert same(result, b), (a, b, ops)
    return ops


def test_equal_documents_give_no_ops():
    doc = {"a": [1, {"b": None}], "c": "x"}
    assert diff(doc, copy.deepcopy(doc)) == []


@pytest.mark.parametrize(("a", "b", "expected"), [
    ({"a": 1}, {"a": 2}, [{"op": "replace", "path": "/a", "value": 2}]),
    ({"a": 1}, {}, [{"op": "remove", "path": "/a"}]),
    ({}, {"a/b": 1, "c~d": 2}, [{"op": "add", "path": "/a~1b", "value": 1},
                                {"op": "add", "path": "/c~0d", "value": 2}]),
    ([1, 2, 3], [1, 9, 2, 3], [{"op": "add", "path": "/1", "value": 9}]),
    ([1, 2, 3, 4], [1, 4], [{"op": "remove", "path": "/2"}, {"op": "remove", "path": "/1"}]),
    ({"n": 1}, {"n": 1.0}, [{"op": "replace", "path": "/n", "value": 1.0}]),
    ({"n": 1}, {"n": True}, [{"op": "replace", "path": "/n", "value": True}]),
    ({"a": 1}, [1], [{"op": "replace", "path": "", "value": [1]}]),
    (None, {"a": 1}, [{"op": "replace", "path": "", "value": {"a": 1}}]),
])
def test_small_cases(a, b, expected):
    assert check(a, b) == expected


def test_random_documents_and_random_edits():
    rng = random.Random(11)
    for _ in range(2000):
        a = {"k": random_json(rng), "log": [random_json(rng) for _ in range(rng.randrange(5))]}
        b = copy.deepcopy(a)
        for _ in range(rng.randrange(1, 6)):
            try:
                b = apply_patch(b, random_ops(rng, b))
            except Exception:
                pass
        if rng.random() < 0.3 and isinstance(b.get("log"), list):
            rng.shuffle(b["log"])
        check(a, b)
        check(b, a)
        check(random_json(rng), random_json(rng))
