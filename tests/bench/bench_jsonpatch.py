"""Patches/s of session_store.jsonpatch against python-json-patch on a ~10 KB document.

Run: python tests/bench/bench_jsonpatch.py  (about 15 s). Each cell is the best of
three timed runs of ~0.25 s. python-json-patch is called the way a service would call
it for a patch that just arrived: jsonpatch.apply_patch(doc, ops).
"""

from __future__ import annotations

import copy
import inspect
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonpatch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from session_store.jsonpatch import PatchError, apply_patch

Apply = Callable[[Any, list[Any]], Any]


def build_doc() -> dict[str, Any]:
    """Roughly what a group session's data looks like: settings plus per-member state."""
    return {
        "study": {
            "id": "st-42",
            "title": "Ultimatum game",
            "settings": {f"k{i}": i for i in range(20)},
        },
        "round": 3,
        "players": [
            {
                "id": f"p{i}",
                "name": f"player {i}",
                "score": i * 10,
                "ready": i % 2 == 0,
                "tags": ["treatment", "b"],
                "pos": {"x": i, "y": -i},
                "offers": [i, i + 1.5],
            }
            for i in range(69)
        ],
    }


REPLACE = [{"op": "replace", "path": "/players/31/score", "value": 7}]
# Every op kind once; the add/remove and the two moves cancel out, so it can be repeated.
MIXED = [
    {"op": "test", "path": "/players/3/id", "value": "p3"},
    {"op": "replace", "path": "/players/3/score", "value": 1},
    {"op": "add", "path": "/players/3/tags/0", "value": "x"},
    {"op": "remove", "path": "/players/3/tags/0"},
    {"op": "copy", "from": "/players/3/pos", "path": "/players/3/last_pos"},
    {"op": "move", "from": "/players/3/name", "path": "/players/3/alias"},
    {"op": "move", "from": "/players/3/alias", "path": "/players/3/name"},
]
# Two changes, then a failing test: the whole patch must be rejected.
FAILING = [
    {"op": "replace", "path": "/players/7/score", "value": 999},
    {"op": "add", "path": "/players/7/tags/-", "value": "late"},
    {"op": "test", "path": "/round", "value": 4},
]

HAS_ATOMIC = "atomic" in inspect.signature(jsonpatch.apply_patch).parameters

IMPLS: dict[str, Apply] = {
    "cohort (in place + undo log)": apply_patch,
    "jsonpatch default (copies doc)": jsonpatch.apply_patch,
    "jsonpatch in_place=True": lambda doc, ops: jsonpatch.apply_patch(doc, ops, in_place=True),
}
if HAS_ATOMIC:
    IMPLS["jsonpatch in_place, atomic=True"] = lambda doc, ops: jsonpatch.apply_patch(
        doc, ops, in_place=True, atomic=True
    )

ERRORS = (PatchError, jsonpatch.JsonPatchException, jsonpatch.JsonPointerException)


def rate(fn: Apply, ops: list[Any], expect_error: bool) -> float:
    """Patches per second, best of three runs."""
    doc = build_doc()

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            try:
                fn(doc, ops)
            except ERRORS:
                pass
        return time.perf_counter() - start

    try:  # check once that the patch does what the workload says
        fn(doc, ops)
        assert not expect_error, "the failing patch was accepted"
    except ERRORS:
        assert expect_error, "the patch failed"
    n = 16
    while (elapsed := run(n)) < 0.05:
        n *= 4
    n = max(1, int(n * 0.25 / elapsed))
    return n / min(run(n) for _ in range(3))


def atomicity(fn: Apply) -> str:
    """Whether a failing patch leaves the document exactly as it was."""
    doc = build_doc()
    before = json.dumps(doc)
    try:
        fn(doc, copy.deepcopy(FAILING))
    except ERRORS:
        pass
    return "yes" if json.dumps(doc) == before else "NO: doc left half-patched"


def main() -> None:
    doc = build_doc()
    print(
        f"python {sys.version.split()[0]}, jsonpatch {jsonpatch.__version__}, "
        f"document {len(json.dumps(doc)):,} bytes of JSON"
    )
    workloads = [("replace (1 op)", REPLACE, False), ("mixed (7 ops)", MIXED, False)]
    workloads.append(("failing (3 ops)", FAILING, True))
    results = {
        name: [rate(fn, ops, err) for _, ops, err in workloads] for name, fn in IMPLS.items()
    }
    base = results["jsonpatch default (copies doc)"]
    width = max(map(len, IMPLS))
    head = "".join(f"{title:>24}" for title, _, _ in workloads)
    print(f"\n{'patches/s (x vs jsonpatch default)':<{width}}{head}  atomic on failure")
    for name, fn in IMPLS.items():
        cells = "".join(
            f"{r:>15,.0f} ({r / b:>5.1f}x)" for r, b in zip(results[name], base, strict=True)
        )
        print(f"{name:<{width}}{cells}  {atomicity(fn)}")


if __name__ == "__main__":
    main()
