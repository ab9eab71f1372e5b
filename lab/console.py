"""Printing to the console that a reader who has gone cannot stop.

``raftlab run ... | head -1`` closes the pipe after the first line; the next write to it
fails (BrokenPipeError, EPIPE). That must not end the run: :func:`say` stops printing
there for good (the stream is pointed at /dev/null, so no later write, nor Python's
flush at exit, fails again) and the run goes on, writes results.json and its report, and
exits with its verdict's code.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from typing import TextIO


def say(text: str = "", *, end: str = "\n", stream: TextIO | None = None) -> bool:
    """Write ``text`` and ``end`` to ``stream`` (default: stdout) and flush. True if it
    was written; False if the reader has gone: this line is lost, and so is every later
    one, quietly (:func:`silence`)."""
    out = sys.stdout if stream is None else stream
    if out is None:  # no console at all (pythonw, a closed descriptor at start)
        return False
    try:
        out.write(text + end)
        out.flush()
        return True
    except OSError as e:
        if not isinstance(e, BrokenPipeError) and e.errno != errno.EPIPE:
            raise
        silence(out)
        return False


def silence(stream: TextIO) -> None:
    """Send whatever ``stream`` still writes, its unflushed buffer included, to
    /dev/null. A stream with no descriptor of its own is left as it is (every write to
    it goes on failing, and :func:`say` goes on swallowing that)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)
