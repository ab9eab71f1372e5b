"""Tests for nodes.kv: the deterministic replicated key-value state machine."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nodes.kv import MAX_DEPTH, CommandError, KVStore, validate_command


def applied(store: KVStore, *cmds: dict[str, Any]) -> list[dict[str, Any]]:
    """Apply ``cmds`` at the next log indexes and return their results."""
    return [store.apply(store.last_applied + 1, c) for c in cmds]


# --- single ops ---------------------------------------------------------------------------


def test_write_then_read() -> None:
    kv = KVStore()
    assert kv.apply(1, {"op": "write", "key": "x", "value": {"a": [1, 2]}}) == {"ok": True}
    assert kv.read("x") == {"a": [1, 2]}
    assert kv.read("missing") is None
    assert len(kv) == 1
    assert kv.last_applied == 1


def test_write_overwrites_and_accepts_null() -> None:
    kv = KVStore()
    applied(kv, {"op": "write", "key": "x", "value": 1}, {"op": "write", "key": "x", "value": None})
    assert kv.read("x") is None
    assert len(kv) == 1  # a key holding null still exists


def test_delete() -> None:
    kv = KVStore()
    res = applied(kv, {"op": "write", "key": "x", "value": 1}, {"op": "delete", "key": "x"})
    assert res == [{"ok": True}, {"ok": True}]
    assert kv.read("x") is None
    assert len(kv) == 0
    assert kv.apply(3, {"op": "delete", "key": "never"}) == {"ok": True}


def test_cas_match_and_mismatch() -> None:
    kv = KVStore()
    applied(kv, {"op": "write", "key": "x", "value": 1})
    assert kv.apply(2, {"op": "cas", "key": "x", "value": [1, 2]}) == {"ok": True}
    assert kv.read("x") == 2
    assert kv.apply(3, {"op": "cas", "key": "x", "value": [1, 3]}) == {
        "ok": False,
        "error": "cas-mismatch",
        "value": 2,
    }
    assert kv.read("x") == 2


def test_cas_on_absent_key_expects_null() -> None:
    kv = KVStore()
    assert kv.apply(1, {"op": "cas", "key": "x", "value": [0, 1]}) == {
        "ok": False,
        "error": "cas-mismatch",
        "value": None,
    }
    assert kv.apply(2, {"op": "cas", "key": "x", "value": [None, 1]}) == {"ok": True}
    assert kv.read("x") == 1


def test_cas_uses_json_equality_true_is_not_one() -> None:
    kv = KVStore()
    applied(kv, {"op": "write", "key": "x", "value": 1})
    assert kv.apply(2, {"op": "cas", "key": "x", "value": [True, 5]})["ok"] is False
    assert kv.apply(3, {"op": "cas", "key": "x", "value": [1.0, 5]})["ok"] is True
    applied(kv, {"op": "write", "key": "y", "value": [1, {"a": False}]})
    assert kv.apply(5, {"op": "cas", "key": "y", "value": [[1, {"a": 0}], 0]})["ok"] is False
    assert kv.apply(6, {"op": "cas", "key": "y", "value": [[1, {"a": False}], 0]})["ok"] is True


# --- transactions --------------------------------------------------------------------------


def test_txn_reads_writes_appends() -> None:
    kv = KVStore()
    applied(kv, {"op": "write", "key": "l", "value": [1]})
    txn = [["r", "l", None], ["append", "l", 2], ["append", "new", "a"], ["r", "new", None]]
    assert kv.apply(2, {"op": "txn", "value": txn}) == {
        "ok": True,
        "value": [["r", "l", [1]], ["append", "l", 2], ["append", "new", "a"], ["r", "new", ["a"]]],
    }
    assert kv.read("l") == [1, 2]
    assert kv.read("new") == ["a"]


def test_txn_read_your_writes() -> None:
    kv = KVStore()
    applied(kv, {"op": "write", "key": "x", "value": 0})
    txn = [["r", "x", None], ["w", "x", 1], ["r", "x", None], ["w", "x", 2], ["r", "x", None]]
    res = kv.apply(2, {"op": "txn", "value": txn})
    reads = [m for m in res["value"] if m[0] == "r"]
    assert reads == [["r", "x", 0], ["r", "x", 1], ["r", "x", 2]]
    assert kv.read("x") == 2


def test_txn_abort_on_append_to_non_list_is_atomic() -> None:
    kv = KVStore()
    applied(kv, {"op": "write", "key": "n", "value": 5}, {"op": "write", "key": "l", "value": [1]})
    before = kv.digest()
    txn = [["w", "a", 1], ["append", "l", 2], ["append", "n", 3], ["w", "b", 2]]
    res = kv.apply(3, {"op": "txn", "value": txn})
    assert res["ok"] is False
    assert res["error"] == "txn-aborted"
    assert "'n'" in res["reason"]
    assert kv.digest() == before
    assert kv.read("a") is None
    assert kv.read("l") == [1]  # the stored list was not appended to in place
    assert len(kv) == 2
    assert kv.last_applied == 3


def test_txn_append_after_write_of_null_aborts() -> None:
    kv = KVStore()
    res = kv.apply(1, {"op": "txn", "value": [["w", "x", None], ["append", "x", 1]]})
    assert res["error"] == "txn-aborted"
    assert len(kv) == 0


def test_stored_values_do_not_alias_commands_or_results() -> None:
    kv = KVStore()
    entry = {"op": "write", "key": "l", "value": [1]}
    kv.apply(1, entry)
    txn: dict[str, Any] = {"op": "txn", "value": [["append", "l", [2]], ["r", "l", None]]}
    res = kv.apply(2, txn)
    assert entry["value"] == [1]  # the committed entry object was not mutated
    assert txn["value"] == [["append", "l", [2]], ["r", "l", None]]
    res["value"][1][2].append("junk")  # mutating a result does not reach the store
    txn["value"][0][2].append("junk")  # nor does mutating the command afterwards
    got = kv.read("l")
    got.append("junk")  # nor does mutating what read returned
    assert kv.read("l") == [1, [2]]


# --- sessions ------------------------------------------------------------------------------


def test_duplicate_client_seq_is_applied_once() -> None:
    kv = KVStore()
    cmd = {"op": "txn", "value": [["append", "l", 1], ["r", "l", None]], "client": "c", "seq": 1}
    first = kv.apply(1, cmd)
    second = kv.apply(2, dict(cmd))
    assert first == second == {"ok": True, "value": [["append", "l", 1], ["r", "l", [1]]]}
    assert kv.read("l") == [1]  # applying twice would give [1, 1]
    assert kv.last_applied == 2
    nxt = kv.apply(3, {**cmd, "seq": 2})
    assert nxt["value"][1] == ["r", "l", [1, 1]]


def test_cached_result_is_returned_for_failures_too() -> None:
    kv = KVStore()
    applied(kv, {"op": "write", "key": "x", "value": 1})
    cas = {"op": "cas", "key": "x", "value": [0, 9], "client": "c", "seq": 1}
    miss = kv.apply(2, cas)
    applied(kv, {"op": "write", "key": "x", "value": 0})
    assert kv.apply(4, cas) == miss == {"ok": False, "error": "cas-mismatch", "value": 1}
    assert kv.read("x") == 0  # the retry did not re-run the cas, which would now succeed


def test_stale_seq_is_rejected_without_applying() -> None:
    kv = KVStore()
    applied(
        kv,
        {"op": "write", "key": "x", "value": 1, "client": "c", "seq": 1},
        {"op": "write", "key": "x", "value": 2, "client": "c", "seq": 5},
    )
    res = kv.apply(3, {"op": "write", "key": "x", "value": 3, "client": "c", "seq": 4})
    assert res == {"ok": False, "error": "stale-seq"}
    assert kv.read("x") == 2
    # the session still remembers seq 5
    assert kv.apply(4, {"op": "write", "key": "x", "value": 4, "client": "c", "seq": 5}) == {
        "ok": True
    }
    assert kv.read("x") == 2


def test_sessions_are_per_client() -> None:
    kv = KVStore()
    a = {"op": "txn", "value": [["append", "l", "a"]], "client": "a", "seq": 1}
    b = {"op": "txn", "value": [["append", "l", "b"]], "client": "b", "seq": 1}
    applied(kv, a, b, a, b)
    assert kv.read("l") == ["a", "b"]


def test_session_eviction_lowest_index_and_deterministic() -> None:
    def feed(store: KVStore) -> list[dict[str, Any]]:
        cmds = [
            {"op": "txn", "value": [["append", "l", "a1"]], "client": "a", "seq": 1},
            {"op": "txn", "value": [["append", "l", "b1"]], "client": "b", "seq": 1},
            {"op": "txn", "value": [["append", "l", "a2"]], "client": "a", "seq": 2},
            {"op": "txn", "value": [["append", "l", "c1"]], "client": "c", "seq": 1},  # evicts b
            # b's retry is no longer recognised and applies again; a's retry is deduplicated
            {"op": "txn", "value": [["append", "l", "b1"]], "client": "b", "seq": 1},  # evicts a
            {"op": "txn", "value": [["append", "l", "c1"]], "client": "c", "seq": 1},
        ]
        return applied(store, *cmds)

    s1, s2 = KVStore(max_sessions=2), KVStore(max_sessions=2)
    assert feed(s1) == feed(s2)
    assert s1.digest() == s2.digest()
    assert s1.read("l") == ["a1", "b1", "a2", "c1", "b1"]
    assert sorted(s1.snapshot()["sessions"]) == ["b", "c"]


def test_max_sessions_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        KVStore(max_sessions=0)


# --- bad input to apply ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "cmd",
    [None, [], "write", {}, {"op": "read", "key": "x"}, {"op": "write", "key": 1, "value": 1}],
)
def test_apply_invalid_command_is_bad_command(cmd: Any) -> None:
    kv = KVStore()
    res = kv.apply(1, cmd)
    assert res["ok"] is False
    assert res["error"] == "bad-command"
    assert isinstance(res["reason"], str) and res["reason"]
    assert kv.last_applied == 1
    assert len(kv) == 0


def test_apply_non_increasing_index_is_an_assertion() -> None:
    kv = KVStore()
    kv.apply(5, {"op": "write", "key": "x", "value": 1})
    with pytest.raises(AssertionError):
        kv.apply(5, {"op": "write", "key": "x", "value": 2})
    with pytest.raises(AssertionError):
        kv.apply(4, {"op": "write", "key": "x", "value": 2})
    assert kv.read("x") == 1


# --- validate_command ------------------------------------------------------------------------


def test_validate_normalises_and_copies() -> None:
    value: list[Any] = [1, [2]]
    cmd = {"op": "cas", "key": "k", "value": [None, value], "client": "c", "seq": 3}
    out = validate_command(cmd)
    assert out == cmd
    value[1].append(3)
    assert out["value"] == [None, [1, [2]]]
    assert validate_command({"op": "delete", "key": "k"}) == {"op": "delete", "key": "k"}


@pytest.mark.parametrize(
    ("cmd", "message"),
    [
        (None, "JSON object"),
        (["write", "x", 1], "JSON object"),
        ({}, "op must be"),
        ({"op": "get", "key": "x"}, "op must be"),
        ({"op": 1, "key": "x"}, "op must be"),
        ({"op": "read", "key": "x"}, "ReadIndex"),
        ({"op": "write", "value": 1}, "missing field 'key'"),
        ({"op": "write", "key": "x"}, "missing field 'value'"),
        ({"op": "write", "key": 1, "value": 1}, "key must be a string"),
        ({"op": "write", "key": None, "value": 1}, "key must be a string"),
        ({"op": "write", "key": "x", "value": {1: 2}}, "not a string"),
        ({"op": "write", "key": "x", "value": float("nan")}, "non-finite"),
        ({"op": "write", "key": "x", "value": {1, 2}}, "not a JSON value"),
        ({"op": "write", "key": "x", "value": 1, "vlaue": 2}, "unknown field"),
        ({"op": "delete", "key": "x", "value": 1}, "unknown field"),
        ({"op": "delete"}, "missing field 'key'"),
        ({"op": "cas", "key": "x", "value": 1}, "expected, new"),
        ({"op": "cas", "key": "x", "value": [1]}, "expected, new"),
        ({"op": "cas", "key": "x", "value": [1, 2, 3]}, "expected, new"),
        ({"op": "cas", "key": "x", "value": {"expected": 1}}, "expected, new"),
        ({"op": "txn"}, "missing field 'value'"),
        ({"op": "txn", "value": []}, "1..1000"),
        ({"op": "txn", "value": [["r", "x", None]] * 1001}, "1..1000"),
        ({"op": "txn", "value": "r x"}, "1..1000"),
        ({"op": "txn", "value": [["r", "x"]]}, "micro-op 0"),
        ({"op": "txn", "value": [["w", "x", 1], "r"]}, "micro-op 1"),
        ({"op": "txn", "value": [["del", "x", None]]}, "f must be"),
        ({"op": "txn", "value": [["r", 1, None]]}, "key must be a string"),
        ({"op": "txn", "value": [["r", "x", 5]]}, "read carries null"),
        ({"op": "txn", "value": [["w", "x", float("inf")]]}, "non-finite"),
        ({"op": "txn", "key": "x", "value": [["r", "x", None]]}, "unknown field"),
        ({"op": "write", "key": "x", "value": 1, "seq": 1}, "together"),
        ({"op": "write", "key": "x", "value": 1, "client": "c"}, "together"),
        ({"op": "write", "key": "x", "value": 1, "client": 7, "seq": 1}, "client must be"),
        ({"op": "write", "key": "x", "value": 1, "client": "c" * 129, "seq": 1}, "client"),
        ({"op": "write", "key": "x", "value": 1, "client": "c", "seq": 0}, "seq must be"),
        ({"op": "write", "key": "x", "value": 1, "client": "c", "seq": "1"}, "seq must be"),
        ({"op": "write", "key": "x", "value": 1, "client": "c", "seq": True}, "seq must be"),
        ({"op": "write", "key": "x", "value": 1, "client": "c", "seq": 1.0}, "seq must be"),
    ],
)
def test_validate_rejects_malformed(cmd: Any, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        validate_command(cmd)


def test_validate_rejects_too_deep_values() -> None:
    deep: Any = 0
    for _ in range(MAX_DEPTH):
        deep = [deep]
    with pytest.raises(CommandError, match="deeper"):
        validate_command({"op": "write", "key": "x", "value": deep})
    validate_command({"op": "write", "key": "x", "value": deep[0]})


def test_client_of_128_chars_is_fine() -> None:
    cmd = {"op": "delete", "key": "x", "client": "c" * 128, "seq": 1}
    assert validate_command(cmd) == cmd


# --- snapshot / restore ----------------------------------------------------------------------


def _busy_store() -> KVStore:
    kv = KVStore()
    applied(
        kv,
        {"op": "write", "key": "x", "value": {"n": 1}, "client": "a", "seq": 1},
        {"op": "txn", "value": [["append", "l", 1], ["r", "x", None]], "client": "b", "seq": 1},
        {"op": "cas", "key": "x", "value": [0, 1], "client": "a", "seq": 2},
        {"op": "write", "key": "y", "value": None},
    )
    return kv


def test_snapshot_is_json_and_independent() -> None:
    kv = _busy_store()
    image = kv.snapshot()
    assert json.loads(json.dumps(image)) == image
    assert image["last_applied"] == 4
    assert image["sessions"]["a"]["seq"] == 2
    frozen = json.dumps(image, sort_keys=True)
    applied(kv, {"op": "txn", "value": [["append", "l", 2]], "client": "b", "seq": 2})
    assert json.dumps(image, sort_keys=True) == frozen


def test_snapshot_restore_round_trip() -> None:
    kv = _busy_store()
    image = json.loads(json.dumps(kv.snapshot()))
    copy = KVStore.restore(image)
    assert copy.digest() == kv.digest()
    assert copy.last_applied == kv.last_applied == 4
    assert len(copy) == len(kv) == 3
    more: list[dict[str, Any]] = [
        {"op": "txn", "value": [["append", "l", 1], ["r", "x", None]], "client": "b", "seq": 1},
        {"op": "txn", "value": [["append", "l", 2], ["r", "l", None]], "client": "b", "seq": 2},
        {"op": "cas", "key": "x", "value": [{"n": 1}, 2], "client": "a", "seq": 1},
        {"op": "delete", "key": "y"},
    ]
    assert applied(copy, *more) == applied(kv, *more)
    assert copy.digest() == kv.digest()
    assert copy.read("l") == [1, 2]
    image["data"]["l"].append(99)  # the restored store does not alias the image
    assert copy.read("l") == [1, 2]


def test_restore_keeps_eviction_order() -> None:
    kv = KVStore(max_sessions=3)
    for i, c in enumerate(["a", "b", "c", "a"], start=1):
        kv.apply(i, {"op": "delete", "key": "x", "client": c, "seq": i})
    other = KVStore.restore(kv.snapshot(), max_sessions=3)
    nxt = {"op": "delete", "key": "x", "client": "d", "seq": 1}
    kv.apply(5, nxt)
    other.apply(5, nxt)
    expected = ["a", "c", "d"]  # b had the lowest index
    assert sorted(kv.snapshot()["sessions"]) == sorted(other.snapshot()["sessions"]) == expected
    assert KVStore.restore(kv.snapshot(), max_sessions=1).snapshot()["sessions"].keys() == {"d"}


def _good_image() -> dict[str, Any]:
    return {
        "data": {"x": 1},
        "sessions": {"c": {"seq": 1, "index": 2, "result": {"ok": True}}},
        "last_applied": 3,
    }


def _with(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    image = _good_image()
    target: Any = image
    for p in path[:-1]:
        target = target[p]
    target[path[-1]] = value
    return image


@pytest.mark.parametrize(
    "image",
    [
        None,
        "snapshot",
        [],
        {},
        {"data": {}, "sessions": {}},
        {**_good_image(), "extra": 1},
        _with(("last_applied",), -1),
        _with(("last_applied",), "3"),
        _with(("last_applied",), True),
        _with(("data",), []),
        _with(("data", "x"), float("nan")),
        _with(("data", "x"), object()),
        _with(("sessions",), []),
        _with(("sessions", "c"), 5),
        _with(("sessions", "c", "seq"), 0),
        _with(("sessions", "c", "index"), 4),  # after last_applied
        _with(("sessions", "c", "index"), None),
        _with(("sessions", "c", "result"), "ok"),
        _with(("sessions", "c", "result"), {"v": {1, 2}}),
        _with(("sessions", "d"), {"seq": 1, "index": 2, "result": {}}),  # index shared with c
        _with(("sessions", "c" * 129), {"seq": 1, "index": 1, "result": {}}),
    ],
)
def test_restore_rejects_garbage(image: Any) -> None:
    with pytest.raises(ValueError, match="snapshot image"):
        KVStore.restore(image)


def test_restore_good_image() -> None:
    kv = KVStore.restore(_good_image())
    assert kv.read("x") == 1
    assert kv.last_applied == 3
    assert kv.apply(4, {"op": "delete", "key": "x", "client": "c", "seq": 1}) == {"ok": True}
    assert kv.read("x") == 1  # deduplicated by the restored session


def test_deepest_values_survive_snapshot_restore() -> None:
    deep: Any = 0
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    kv = KVStore()
    res = applied(
        kv,
        {"op": "write", "key": "x", "value": [deep]},
        {"op": "txn", "value": [["append", "x", deep], ["r", "x", None]], "client": "c", "seq": 1},
    )
    assert res[1]["ok"] is True
    assert KVStore.restore(json.loads(json.dumps(kv.snapshot()))).digest() == kv.digest()


# --- properties ------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=4)
    ),
    max_leaves=12,
)
anything = st.recursive(
    json_values | st.floats() | st.sets(st.integers(), max_size=2),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=3) | st.integers(), children, max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=12,
)
field_names = st.sampled_from(["op", "key", "value", "client", "seq", "other"])
op_names = st.sampled_from(["write", "cas", "delete", "txn", "read", "r", ""])
arbitrary_cmds = st.dictionaries(
    field_names | st.text(max_size=4), anything | op_names, max_size=6
) | st.fixed_dictionaries(
    {"op": op_names},
    optional={
        "key": st.text(max_size=2) | anything,
        "value": anything | st.lists(st.lists(anything | op_names, max_size=3), max_size=3),
        "client": st.text(max_size=2) | anything,
        "seq": st.integers(-2, 3) | anything,
    },
)


keys = st.sampled_from(["a", "b", "c"])
small_values = (
    st.integers(0, 3) | st.none() | st.booleans() | st.lists(st.integers(0, 3), max_size=2)
)
micro_ops = st.one_of(
    st.tuples(st.just("r"), keys, st.none()),
    st.tuples(st.just("w"), keys, small_values),
    st.tuples(st.just("append"), keys, small_values),
).map(list)
plain_cmds = st.one_of(
    st.fixed_dictionaries({"op": st.just("write"), "key": keys, "value": small_values}),
    st.fixed_dictionaries(
        {"op": st.just("cas"), "key": keys, "value": st.lists(small_values, min_size=2, max_size=2)}
    ),
    st.fixed_dictionaries({"op": st.just("delete"), "key": keys}),
    st.fixed_dictionaries({"op": st.just("txn"), "value": st.lists(micro_ops, min_size=1)}),
)


@st.composite
def valid_cmds(draw: st.DrawFn) -> dict[str, Any]:
    cmd: dict[str, Any] = draw(plain_cmds)
    if draw(st.booleans()):
        cmd["client"] = draw(st.sampled_from(["p", "q", "r", "s"]))
        cmd["seq"] = draw(st.integers(1, 4))
    return validate_command(cmd)


mutated_cmds = st.builds(lambda c, f, v: {**c, f: v}, valid_cmds(), field_names, anything)


@settings(max_examples=300)
@given(st.lists(arbitrary_cmds | anything | valid_cmds() | mutated_cmds, max_size=10))
def test_apply_never_raises_on_arbitrary_input(cmds: list[Any]) -> None:
    kv = KVStore(max_sessions=2)
    for i, cmd in enumerate(cmds, start=1):
        res = kv.apply(i, cmd)
        assert isinstance(res, dict)
        assert isinstance(res["ok"], bool)
        json.dumps(res, allow_nan=False)
    kv.digest()
    assert KVStore.restore(kv.snapshot(), max_sessions=2).digest() == kv.digest()


@settings(max_examples=200)
@given(st.lists(valid_cmds(), max_size=30), st.integers(0, 30))
def test_replicas_agree(cmds: list[dict[str, Any]], cut: int) -> None:
    pristine = json.dumps(cmds)
    a, b = KVStore(max_sessions=2), KVStore(max_sessions=2)
    # each replica decodes its own copy of the log, as after a trip over the network
    res_a = [a.apply(i, c) for i, c in enumerate(cmds, start=1)]
    log_b = json.loads(pristine)
    res_b = [b.apply(i, c) for i, c in enumerate(log_b[:cut], start=1)]
    b = KVStore.restore(json.loads(json.dumps(b.snapshot())), max_sessions=2)  # lagging replica
    res_b += [b.apply(i, c) for i, c in enumerate(log_b[cut:], start=min(cut, len(cmds)) + 1)]
    assert res_a == res_b
    assert a.digest() == b.digest()
    assert a.snapshot() == b.snapshot()
    assert json.dumps(cmds) == json.dumps(log_b) == pristine  # applying did not mutate the log


def test_txn_add_increments_a_number_and_returns_the_new_total() -> None:
    kv = KVStore()
    r1 = kv.apply(1, validate_command({"op": "txn", "value": [["add", "c", 5]]}))
    r2 = kv.apply(2, validate_command({"op": "txn", "value": [["add", "c", -2], ["r", "c", None]]}))
    assert r1 == {"ok": True, "value": [["add", "c", 5]]}
    assert r2 == {"ok": True, "value": [["add", "c", 3], ["r", "c", 3]]}
    assert kv.read("c") == 3


def test_txn_add_to_a_non_number_aborts_the_whole_txn() -> None:
    kv = KVStore()
    kv.apply(1, validate_command({"op": "write", "key": "s", "value": "text"}))
    r = kv.apply(2, validate_command({"op": "txn", "value": [["w", "a", 1], ["add", "s", 1]]}))
    assert r["ok"] is False and r["error"] == "txn-aborted"
    assert kv.read("a") is None and kv.read("s") == "text"


def test_txn_cas_micro_ops_make_a_transfer_atomic() -> None:
    kv = KVStore()
    kv.apply(1, validate_command({"op": "txn", "value": [["w", "a", 10], ["w", "b", 0]]}))
    ok = kv.apply(2, validate_command(
        {"op": "txn", "value": [["cas", "a", [10, 7]], ["cas", "b", [0, 3]]]}))
    stale = kv.apply(3, validate_command(
        {"op": "txn", "value": [["cas", "a", [10, 5]], ["cas", "b", [3, 8]]]}))
    assert ok["ok"] is True
    assert stale["ok"] is False and stale["error"] == "txn-aborted"
    assert (kv.read("a"), kv.read("b")) == (7, 3)


@pytest.mark.parametrize("micro", [["add", "k", "1"], ["add", "k", True], ["cas", "k", 1],
                                   ["cas", "k", [1]]])
def test_validate_rejects_malformed_add_and_cas_micro_ops(micro: list[object]) -> None:
    with pytest.raises(CommandError):
        validate_command({"op": "txn", "value": [micro]})
