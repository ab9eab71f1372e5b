"""The cas-register linearizability checker: simulated correct registers are accepted,
small histories agree with a brute-force checker, hand-built anomalies are rejected with
the right explanation, and a time limit yields unknown, never a guess."""

from __future__ import annotations

import itertools
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lab.checker import check_history

# -- building histories ---------------------------------------------------------------


class Hist:
    """A history under construction: events get consecutive indexes and times."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def ev(self, process: Any, type: str, f: str, value: Any = None, key: Any = None,
           **extra: Any) -> Hist:
        n = len(self.events)
        self.events.append({"index": n, "time": n * 1000, "process": process, "type": type,
                            "f": f, "key": key, "value": value, **extra})
        return self

    def invoke(self, p: Any, f: str, value: Any = None, key: Any = None) -> Hist:
        return self.ev(p, "invoke", f, value, key)

    def ok(self, p: Any, f: str, value: Any = None, key: Any = None) -> Hist:
        return self.ev(p, "ok", f, value, key)

    def fail(self, p: Any, f: str, value: Any = None, key: Any = None) -> Hist:
        return self.ev(p, "fail", f, value, key)

    def info(self, p: Any, f: str, value: Any = None, key: Any = None) -> Hist:
        return self.ev(p, "info", f, value, key)

    def op(self, p: Any, f: str, value: Any = None, result: Any = ..., key: Any = None) -> Hist:
        """A whole sequential operation: invoke then ok (``result`` for reads)."""
        self.invoke(p, f, None if f == "read" else value, key)
        return self.ok(p, f, value if result is ... else result, key)


def check(h: Hist, **kw: Any) -> Any:
    return check_history(h.events, kw.pop("model", "cas-register"), **kw)


# -- a simulated correct register -----------------------------------------------------


def simulate(rng: random.Random, n_ops: int, n_procs: int, keys: list[Any],
             p_info: float = 0.1, values: int = 4) -> list[dict[str, Any]]:
    """Concurrent clients against an atomic register per key. Each op takes effect at a
    random moment between its invoke and completion (or not at all, for fail; maybe,
    and possibly after its info completion, for info), so the history is linearizable."""
    h = Hist()
    state: dict[Any, Any] = {k: None for k in keys}
    # process -> [f, key, value, phase, result]; phase 0 = not applied, 1 = applied
    open_: dict[int, list[Any]] = {}
    zombies: list[tuple[str, Any, Any]] = []  # info ops that may still take effect
    next_proc = n_procs
    procs = list(range(n_procs))
    started = 0

    def apply(f: str, k: Any, v: Any) -> tuple[bool, Any]:
        if f == "read":
            return True, state[k]
        if f == "write":
            state[k] = v
            return True, v
        if state[k] == v[0]:
            state[k] = v[1]
            return True, v
        return False, v

    while started < n_ops or open_:
        r = rng.random()
        idle = [p for p in procs if p not in open_]
        if zombies and r < 0.05:
            zf, zk, zv = zombies.pop(rng.randrange(len(zombies)))
            if rng.random() < 0.5:
                apply(zf, zk, zv)
            continue
        if idle and started < n_ops and r < 0.4:
            p = rng.choice(idle)
            k = rng.choice(keys)
            f = rng.choice(["read", "write", "cas"])
            v: Any = (None if f == "read" else rng.randrange(values) if f == "write"
                      else [rng.randrange(values), rng.randrange(values)])
            open_[p] = [f, k, v, 0, None]
            h.invoke(p, f, v, k)
            started += 1
            continue
        if not open_:
            continue
        p = rng.choice(list(open_))
        f, k, v, phase, res = open_[p]
        if phase == 0 and rng.random() < 0.6:
            took, res = apply(f, k, v)
            open_[p] = [f, k, v, 1 if took else 2, res]
            continue
        del open_[p]
        if rng.random() < p_info:
            h.info(p, f, v if f != "read" else None, k)
            if phase == 0 and f != "read":
                zombies.append((f, k, v))
            procs[procs.index(p)] = next_proc  # a crashed process never comes back
            next_proc += 1
        elif phase == 1:
            h.ok(p, f, res, k)
        else:  # never applied, or a cas whose compare failed: certainly no effect
            h.fail(p, f, v if f != "read" else None, k)
    return h.events


def test_simulated_correct_registers_are_accepted() -> None:
    rng = random.Random(7)
    for _ in range(150):
        events = simulate(rng, rng.randrange(5, 60), rng.randrange(1, 7),
                          rng.choice([[None], ["a", "b"], [1, 2, 3]]))
        res = check_history(events, "cas-register", options={"min_ok": 0})
        assert res.valid is True, res.explain()


def test_simulated_crash_heavy_histories_are_accepted() -> None:
    rng = random.Random(11)
    for _ in range(60):
        events = simulate(rng, rng.randrange(10, 80), 5, ["x"], p_info=0.35, values=3)
        res = check_history(events, "register", options={"min_ok": 0})
        assert res.valid is True, res.explain()


# -- brute force ----------------------------------------------------------------------


def brute_force(events: list[dict[str, Any]], initial: Any = None, kv: bool = False) -> bool:
    """Enumerate every order consistent with real time (info/pending ops optional).
    ``kv``: the kv-put-append model (put/append/read on a string) instead of cas."""
    ops: list[dict[str, Any]] = []
    open_: dict[Any, dict[str, Any]] = {}
    for pos, e in enumerate(events):
        if e["type"] == "invoke":
            op = {"f": e["f"], "value": e["value"], "start": pos, "end": None, "type": "info"}
            open_[e["process"]] = op
            ops.append(op)
        else:
            op = open_.pop(e["process"])
            op["type"] = e["type"]
            if e["type"] in ("ok", "fail"):
                op["end"] = pos
            if e["type"] == "ok":
                op["value"] = e["value"]
    ops = [o for o in ops if o["type"] != "fail" and not (o["f"] == "read" and o["type"] != "ok")]
    n = len(ops)
    must = {i for i, o in enumerate(ops) if o["type"] == "ok"}

    def step(s: Any, o: dict[str, Any]) -> tuple[bool, Any]:
        if o["f"] == "read":
            return o["value"] == s, s
        if o["f"] == "append":
            return True, s + o["value"]
        if o["f"] in ("write", "put"):
            return True, o["value"]
        return (True, o["value"][1]) if s == o["value"][0] else (False, s)

    def search(done: frozenset[int], s: Any) -> bool:
        if must <= done:
            return True
        for i in range(n):
            if i in done:
                continue
            # i can go next only if no unplaced ok op completed before i was invoked
            if any(j not in done and ops[j]["end"] is not None
                   and ops[j]["end"] < ops[i]["start"] for j in range(n)):
                continue
            good, s2 = step(s, ops[i])
            if good and search(done | {i}, s2):
                return True
        return False

    return search(frozenset(), "" if kv else initial)


@st.composite
def small_histories(draw: Any) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 7))
    spans = []
    for i in range(n):
        f = draw(st.sampled_from(["read", "write", "cas"]))
        value: Any = (draw(st.integers(0, 2)) if f != "cas"
                      else [draw(st.integers(0, 2)), draw(st.integers(0, 2))])
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "info", "fail", "pending"]))
        start = draw(st.integers(0, 10))
        end = start + draw(st.integers(0, 6))
        spans.append((i, f, value, outcome, start, end))
    timeline = []
    for i, _f, _value, outcome, start, end in spans:
        timeline.append((start, 0, i))
        if outcome != "pending":
            timeline.append((end, 1, i))
    timeline.sort()
    h = Hist()
    for _, kind, i in timeline:
        _, f, value, outcome, _, _ = spans[i]
        if kind == 0:
            h.invoke(i, f, None if f == "read" else value)
        else:
            h.ev(i, outcome, f, value if f != "read" or outcome == "ok" else None)
    return h.events


@settings(max_examples=400, deadline=None)
@given(small_histories(), st.sampled_from([None, 0]))
def test_small_histories_agree_with_brute_force(events: list[dict[str, Any]],
                                                initial: Any) -> None:
    res = check_history(events, "cas-register", initial=initial, options={"min_ok": 0})
    assert res.valid is brute_force(events, initial), res.explain()


@st.composite
def mutated_simulations(draw: Any) -> list[dict[str, Any]]:
    """A simulated (valid) history of at most 7 ops, then a few mutations: a completion's
    value changed, or its type flipped between ok, fail and info."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    events = simulate(rng, draw(st.integers(1, 7)), draw(st.integers(1, 4)), [None],
                      p_info=0.2, values=3)
    completions = [i for i, e in enumerate(events) if e["type"] != "invoke"]
    for _ in range(draw(st.integers(0, 2))):
        if not completions:
            break
        e = events[draw(st.sampled_from(completions))]
        if draw(st.booleans()):
            e["type"] = draw(st.sampled_from(["ok", "fail", "info"]))
        if e["f"] == "read":
            e["value"] = draw(st.sampled_from([None, 0, 1, 2]))
        elif e["f"] == "write":
            e["value"] = draw(st.integers(0, 2))
    return events


