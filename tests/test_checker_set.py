"""The set checker against Jepsen's set-full rules: histories it must reject (a duplicated
element, a lost one, a stale one under ``linearizable: true``), each named with its
element and operations, and histories it must accept (an element added then visible, an
add that may or may not have happened, an add acknowledged after the final read began,
any history of a real growing set)."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.checker import HistoryError, check_history


class Hist:
    """A history under construction: event n has index n and time n * 1000."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def ev(self, process: int, type: str, f: str, value: Any = None) -> Hist:
        n = len(self.events)
        self.events.append({"index": n, "time": n * 1000, "process": process, "type": type,
                            "f": f, "key": None, "value": value})
        return self

    def add(self, p: int, v: Any, type: str = "ok") -> Hist:
        return self.ev(p, "invoke", "add", v).ev(p, type, "add", v)

    def read(self, p: int, elements: list[Any]) -> Hist:
        return self.ev(p, "invoke", "read").ev(p, "ok", "read", elements)


def types(res: Any) -> list[str]:
    return [a["type"] for a in res.anomalies]


def indexes(a: dict[str, Any]) -> list[int]:
    return [o["index"] for o in a["ops"]]


# -- must reject -----------------------------------------------------------------------


def test_an_element_twice_in_one_read_is_duplicated() -> None:
    h = Hist().add(0, 1).add(0, 2).read(1, [1, 2, 1])
    res = check_history(h.events, "set")
    assert res.valid is False and types(res) == ["duplicated"]
    a = res.anomalies[0]
    assert a["element"] == 1 and a["copies"] == 2 and indexes(a) == [4]
    assert a["explanation"] == ("element 1 appears 2 times in one read "
                                "[process 1, index 4..5].")
    assert res.stats["set"]["duplicated"] == 1 and "1 duplicated" in res.reason


def test_duplicates_over_several_reads_are_one_anomaly_per_element() -> None:
    h = Hist().add(0, 1).read(1, [1, 1]).read(1, [1, 1, 1]).read(1, [1])
    res = check_history(h.events, "set")
    assert types(res) == ["duplicated"]
    assert "2 reads hold it more than once, at most 3 times" in res.anomalies[0]["explanation"]


def test_duplicates_are_told_apart_by_json_value() -> None:
    """1 and true and "1" are three elements, not one element three times."""
    h = Hist().add(0, 1).add(0, True).add(0, "1").read(1, [1, True, "1"])
    assert check_history(h.events, "set").valid is True


def test_an_acknowledged_element_missing_from_the_final_read_is_lost() -> None:
    h = Hist().add(0, 1).add(0, 2).read(1, [2])
    res = check_history(h.events, "set")
    assert types(res) == ["lost"]
    a = res.anomalies[0]
    assert a["element"] == 1 and indexes(a) == [0, 4]  # the acknowledged add, the read
    assert "process 1, index 4..5" in a["explanation"]


def test_an_element_seen_then_missing_from_the_final_read_is_lost_with_the_read_that_saw_it(
        ) -> None:
    h = Hist().add(0, 1, "info").read(1, [1]).read(1, [])
    res = check_history(h.events, "set")
    assert types(res) == ["lost"]
    assert indexes(res.anomalies[0]) == [2, 4]  # the read that saw it, the final read
    assert "seen by a read [process 1, index 2..3]" in res.anomalies[0]["explanation"]


def test_set_full_lost_a_read_after_the_ack_misses_it_and_no_later_read_has_it() -> None:
    """The final read began before the add was acknowledged (so it may miss it), but a
    read that began after the acknowledgement misses it too, and nothing later shows it:
    set-full calls it lost."""
    h = Hist().ev(0, "invoke", "add", 1).ev(1, "invoke", "read").ev(0, "ok", "add", 1)
    h.read(2, []).ev(1, "ok", "read", [])
    res = check_history(h.events, "set")
    assert res.valid is False and types(res) == ["lost"]
    a = res.anomalies[0]
    assert a["element"] == 1 and indexes(a) == [0, 3]
    assert "acknowledged [process 0, index 0..2]" in a["explanation"]
    assert "a read [process 2, index 3..4] that began 1 us after that" in a["explanation"]
    assert "no read that began later does" in a["explanation"]


def test_a_stale_element_is_an_anomaly_under_linearizable() -> None:
    h = Hist().add(0, 1).read(1, []).read(1, []).read(1, [1])
    res = check_history(h.events, "set", options={"linearizable": True})
    assert res.valid is False and types(res) == ["stale"]
    a = res.anomalies[0]
    # the add, the first and the last read that missed it, the read that showed it
    assert a["element"] == 1 and indexes(a) == [0, 2, 4, 6]
    assert a["latency"] == 3000  # acknowledged at t=1000, the last miss began at t=4000
    assert a["explanation"] == (
        "element 1 was acknowledged [process 0, index 0..1], but a read [process 1, index "
        "2..3] that began 1 us after that does not contain it; 2 reads missed it, the last "
        "[process 1, index 4..5] beginning 3 us after that; a later read [process 1, index "
        "6..7] does (stale for at least 3 us).")
    assert "1 stale" in res.reason


