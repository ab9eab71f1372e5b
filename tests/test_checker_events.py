"""Decoding events into operations: every malformed event is refused with its line and
what was wrong (never a crash), and the inline common case decodes exactly as the full
rules do."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest

from lab.checker import HistoryError, history_from_events

INV = {"index": 0, "time": 10, "process": 0, "type": "invoke", "f": "write", "key": "k",
       "value": 1}
OK = {"index": 1, "time": 20, "process": 0, "type": "ok", "f": "write", "key": "k", "value": 1}


@pytest.mark.parametrize(("bad", "message"), [
    ([1, 2], "expected a JSON object, got list"),
    ({k: v for k, v in OK.items() if k != "process"}, "missing field 'process'"),
    ({**OK, "process": True}, "'process' must be an integer or a string, got true"),
    ({**OK, "process": [0]}, "'process' must be an integer or a string, got [0]"),
    ({**OK, "type": "done"}, "'type' must be one of invoke, ok, fail, info; got \"done\""),
    ({**OK, "type": ["ok"]}, "'type' must be one of invoke, ok, fail, info; got [\"ok\"]"),
    ({**OK, "f": 3}, "'f' must be a string, got 3"),
    ({**OK, "key": True}, "'key' must be null, a string or a number, got true"),
    ({**OK, "key": {"a": 1}}, "'key' must be null, a string or a number"),
    ({**OK, "index": 1.0}, "'index' must be an integer, got 1.0"),
    ({**OK, "time": "now"}, "'time' must be a number or null, got \"now\""),
    ({**OK, "time": float("nan")}, "'time' must be a number or null, got NaN"),
    ({**OK, "time": False}, "'time' must be a number or null, got false"),
    ({**OK, "f": "read"}, "ok of read completes process 0's write from line 1"),
])
def test_a_malformed_event_is_refused_with_its_line(bad: Any, message: str) -> None:
    with pytest.raises(HistoryError) as e:
        history_from_events([INV, bad], "h.jsonl")
    assert str(e.value).startswith("h.jsonl:2: ") and message in str(e.value)


def test_pairing_errors_name_the_line() -> None:
    with pytest.raises(HistoryError, match=r"h:1: ok of write by process 0 has no open invoke"):
        history_from_events([OK], "h")
    with pytest.raises(HistoryError, match=r"h:2: process 0 invoked write while its write "
                                           r"from line 1 is still open"):
        history_from_events([INV, INV], "h")


class _Pid(int):
    pass


@pytest.mark.parametrize("change", [
    {}, {"time": 20.7}, {"time": None}, {"key": 2.5}, {"key": None}, {"process": _Pid(0)},
])
def test_the_inline_common_case_decodes_as_the_full_rules_do(change: dict[str, Any]) -> None:
    plain = history_from_events([INV, {**OK, **change}])
    # an OrderedDict is not a plain dict: it takes the full rules
    full = history_from_events([OrderedDict(INV), OrderedDict({**OK, **change})])
    assert [o.to_json() for o in plain.ops] == [o.to_json() for o in full.ops]
    a, b = plain.ops[0], full.ops[0]
    assert (a.complete_time, a.key, a.process, a.complete_line) == \
        (b.complete_time, b.key, b.process, b.complete_line)
    nemesis = {"process": "nemesis", "type": "info", "f": "kill", "value": None}
    assert history_from_events([nemesis, INV]).nemesis_events == 1