@settings(max_examples=300, deadline=None)
@given(mutated_simulations())
def test_mutated_simulations_agree_with_brute_force(events: list[dict[str, Any]]) -> None:
    res = check_history(events, "cas-register", options={"min_ok": 0})
    assert res.valid is brute_force(events), res.explain()


@st.composite
def small_kv_histories(draw: Any) -> list[dict[str, Any]]:
    n = draw(st.integers(1, 7))
    timeline, spans = [], []
    for i in range(n):
        f = draw(st.sampled_from(["read", "put", "append", "append"]))
        value = (draw(st.sampled_from(["", "a", "b", "ab", "ba"])) if f == "read"
                 else draw(st.sampled_from(["a", "b"])))
        outcome = draw(st.sampled_from(["ok", "ok", "info", "fail", "pending"]))
        start = draw(st.integers(0, 10))
        spans.append((f, value, outcome))
        timeline.append((start, 0, i))
        if outcome != "pending":
            timeline.append((start + draw(st.integers(0, 6)), 1, i))
    h = Hist()
    for _, kind, i in sorted(timeline):
        f, value, outcome = spans[i]
        if kind == 0:
            h.invoke(i, f, None if f == "read" else value, key="k")
        else:
            h.ev(i, outcome, f, value if f != "read" or outcome == "ok" else None, key="k")
    return h.events


