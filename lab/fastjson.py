"""JSON encoding on the lab's hot paths: the history, and every client request.

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

Decoding stays with the standard library: orjson reads an integer beyond 64 bits as a
float, silently, and an answer must never change value on the way in.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

__all__ = ["dumps"]

_STDLIB = json.JSONEncoder(separators=(",", ":"), default=str)
_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


def dumps(obj: Any) -> bytes:
    """Compact JSON as bytes; anything but JSON's own types is written as its ``str()``."""
    try:
        return orjson.dumps(obj, default=str, option=_OPTIONS)
    except orjson.JSONEncodeError:  # a TypeError: an int beyond 64 bits, a non-str key
        return _STDLIB.encode(obj).encode()
