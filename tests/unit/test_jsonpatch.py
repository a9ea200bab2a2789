"""session_store.jsonpatch: the RFC 6902 suite, failure atomicity, aliasing, error codes."""

from __future__ import annotations

import copy
import json
import pickle
import random
from pathlib import Path
from typing import Any

import jsonpatch as reference
import pytest

from session_store import jsonpatch as jsonpatch_module
from session_store.jsonpatch import PatchError, apply_patch

SUITE_DIR = Path(__file__).resolve().parents[1] / "data" / "json-patch"


def exact(value: Any) -> str:
    """Serialization that shows types (1, 1.0, true) and member order."""
    return json.dumps(value)


def canonical(value: Any) -> str:
    """Like exact(), but member order does not matter (JSON object semantics)."""
    return json.dumps(value, sort_keys=True)


def containers(value: Any) -> list[Any]:
    """Every dict and list of a document, in document order (to check identity)."""
    out: list[Any] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            out.append(node)
            stack.extend(reversed(node.values()))
        elif isinstance(node, list):
            out.append(node)
            stack.extend(reversed(node))
    return out


def assert_untouched(doc: Any, snapshot: str, objects: list[Any]) -> None:
    assert exact(doc) == snapshot
    after = containers(doc)
    assert len(after) == len(objects)
    assert all(a is b for a, b in zip(after, objects, strict=True)), "containers were replaced"


# ---------------------------------------------------------------------------------------
# The public conformance suite (json-patch/json-patch-tests)


def _suite() -> list[Any]:
    params = []
    for name in ("tests.json", "spec_tests.json"):
        records = json.loads((SUITE_DIR / name).read_text(encoding="utf-8"))
        for index, record in enumerate(records):
            if record.get("disabled"):
                continue  # the suite's authors disabled these records (not run, not counted)
            label = record.get("comment") or " ".join(
                f"{op.get('op')} {op.get('path')}" for op in record["patch"]
            )
            params.append(pytest.param(record, id=f"{Path(name).stem}-{index:03d} {label}"))
    return params


SUITE = _suite()


def test_suite_is_complete() -> None:
    # 112 records in the two files, 4 of them disabled by the suite's authors.
    assert len(SUITE) == 108


@pytest.mark.parametrize("record", SUITE)
def test_conformance(record: dict[str, Any]) -> None:
    doc = record["doc"]
    before = copy.deepcopy(doc)
    if "expected" in record:
        result = apply_patch(doc, record["patch"])
        assert canonical(result) == canonical(record["expected"])
    else:
        assert "error" in record
        with pytest.raises(PatchError) as info:
            apply_patch(doc, record["patch"])
        assert info.value.code in {"bad_patch", "path_not_found", "test_failed"}
        assert exact(doc) == exact(before)


# ---------------------------------------------------------------------------------------
# Failure atomicity: every kind of op failing after every kind of op succeeded


def make_doc() -> dict[str, Any]:
    return {
        "a": 1,
        "obj": {"x": 1, "y": [1, {"z": 2}], "w": "s", "last": True},
        "list": [0, {"k": [1, 2]}, 2.5, "three", None],
        "z": None,
    }


SUCCEEDING: dict[str, list[dict[str, Any]]] = {
    "add": [
        {"op": "add", "path": "/list/1", "value": {"n": [1]}},
        {"op": "add", "path": "/obj/x", "value": [9]},  # replaces an existing member
        {"op": "add", "path": "/new", "value": {"q": 1}},
        {"op": "add", "path": "/list/-", "value": 7},
    ],
    "remove": [
        {"op": "remove", "path": "/obj/x"},  # first member: its position must come back
        {"op": "remove", "path": "/list/1"},
        {"op": "remove", "path": "/z"},  # last member
    ],
    "replace": [
        {"op": "replace", "path": "/obj/y/1/z", "value": [3]},
        {"op": "replace", "path": "/list/0", "value": {"r": 1}},
        {"op": "replace", "path": "/obj", "value": "flat"},
    ],
    "move": [
        {"op": "move", "from": "/obj/x", "path": "/list/2"},
        {"op": "move", "from": "/list/0", "path": "/obj/moved"},
        {"op": "move", "from": "/list/1", "path": "/list/3"},  # within one array
        {"op": "move", "from": "/a", "path": "/z"},  # onto an existing member
    ],
    "copy": [
        {"op": "copy", "from": "/obj", "path": "/list/1"},
        {"op": "copy", "from": "/list", "path": "/obj/x"},
        {"op": "copy", "from": "/obj/y", "path": "/obj/y/0"},  # into itself
    ],
    "test": [
        {
            "op": "test",
            "path": "/obj",
            "value": {"w": "s", "last": True, "y": [1, {"z": 2}], "x": 1},
        },
        {"op": "test", "path": "/list/2", "value": 2.5},
    ],
}

