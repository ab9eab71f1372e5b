"""Reading JSON-lines files (a run's history, schedule and status polls, or any history
``raftlab check`` is given): one rule for a torn last line, one error naming file and line.

A leaf module: the checker and the run directory's owner (:mod:`lab.store`) both read
through it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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


def _decode(raw: bytes) -> tuple[Any, str | None]:
    """A line's value, or why it is not JSON."""
    try:
        return json.loads(raw), None
    except json.JSONDecodeError as e:
        return None, e.msg
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except RecursionError:
        return None, "nested too deeply"


def iter_jsonl(path: Path, strict: bool = True) -> JsonLines:
    """Read a JSON-lines file of objects (blank lines are passed over).

    A torn tail (the last line, not ended by a newline, that does not decode: a writer
    was killed mid-line) is left out and its line kept in :attr:`JsonLines.torn`, in both
    modes. Any other line that is not a JSON object raises :class:`StoreError` naming
    the file and line when ``strict``; when not, it is skipped and its line kept in
    :attr:`JsonLines.skipped`. A file that cannot be read raises in strict mode and
    reads as empty in forgiving mode.

    Lines are decoded from bytes one by one when needed, so a tear inside a multi-byte
    UTF-8 character costs that line only; a file with no damage is decoded in one call
    (much faster on the long histories the report reads)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        if strict:
            raise StoreError(path, None, f"cannot read: {e.strerror or e}") from None
        return JsonLines(path, [], [])
    pieces = data.split(b"\n")
    numbers = [k for k, raw in enumerate(pieces, start=1) if raw.strip()]
    tail_line = len(pieces) if not data.endswith(b"\n") and pieces[-1].strip() else None
    try:  # the fast path: every line one object, in one call
        decoded = json.loads(b"[" + b",".join(pieces[k - 1] for k in numbers) + b"]")
        if len(decoded) == len(numbers) and all(isinstance(d, dict) for d in decoded):
            return JsonLines(path, decoded, numbers)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        pass
    objects: list[dict[str, Any]] = []
    lines: list[int] = []
    skipped: list[int] = []
    torn: int | None = None
    for k in numbers:
        value, why = _decode(pieces[k - 1])
        if why is not None and k == tail_line:
            torn = k
            break
        if why is None and isinstance(value, dict):
            objects.append(value)
            lines.append(k)
            continue
        if strict:
            raise StoreError(path, k, f"not valid JSON ({why})" if why is not None else
                             f"expected a JSON object, got {type(value).__name__}")
        skipped.append(k)
    return JsonLines(path, objects, lines, torn, tuple(skipped))
