"""The systems the lab can test, and the rules that hold for every one of them.

Each system is a package with its adapter (a cluster and a client driver, the protocols
of :mod:`lab.systems.types`) and a :class:`~lab.systems.types.SystemSpec` saying what
else differs: its factory, when it cannot run, its default timing, its options and
seeded bugs, and what its status polls and logs can tell. Adding a system is: write its
spec and adapter, and :func:`register` the spec (the built-in ones are registered here).
Nothing outside a system's own package asks which system it is.
"""

from __future__ import annotations

from collections.abc import KeysView, Mapping, Sequence
from pathlib import Path
from typing import Any

from lab.systems import etcd, raftkv
from lab.systems.types import (
    STATUS_FIELDS,
    Address,
    ClientFactory,
    CommitConflict,
    Completion,
    LeaderClaim,
    System,
    SystemClient,
    SystemCluster,
    SystemSpec,
    Vote,
    member_logs,
    timing_rule,
    to_ms,
)

__all__ = [
    "DEFAULT_SYSTEM",
    "STATUS_FIELDS",
    "SYSTEMS",
    "Address",
    "ClientFactory",
    "CommitConflict",
    "Completion",
    "LeaderClaim",
    "System",
    "SystemClient",
    "SystemCluster",
    "SystemSpec",
    "Vote",
    "all_bugs",
    "all_crash_points",
    "bugs_problem",
    "make_system",
    "member_logs",
    "preflight",
    "register",
    "spec",
    "system_options",
    "timing_problem",
    "timing_rule",
    "to_ms",
]

#: name -> spec, in the order the systems are listed to users.
REGISTRY: dict[str, SystemSpec] = {}

#: The names of the registered systems (a live view of :data:`REGISTRY`).
SYSTEMS: KeysView[str] = REGISTRY.keys()

#: The system a run tests when it does not say (``--system``, a suite's ``systems``,
#: a run directory recorded without one); labels leave it unsaid.
DEFAULT_SYSTEM = "raftkv"


def register(s: SystemSpec) -> None:
    """Make system ``s.name`` known to the lab."""
    if s.name in REGISTRY:
        raise ValueError(f"system {s.name!r} is registered already")
    REGISTRY[s.name] = s


register(raftkv.SPEC)
register(etcd.SPEC)


def spec(name: str) -> SystemSpec:
    """The spec of system ``name``; ValueError (one line, naming the systems) if unknown."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown system {name!r} (expected one of: "
                         f"{', '.join(REGISTRY)})") from None


def all_bugs() -> tuple[str, ...]:
    """Every seeded bug of any system, each once."""
    return tuple(dict.fromkeys(b for s in REGISTRY.values() for b in s.bugs))


def all_crash_points() -> tuple[str, ...]:
    """Every crash point of any system, each once."""
    return tuple(dict.fromkeys(p for s in REGISTRY.values() for p in s.crash_points))


def system_options() -> dict[str, Mapping[str, tuple[int, int, str]]]:
    """The settings a fault scenario may give each system (``system_options``)."""
    return {name: s.options for name, s in REGISTRY.items()}


def make_system(name: str, base_dir: Path, size: int, *, bugs: Sequence[str] = (),
                options: Mapping[str, Any] | None = None) -> System:
    """The adapter for system ``name`` with ``size`` members whose data and logs go under
    ``base_dir``, started with seeded ``bugs``. ``options``: ``election_ms`` and
    ``heartbeat_ms`` (a scenario's ``timing``) and the system's own
    :attr:`~lab.systems.types.SystemSpec.options`. ValueError (one line) if bad."""
    s = spec(name)
    why = bugs_problem(s, bugs)
    if why:
        raise ValueError(why)
    return s.make(base_dir, size, tuple(bugs), dict(options or {}))


def bugs_problem(s: SystemSpec, bugs: Sequence[str]) -> str | None:
    """Why system ``s`` cannot be started with seeded ``bugs``; None if it can."""
    unknown = [b for b in bugs if b not in s.bugs]
    if not unknown:
        return None
    if not s.bugs:
        having = [name for name, other in REGISTRY.items() if other.bugs]
        return (f"seeded bugs exist only in {' and '.join(having) or 'no system'}, "
                f"not {s.name}: {unknown}")
    return f"{s.name} has no seeded bug {unknown[0]!r} (it has: {', '.join(s.bugs)})"


def timing_problem(s: SystemSpec, election_ms: int | None, heartbeat_ms: int | None
                   ) -> str | None:
    """Why a scenario's ``timing`` cannot work on system ``s`` (with the system's default
    for the half it leaves out); None if it can."""
    if election_ms is None and heartbeat_ms is None:
        return None
    e0, h0 = s.default_timing
    why = timing_rule(election_ms or e0, heartbeat_ms or h0)
    if why is None:
        return None
    return f"timing: {why} on {s.name} (set both, e.g. election 300ms and heartbeat 50ms)"


def preflight(system: str, model: str | None = None, bugs: Sequence[str] = (),
              election_ms: int | None = None, heartbeat_ms: int | None = None, *,
              timing_at: str = "") -> str | None:
    """Why a run of ``system`` (with workload ``model``, seeded ``bugs`` and a scenario's
    timing) cannot start, in one line for the user (exit 2); None if it can. Checked
    before anything runs, by ``raftlab run`` and for every run of a suite. ``timing_at``
    (``FILE:LINE``) says where a timing that cannot work was written."""
    try:
        s = spec(system)
    except ValueError as e:
        return str(e)
    why = bugs_problem(s, bugs)
    if why:
        return why
    why = timing_problem(s, election_ms, heartbeat_ms)
    if why:
        return f"{timing_at}: {why}" if timing_at else why
    return s.problem(model)