FAILING: dict[str, tuple[dict[str, Any], str]] = {
    "add": ({"op": "add", "path": "/missing/x", "value": 1}, "path_not_found"),
    "remove": ({"op": "remove", "path": "/obj/nope"}, "path_not_found"),
    "replace": ({"op": "replace", "path": "/list/99", "value": 1}, "path_not_found"),
    "move": ({"op": "move", "from": "/nope", "path": "/obj/k"}, "path_not_found"),
    # The remove half of the move succeeds, then the add half fails.
    "move-half-done": ({"op": "move", "from": "/list/0", "path": "/nope/x"}, "path_not_found"),
    "copy": ({"op": "copy", "from": "/list/-", "path": "/obj/k"}, "bad_patch"),
    "test": ({"op": "test", "path": "", "value": "not the document"}, "test_failed"),
    "unknown-op": ({"op": "frobnicate", "path": "/a"}, "bad_patch"),
}


@pytest.mark.parametrize("fails", list(FAILING))
@pytest.mark.parametrize("succeeds", list(SUCCEEDING))
def test_failure_restores_exact_document(succeeds: str, fails: str) -> None:
    good = SUCCEEDING[succeeds]
    # The succeeding part really applies (and, except for test, changes the document).
    patched = apply_patch(make_doc(), good)
    assert (exact(patched) == exact(make_doc())) == (succeeds == "test")

    doc = make_doc()
    snapshot, objects = exact(doc), containers(doc)
    bad, code = FAILING[fails]
    with pytest.raises(PatchError) as info:
        apply_patch(doc, [*good, bad])
    assert info.value.code == code
    assert info.value.message.startswith((f"op {len(good)} (", f"op {len(good)}: "))
    assert_untouched(doc, snapshot, objects)


@pytest.mark.parametrize("fails", list(FAILING))
def test_failure_after_every_kind_restores_exact_document(fails: str) -> None:
    doc = {"k": make_doc()}
    snapshot, objects = exact(doc), containers(doc)
    # Each group works on its own copy of the base document, so all of them apply.
    ops = [{"op": "add", "path": f"/{kind}", "value": make_doc()} for kind in SUCCEEDING]
    for kind, group in SUCCEEDING.items():
        for op in group:
            op = dict(op, path=f"/{kind}{op['path']}")
            if "from" in op:
                op["from"] = f"/{kind}{op['from']}"
            ops.append(op)
    ops.append({"op": "move", "from": "/k", "path": "/add/list/0"})
    ops.append({"op": "copy", "from": "/add", "path": "/k"})
    apply_patch(copy.deepcopy(doc), ops)  # all of it succeeds on its own

    bad, code = FAILING[fails]
    bad = dict(bad)
    for member in ("path", "from"):
        if member in bad:
            bad[member] = "/move" + bad[member]
    with pytest.raises(PatchError) as info:
        apply_patch(doc, [*ops, bad])
    assert info.value.code == code
    assert_untouched(doc, snapshot, objects)


def test_member_order_is_restored() -> None:
    doc = {"a": 1, "b": 2, "c": {"d": 3, "e": 4, "f": 5}}
    ops = [
        {"op": "remove", "path": "/a"},
        {"op": "move", "from": "/c/d", "path": "/c/g"},
        {"op": "move", "from": "/c/e", "path": "/b"},
        {"op": "add", "path": "/a", "value": 0},
        {"op": "test", "path": "/a", "value": 1},
    ]
    with pytest.raises(PatchError):
        apply_patch(doc, ops)
    assert exact(doc) == '{"a": 1, "b": 2, "c": {"d": 3, "e": 4, "f": 5}}'


