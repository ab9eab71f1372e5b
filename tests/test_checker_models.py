"""The counter, set, bank and list-append checkers, and the stats/too-weak rule: each
anomaly class is rejected with the right type and explanation, correct histories pass."""

from __future__ import annotations

import random
from typing import Any

import pytest

from lab.checker import HistoryError, check_history


class Hist:
    """A history under construction: events get consecutive indexes and times."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def ev(self, process: Any, type: str, f: str, value: Any = None, key: Any = None) -> Hist:
        n = len(self.events)
        self.events.append({"index": n, "time": n * 1000, "process": process, "type": type,
                            "f": f, "key": key, "value": value})
        return self

    def invoke(self, p: Any, f: str, value: Any = None) -> Hist:
        return self.ev(p, "invoke", f, value)

    def done(self, p: Any, type: str, f: str, value: Any = None) -> Hist:
        return self.ev(p, type, f, value)

    def op(self, p: Any, f: str, value: Any = None, result: Any = ...) -> Hist:
        self.invoke(p, f, None if f == "read" else value)
        return self.done(p, "ok", f, value if result is ... else result)


def types(res: Any) -> list[str]:
    return [a["type"] for a in res.anomalies]


# -- counter ---------------------------------------------------------------------------


def test_counter_reads_within_bounds_are_valid() -> None:
    h = (Hist().op(0, "add", 1).invoke(0, "add", 2).invoke(1, "read")
         .done(1, "ok", "read", 3).done(0, "ok", "add", 2).op(1, "read", 3))
    assert check_history(h.events, "counter").valid is True


def test_counter_read_above_everything_attempted_is_rejected() -> None:
    h = Hist().op(0, "add", 1).op(0, "add", 1).op(1, "read", 5)
    res = check_history(h.events, "counter")
    assert res.valid is False and types(res) == ["counter-read"]
    a = res.anomalies[0]
    assert a["bounds"] == [2, 2] and a["ops"][0]["index"] == 4
    assert "read -> 5" in a["explanation"] and "outside [2, 2]" in a["explanation"]


def test_counter_read_missing_an_acknowledged_increment_is_rejected() -> None:
    h = Hist().op(0, "add", 3).op(1, "read", 0)
    res = check_history(h.events, "counter")
    assert types(res) == ["counter-read"] and res.anomalies[0]["bounds"] == [3, 3]


def test_counter_failed_add_never_counts_and_info_add_may() -> None:
    h = Hist().invoke(0, "add", 5).done(0, "fail", "add", 5).op(1, "read", 5)
    assert check_history(h.events, "counter").valid is False
    h = Hist().invoke(0, "add", 5).done(0, "info", "add", 5).op(1, "read", 5).op(1, "read", 0)
    res = check_history(h.events, "counter")
    assert res.valid is True, res.explain()  # a counter may not go back... but bounds allow it


def test_counter_negative_increments_keep_separate_bounds() -> None:
    h = (Hist().op(0, "add", 10).invoke(0, "add", -4).invoke(1, "add", 3)
         .invoke(2, "read").done(2, "ok", "read", 6).done(0, "ok", "add", -4)
         .done(1, "ok", "add", 3).op(2, "read", 9))
    res = check_history(h.events, "counter")
    assert res.valid is True, res.explain()
    h.op(2, "read", 13)
    res = check_history(h.events, "counter")
    assert types(res) == ["counter-read"] and res.anomalies[0]["bounds"] == [9, 9]
    # while concurrent: anything from 10 - 4 to 10 + 3
    h = (Hist().op(0, "add", 10).invoke(0, "add", -4).invoke(1, "add", 3)
         .invoke(2, "read").done(2, "ok", "read", 14))
    res = check_history(h.events, "counter")
    assert res.anomalies[0]["bounds"] == [6, 13]


def test_counter_uses_the_initial_value() -> None:
    h = Hist().op(0, "add", 1).op(0, "read", 11)
    assert check_history(h.events, "counter", initial=10).valid is True
    assert check_history(h.events, "counter").valid is False


# -- set -------------------------------------------------------------------------------


def test_set_with_every_add_in_the_final_read_is_valid() -> None:
    h = Hist().op(0, "add", 1).op(1, "add", 2).op(0, "read", [1, 2])
    res = check_history(h.events, "set")
    assert res.valid is True
    assert res.stats["set"]["final_read_size"] == 2


def test_set_lost_element() -> None:
    h = Hist().op(0, "add", 1).op(1, "add", 2).op(0, "read", [2])
    res = check_history(h.events, "set")
    assert types(res) == ["lost"]
    assert "element 1 is missing from the final read" in res.anomalies[0]["explanation"]
    assert res.anomalies[0]["element"] == 1


def test_set_unexpected_elements() -> None:
    h = Hist().op(0, "add", 1).op(0, "read", [1, 9])
    res = check_history(h.events, "set")
    assert types(res) == ["unexpected"]
    assert "no add of it was ever attempted" in res.anomalies[0]["explanation"]
    h = Hist().invoke(0, "add", 3).done(0, "fail", "add", 3).op(1, "read", [3])
    res = check_history(h.events, "set")
    assert types(res) == ["unexpected"] and "failed" in res.anomalies[0]["explanation"]


def test_set_element_that_vanished_and_came_back() -> None:
    h = (Hist().invoke(0, "add", 1).done(0, "info", "add", 1).op(1, "read", [1])
         .op(1, "read", []).op(1, "read", [1]))
    res = check_history(h.events, "set")
    assert types(res) == ["vanished"]
    assert "reappeared later" in res.anomalies[0]["explanation"]


def test_set_late_visibility_is_measured_not_rejected_by_default() -> None:
    h = (Hist().op(0, "add", 1).op(1, "read", []).op(1, "read", [1]))
    res = check_history(h.events, "set")
    assert res.valid is True
    st = res.stats["set"]
    assert st["stale_reads"] == 1
    assert st["late_visibility"]["max"] == 4000  # add ok at t=1000, seen at t=5000
    res = check_history(h.events, "set", options={"linearizable": True})
    assert types(res) == ["stale"]


def test_set_info_add_may_be_in_the_final_read() -> None:
    h = Hist().invoke(0, "add", 1).done(0, "info", "add", 1).op(1, "add", 2).op(1, "read", [1, 2])
    assert check_history(h.events, "set").valid is True


def test_set_add_concurrent_with_the_final_read_is_not_lost() -> None:
    h = Hist().invoke(0, "add", 1).invoke(1, "read").done(0, "ok", "add", 1)
    h.done(1, "ok", "read", [])
    res = check_history(h.events, "set")
    assert res.valid is True and res.stats["set"]["unconfirmed"] == 1


def test_set_without_an_ok_read_is_unknown() -> None:
    h = Hist().op(0, "add", 1).invoke(1, "read").done(1, "info", "read")
    res = check_history(h.events, "set")
    assert res.valid is None and "no acknowledged (ok) read" in res.reason


# -- bank ------------------------------------------------------------------------------


def bank_history(*reads: dict[str, Any]) -> list[dict[str, Any]]:
    h = Hist().op(0, "transfer", {"from": "a", "to": "b", "amount": 5})
    for r in reads:
        h.op(1, "read", r)
    return h.events


def test_bank_reads_that_sum_to_the_total_are_valid() -> None:
    ev = bank_history({"a": 5, "b": 15})
    assert check_history(ev, "bank", options={"total": 20}).valid is True
    assert check_history(ev, "bank", initial=20).valid is True
    assert check_history(ev, "bank", initial={"a": 10, "b": 10}).valid is True


def test_bank_wrong_total() -> None:
    res = check_history(bank_history({"a": 5, "b": 10}), "bank", initial=20)
    assert types(res) == ["wrong-total"]
    assert "sums to 15, but the bank holds 20" in res.anomalies[0]["explanation"]


def test_bank_negative_balance() -> None:
    ev = bank_history({"a": -5, "b": 25})
    res = check_history(ev, "bank", initial=20)
    assert types(res) == ["negative-balance"] and res.anomalies[0]["accounts"] == ["a"]
    assert check_history(ev, "bank", options={"total": 20, "negative_ok": True}).valid is True


def test_bank_wrong_accounts() -> None:
    res = check_history(bank_history({"a": 20}), "bank", initial={"a": 10, "b": 10})
    assert types(res) == ["wrong-accounts"] and res.anomalies[0]["missing"] == ["b"]


def test_bank_without_a_total_is_unknown() -> None:
    res = check_history(bank_history({"a": 5, "b": 15}), "bank")
    assert res.valid is None and "total is unknown" in res.reason


def test_bank_rejects_a_malformed_read() -> None:
    with pytest.raises(HistoryError, match="read must return"):
        check_history(bank_history([1, 2]), "bank", initial=3)  # type: ignore[arg-type]


# -- list-append -----------------------------------------------------------------------


class Txns:
    """Transactions; ``start`` invokes, ``end`` completes (with the reads filled in)."""

    def __init__(self) -> None:
        self.h = Hist()

    def start(self, p: int, *mops: list[Any]) -> Txns:
        self.h.invoke(p, "txn", [[m[0], m[1], None if m[0] == "r" else m[2]] for m in mops])
        return self

    def end(self, p: int, *mops: list[Any], type: str = "ok") -> Txns:
        self.h.done(p, type, "txn", [list(m) for m in mops])
        return self

    def txn(self, p: int, *mops: list[Any], type: str = "ok") -> Txns:
        return self.start(p, *mops).end(p, *mops, type=type)

    def check(self, **options: Any) -> Any:
        return check_history(self.h.events, "list-append", options=options)


def test_list_append_serial_history_is_valid() -> None:
    t = (Txns().txn(0, ["append", "x", 1], ["r", "y", []])
         .txn(1, ["append", "y", 1], ["r", "x", [1]])
         .txn(0, ["r", "x", [1]], ["r", "y", [1]], ["append", "x", 2]))
    res = t.check()
    assert res.valid is True, res.explain()
    assert res.stats["list_append"]["edges"]["wr"] >= 2


def test_g0_write_cycle() -> None:
    t = (Txns().start(0, ["append", "x", 1], ["append", "y", 1])
         .start(1, ["append", "x", 2], ["append", "y", 2])
         .end(0, ["append", "x", 1], ["append", "y", 1])
         .end(1, ["append", "x", 2], ["append", "y", 2])
         .txn(2, ["r", "x", [1, 2]], ["r", "y", [2, 1]]))
    res = t.check()
    assert types(res) == ["G0"]
    e = res.anomalies[0]["explanation"]
    assert "T1 appended 1 to key x; T2 appended 2 to x right after it" in e
    assert "(ww)" in e and "so T1 < T2 < T1" in e
    assert [s["edge"] for s in res.anomalies[0]["steps"]] == ["ww", "ww"]


def test_g1a_aborted_read() -> None:
    t = Txns().txn(0, ["append", "x", 1], type="fail").txn(1, ["r", "x", [1]])
    res = t.check()
    assert types(res) == ["G1a"]
    assert "which failed: an aborted read" in res.anomalies[0]["explanation"]
    assert {o["index"] for o in res.anomalies[0]["ops"]} == {0, 2}


def test_g1b_intermediate_read() -> None:
    t = Txns().txn(0, ["append", "x", 1], ["append", "x", 2]).txn(1, ["r", "x", [1]])
    res = t.check()
    assert "G1b" in types(res)
    assert "intermediate read" in res.anomalies[types(res).index("G1b")]["explanation"]


def test_g1c_circular_information_flow() -> None:
    t = (Txns().start(0, ["append", "x", 1], ["r", "y"])
         .start(1, ["append", "y", 1], ["r", "x"])
         .end(0, ["append", "x", 1], ["r", "y", [1]])
         .end(1, ["append", "y", 1], ["r", "x", [1]]))
    res = t.check()
    assert types(res) == ["G1c"]
    e = res.anomalies[0]["explanation"]
    assert "read y = [1] and so saw T" in e and "(wr)" in e


def test_g_single_read_skew() -> None:
    t = (Txns().start(0, ["append", "x", 1], ["append", "y", 1])
         .start(1, ["r", "x"], ["r", "y"])
         .end(0, ["append", "x", 1], ["append", "y", 1])
         .end(1, ["r", "x", []], ["r", "y", [1]])
         .txn(2, ["r", "x", [1]]))
    res = t.check()
    assert types(res) == ["G-single"]
    e = res.anomalies[0]["explanation"]
    assert "T1 appended 1 to key y; T2 read y = [1] and so saw T1 (wr)" in e
    assert "T1 appended 1 to key x; T2 read x = [] so did not see T1 (rw)" in e
    assert "so T1 < T2 < T1." in e


def test_g2_write_skew() -> None:
    t = (Txns().start(0, ["r", "x"], ["append", "y", 1])
         .start(1, ["r", "y"], ["append", "x", 1])
         .end(0, ["r", "x", []], ["append", "y", 1])
         .end(1, ["r", "y", []], ["append", "x", 1])
         .txn(2, ["r", "x", [1]], ["r", "y", [1]]))
    res = t.check()
    assert types(res) == ["G2"]
    assert [s["edge"] for s in res.anomalies[0]["steps"]] == ["rw", "rw"]


def test_realtime_cycle_is_named_as_such_and_can_be_turned_off() -> None:
    t = (Txns().txn(0, ["append", "x", 1]).txn(1, ["r", "x", []]).txn(2, ["r", "x", [1]]))
    res = t.check()
    assert types(res) == ["G-single-realtime"]
    assert "before T" in res.anomalies[0]["explanation"]
    assert "(realtime)" in res.anomalies[0]["explanation"]
    assert t.check(realtime=False, process=False).valid is True


def test_process_order_cycle() -> None:
    t = (Txns().txn(0, ["append", "x", 1]).txn(0, ["r", "x", []]).txn(2, ["r", "x", [1]]))
    res = t.check(realtime=False)
    assert types(res) == ["G-single-process"]


def test_duplicate_garbage_internal_and_incompatible_reads() -> None:
    t = Txns().txn(0, ["append", "x", 1]).txn(1, ["r", "x", [1, 1]])
    assert types(t.check()) == ["duplicate-elements"]
    t = Txns().txn(0, ["append", "x", 1]).txn(1, ["r", "x", [1, 7]])
    res = t.check()
    assert types(res) == ["garbage-read"] and res.anomalies[0]["element"] == 7
    t = Txns().txn(0, ["append", "x", 1], ["r", "x", []])
    assert types(t.check()) == ["internal"]
    t = (Txns().txn(0, ["append", "x", 1]).start(1, ["append", "x", 2])
         .txn(2, ["r", "x", [1, 2]]).txn(3, ["r", "x", [2, 1]]).end(1, ["append", "x", 2]))
    res = t.check()
    assert "incompatible-order" in types(res)


def test_list_append_random_serial_histories_are_valid() -> None:
    rng = random.Random(3)
    state: dict[str, list[int]] = {}
    t = Txns()
    n = 0
    for _ in range(300):
        mops: list[list[Any]] = []
        for _ in range(rng.randrange(1, 4)):
            k = rng.choice("abcd")
            if rng.random() < 0.5:
                n += 1
                state.setdefault(k, []).append(n)
                mops.append(["append", k, n])
            else:
                mops.append(["r", k, list(state.get(k, []))])
        t.txn(rng.randrange(4), *mops)
    res = t.check()
    assert res.valid is True, res.explain()


# -- stats and the too-weak rule ------------------------------------------------------------


def test_stats_model_counts_by_type_and_function() -> None:
    h = (Hist().op(0, "write", 1).invoke(1, "read").done(1, "fail", "read")
         .invoke(2, "write", 2).done(2, "info", "write", 2).invoke(3, "read"))
    res = check_history(h.events, "stats")
    assert res.valid is True
    s = res.stats
    assert s["by_type"] == {"ok": 1, "fail": 1, "info": 1, "pending": 1}
    assert s["by_f"]["read"] == {"ok": 0, "fail": 1, "info": 0, "pending": 1}
    assert s["ops"] == 4 and s["processes"] == 4


def test_history_without_ok_operations_is_unknown_for_every_model() -> None:
    h = Hist().invoke(0, "write", 1).done(0, "fail", "write", 1)
    for model in ("cas-register", "stats"):
        res = check_history(h.events, model)
        assert res.valid is None and "acknowledged" in res.reason
    assert check_history([], "set").valid is None


def test_min_ok_option_raises_the_bar() -> None:
    h = Hist().op(0, "write", 1).op(0, "read", 1)
    assert check_history(h.events, "register").valid is True
    res = check_history(h.events, "register", options={"min_ok": 3})
    assert res.valid is None and "fewer than the 3" in res.reason


def test_every_result_carries_the_stats() -> None:
    h = Hist().op(0, "add", 1).op(0, "read", 1)
    res = check_history(h.events, "counter")
    assert res.stats["by_type"]["ok"] == 2 and res.stats["counter"]["reads"] == 1
    assert res.to_json()["stats"]["ops"] == 2
