"""JSON in and out the way upstream's Go ``encoding/json`` does it.

Decoding (`decode`, `Fields`):

* only the first JSON value of a body is read; trailing bytes are ignored (Go's
  ``json.Decoder.Decode``), an empty body is the error ``EOF``;
* object keys match struct fields case-insensitively, an exact match winning; unknown
  keys are ignored; ``null`` leaves a field at its default;
* a value of the wrong JSON type is an error worded like Go's
  (``json: cannot unmarshal string into Go struct field Proxy.name of type string``);
* integer fields take JSON integers; **extension**: an integral float such as ``1000.0``
  (which Python's ``json`` writes for floats) is accepted as that integer. Fractions,
  booleans and values outside int64 are refused.

Encoding (`encode`): compact, keys in insertion order, ``<``, ``>``, ``&``, U+2028 and
U+2029 escaped, float32 values printed with Go's shortest formatting (``1``, ``0.2``).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from decimal import Decimal
from typing import Final

__all__ = ["Fields", "Float32", "JsonError", "decode", "encode"]

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_FLOAT32_MAX: Final = 3.4028234663852886e38


class JsonError(Exception):
    """A body that does not decode; the message is the part after ``bad request body: ``."""


def _reject_constant(name: str) -> object:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode(raw: bytes) -> object:
    """The first JSON value in ``raw``."""
    text = raw.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(" \t\r\n"))
    if start == len(text):
        raise JsonError("EOF")
    try:
        value, _end = _DECODER.raw_decode(text, start)
        return _clean(value)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(text):
            raise JsonError("unexpected EOF") from None
        raise JsonError(
            f"invalid character {text[exc.pos]!r} at offset {exc.pos}: {exc.msg}"
        ) from None
    except RecursionError:
        raise JsonError("exceeded max depth") from None
    except ValueError as exc:
        raise JsonError(str(exc)) from None


def _clean(value: object) -> object:
    # Lone surrogates (from "\ud800" escapes) cannot be encoded back to UTF-8; Go turns
    # them into U+FFFD, so do we.
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value
    if isinstance(value, list):
        return [_clean(item) for item in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def json_kind(value: object) -> str:
    """Go's name for a JSON value's type in unmarshal errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


class Fields:
    """Typed, case-insensitive access to a decoded JSON object standing for a Go struct."""

    def __init__(self, value: object, struct_name: str, *, go_type: str) -> None:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise JsonError(
                f"json: cannot unmarshal {json_kind(value)} into Go value of type {go_type}"
            )
        self._obj: dict[str, object] = value
        self._struct = struct_name

    def raw(self, key: str) -> object:
        """The value for ``key`` (exact match first, then case-insensitive), or ``None``."""
        if key in self._obj:
            return self._obj[key]
        lowered = key.lower()
        found: object = None
        for k, v in self._obj.items():
            if k.lower() == lowered:
                found = v
        return found

    def _fail(self, key: str, value: object, go_type: str, detail: str = "") -> JsonError:
        kind = json_kind(value) + detail
        return JsonError(
            f"json: cannot unmarshal {kind} into Go struct field {self._struct}.{key} "
            f"of type {go_type}"
        )

    def string(self, key: str, default: str) -> str:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._fail(key, value, "string")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._fail(key, value, "bool")
        return value

    def float32(self, key: str, default: float) -> float:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, value, "float32")
        if abs(value) > _FLOAT32_MAX:
            raise self._fail(key, value, "float32", f" {value}")
        return to_float32(float(value))

    def int64(self, key: str, default: int) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, value, "int64")
        if isinstance(value, float):
            if not math.isfinite(value) or not value.is_integer():
                raise self._fail(key, value, "int64", f" {value!r}")
            value = int(value)
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise self._fail(key, value, "int64", f" {value}")
        return value

    def sub(self, key: str, struct_name: str, go_type: str) -> Fields | None:
        """A nested object, ``None`` when absent or null."""
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self._fail(key, value, go_type)
        return Fields(value, struct_name, go_type=go_type)


def to_float32(value: float) -> float:
    """Round to the nearest float32, as Go stores toxicity."""
    result: float = struct.unpack("f", struct.pack("f", value))[0]
    return result


class Float32(float):
    """A float that `encode` prints the way Go prints a float32."""


def _format_float32(value: float) -> str:
    f = to_float32(value)
    if f == 0:
        return "0"
    for precision in range(9):
        text = format(f, f".{precision}e")
        if to_float32(float(text)) == f:
            break
    digits = Decimal(text).normalize()
    if 1e-6 <= abs(f) < 1e21:
        return format(digits, "f")
    mantissa, exponent = format(digits, "e").split("e")
    sign = "-" if exponent.startswith("-") else "+"
    return f"{mantissa}e{sign}{exponent.lstrip('+-').lstrip('0') or '0'}"


def _encode_string(text: str) -> str:
    out = json.dumps(text, ensure_ascii=False)
    return (
        out.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _encode(value: object, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_string(value))
    elif isinstance(value, Float32):
        out.append(_format_float32(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(json.dumps(value))
    elif isinstance(value, Mapping):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(_encode_string(str(key)))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def encode(value: object) -> bytes:
    """Compact JSON bytes, Go style."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out).encode("utf-8")