def test_stale_when_the_final_read_began_before_the_read_that_missed_it() -> None:
    """set-full would call this lost (the last read to begin misses the element); the
    final read, which completed last, holds it: stale, so invalid only if linearizable."""
    h = Hist().add(0, 1).ev(1, "invoke", "read").read(2, []).ev(1, "ok", "read", [1])
    assert check_history(h.events, "set").valid is True
    res = check_history(h.events, "set", options={"linearizable": True})
    assert types(res) == ["stale"] and indexes(res.anomalies[0]) == [0, 3, 2]


# -- must accept -----------------------------------------------------------------------


def test_stale_elements_are_reported_not_rejected_by_default() -> None:
    h = Hist().add(0, 1).read(1, []).read(1, [1])
    res = check_history(h.events, "set")
    assert res.valid is True and res.anomalies == []
    st_ = res.stats["set"]["stale"]
    assert st_["elements"] == 1 and st_["max_latency"] == 1000
    assert st_["worst"][0]["element"] == 1 and st_["worst"][0]["ops"] == [0, 2, 4]
    assert "element 1 was acknowledged" in st_["worst"][0]["explanation"]
    assert "1 stale reads of 1 stale elements" in res.reason


def test_stale_after_sets_how_late_a_read_must_begin_to_count() -> None:
    h = Hist().add(0, 1).read(1, []).read(1, [1])  # the miss began 1000 after the ack
    opts: dict[str, Any] = {"linearizable": True}
    assert check_history(h.events, "set", options={**opts, "stale_after": 1001}).valid is True
    res = check_history(h.events, "set", options={**opts, "stale_after": 1000})
    assert types(res) == ["stale"]
    with pytest.raises(HistoryError, match="stale_after must be a number >= 0"):
        check_history(h.events, "set", options={"stale_after": -1})


def test_an_element_added_then_visible_is_valid_even_if_linearizable() -> None:
    h = Hist().add(0, 1).read(1, [1]).add(0, 2).read(1, [1, 2])
    res = check_history(h.events, "set", options={"linearizable": True})
    assert res.valid is True and res.stats["set"]["stale"]["elements"] == 0


@pytest.mark.parametrize("final", [[], [1]])
def test_an_info_add_may_or_may_not_appear(final: list[int]) -> None:
    h = Hist().add(0, 1, "info").add(1, 2).read(2, [2, *final]).read(2, [2, *final])
    assert check_history(h.events, "set", options={"linearizable": True}).valid is True


def test_a_pending_add_may_appear() -> None:
    h = Hist().ev(0, "invoke", "add", 1).add(1, 2).read(2, [1, 2])
    assert check_history(h.events, "set").valid is True


def test_an_add_acknowledged_after_the_final_read_began_may_be_missing() -> None:
    h = Hist().add(0, 1).ev(0, "invoke", "add", 2).ev(1, "invoke", "read")
    h.ev(0, "ok", "add", 2).ev(1, "ok", "read", [1])
    res = check_history(h.events, "set", options={"linearizable": True})
    assert res.valid is True and res.stats["set"]["unconfirmed"] == 1


def _real_set_history(seed: int, n_ops: int, n_procs: int) -> list[dict[str, Any]]:
    """A linearizable set: each operation takes effect at one random moment inside its
    call (or, for an add that ends ``info``, perhaps never); reads return the state then,
    in a random order."""
    rng = random.Random(seed)
    state: list[int] = []
    events: list[dict[str, Any]] = []
    calls: dict[int, list[Any]] = {}  # process -> [f, value, result or None, done effect]
    started = 0
    next_value = 1

    def emit(p: int, t: str, f: str, v: Any) -> None:
        events.append({"index": len(events), "time": len(events) * 10, "process": p,
                       "type": t, "f": f, "value": v})

    while started < n_ops or calls:
        p = rng.randrange(n_procs)
        call = calls.get(p)
        if call is None:
            if started < n_ops:
                f = rng.choice(("add", "add", "read"))
                v = None
                if f == "add":
                    v, next_value = next_value, next_value + 1
                calls[p] = [f, v, None, False]
                emit(p, "invoke", f, v)
                started += 1
        elif not call[3] and rng.random() < 0.5:
            call[3] = True
            if call[0] == "add":
                state.append(call[1])
            else:
                call[2] = rng.sample(state, len(state))
        else:
            del calls[p]
            f, v, result, done = call
            if f == "add" and rng.random() < 0.2:
                if not done and rng.random() < 0.5:
                    state.append(v)  # took effect after all, invisibly to the client
                emit(p, "info", f, v)
            elif done:
                emit(p, "ok", f, v if f == "add" else result)
            else:
                calls[p] = call  # not yet taken effect: cannot complete
    return events


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_ops=st.integers(1, 60), n_procs=st.integers(1, 5))
def test_a_real_growing_set_is_never_invalid(seed: int, n_ops: int, n_procs: int) -> None:
    events = _real_set_history(seed, n_ops, n_procs)
    res = check_history(events, "set", options={"linearizable": True, "min_ok": 0})
    assert res.valid is not False, res.explain()
