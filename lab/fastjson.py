"""JSON on the lab's hot paths: encoding the history and every client request, decoding
the JSON-lines files (:mod:`lab.jsonl`) the checker and the report read.

Each operation of a run is encoded three times (its invoke and completion events and its
request); with the standard library that was about a quarter of the controller's CPU per
operation (``bench/run_bench.py``). ``orjson`` does the same work several times faster.
Its output is what ``json.dumps(obj, separators=(",", ":"))`` writes, except that
non-ASCII text is written as UTF-8 rather than ``\\u`` escapes (the same JSON) and a
float NaN or infinity as ``null`` (which the standard library would write as invalid
JSON).

What orjson refuses to encode -- integers beyond 64 bits, dict keys that are not
strings -- goes to the standard library instead, so every value the lab could encode
before still encodes. Dataclasses and datetimes are handed to ``str()`` as before (orjson
would write them its own way); an ``Enum`` member is written as its value, where the
standard library wrote ``str()`` of it (no history value is one today).

:func:`loads` decodes with orjson too (about 1.5 times as fast as the standard library on
a history's lines), but gives what ``json.loads`` gives, value for value, and fails where
it fails, with its message:
orjson reads an integer beyond 64 bits as a float, silently, so text with a run of 19
or more digits goes to the standard library (an answer must never change value on the
way in); and text orjson refuses (``NaN``, a lone surrogate, a leading byte-order mark,
nesting deeper than 1024, a number beyond a float's range) goes to it again, to be
decoded or refused there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

__all__ = ["dumps", "loads", "loads_for"]

#: ``bytes.translate`` table: digits to NUL, everything else to 0x01.
_DIGITS = bytes(0 if 0x30 <= b <= 0x39 else 1 for b in range(256))
#: Nineteen digits in a row: the shortest integer orjson might read as a float
#: (2**63 has 19 digits; anything shorter is within 64 bits).
_LONG = bytes(19)

_STDLIB = json.JSONEncoder(separators=(",", ":"), default=str)
_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def dumps(obj: Any) -> bytes:
    """Compact JSON as bytes; anything but JSON's own types is written as its ``str()``."""
    try:
        return orjson.dumps(obj, default=str, option=_OPTIONS)
    except orjson.JSONEncodeError:  # a TypeError: an int beyond 64 bits, a non-str key
        return _STDLIB.encode(obj).encode()


def _long_digit_run(data: bytes | str) -> bool:
    """Whether ``data`` has 19 or more digits in a row (perhaps a big integer)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return _LONG in raw.translate(_DIGITS)


def loads(data: bytes | str, *, fallback: bool = True) -> Any:
    """The value of the JSON text ``data``, exactly as ``json.loads(data)`` would give it.

    Raises what ``json.loads`` raises (``json.JSONDecodeError``, ``UnicodeDecodeError``,
    ``RecursionError``), with its message. With ``fallback=False`` text orjson refuses
    is not handed on: ``orjson.JSONDecodeError`` (a ``ValueError``) is raised instead --
    for callers that have a cheaper next step than the standard library on the same text
    (:func:`lab.jsonl.iter_jsonl` decodes a whole file in one call, then line by line).
    """
    if _long_digit_run(data):
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        if not fallback:
            raise
    return json.loads(data)


def _orjson_first(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def loads_for(whole: bytes) -> Callable[[bytes | str], Any]:
    """A :func:`loads` for the pieces of ``whole`` (the lines of a file), checking for
    big integers once for all of them rather than piece by piece."""
    return loads if _long_digit_run(whole) else _orjson_first
