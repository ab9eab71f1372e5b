"""The hot-path JSON encoder writes what the standard library would, and never refuses
what the standard library takes."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.fastjson import dumps, loads, loads_for
from lab.history import History, read_history


@dataclass
class _Point:
    x: int
    y: int


@pytest.mark.parametrize("value", [
    {"index": 3, "time": 123456789, "process": 7, "type": "invoke", "f": "cas", "key": "k1",
     "value": [1, 2]},
    {"f": "transfer", "value": {"from": "a1", "to": "a0", "amount": 5}, "x": None},
    {"f": "txn", "value": [["append", "k", 9], ["r", "k", None]], "ok": True, "t": 0.25},
    [], 0, -(2**63), 2**64 - 1, "", "plain",
])
def test_ordinary_values_encode_as_the_standard_library_does(value: object) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":")).encode()


@pytest.mark.parametrize("value", [2**64, -(2**63) - 1, {1: "a"}, {"deep": [{2: 10**30}]}])
def test_what_orjson_refuses_still_encodes(value: object) -> None:
    assert dumps(value) == json.dumps(value, separators=(",", ":")).encode()


def test_non_json_types_are_written_as_text_and_non_ascii_as_utf8() -> None:
    assert json.loads(dumps({"p": Path("/x"), "s": "é"})) == {"p": "/x", "s": "é"}
    when = datetime.datetime(2026, 11, 27, 5, 0, 0)
    point = _Point(1, 2)
    assert dumps([when, point]) == json.dumps([when, point], default=str,
                                              separators=(",", ":")).encode()
    assert json.loads(dumps([float("nan"), float("inf")])) == [None, None]


def test_history_keeps_utf8_text_and_survives_a_tear_inside_a_character(
        tmp_path: Path) -> None:
    """orjson writes non-ASCII text as UTF-8, so a controller killed mid-write can leave
    half a character at the end of the file: only that torn line is lost."""
    path = tmp_path / "history.jsonl"
    h = History(path)
    h.append(0, "invoke", "write", "k€", 1)
    h.append(0, "ok", "write", "k€", 1)
    h.append(1, "invoke", "write", "ключ", 2)
    h.close()
    data = path.read_bytes()
    assert "€".encode() in data  # written as UTF-8, not escaped
    assert [e["key"] for e in read_history(path)] == ["k€", "k€", "ключ"]
    torn = data[: data.rindex("ключ".encode()) + 1]  # cut inside the first Cyrillic letter
    path.write_bytes(torn)
    assert [e["key"] for e in read_history(path)] == ["k€", "k€"]


def test_history_round_trips_through_the_encoder(tmp_path: Path) -> None:
    h = History(tmp_path / "history.jsonl")
    h.append(0, "invoke", "write", "k€", 2**70)
    h.append(0, "ok", "write", "k€", 2**70, node="n1")
    h.close()
    events = read_history(tmp_path / "history.jsonl")
    assert [(e["type"], e["key"], e["value"]) for e in events] == [
        ("invoke", "k€", 2**70), ("ok", "k€", 2**70)]
    assert events[1]["node"] == "n1"


def test_history_refuses_what_jepsen_forbids_and_counts_the_rest(tmp_path: Path) -> None:
    """One completion per invoke, from the same process; known event types only; nemesis
    events pair with nothing. A refused event is not written."""
    h = History(tmp_path / "history.jsonl")
    with pytest.raises(ValueError, match="without an invoke"):
        h.append(1, "ok", "read", "k")
    h.append(1, "invoke", "read", "k")
    with pytest.raises(ValueError, match="invoked twice"):
        h.append(1, "invoke", "read", "k")
    with pytest.raises(ValueError, match="bad event type"):
        h.append(1, "done", "read", "k")
    with pytest.raises(ValueError, match="bad event type"):
        h.append("nemesis", "start", "kill")
    h.append("nemesis", "info", "kill", None, ["n1"], fault=3)
    h.append(1, "fail", "read", "k", error=None, node="n2")
    h.close()
    events = read_history(tmp_path / "history.jsonl")
    assert [(e["index"], e["process"], e["type"]) for e in events] == [
        (0, 1, "invoke"), (1, "nemesis", "info"), (2, 1, "fail")]
    assert events[1]["fault"] == 3 and "error" not in events[2] and events[2]["node"] == "n2"
    assert h.counts == {"invoke": 1, "ok": 0, "fail": 1, "info": 0} and h.nemesis_events == 1
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)


# --------------------------------------------------------------------------- loads


@pytest.mark.parametrize("text", [
    b'{"index":1,"time":888933306,"process":8,"type":"ok","f":"cas","key":"k1","value":[1,2]}',
    b'{"a":1,"a":2}', b"-0", b"-0.0", b"1E2", b"5e-324", b"1.5e-400", b'"\\u0000\\u00e9"',
    "\"é\"".encode(), b"18446744073709551615",
    # orjson would read these integers as floats: the standard library decodes them
    b"18446744073709551616", b"-9223372036854775809", b'{"v":[123456789012345678901234]}',
    # orjson refuses these; the standard library takes them
    b"NaN", b"[Infinity,-Infinity]", b'"\\ud800"', b"1e400", b"\xef\xbb\xbf{}",
    "\"é\"".encode("utf-16"),
])
def test_loads_gives_what_the_standard_library_gives(text: bytes) -> None:
    want = json.loads(text)
    got = loads(text)
    assert type(got) is type(want) and repr(got) == repr(want)


@pytest.mark.parametrize("text", [b"{bad", b"[1,]", b'"a\x01"', b"\xff", b"{} {}", b"",
                                  b"[" * 5000 + b"]" * 5000])
def test_loads_fails_where_the_standard_library_fails_and_says_the_same(text: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)) as want:
        json.loads(text)
    with pytest.raises(type(want.value)) as got:
        loads(text)
    assert str(got.value) == str(want.value)


def test_loads_without_fallback_refuses_what_orjson_refuses() -> None:
    with pytest.raises(ValueError):
        loads(b"NaN", fallback=False)
    assert loads(b"[2e400]", fallback=True) == [float("inf")]
    assert loads(b"[18446744073709551616]", fallback=False) == [2**64]


def test_loads_for_a_file_checks_for_big_integers_once_and_decodes_the_same() -> None:
    plain = b'{"a":1}\n{"b":NaN}'
    big = b'{"a":1}\n{"b":18446744073709551616}'
    for whole in (plain, big):
        decode = loads_for(whole)
        for line in whole.split(b"\n"):
            assert repr(decode(line)) == repr(json.loads(line))