@settings(max_examples=300, deadline=None)
@given(small_kv_histories())
def test_small_kv_histories_agree_with_brute_force(events: list[dict[str, Any]]) -> None:
    res = check_history(events, "kv-put-append", options={"min_ok": 0})
    assert res.valid is brute_force(events, kv=True), res.explain()


def test_brute_force_agrees_on_every_interleaving_of_a_small_case() -> None:
    # Exhaustive over the orders of six events of three concurrent ops.
    base = [("invoke", 0, "write", 1), ("ok", 0, "write", 1), ("invoke", 1, "read", None),
            ("ok", 1, "read", 1), ("invoke", 2, "cas", [1, 2]), ("info", 2, "cas", [1, 2])]
    count = 0
    for perm in itertools.permutations(range(6)):
        order = [base[i] for i in perm]
        seen: set[int] = set()
        valid_order = True
        for t, p, _, _ in order:
            if t == "invoke":
                seen.add(p)
            elif p not in seen:
                valid_order = False
        if not valid_order:
            continue
        h = Hist()
        for t, p, f, v in order:
            h.ev(p, t, f, None if (f == "read" and t == "invoke") else v)
        res = check_history(h.events, "cas-register", options={"min_ok": 0})
        assert res.valid is brute_force(h.events)
        count += 1
    assert count == 90


# -- hand-built histories -------------------------------------------------------------


def only_anomaly(res: Any) -> dict[str, Any]:
    assert res.valid is False, res.explain()
    assert len(res.anomalies) == 1
    a: dict[str, Any] = res.anomalies[0]
    assert a["type"] == "nonlinearizable"
    assert all("index" in o for o in a["ops"])
    return a


