"""System adapters: what the lab needs from a system under test, and where to find one.

A system is a black box reached over TCP (``lab`` never imports ``nodes``). An adapter is
two classes:

* a **cluster** (:class:`SystemCluster`): starts, stops, kills, pauses and finds its
  members, and reports every member's status in one normalised shape
  (:data:`STATUS_FIELDS`);
* a **client driver** (:class:`SystemClient`): one per client worker, turning the lab's
  operations (Jepsen's shapes, ``DESIGN.md``) into the system's requests and the answers
  into :class:`Completion` s: ``ok``, ``fail`` (certainly did not happen) or ``info``.

The run wires every directed member link through its own proxy. Member ``i`` reaches
member ``j`` at ``cluster.dial(i, j)`` (the lab sets ``dial`` before starting anyone);
:meth:`SystemCluster.proxy_listen` says where that proxy must listen when the system
cannot be told a per-link address (etcd advertises one URL per member).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

Address = tuple[str, int]

#: The keys of a member's status (any may be None when a system does not know it).
STATUS_FIELDS = ("node", "role", "term", "leader", "commit", "applied", "last_index",
                 "snapshot_index")

SYSTEMS = ("raftkv", "etcd")

#: raftkv's seeded bugs (``--bug NAME``, ``nodes/PROTOCOL.md`` "Seeded bugs"): each breaks
#: one Raft invariant on purpose, so the lab can prove it catches real mistakes.
_BUGS = ("stale-read", "forget-vote", "early-ack", "no-truncate", "old-term-commit")


def seeded_bugs(system: str) -> tuple[str, ...]:
    """The seeded bugs system ``system`` can switch on (``raftlab run --bug``); empty for
    a system that has none (etcd is run as it is)."""
    return _BUGS if system == "raftkv" else ()

#: Settings a fault scenario may give one system (``system_options``): name ->
#: (lowest, highest, what it does). Only the named system sees them.
SYSTEM_OPTIONS: dict[str, dict[str, tuple[int, int, str]]] = {
    "raftkv": {
        "max_append_entries": (1, 1_000_000, "log entries per append message (raftkv's "
                               "--max-append-entries; small values make a new leader send "
                               "an old backlog in many steps)"),
    },
    "etcd": {},
}


@dataclass
class Completion:
    """The outcome of one operation: ``type`` is ``ok``, ``fail`` or ``info``."""

    type: str
    value: Any = None
    error: str | None = None
    node: str | None = None


class MemberInfo(Protocol):
    id: str
    peer: Address
    client: Address


class SystemCluster(Protocol):
    dial: Callable[[str, str], Address] | None

    @property
    def members(self) -> Mapping[str, Any]: ...  # id -> member with .peer and .client

    def version(self) -> str: ...
    def proxy_listen(self, src: str, dst: str) -> Address | None: ...
    def start(self, mid: str) -> None: ...
    def start_all(self) -> None: ...
    def signal(self, mid: str, sig: int) -> None: ...
    async def kill(self, mid: str) -> None: ...
    async def stop(self, mid: str, grace: float = ...) -> None: ...
    async def stop_all(self) -> None: ...
    def alive(self, mid: str) -> bool: ...
    def pids(self) -> list[int]: ...
    def ports(self) -> list[int]: ...
    async def statuses(self, timeout: float = ...) -> dict[str, dict[str, Any] | None]: ...
    async def wait_leader(self, timeout: float = ..., exclude: Sequence[str] = ()) -> str: ...


class SystemClient(Protocol):
    async def __aenter__(self) -> SystemClient: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def invoke(self, model: str, f: str, key: Any, value: Any) -> Completion: ...
    async def write_initial(self, values: Mapping[str, Any]) -> bool: ...


class ClientFactory(Protocol):
    """Makes one client worker's driver: member addresses, per-operation timeout, the
    worker's random source, bank accounts; ``shared``: connections shared with the other
    workers of the run rather than its own (a workload's ``connections``)."""

    def __call__(self, addrs: dict[str, Address], timeout: float, rng: Any,
                 accounts: Sequence[str] = (), *, shared: bool = False) -> SystemClient: ...


@dataclass
class System:
    """A cluster of one system, and how to make client drivers for it."""

    cluster: SystemCluster
    client: ClientFactory


def make_system(name: str, base_dir: Path, size: int, *, bugs: Sequence[str] = (),
                options: Mapping[str, Any] | None = None) -> System:
    """The adapter for ``name`` (one of :data:`SYSTEMS`) with ``size`` members whose data
    and logs go under ``base_dir``. ``options`` common to both: ``election_ms`` and
    ``heartbeat_ms`` (a scenario's ``timing``); raftkv also takes its
    :data:`SYSTEM_OPTIONS`."""
    if name == "raftkv":
        from lab.raftkv import RaftkvClient, RaftkvCluster

        opts = dict(options or {})
        extra: list[str] = []
        if opts.get("election_ms") is not None:
            extra += ["--election-timeout-ms", str(opts.pop("election_ms"))]
        if opts.get("heartbeat_ms") is not None:
            extra += ["--heartbeat-ms", str(opts.pop("heartbeat_ms"))]
        if opts.get("max_append_entries") is not None:
            extra += ["--max-append-entries", str(opts.pop("max_append_entries"))]
        if any(v is not None for v in opts.values()):
            raise ValueError(f"unknown raftkv options {sorted(opts)}")
        return System(RaftkvCluster(base_dir, size=size, bugs=bugs, extra_args=extra),
                      RaftkvClient)
    if name == "etcd":
        from lab.etcd import EtcdClient, EtcdCluster

        if bugs:
            raise ValueError(f"seeded bugs exist only in raftkv, not etcd: {list(bugs)}")
        return System(EtcdCluster(base_dir, size=size, options=options), EtcdClient)
    raise ValueError(f"unknown system {name!r} (expected one of: {', '.join(SYSTEMS)})")


@dataclass(frozen=True)
class Vote:
    """A vote a member says (in its log) it cast: for ``candidate`` in ``term``."""

    member: str
    term: int
    candidate: str
    line: int  # in the member's log, for the anomaly's explanation


def member_logs(nodes_dir: Path) -> list[tuple[str, Path]]:
    """``(member, its log)`` for every member of a run (``nodes_dir/<member>/node.log``)."""
    if not nodes_dir.is_dir():
        return []
    return [(d.name, d / "node.log") for d in sorted(p for p in nodes_dir.iterdir() if p.is_dir())
            if (d / "node.log").is_file()]


def votes_in_logs(name: str, nodes_dir: Path) -> list[Vote] | None:
    """Every vote the members of a run logged (``nodes_dir/<member>/node.log``), in
    log order per member; None for a system whose logs cannot say.

    Only a vote logged once it is cast (answered, hence on disk) counts: a member killed
    between logging a vote and writing it down never gave it, and may rightly vote again.
    raftkv logs a vote when its answer is sent. etcd's raft logs "cast MsgVote" when it
    decides, before the vote reaches its WAL, so etcd's logs are not used."""
    if name != "raftkv":
        return None
    from lab.raftkv import read_votes
    return [v for member, log in member_logs(nodes_dir) for v in read_votes(member, log)]


@dataclass(frozen=True)
class CommitConflict:
    """A member's log says a leader sent it an entry that differs from one it held as
    committed (``index``), which only a lost committed entry explains."""

    member: str
    index: int | None
    leader: str | None
    term: int | None
    line: int  # in the member's log
    text: str  # what the log line says, for the anomaly's explanation


#: What etcd's raft says (and then panics) when a leader's entry conflicts with a
#: committed one (raft/log.go, ``maybeAppend``).
ETCD_CONFLICT = "conflict with committed entry"
_ETCD_INDEX = re.compile(r"entry (\d+) conflict with committed entry")


def commit_conflicts_in_logs(name: str, nodes_dir: Path) -> list[CommitConflict]:
    """Every committed-entry conflict the members of a run logged
    (``nodes_dir/<member>/node.log``): raftkv's ``committed-conflict`` events, and the
    line etcd's raft writes before it panics on one."""
    out: list[CommitConflict] = []
    for member, log in member_logs(nodes_dir):
        if name == "raftkv":
            from lab.raftkv import log_events

            for n, rec in log_events(log, "committed-conflict"):
                index, leader, term = rec.get("index"), rec.get("leader"), rec.get("term")
                out.append(CommitConflict(
                    member, index if type(index) is int else None,
                    leader if isinstance(leader, str) else None,
                    term if type(term) is int else None, n,
                    f"leader {leader} of term {term} sent an entry at index {index}, which "
                    f"it holds as committed (commit index {rec.get('commit')})"))
            continue
        with open(log, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if ETCD_CONFLICT not in line:
                    continue
                try:
                    said_json: Any = json.loads(line)
                except ValueError:
                    said_json = None
                said = str(said_json.get("msg") if isinstance(said_json, dict)
                           and said_json.get("msg") else line.strip())
                found = _ETCD_INDEX.search(said)
                out.append(CommitConflict(member, int(found[1]) if found else None, None,
                                          None, n, said[:300]))
    return out


@dataclass(frozen=True)
class LeaderClaim:
    """A member's log says it became the leader of ``term``."""

    member: str
    term: int
    line: int  # in the member's log


#: What etcd's raft logs when a member becomes leader (raft/raft.go, becomeLeader).
_ETCD_LEADER = re.compile(r"became leader at term (\d+)")

#: Systems whose polled status reports the member's current Raft term. etcd's
#: ``raftTerm`` is the term of the last entry it applied, so a new leader that has not
#: applied an entry of its own term yet reports the old term: two leaders of different
#: terms can look like two of one. Election safety on etcd comes from its logs instead.
STATUS_TERM_IS_CURRENT = {"raftkv": True, "etcd": False}


def leader_claims_in_logs(name: str, nodes_dir: Path) -> list[LeaderClaim]:
    """Every "I became the leader of term T" a member logged: raftkv's ``role`` events
    with ``role: leader``, etcd's "became leader at term T"."""
    out: list[LeaderClaim] = []
    for member, log in member_logs(nodes_dir):
        if name == "raftkv":
            from lab.raftkv import log_events

            out += [LeaderClaim(member, rec["term"], n) for n, rec in log_events(log, "role")
                    if rec.get("role") == "leader" and type(rec.get("term")) is int]
            continue
        with open(log, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                found = _ETCD_LEADER.search(line) if "became leader at term" in line else None
                if found:
                    out.append(LeaderClaim(member, int(found[1]), n))
    return out


def ms(seconds: float | None) -> int | None:
    """Seconds as whole milliseconds (None stays None)."""
    return None if seconds is None else max(1, round(seconds * 1000))


#: A system's election timeout and heartbeat when a scenario does not set them (ms).
DEFAULT_TIMING = {"raftkv": (150, 50), "etcd": (1000, 100)}


def timing_problem(name: str, election_ms: int | None, heartbeat_ms: int | None
                   ) -> str | None:
    """Why a scenario's ``timing`` cannot work on system ``name`` (with the system's
    default for the half it leaves out); None if it can."""
    e0, h0 = DEFAULT_TIMING.get(name, (None, None))
    e, h = election_ms or e0, heartbeat_ms or h0
    if e is None or h is None or (election_ms is None and heartbeat_ms is None):
        return None
    if e < 5 * h:
        return (f"timing: an election timeout of {e} ms is under 5 x the heartbeat of {h} ms "
                f"on {name} (set both, e.g. election 300ms and heartbeat 50ms)")
    return None


def system_problem(name: str, model: str | None = None) -> str | None:
    """Why system ``name`` cannot run here (or with workload ``model``), in one line for
    the user (exit 2); None if it can."""
    if name == "etcd":
        from lab.etcd import problem

        return problem(model)
    return None