def test_failure_after_root_replacement_leaves_original() -> None:
    doc = {"a": [1, 2]}
    with pytest.raises(PatchError):
        apply_patch(
            doc,
            [
                {"op": "remove", "path": "/a/0"},
                {"op": "replace", "path": "", "value": {"b": 1}},
                {"op": "add", "path": "/c", "value": 2},
                {"op": "remove", "path": "/nope"},
            ],
        )
    assert exact(doc) == '{"a": [1, 2]}'


def test_failure_after_move_to_root_restores_original() -> None:
    inner = {"x": [1, 2], "y": 3}
    doc = {"keep": 0, "inner": inner}
    with pytest.raises(PatchError):
        apply_patch(
            doc,
            [
                {"op": "move", "from": "/inner", "path": ""},
                {"op": "remove", "path": "/x/0"},
                {"op": "add", "path": "/y", "value": 4},
                {"op": "test", "path": "/y", "value": 3},
            ],
        )
    assert exact(doc) == '{"keep": 0, "inner": {"x": [1, 2], "y": 3}}'
    assert doc["inner"] is inner


def test_unexpected_exception_rolls_back_and_propagates(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(root: Any, op: dict[str, Any], undo: list[Any]) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setitem(jsonpatch_module._OPS, "explode", explode)
    doc = {"a": [1, 2]}
    with pytest.raises(RuntimeError):
        apply_patch(doc, [{"op": "remove", "path": "/a/0"}, {"op": "explode", "path": ""}])
    assert exact(doc) == '{"a": [1, 2]}'


# ---------------------------------------------------------------------------------------
# Results, root replacement, aliasing


def test_in_place_returns_same_object() -> None:
    doc = {"a": [1]}
    assert apply_patch(doc, [{"op": "add", "path": "/a/-", "value": 2}]) is doc
    assert doc == {"a": [1, 2]}
    assert apply_patch(doc, []) is doc


@pytest.mark.parametrize("op", ["add", "replace"])
def test_root_replacement_returns_new_document(op: str) -> None:
    doc = {"a": 1}
    value = {"b": [2]}
    result = apply_patch(doc, [{"op": op, "path": "", "value": value}])
    assert result == {"b": [2]}
    assert result is not value and result["b"] is not value["b"]
    assert doc == {"a": 1}  # the old root is not modified


def test_root_replacement_with_scalar_and_array() -> None:
    assert apply_patch({"a": 1}, [{"op": "replace", "path": "", "value": 5}]) == 5
    assert apply_patch("x", [{"op": "replace", "path": "", "value": [1]}]) == [1]
    assert apply_patch([1], [{"op": "copy", "from": "/0", "path": ""}]) == 1


def test_move_to_root_uses_the_moved_value() -> None:
    inner = {"x": 1}
    doc = {"inner": inner}
    result = apply_patch(doc, [{"op": "move", "from": "/inner", "path": ""}])
    assert result is inner  # move never copies
    assert doc == {}


@pytest.mark.parametrize("op", ["add", "replace", "test-then-add"])
def test_inserted_values_do_not_alias_the_patch(op: str) -> None:
    doc: dict[str, Any] = {"slot": None}
    value = {"list": [1, {"deep": [2]}]}
    ops: list[dict[str, Any]] = [
        {"op": op.removeprefix("test-then-"), "path": "/slot", "value": value}
    ]
    if op.startswith("test"):
        ops.insert(0, {"op": "test", "path": "/slot", "value": None})
    apply_patch(doc, ops)
    value["list"][1]["deep"].append(3)
    value["list"].append(4)
    assert doc == {"slot": {"list": [1, {"deep": [2]}]}}
    # ...and the other way round: mutating the document leaves the patch alone.
    doc["slot"]["list"].clear()
    assert value == {"list": [1, {"deep": [2, 3]}, 4]}


def test_same_patch_applied_twice_gives_independent_values() -> None:
    ops = [{"op": "add", "path": "/v", "value": {"l": []}}]
    one, two = apply_patch({}, ops), apply_patch({}, ops)
    one["v"]["l"].append(1)
    assert two == {"v": {"l": []}}
    assert ops[0]["value"] == {"l": []}


def test_copy_does_not_alias_the_source() -> None:
    doc: dict[str, Any] = {"src": {"l": [1, {"m": 2}]}}
    apply_patch(doc, [{"op": "copy", "from": "/src", "path": "/dst"}])
    assert doc["dst"] == doc["src"]
    assert doc["dst"] is not doc["src"]
    doc["src"]["l"][1]["m"] = 99
    assert doc["dst"] == {"l": [1, {"m": 2}]}


def test_copy_into_own_child_does_not_create_a_cycle() -> None:
    doc: dict[str, Any] = {"a": {"b": 1}}
    apply_patch(doc, [{"op": "copy", "from": "/a", "path": "/a/c"}])
    assert doc == {"a": {"b": 1, "c": {"b": 1}}}


def test_move_does_not_copy() -> None:
    node = {"n": [1]}
    doc = {"a": node, "b": []}
    apply_patch(doc, [{"op": "move", "from": "/a", "path": "/b/0"}])
    assert doc["b"][0] is node


# ---------------------------------------------------------------------------------------
# Error codes and messages


def patch_error(doc: Any, ops: Any) -> PatchError:
    snapshot = exact(doc)
    with pytest.raises(PatchError) as info:
        apply_patch(doc, ops)
    assert exact(doc) == snapshot
    return info.value


DOC = {"a": {"b": [10, 20, 30]}, "s": "text", "-": 1}

ERRORS: list[tuple[str, Any, str, str]] = [
    # (id, ops, code, expected message fragment)
    ("ops-not-a-list", {"op": "add"}, "bad_patch", "must be an array of operations"),
    ("op-not-an-object", [["add"]], "bad_patch", "op 0: an operation must be an object"),
    ("missing-op", [{"path": "/a"}], "bad_patch", 'op 0: missing "op"'),
    ("op-not-a-string", [{"op": 1, "path": "/a"}], "bad_patch", '"op" must be a string'),
    ("unknown-op", [{"op": "append", "path": "/a"}], "bad_patch", 'unknown op "append"'),
    ("missing-path", [{"op": "remove"}], "bad_patch", 'op 0 (remove): missing "path"'),
    ("path-not-a-string", [{"op": "remove", "path": 3}], "bad_patch", '"path" must be a string'),
    ("from-null", [{"op": "copy", "from": None, "path": "/x"}], "bad_patch", '"from" must be'),
    ("missing-value", [{"op": "replace", "path": "/s"}], "bad_patch", 'missing "value"'),
    ("no-leading-slash", [{"op": "remove", "path": "a/b"}], "bad_patch", "is not a JSON pointer"),
    ("bad-escape", [{"op": "remove", "path": "/a~2"}], "bad_patch", "bad escape"),
    ("trailing-tilde", [{"op": "remove", "path": "/a~"}], "bad_patch", "bad escape"),
    ("leading-zero", [{"op": "remove", "path": "/a/b/01"}], "bad_patch", "leading zeros"),
    ("negative-index", [{"op": "remove", "path": "/a/b/-1"}], "bad_patch", "not a valid array"),
    ("non-digit-index", [{"op": "remove", "path": "/a/b/x"}], "bad_patch", "not a valid array"),
    ("non-ascii-digit", [{"op": "remove", "path": "/a/b/\u00b2"}], "bad_patch", "not a valid"),
    ("dash-remove", [{"op": "remove", "path": "/a/b/-"}], "bad_patch", '"-"'),
    ("dash-replace", [{"op": "replace", "path": "/a/b/-", "value": 1}], "bad_patch", '"-"'),
    ("dash-test", [{"op": "test", "path": "/a/b/-", "value": 1}], "bad_patch", '"-"'),
    ("dash-from", [{"op": "move", "from": "/a/b/-", "path": "/x"}], "bad_patch", '"-"'),
    ("dash-inside", [{"op": "add", "path": "/a/b/-/x", "value": 1}], "bad_patch", '"-"'),
    ("move-into-child", [{"op": "move", "from": "/a", "path": "/a/b/0"}], "bad_patch", "own child"),
    ("move-root", [{"op": "move", "from": "", "path": "/x"}], "bad_patch", "own child"),
    ("remove-root", [{"op": "remove", "path": ""}], "bad_patch", "cannot be removed"),
    ("value-tuple", [{"op": "add", "path": "/x", "value": (1, 2)}], "bad_patch", "not a JSON"),
    ("value-set", [{"op": "add", "path": "/x", "value": [{1}]}], "bad_patch", "not a JSON"),
    ("value-int-key", [{"op": "add", "path": "/x", "value": {1: 2}}], "bad_patch", "not a str"),
    ("missing-member", [{"op": "remove", "path": "/nope"}], "path_not_found", "does not exist"),
    ("missing-parent", [{"op": "add", "path": "/x/y", "value": 1}], "path_not_found", '"/x" not'),
    ("into-scalar", [{"op": "add", "path": "/s/x", "value": 1}], "path_not_found", "not an obj"),
    ("index-range", [{"op": "replace", "path": "/a/b/3", "value": 1}], "path_not_found", "range"),
    ("add-past-end", [{"op": "add", "path": "/a/b/4", "value": 1}], "path_not_found", "range"),
    ("huge-index", [{"op": "remove", "path": "/a/b/" + "9" * 5000}], "path_not_found", "range"),
    ("missing-from", [{"op": "copy", "from": "/nope", "path": "/x"}], "path_not_found", "from"),
    ("test-mismatch", [{"op": "test", "path": "/s", "value": "other"}], "test_failed", "tested"),
    ("test-missing", [{"op": "test", "path": "/nope", "value": 1}], "path_not_found", "not exist"),
]


@pytest.mark.parametrize(
    ("ops", "code", "fragment"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_error_codes(ops: Any, code: str, fragment: str) -> None:
    doc = copy.deepcopy(DOC)
    error = patch_error(doc, ops)
    assert error.code == code
    assert fragment in error.message
    assert str(error) == error.message


def test_message_names_op_index_and_path() -> None:
    ops = [
        {"op": "test", "path": "/s", "value": "text"},
        {"op": "add", "path": "/a/c", "value": {}},
        {"op": "remove", "path": "/a/c/b"},
    ]
    error = patch_error(copy.deepcopy(DOC), ops)
    assert error.code == "path_not_found"
    assert error.message == 'op 2 (remove): path "/a/c/b" does not exist'


def test_dash_is_an_ordinary_member_name_in_objects() -> None:
    doc = copy.deepcopy(DOC)
    apply_patch(doc, [{"op": "test", "path": "/-", "value": 1}, {"op": "remove", "path": "/-"}])
    assert "-" not in doc


def test_large_array_indexes() -> None:
    # Indexes beyond the small-index fast path take the general one.
    doc = {"l": list(range(1500))}
    ops = [
        {"op": "replace", "path": "/l/1200", "value": "r"},
        {"op": "remove", "path": "/l/1300"},
        {"op": "add", "path": "/l/1499", "value": "end"},
        {"op": "move", "from": "/l/1100", "path": "/l/1024"},
        {"op": "test", "path": "/l/1024", "value": 1100},
    ]
    apply_patch(doc, ops)
    expected = list(range(1500))
    expected[1200] = "r"
    del expected[1300]
    expected.append("end")
    expected.insert(1024, expected.pop(1100))
    assert doc["l"] == expected
    error = patch_error(
        doc, [{"op": "remove", "path": "/l/0"}, {"op": "remove", "path": "/l/1500"}]
    )
    assert error.code == "path_not_found"
    assert "index 1500 is out of range for an array of 1499 items" in error.message


def test_deeply_nested_value_is_rejected() -> None:
    value: list[Any] = []
    for _ in range(100_000):
        value = [value]
    doc = {"a": 1}
    error = patch_error(
        doc, [{"op": "remove", "path": "/a"}, {"op": "add", "path": "/x", "value": value}]
    )
    assert error.code == "bad_patch"
    assert "nested too deeply" in error.message


def test_patch_error_pickles() -> None:
    error = pickle.loads(pickle.dumps(PatchError("test_failed", "op 0 (test): x")))
    assert (error.code, error.message) == ("test_failed", "op 0 (test): x")


@pytest.mark.parametrize(
    ("actual", "tested", "equal"),
    [
        (1, 1.0, True),
        (True, 1, False),
        (0, False, False),
        (None, False, False),
        ("1", 1, False),
        ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),
        ([1, 2], [2, 1], False),
        ({"a": None}, {}, False),
        ({"a": None}, {"b": None}, False),
        ([[1, {"x": True}]], [[1.0, {"x": True}]], True),
        ([[1, {"x": True}]], [[1, {"x": 1}]], False),
        ([], {}, False),
    ],
)
def test_test_op_uses_json_equality(actual: Any, tested: Any, equal: bool) -> None:
    ops = [{"op": "test", "path": "/v", "value": tested}]
    if equal:
        apply_patch({"v": actual}, ops)
    else:
        assert patch_error({"v": actual}, ops).code == "test_failed"


# ---------------------------------------------------------------------------------------
# Differential check against python-json-patch on random patches


def _random_doc(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 2 or roll < 0.3:
        return rng.choice([0, 1, 2.5, True, False, None, "s", "t"])
    if roll < 0.65:
        return {
            rng.choice("abcde-~/0"): _random_doc(rng, depth + 1) for _ in range(rng.randint(0, 4))
        }
    return [_random_doc(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def _paths(doc: Any, prefix: str = "") -> list[str]:
    out = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            out += _paths(value, f"{prefix}/{key.replace('~', '~0').replace('/', '~1')}")
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            out += _paths(value, f"{prefix}/{index}")
    return out


def _random_path(rng: random.Random, doc: Any) -> str:
    path = rng.choice(_paths(doc))
    roll = rng.random()
    if roll < 0.5:
        return path
    if roll < 0.9:  # a new member, an index just past the end, or beyond it
        return f"{path}/{rng.choice(['a', 'f', '0', '1', '2', '3', '4', '5', '-'])}"
    return f"{path}/{rng.choice(['00', 'x', '~01'])}/{rng.choice(['a', '0'])}"


def _random_op(rng: random.Random, doc: Any) -> dict[str, Any]:
    name = rng.choice(["add", "remove", "replace", "move", "copy", "test"])
    op: dict[str, Any] = {"op": name, "path": _random_path(rng, doc)}
    if name in ("move", "copy"):
        op["from"] = rng.choice(_paths(doc))
    if name in ("add", "replace"):
        op["value"] = _random_doc(rng, 1)
    if name == "test":
        try:
            op["value"] = reference.JsonPointer(op["path"]).resolve(doc)
        except Exception:
            op["value"] = 0
        if rng.random() < 0.3:
            op["value"] = _random_doc(rng, 2)
    return op


def test_agrees_with_python_json_patch_on_random_patches() -> None:
    rng = random.Random(6902)
    outcomes = {"applied": 0, "rejected": 0}
    for _ in range(4000):
        doc = _random_doc(rng)
        ops: list[dict[str, Any]] = []
        shadow = copy.deepcopy(doc)
        for _ in range(rng.randint(1, 4)):
            op = _random_op(rng, shadow)
            try:  # keep building on the state reached so far, as a client would
                shadow = reference.apply_patch(shadow, [op])
            except (reference.JsonPatchException, reference.JsonPointerException):
                if rng.random() < 0.5:  # end half of the patches with a failing op
                    ops.append(op)
                break
            ops.append(op)
        try:
            expected = reference.apply_patch(doc, ops)
        except (reference.JsonPatchException, reference.JsonPointerException):
            expected = PatchError
        snapshot, objects = exact(doc), containers(doc)
        try:
            result = apply_patch(doc, copy.deepcopy(ops))
        except PatchError:
            assert expected is PatchError, ops
            assert_untouched(doc, snapshot, objects)
            outcomes["rejected"] += 1
        else:
            assert expected is not PatchError, ops
            assert canonical(result) == canonical(expected), ops
            outcomes["applied"] += 1
    assert min(outcomes.values()) > 1000, outcomes
