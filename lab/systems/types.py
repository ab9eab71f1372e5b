"""What the lab needs from a system under test: the shared types of every adapter.

This module is the leaf of :mod:`lab.systems`: it imports nothing else from it, so an
adapter takes its types from here and never from the registry that lists it.

A system is a black box reached over TCP (``lab`` never imports ``nodes``). An adapter is
two classes:

* a **cluster** (:class:`SystemCluster`): starts, stops, kills, pauses and finds its
  members, and reports every member's status in one normalised shape
  (:data:`STATUS_FIELDS`);
* a **client driver** (:class:`SystemClient`): one per client worker, turning the lab's
  operations (Jepsen's shapes: registers, sets, counters, bank transfers, list-append
  transactions) into the system's requests and the answers into :class:`Completion` s:
  ``ok``, ``fail`` (certainly did not happen) or ``info``.

The run wires every directed member link through its own proxy. Member ``i`` reaches
member ``j`` at ``cluster.dial(i, j)`` (the lab sets ``dial`` before starting anyone);
:meth:`SystemCluster.proxy_listen` says where that proxy must listen when the system
cannot be told a per-link address (etcd advertises one URL per member).

A :class:`SystemSpec` says everything else that differs between systems; the registry
(:mod:`lab.systems`) holds one per system.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

Address = tuple[str, int]

#: The keys of a member's status (any may be None when a system does not know it).
STATUS_FIELDS = ("node", "role", "term", "leader", "commit", "applied", "last_index",
                 "snapshot_index")


@dataclass
class Completion:
    """The outcome of one operation: ``type`` is ``ok``, ``fail`` or ``info``."""

    type: str
    value: Any = None
    error: str | None = None
    node: str | None = None


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
    async def crash_at(self, mid: str, point: str | None, skip: int = ...) -> bool | None: ...
    def process(self, mid: str) -> Any: ...
    def exit_code(self, process: Any) -> int | None: ...
    def exited_as_expected(self, process: Any) -> bool: ...
    def collect_exits(self) -> list[dict[str, Any]]: ...
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
    workers of the run rather than its own (a workload's ``connections``); ``home``: the
    member to send every operation to first (a workload's ``placement``), following the
    system's redirects from there; None: the client's own choice."""

    def __call__(self, addrs: dict[str, Address], timeout: float, rng: Any,
                 accounts: Sequence[str] = (), *, shared: bool = False,
                 home: str | None = None) -> SystemClient: ...


@dataclass
class System:
    """A cluster of one system, and how to make client drivers for it."""

    cluster: SystemCluster
    client: ClientFactory


# --------------------------------------------------------------------------- member logs


@dataclass(frozen=True)
class Vote:
    """A vote a member says (in its log) it cast: for ``candidate`` in ``term``."""

    member: str
    term: int
    candidate: str
    line: int  # in the member's log, for the anomaly's explanation


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


@dataclass(frozen=True)
class LeaderClaim:
    """A member's log says it became the leader of ``term``."""

    member: str
    term: int
    line: int  # in the member's log


@dataclass(frozen=True)
class Digest:
    """A member's log says: after applying the entries up to ``index``, the digest of its
    applied log was ``log`` and of its state machine ``state`` (None: the member did not
    know it there, e.g. after a snapshot that did not carry its log digest)."""

    member: str
    index: int
    term: int | None
    log: str | None
    state: str | None
    line: int  # in the member's log (or in the run's polled digests, ``source``)
    #: Where ``line`` is, for explanations: the member's own log, or the run's
    #: :data:`POLLED_DIGESTS` file when the lab asked the member (etcd's HashKV).
    source: str = "its log"
    #: Digests compare only within one scope (None for a log digest; for etcd's HashKV,
    #: the compaction revision the hash starts after, which the hash depends on).
    scope: int | None = None


#: The run directory's file of digests the lab asked the members for during the run
#: (:attr:`SystemSpec.digest_poller`), JSON lines, one per answer or skipped member.
POLLED_DIGESTS = "digests.jsonl"


def read_polled_digests(path: Path) -> list[Digest] | None:
    """The digests in a run's :data:`POLLED_DIGESTS` file (records ``{"event":
    "digest", "member": M, "index": I, "term": T | null, "log": HEX | null, "state": S,
    "scope": C | null}``), in file order; other records (skipped members, torn lines)
    are passed over. None when the file says the members could not be asked at all
    (a ``{"event": "not-available"}`` record and no digest); [] when it is missing."""
    out: list[Digest] = []
    unavailable = False
    if not path.is_file():
        return out
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            if rec.get("event") == "not-available":
                unavailable = True
            if rec.get("event") != "digest" or type(rec.get("index")) is not int \
                    or not isinstance(rec.get("member"), str):
                continue
            term, scope = rec.get("term"), rec.get("scope")
            out.append(Digest(rec["member"], rec["index"], term if type(term) is int else None,
                              _text(rec.get("log")), _text(rec.get("state")), n,
                              source=POLLED_DIGESTS,
                              scope=scope if type(scope) is int else None))
    return None if unavailable and not out else out


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


class DigestPoller(Protocol):
    """Asks a running cluster's members for digests (:attr:`SystemSpec.digest_poller`)."""

    async def round(self) -> list[dict[str, Any]]:
        """One round: the records to append to :data:`POLLED_DIGESTS` (digests, and a
        record for every member skipped and why). Never raises for a member's bad or
        missing answer; cheap enough to run every few seconds."""
        ...


