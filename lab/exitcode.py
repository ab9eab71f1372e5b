"""The exit codes of every ``raftlab`` command, in one place.

A verdict maps onto them (:meth:`ExitCode.for_verdict`): ``valid`` is 0, ``invalid`` 1,
anything else (``unknown``, a run cut short, a harness failure) 3. Bad input or usage is 2,
always before anything starts.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    VALID = 0  #: the run (or history) was checked and no anomaly was found
    INVALID = 1  #: an anomaly was found
    BAD_INPUT = 2  #: bad input or usage: a malformed file, an unknown name, a bad flag
    UNKNOWN = 3  #: no verdict: cut short, too weak to mean anything, or the lab's own failure

    @classmethod
    def for_verdict(cls, verdict: object) -> ExitCode:
        """The exit code of a verdict string (``valid``, ``invalid``, anything else)."""
        return {"valid": cls.VALID, "invalid": cls.INVALID}.get(str(verdict), cls.UNKNOWN)