def test_stale_read_is_rejected_with_the_write_that_overwrote_it() -> None:
    h = Hist().op(0, "write", 1).op(0, "write", 2).op(1, "read", 1)
    a = only_anomaly(check(h))
    assert a["cause"] == "stale-read"
    e = a["explanation"]
    assert "read -> 1 [process 1, index 4..5] returned 1, but every value 1 it could have " \
           "seen was certainly overwritten before it began" in e
    assert "write 1 [process 0, index 0..1] was followed by write 2 [process 0, index 2..3]" in e
    assert [o["index"] for o in a["ops"]] == [4, 0, 2]


def test_lost_write_is_rejected() -> None:
    h = Hist().op(0, "write", 5).op(1, "read", 5).op(2, "read", None)
    a = only_anomaly(check(h))
    assert a["cause"] == "stale-read"
    assert "the initial value was followed by write 5" in a["explanation"]


def test_cas_on_the_wrong_value_is_rejected() -> None:
    h = Hist().op(0, "write", 2).op(0, "write", 1).op(1, "cas", [2, 3])
    a = only_anomaly(check(h))
    assert "cas 2 -> 3 [process 1, index 4..5] expected 2, but every value 2" in a["explanation"]


def test_search_failure_explains_the_longest_linearizable_prefix() -> None:
    # Two concurrent writes; sequential reads see 1, then 2, then 1 again: no single read
    # is stale on its own, but no order of the writes explains all three.
    h = (Hist().invoke(0, "write", 1).invoke(1, "write", 2).ok(0, "write", 1)
         .ok(1, "write", 2).op(2, "read", 1).op(2, "read", 2).op(2, "read", 1))
    a = only_anomaly(check(h))
    assert a["cause"] == "no-linearization"
    e = a["explanation"]
    assert "The longest linearizable prefix has 3 operations:" in e
    assert "  1. write 2 [process 1, index 1..3]" in e and "  3. read -> 1" in e
    assert "after which the register holds 1." in e
    assert "Next, read -> 2 [process 2, index 6..7] must take effect before it completed at " \
           "index 7, but it returned 2 while the register holds 1" in e
    assert a["prefix"] == [1, 0, 4] and a["blocked"] == 6 and a["state"] == "1"
    cas = (Hist().invoke(0, "write", 1).invoke(1, "write", 2).ok(0, "write", 1)
           .ok(1, "write", 2).op(2, "read", 2).op(2, "cas", [1, 3]))
    a = only_anomaly(check(cas))
    assert a["cause"] == "no-linearization"
    assert "it expected 1 (and succeeded) while the register holds 2" in a["explanation"]


def test_read_of_a_never_written_value_is_rejected_before_searching() -> None:
    h = Hist().op(0, "write", 1).op(1, "read", 9)
    a = only_anomaly(check(h))
    assert a["cause"] == "never-written"
    assert "no write or cas ever tried to set key null to 9" in a["explanation"]


def test_read_from_the_future_is_rejected() -> None:
    h = Hist().op(1, "read", 4).op(0, "write", 4)
    a = only_anomaly(check(h))
    assert a["cause"] == "future-read"


def test_failed_write_must_not_be_visible() -> None:
    h = Hist().invoke(0, "write", 3).fail(0, "write", 3).op(1, "read", 3)
    assert check(h).valid is False


def test_concurrent_write_may_or_may_not_be_seen() -> None:
    h = (Hist().op(0, "write", 1).invoke(0, "write", 2).invoke(1, "read").ok(1, "read", 1)
         .invoke(2, "read").ok(2, "read", 2).ok(0, "write", 2).op(1, "read", 2))
    assert check(h).valid is True


def test_info_write_may_take_effect_long_after_its_info() -> None:
    h = (Hist().op(0, "write", 1).invoke(1, "write", 2).info(1, "write", 2)
         .op(0, "read", 1).op(0, "read", 1).op(0, "read", 2))
    assert check(h).valid is True


def test_info_write_may_never_take_effect() -> None:
    h = Hist().op(0, "write", 1).invoke(1, "write", 2).info(1, "write", 2).op(0, "read", 1)
    assert check(h).valid is True


