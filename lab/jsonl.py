"""Reading JSON-lines files (a run's history, schedule and status polls, or any history
``raftlab check`` is given): one rule for a torn last line, one error naming file and line.

A leaf module but for :mod:`lab.fastjson` (whose ``loads`` decodes as the standard
library does, faster): the checker and the run directory's owner (:mod:`lab.store`) both
read through it.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.fastjson import loads_for


class StoreError(ValueError):
    """A run file that cannot be read as what it should be; blame lies with the input.
    ``str(e)`` is one line, ``FILE:LINE: what was expected`` (``FILE: ...`` when no line
    is to blame, e.g. a missing file)."""

    def __init__(self, source: str | Path, line: int | None, message: str) -> None:
        self.source = str(source)
        self.line = line
        self.message = message
        where = f"{self.source}:{line}" if line is not None else self.source
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------- JSON lines


@contextmanager
def paused_gc() -> Iterator[None]:
    """Cyclic garbage collection paused while a large structure with no cycles is built
    (a file's decoded objects, a history's operations): the collector would otherwise walk
    the growing structure again and again -- a third of the time spent reading a long
    history. Nothing is lost: whatever became garbage meanwhile without a cycle was freed
    at once, and the collector runs again afterwards (unless it was off already)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True)
class JsonLines:
    """The JSON objects of a JSON-lines file and their line numbers (from 1)."""

    path: Path
    objects: list[dict[str, Any]]
    lines: list[int]  #: the line of each object, in step with :attr:`objects`
    torn: int | None = None  #: the line of a forgiven torn tail, if there was one
    skipped: tuple[int, ...] = ()  #: forgiving mode: lines skipped as not JSON objects

    @property
    def records(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(line, object)`` pairs, in order."""
        return zip(self.lines, self.objects, strict=True)

    @property
    def torn_note(self) -> str | None:
        """``FILE:LINE: ignored a torn last line`` when one was forgiven."""
        return None if self.torn is None else f"{self.path}:{self.torn}: ignored a torn last line"


def iter_jsonl(path: Path, strict: bool = True) -> JsonLines:
    """Read a JSON-lines file of objects (blank lines are passed over).

    A torn tail (the last line, not ended by a newline, that does not decode: a writer
    was killed mid-line) is left out and its line kept in :attr:`JsonLines.torn`, in both
    modes. Any other line that is not a JSON object raises :class:`StoreError` naming
    the file and line when ``strict``; when not, it is skipped and its line kept in
    :attr:`JsonLines.skipped`. A file that cannot be read raises in strict mode and
    reads as empty in forgiving mode.

    Each line is decoded on its own, from bytes (orjson's cost per call is small), so a
    tear inside a multi-byte UTF-8 character costs that line only, and a line is never
    read together with its neighbours. Every value and every error is what
    ``json.loads`` of the line gives (:func:`lab.fastjson.loads`)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        if strict:
            raise StoreError(path, None, f"cannot read: {e.strerror or e}") from None
        return JsonLines(path, [], [])
    with paused_gc():
        return _decode_lines(path, data, strict)


def _decode_lines(path: Path, data: bytes, strict: bool) -> JsonLines:
    decode = loads_for(data)
    pieces = data.split(b"\n")
    tail_line = len(pieces) if not data.endswith(b"\n") and pieces[-1].strip() else None
    objects: list[dict[str, Any]] = []
    lines: list[int] = []
    skipped: list[int] = []
    torn: int | None = None
    why: str | None
    for k, raw in enumerate(pieces, start=1):
        try:
            value = decode(raw)
        except json.JSONDecodeError as e:
            why = e.msg
        except UnicodeDecodeError:
            why = "not UTF-8"
        except RecursionError:
            why = "nested too deeply"
        else:
            if isinstance(value, dict):
                objects.append(value)
                lines.append(k)
                continue
            why = None
        if why is not None and not raw.strip():
            continue  # a blank line (or the empty piece after the last newline)
        if why is not None and k == tail_line:
            torn = k
            break
        if strict:
            raise StoreError(path, k, f"not valid JSON ({why})" if why is not None else
                             f"expected a JSON object, got {type(value).__name__}")
        skipped.append(k)
    return JsonLines(path, objects, lines, torn, tuple(skipped))