#: The file a member's adapter sends its output to, in the member's own folder of the
#: run's ``nodes`` folder (``lab.store`` names it for the run directory).
NODE_LOG = "node.log"


def run_members(nodes_dir: Path) -> list[str]:
    """Every member of a run that has a folder in its ``nodes`` folder, with a log or
    not (a member whose log is missing gives no evidence to the log-based checks)."""
    if not nodes_dir.is_dir():
        return []
    return sorted(p.name for p in nodes_dir.iterdir() if p.is_dir())


def member_logs(nodes_dir: Path) -> list[tuple[str, Path]]:
    """``(member, its log)`` for every member of a run (``nodes_dir/<member>/node.log``)."""
    if not nodes_dir.is_dir():
        return []
    return [(d.name, d / NODE_LOG) for d in sorted(p for p in nodes_dir.iterdir() if p.is_dir())
            if (d / NODE_LOG).is_file()]


# --------------------------------------------------------------------------- timing


#: A scenario's election timeout must be at least this many heartbeats (etcd's rule,
#: which the lab holds every system's scenarios to: a follower must not time out between
#: two heartbeats that a loaded machine delays). raftkv's own defaults (150 / 50 ms) are
#: under it; its members draw their election timeout from [T, 2T).
HEARTBEATS_PER_ELECTION = 5


def to_ms(seconds: float | None) -> int | None:
    """A duration in seconds as whole milliseconds, at least 1 (None stays None)."""
    return None if seconds is None else max(1, round(seconds * 1000))


def timing_rule(election_ms: int, heartbeat_ms: int) -> str | None:
    """Why an election timeout and heartbeat (ms) break the timing rule
    (:data:`HEARTBEATS_PER_ELECTION`), in words; None if they keep it."""
    if election_ms < HEARTBEATS_PER_ELECTION * heartbeat_ms:
        return (f"election timeout ({election_ms} ms) must be at least "
                f"{HEARTBEATS_PER_ELECTION} x heartbeat ({heartbeat_ms} ms)")
    return None


# --------------------------------------------------------------------------- the spec


def _runs_anything(model: str | None) -> str | None:
    return None


def _logs_cannot_say(nodes_dir: Path) -> None:
    return None


class MakeSystem(Protocol):
    """A system's factory: ``size`` members whose data and logs go under ``base_dir``,
    with seeded ``bugs`` (a subset of :attr:`SystemSpec.bugs`) and ``options``: the
    scenario's ``election_ms`` and ``heartbeat_ms`` and the system's own
    :attr:`SystemSpec.options` (absent when not set). ValueError (one line) if bad."""

    def __call__(self, base_dir: Path, size: int, bugs: Sequence[str],
                 options: Mapping[str, Any]) -> System: ...


@dataclass(frozen=True)
class SystemSpec:
    """Everything the lab knows about one system apart from its adapter's code."""

    name: str
    make: MakeSystem
    #: An election timeout and heartbeat (ms) for when a scenario does not set them.
    default_timing: tuple[int, int]
    #: Why the system cannot run here (or with workload ``model``), in one line; None if
    #: it can.
    problem: Callable[[str | None], str | None] = _runs_anything
    #: Settings a fault scenario may give this system (``system_options``):
    #: name -> (lowest, highest, what it does).
    options: Mapping[str, tuple[int, int, str]] = field(default_factory=dict)
    #: The seeded bugs the system can be started with.
    bugs: tuple[str, ...] = ()
    #: The named crash points a member can be armed with at run time (the ``crash-at``
    #: action; the cluster's ``crash_at``): the member dies on reaching the armed one,
    #: between two steps of persistence that a kill at a random moment almost never hits.
    crash_points: tuple[str, ...] = ()
    #: Whether a member's polled status reports its *current* term (so two members
    #: leading one term in the polls is a split brain), not some older term.
    status_term_is_current: bool = False
    #: The votes the members logged once cast, in log order per member (the run's
    #: ``nodes`` folder); None: this system's logs cannot say.
    votes: Callable[[Path], list[Vote] | None] = _logs_cannot_say
    #: The committed-entry conflicts the members logged; None: the logs cannot say.
    commit_conflicts: Callable[[Path], list[CommitConflict] | None] = _logs_cannot_say
    #: The "I became the leader of term T" the members logged; None: the logs cannot say.
    leader_claims: Callable[[Path], list[LeaderClaim] | None] = _logs_cannot_say
    #: The digests of the applied log and state the members logged (replica agreement);
    #: None: this system's logs hold none.
    digests: Callable[[Path], list[Digest] | None] = _logs_cannot_say
    #: Or digests the lab asks the running members for: makes the run's poller (called
    #: with the cluster before the clients start; None: it cannot poll here), whose
    #: rounds run every few seconds and once after the final phase, into the run's
    #: :data:`POLLED_DIGESTS` (etcd's HashKV). With neither, replica agreement is "not
    #: available".
    digest_poller: Callable[[SystemCluster], DigestPoller | None] | None = None
    #: Which members' logs hold any of the events each log-based check reads (keys
    #: ``votes``, ``commit_conflicts``, ``leader_claims``; a member absent from a key's
    #: collection gives that check no evidence). None, or a key left out: taken from the
    #: records the check's reader returned (the members that logged any).
    log_evidence: Callable[[Path], Mapping[str, Collection[str]] | None] = _logs_cannot_say
