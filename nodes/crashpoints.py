"""Crash points: named places in the driver and the WAL where an armed member dies at once.

A ``kill -9`` at a random moment almost never lands between two steps of persistence (a
record written but not fsynced, a snapshot file renamed but its segment not yet started).
A crash point does, every time: a client arms one by name (the ``crash-at`` request,
``nodes/PROTOCOL.md``), and when execution next reaches it the member logs
``{"event": "crash-point", "point": ...}`` and ends with ``os._exit(CRASH_POINT_EXIT)``:
no cleanup, no flush of anything but that log line, exactly as a power cut would leave it.

Disarmed, a point costs one attribute check at its call site::

    if self.crash.armed:
        self.crash.hit(WAL_AFTER_WRITE)

The Raft core (``nodes/raft.py``) does no I/O and has no crash points: they live where the
driver and the WAL touch the disk and the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NoReturn

#: The exit code of a member that died at an armed crash point (the lab tells it from a
#: crash of the member's own by this code, and by having armed the point).
CRASH_POINT_EXIT = 86

WAL_BEFORE_WRITE = "wal-before-write"
WAL_AFTER_WRITE = "wal-after-write"
WAL_AFTER_SYNC = "wal-after-sync"
SNAPSHOT_INSTALL_BETWEEN = "snapshot-install-between"
SNAPSHOT_BEFORE_TRUNCATE = "snapshot-before-truncate"
BEFORE_APPLY = "before-apply"

#: Every crash point, in the order a batch of work passes them.
POINTS = (WAL_BEFORE_WRITE, WAL_AFTER_WRITE, WAL_AFTER_SYNC, SNAPSHOT_INSTALL_BETWEEN,
          SNAPSHOT_BEFORE_TRUNCATE, BEFORE_APPLY)

LogFn = Callable[[str, dict[str, Any]], None]


def _no_log(event: str, fields: dict[str, Any]) -> None:
    """Default ``log``: drop the event."""


class CrashPoints:
    """The one crash point armed in a member (or none), and how many of its hits to let
    pass first. ``hit`` may run on a worker thread (the WAL's fsync does): it only reads
    and counts down, and ends the process."""

    def __init__(self, log: LogFn = _no_log,
                 die: Callable[[int], NoReturn] = os._exit) -> None:
        #: The armed point's name; None (falsy) when disarmed: the call sites' one check.
        self.armed: str | None = None
        self.skip = 0
        self._log = log
        self._die = die

    def arm(self, point: str | None, skip: int = 0) -> None:
        """Arm ``point`` (None: disarm), to fire at its ``skip + 1``-th hit from now.
        ValueError, naming the known points, for an unknown one."""
        if point is not None and point not in POINTS:
            raise ValueError(f"unknown crash point {point!r} (expected one of: "
                             f"{', '.join(POINTS)})")
        if skip < 0:
            raise ValueError(f"skip must be at least 0, got {skip}")
        # ``hit`` may run on another thread and reads ``armed`` before ``skip``: a point
        # is armed only once its skip count is in place, and disarmed before that count
        # changes, so no hit ever sees a point with another point's count.
        if point is None:
            self.armed = None
            self.skip = 0
        else:
            self.armed = None
            self.skip = skip
            self.armed = point

    def hit(self, point: str) -> None:
        """Execution reached ``point``: if it is the armed one and no hit is left to
        skip, log it and end the process with :data:`CRASH_POINT_EXIT`."""
        if point != self.armed:
            return
        if self.skip > 0:
            self.skip -= 1
            return
        self._log("crash-point", {"point": point})
        self._die(CRASH_POINT_EXIT)