def test_pending_invoke_counts_as_info() -> None:
    h = Hist().op(0, "write", 1).invoke(1, "cas", [1, 7]).op(0, "read", 7)
    res = check(h)
    assert res.valid is True
    assert res.stats["by_type"]["pending"] == 1


def test_info_write_cannot_take_effect_before_its_invoke() -> None:
    h = Hist().op(0, "read", 2).invoke(1, "write", 2).info(1, "write", 2)
    assert check(h).valid is False


def test_initial_value_is_respected() -> None:
    h = Hist().op(0, "read", 0).op(0, "cas", [0, 1]).op(0, "read", 1)
    assert check(h, initial=0).valid is True
    assert check(h).valid is False


def test_keys_are_independent_and_reported_per_key() -> None:
    h = (Hist().op(0, "write", 1, key="x").op(0, "write", 2, key="y")
         .op(1, "read", 2, key="y").op(1, "read", 2, key="x"))
    res = check(h, options={"all_keys": True})
    assert res.valid is False
    assert res.per_key == {"x": "invalid", "y": "valid"}
    assert res.anomalies[0]["key"] == "x"


def test_nemesis_events_and_extra_fields_are_ignored() -> None:
    h = (Hist().ev("nemesis", "info", "start-partition", "majority")
         .invoke(0, "write", 1).ev(0, "ok", "write", 1, node="n1")
         .ev("nemesis", "info", "stop-partition", None)
         .invoke(1, "read").ev(1, "ok", "read", 1, node="n2"))
    res = check(h)
    assert res.valid is True
    assert res.stats["nemesis_events"] == 2


def test_kv_put_append_model() -> None:
    h = (Hist().op(0, "append", "a", key="k").op(0, "append", "b", key="k")
         .op(1, "read", "ab", key="k").op(1, "put", "z", key="j").op(1, "read", "z", key="j"))
    assert check(h, model="kv-put-append").valid is True
    h.op(2, "read", "a", key="k")
    assert check(h, model="kv-put-append").valid is False


def test_missing_key_reads_as_empty_string_in_kv() -> None:
    h = Hist().op(0, "read", None, key="k").op(0, "read", "", key="k")
    assert check(h, model="kv-put-append").valid is True


# -- time limits ------------------------------------------------------------------------


def hard_history(n: int, key: Any = None) -> Hist:
    """n concurrent writes and n concurrent reads (each read sees a different write),
    then two sequential reads that cannot both hold: invalid, but only after the search
    has tried the exponentially many orders of the concurrent block."""
    h = Hist()
    for i in range(n):
        h.invoke(i, "write", i, key)
        h.invoke(n + i, "read", None, key)
    for i in range(n):
        h.ok(i, "write", i, key)
        h.ok(n + i, "read", i, key)
    return h.op(0, "read", 0, key=key).op(0, "read", 1, key=key)


def test_time_limit_gives_unknown_not_a_guess() -> None:
    res = check(hard_history(14), time_limit=0.05)
    assert res.valid is None
    assert "time limit" in res.reason
    assert res.per_key == {"null": "unknown"}


def test_the_hard_history_is_invalid_given_time() -> None:
    assert check(hard_history(6)).valid is False


def test_a_hard_key_does_not_starve_the_others() -> None:
    h = hard_history(14, key="hard")
    h.op(50, "write", 1, key="easy").op(50, "read", 1, key="easy")
    res = check(h, time_limit=0.1)
    assert res.valid is None
    assert res.per_key == {"hard": "unknown", "easy": "valid"}
    # and an easy invalid key settles the verdict despite the hard one
    h.op(51, "write", 1, key="bad").op(51, "write", 2, key="bad").op(52, "read", 1, key="bad")
    res = check(h, time_limit=0.1)
    assert res.valid is False
    assert res.per_key is not None and res.per_key["bad"] == "invalid"


def test_memo_limit_gives_unknown_not_a_guess() -> None:
    res = check(hard_history(10), options={"max_memo": 1000, "slice_steps": 500})
    assert res.valid is None
    assert "gave up after 1000 memo entries" in res.reason
