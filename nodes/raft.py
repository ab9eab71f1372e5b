"""The Raft consensus core: a pure state machine with no I/O.

Theory of operation (after etcd-io/raft's ``raft.go`` and the h11 sans-IO style):

* Inputs are :meth:`Raft.step` (a message from a peer), :meth:`Raft.tick` (one logical
  clock tick), :meth:`Raft.propose` (a client command, leader only),
  :meth:`Raft.read_index` (a linearizable read request) and :meth:`Raft.compact` (the
  application took a snapshot). Nothing blocks and nothing touches a socket, disk or clock.
* Outputs accumulate and are drained with :meth:`Raft.ready`, a :class:`Ready` batch. The
  driver must, in this order: persist ``snapshot``, ``hard_state`` and ``entries`` (and
  fsync), then send ``messages``, then apply ``snapshot`` (if any) and ``committed``
  entries to the state machine, then serve ``read_states`` once applied has reached
  their index. Persisting before sending is what makes votes and acknowledgements
  durable promises.
* Same state + same inputs = same outputs. The only randomness, the election timeout,
  comes from a seeded :class:`random.Random` passed in.

Safety pieces and where they live:

* Election restriction (a vote only for a log at least as up to date):
  ``_handle_vote_request``.
* Log matching and conflict truncation: ``_handle_append`` / ``RaftLog.truncate_append``.
* Commit only by majority and only entries of the current term (Figure 8):
  ``_maybe_commit``. A new leader appends a no-op so its term gets an entry to commit.
* PreVote: a node that cannot win (cut off, or behind) never bumps its term, so it cannot
  depose a healthy leader when it comes back. CheckQuorum: a leader that has not heard
  from a majority for an election timeout steps down, and followers that heard from a
  leader recently ignore vote requests (the "lease"), so a one-way partition cannot
  trigger needless elections.
* ReadIndex: a read is served at the commit index once a heartbeat round started after
  the request has been acknowledged by a majority, and only after the leader committed
  an entry of its own term.

Seeded bugs (``Config.bugs``) deliberately break one of these; each is named where it acts.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nodes.progress import Progress, ProgressState, quorum_index, quorum_size
from nodes.types import Entry, HardState, Message, MsgType, Snapshot

#: Bugs the core can be told to have. Each breaks one safety property on purpose.
CORE_BUGS = frozenset({"forget-vote", "early-ack", "no-truncate", "old-term-commit", "stale-read"})


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class NotLeader(Exception):
    """A proposal or read was given to a node that is not the leader (local misuse,
    not a protocol error: the caller redirects the client)."""

    def __init__(self, leader: str | None) -> None:
        super().__init__(f"not the leader (leader: {leader})")
        self.leader = leader


class ProtocolViolation(Exception):
    """A peer sent something that would break a safety invariant if accepted."""


class CommittedConflict(ProtocolViolation):
    """A leader sent an entry that differs from one this node holds as committed: in a
    correct cluster this cannot happen (Leader Completeness), so it is evidence that a
    committed entry is being lost (e.g. a leader counted replicas of an old term's entry)."""

    def __init__(self, leader: str, term: int, index: int, commit: int) -> None:
        super().__init__(f"leader {leader} would overwrite committed entry {index}")
        self.leader, self.term, self.index, self.commit = leader, term, index, commit


@dataclass(frozen=True, slots=True)
class Config:
    id: str
    peers: tuple[str, ...]  # every voter, this node included
    election_ticks: int = 15  # randomised timeout is drawn from [election, 2*election)
    heartbeat_ticks: int = 5
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 64  # unacknowledged appends per follower
    max_batch: int = 1024  # entries per append message
    bugs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.id not in self.peers:
            raise ValueError(f"node {self.id!r} is not among the peers {self.peers}")
        if len(set(self.peers)) != len(self.peers):
            raise ValueError("duplicate peer ids")
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        unknown = self.bugs - CORE_BUGS
        if unknown:
            raise ValueError(f"unknown bugs {sorted(unknown)}")


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read request ``context`` may be served once the state machine has applied ``index``."""

    context: int
    index: int


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None = None
    # Entries to make durable. If entries[0].index is at or below the last durable index,
    # the durable log is truncated from there first (a conflict was resolved).
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None  # received from the leader: persist, then restore
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    # True when ``messages`` depend on nothing this Ready persists, so they may be sent
    # while it is being persisted (a leader whose term and vote are already durable: its
    # appends may go out in parallel with its own disk write, Raft thesis 10.2.1, because
    # the leader counts its own copy of an entry only once a later ready() call shows it
    # durable).
    early_send: bool = False
    # Reads that can never be served here (leadership lost): tell the clients.
    dropped_reads: list[int] = field(default_factory=list)
    role: Role = Role.FOLLOWER
    leader: str | None = None
    term: int = 0

    def empty(self) -> bool:
        return not (
            self.hard_state
            or self.entries
            or self.snapshot
            or self.messages
            or self.committed
            or self.read_states
            or self.dropped_reads
        )


class RaftLog:
    """The in-memory log after the latest snapshot: ``entries[k]`` has index
    ``offset + 1 + k``; ``(offset, offset_term)`` is the snapshot's last index and term."""

    __slots__ = ("entries", "offset", "offset_term")

    def __init__(self, snapshot: Snapshot | None, entries: Sequence[Entry]) -> None:
        self.offset = snapshot.index if snapshot else 0
        self.offset_term = snapshot.term if snapshot else 0
        self.entries: list[Entry] = [e for e in entries if e.index > self.offset]
        for k, e in enumerate(self.entries):
            if e.index != self.offset + 1 + k:
                raise ValueError(f"log is not consecutive at index {e.index}")

    def last_index(self) -> int:
        return self.offset + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.offset_term

    def term(self, index: int) -> int | None:
        """Term of the entry at ``index``; None if compacted away or beyond the end."""
        if index == self.offset:
            return self.offset_term
        if index < self.offset or index > self.last_index():
            return None
        return self.entries[index - self.offset - 1].term

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def slice(self, lo: int, hi: int) -> list[Entry]:
        """Entries with index in [lo, hi]; lo must be above the snapshot."""
        return self.entries[lo - self.offset - 1 : hi - self.offset]

    def truncate_append(self, entries: Sequence[Entry]) -> None:
        first = entries[0].index
        del self.entries[first - self.offset - 1 :]
        self.entries.extend(entries)

    def compact(self, index: int, term: int) -> None:
        del self.entries[: index - self.offset]
        self.offset, self.offset_term = index, term

    def reset(self, snapshot: Snapshot) -> None:
        self.entries = []
        self.offset, self.offset_term = snapshot.index, snapshot.term


@dataclass(slots=True)
class _ReadRequest:
    context: int
    index: int
    acks: set[str]


class Raft:
    def __init__(
        self,
        config: Config,
        *,
        hard_state: HardState | None = None,
        snapshot: Snapshot | None = None,
        entries: Sequence[Entry] = (),
        rng: random.Random | None = None,
    ) -> None:
        hs = hard_state or HardState()
        self.cfg = config
        self.id = config.id
        self.peers = config.peers
        self.others = tuple(p for p in config.peers if p != config.id)
        self.bugs = config.bugs
        self.rng = rng or random.Random(0)
        self.log = RaftLog(snapshot, entries)
        self.snapshot = snapshot
        self.term = hs.term
        self.vote = hs.vote
        # The commit index can never be below the snapshot (a snapshot holds committed state).
        self.commit = max(hs.commit, self.log.offset)
        if self.commit > self.log.last_index():
            raise ValueError(
                f"hard state commit {self.commit} beyond last log index {self.log.last_index()}"
            )
        self.applied = self.log.offset
        self.role = Role.FOLLOWER
        self.leader: str | None = None
        self.progress: dict[str, Progress] = {}
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self._reset_randomized_timeout()
        # ReadIndex bookkeeping (leader only).
        self._reads: list[_ReadRequest] = []
        self._reads_waiting_commit: list[int] = []
        self._next_context = 1
        # Output accumulators, drained by ready().
        self._msgs: list[Message] = []
        self._unstable_from: int | None = None  # first log index not yet handed out to persist
        self._pending_snapshot: Snapshot | None = None
        self._read_states: list[ReadState] = []
        self._dropped_reads: list[int] = []
        self._last_hs = hs
        self._need_broadcast = False
        # Entries up to here are on disk: everything handed out by the previous ready()
        # (the driver persists a Ready before it calls ready() again).
        self._stable = self.log.last_index()
        self._handed = self._stable

    # ------------------------------------------------------------------ inputs

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.randomized_timeout:
                self.election_elapsed = 0
                self.campaign()
            elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
                self.heartbeat_elapsed += 1
                if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
                    self.heartbeat_elapsed = 0
                    self._repoll()

    def campaign(self) -> None:
        """Start an election now (PreVote first when enabled)."""
        if self.role is Role.LEADER:
            return
        if self.cfg.pre_vote:
            self._become_pre_candidate()
        else:
            self._become_candidate()

    def propose(self, data: Any) -> int:
        """Append a client command to the leader's log; returns its index.
        The command is committed once a majority stores it; the driver learns the
        outcome from ``Ready.committed`` (matching term and index)."""
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        return self._append([data])

    def read_index(self) -> int:
        """Ask for a linearizable read. Returns a context; a ``ReadState`` with that
        context appears in a later ``Ready`` once it is safe to read at its index
        (or the context appears in ``dropped_reads`` if leadership is lost first)."""
        ctx = self._next_context
        self._next_context += 1
        if "stale-read" in self.bugs:
            # BUG stale-read: serve from local state, whoever we are, with no check that
            # we are (still) the leader.
            self._read_states.append(ReadState(ctx, self.commit))
            return ctx
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader)
        if not self._committed_in_term():
            # Until the no-op of this term commits, the commit index may lag what the
            # previous leader acknowledged: wait for it.
            self._reads_waiting_commit.append(ctx)
            return ctx
        self._start_read(ctx)
        return ctx

    def compact(self, index: int, data: Any) -> Snapshot:
        """The application has a state-machine image ``data`` at applied ``index``:
        make it the snapshot and drop the log up to it. Returns the snapshot to persist."""
        if index > self.applied or index <= self.log.offset:
            raise ValueError(f"cannot compact to {index} (applied {self.applied}, "
                             f"snapshot {self.log.offset})")
        term = self.log.term(index)
        assert term is not None
        snap = Snapshot(index, term, data, self.peers)
        self.log.compact(index, term)
        self.snapshot = snap
        if self._unstable_from is not None and self._unstable_from <= index:
            self._unstable_from = index + 1 if index < self.log.last_index() else None
        return snap

    def step(self, m: Message) -> None:
        if m.dst != self.id or m.src not in self.peers or m.src == self.id:
            raise ProtocolViolation(f"message from {m.src} to {m.dst} is not for {self.id}")
        if m.term > self.term:
            if m.type in (MsgType.VOTE, MsgType.PRE_VOTE) and self._in_lease():
                # CheckQuorum lease: we heard from a leader less than an election timeout
                # ago, so this candidate is disruptive (e.g. it was cut off one way).
                return
            if m.type is MsgType.PRE_VOTE or (
                m.type is MsgType.PRE_VOTE_RESP and not m.reject
            ):
                pass  # PreVote never changes our term; a granted answer carries the future term.
            elif m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, None)
        elif m.term < self.term:
            if m.type in (MsgType.APP, MsgType.HEARTBEAT) and (
                self.cfg.check_quorum or self.cfg.pre_vote
            ):
                # A stale leader (back from a partition) that cannot learn the new term
                # from votes, because PreVote keeps us from bumping terms: tell it.
                self._send(MsgType.APP_RESP, m.src, term=self.term)
            elif m.type is MsgType.PRE_VOTE:
                self._send(MsgType.PRE_VOTE_RESP, m.src, term=self.term, reject=True)
            return

        if m.type in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    def ready(self) -> Ready:
        """Drain everything the driver must do now (see the module docstring)."""
        self._stable = self._handed
        if self.role is Role.LEADER and self._maybe_commit():
            self._need_broadcast = True
        if self._need_broadcast:
            self._need_broadcast = False
            if self.role is Role.LEADER:
                for p in self.others:
                    self._send_append(p, send_if_empty=False)
        rd = Ready(role=self.role, leader=self.leader, term=self.term)
        hs = HardState(self.term, self.vote, self.commit)
        if "forget-vote" in self.bugs:
            # BUG forget-vote: votedFor never reaches the disk.
            hs = HardState(hs.term, None, hs.commit)
        rd.early_send = self.role is Role.LEADER and (hs.term, hs.vote) == (
            self._last_hs.term, self._last_hs.vote)
        if hs != self._last_hs:
            rd.hard_state = hs
            self._last_hs = hs
        if self._pending_snapshot is not None:
            rd.snapshot = self._pending_snapshot
            self._pending_snapshot = None
        if self._unstable_from is not None:
            rd.entries = self.log.slice(self._unstable_from, self.log.last_index())
            self._unstable_from = None
        self._handed = self.log.last_index()
        if self.commit > self.applied:
            rd.committed = self.log.slice(self.applied + 1, self.commit)
            self.applied = self.commit
        rd.messages, self._msgs = self._msgs, []
        rd.read_states, self._read_states = self._read_states, []
        rd.dropped_reads, self._dropped_reads = self._dropped_reads, []
        return rd

    # ------------------------------------------------------------------ introspection

    def status(self) -> dict[str, Any]:
        return {
            "node": self.id,
            "role": self.role.value,
            "term": self.term,
            "leader": self.leader,
            "commit": self.commit,
            "applied": self.applied,
            "last_index": self.log.last_index(),
            "snapshot_index": self.log.offset,
        }

    # ------------------------------------------------------------------ role changes

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = None
        self.leader = None
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.votes = {}
        self.progress = {}
        self._abort_reads()

    def _reset_randomized_timeout(self) -> None:
        e = self.cfg.election_ticks
        self.randomized_timeout = e + self.rng.randrange(e)

    def _become_follower(self, term: int, leader: str | None) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_pre_candidate(self) -> None:
        # Neither the term nor the vote change: a pre-election is only a poll.
        self._reset(self.term)
        self.role = Role.PRE_CANDIDATE
        self._poll(MsgType.PRE_VOTE, self.term + 1)

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.role = Role.CANDIDATE
        self.vote = self.id
        self._poll(MsgType.VOTE, self.term)

    def _poll(self, kind: MsgType, term: int) -> None:
        self.votes = {self.id: True}
        if self._tally() is not None:
            self._election_won()
            return
        for p in self.others:
            self._send(kind, p, term=term, index=self.log.last_index(),
                       log_term=self.log.last_term())

    def _repoll(self) -> None:
        """Ask again, once a heartbeat interval, every peer that has not answered: a
        request or its answer may have been lost, or the peer was down (Raft retries
        RPCs that get no answer, section 5.1). Safe: a vote, once given, is on disk."""
        if self.role is Role.PRE_CANDIDATE:
            kind, term = MsgType.PRE_VOTE, self.term + 1
        else:
            kind, term = MsgType.VOTE, self.term
        for p in self.others:
            if p not in self.votes:
                self._send(kind, p, term=term, index=self.log.last_index(),
                           log_term=self.log.last_term())

    def _election_won(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._become_candidate()
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        last = self.log.last_index()
        for p in self.others:
            pr = Progress(last + 1, self.cfg.max_inflight)
            pr.recent_active = True
            self.progress[p] = pr
        # The no-op that lets this term commit (and with it everything before it).
        # ready() sends it to every follower.
        self._append([None])

    def _tally(self) -> bool | None:
        granted = sum(1 for v in self.votes.values() if v)
        rejected = len(self.votes) - granted
        q = quorum_size(len(self.peers))
        if granted >= q:
            return True
        if rejected >= q:
            return False
        return None

    def _in_lease(self) -> bool:
        return (
            self.cfg.check_quorum
            and self.leader is not None
            and self.election_elapsed < self.cfg.election_ticks
        )

    # ------------------------------------------------------------------ votes

    def _handle_vote_request(self, m: Message) -> None:
        resp = MsgType.VOTE_RESP if m.type is MsgType.VOTE else MsgType.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.src
            or (self.vote is None and self.leader is None)
            or (m.type is MsgType.PRE_VOTE and m.term > self.term)
        )
        up_to_date = m.log_term > self.log.last_term() or (
            m.log_term == self.log.last_term() and m.index >= self.log.last_index()
        )
        if can_vote and up_to_date:
            # A granted pre-vote answers with the candidate's future term.
            self._send(resp, m.src, term=m.term)
            if m.type is MsgType.VOTE and self.vote != m.src:
                # Only a first grant restarts our timer: a candidate that cannot hear
                # the answers asks again and again, and must not keep us from campaigning.
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(resp, m.src, term=self.term, reject=True)

    def _step_candidate(self, m: Message) -> None:
        want = MsgType.PRE_VOTE_RESP if self.role is Role.PRE_CANDIDATE else MsgType.VOTE_RESP
        if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            # A leader exists for this term (m.term >= ours, or step() would have returned).
            self._become_follower(m.term, m.src)
            self._step_follower(m)
        elif m.type is want:
            self.votes.setdefault(m.src, not m.reject)
            result = self._tally()
            if result is True:
                self._election_won()
            elif result is False:
                self._become_follower(self.term, None)

    # ------------------------------------------------------------------ follower

    def _step_follower(self, m: Message) -> None:
        if m.type in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            self.election_elapsed = 0
            self.leader = m.src
        if m.type is MsgType.APP:
            self._handle_append(m)
        elif m.type is MsgType.HEARTBEAT:
            self._commit_to(min(m.commit, self.log.last_index()))
            self._send(MsgType.HEARTBEAT_RESP, m.src, context=m.context)
        elif m.type is MsgType.SNAP:
            self._handle_snapshot(m)

    def _handle_append(self, m: Message) -> None:
        if self.log.offset < m.index <= self.commit and self.log.term(m.index) != m.log_term:
            # The entry before the leader's holds a different term from ours, which we
            # hold as committed: a committed entry was lost (a leader lacks it).
            raise CommittedConflict(m.src, m.term, m.index, self.commit)
        if m.index < self.commit:
            # Everything up to our commit index is known to match the leader's log --
            # unless a committed entry was lost: then the leader sends a different one.
            for e in m.entries:
                if e.index > self.commit:
                    break
                held = self.log.term(e.index)
                if held is not None and e.index > self.log.offset and held != e.term:
                    raise CommittedConflict(m.src, m.term, e.index, self.commit)
            self._send(MsgType.APP_RESP, m.src, index=self.commit)
            return
        if not self.log.match_term(m.index, m.log_term):
            hint = min(m.index, self.log.last_index())
            hint, hint_term = self._find_conflict_by_term(hint, m.log_term)
            self._send(MsgType.APP_RESP, m.src, index=m.index, reject=True,
                       hint_index=hint, hint_term=hint_term)
            return
        last_new = m.index + len(m.entries)
        conflict = 0
        for e in m.entries:
            if not self.log.match_term(e.index, e.term):
                conflict = e.index
                break
        if conflict:
            if conflict <= self.commit:
                raise CommittedConflict(m.src, m.term, conflict, self.commit)
            new = list(m.entries[conflict - m.entries[0].index :])
            if "no-truncate" in self.bugs and conflict <= self.log.last_index():
                # BUG no-truncate: keep our conflicting suffix and only take entries past
                # its end, yet acknowledge as if the logs matched.
                new = [e for e in new if e.index > self.log.last_index()]
            if new:
                self.log.truncate_append(new)
                self._mark_unstable(new[0].index)
        self._commit_to(min(m.commit, last_new))
        self._send(MsgType.APP_RESP, m.src, index=last_new)

    def _handle_snapshot(self, m: Message) -> None:
        s = m.snapshot
        if s is None:
            raise ProtocolViolation("snapshot message without a snapshot")
        if s.index <= self.commit:
            self._send(MsgType.APP_RESP, m.src, index=self.commit)
            return
        if self.log.match_term(s.index, s.term):
            # We already have everything it covers: just fast-forward the commit.
            self._commit_to(s.index)
        else:
            self.log.reset(s)
            self.snapshot = s
            self._pending_snapshot = s
            self._unstable_from = None
            self.commit = s.index
            self.applied = s.index
        # Only what the snapshot proves matches: entries of ours past it may conflict.
        self._send(MsgType.APP_RESP, m.src, index=self.commit)

    def _find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= ``index`` whose term is <= ``term`` (with its term):
        everything above it certainly differs from a log whose entry at ``index`` has
        ``term``, so the leader can skip a whole term per round trip."""
        while index > self.log.offset:
            t = self.log.term(index)
            assert t is not None
            if t <= term:
                return index, t
            index -= 1
        return index, self.log.offset_term

    # ------------------------------------------------------------------ leader

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = 1 + sum(1 for pr in self.progress.values() if pr.recent_active)
                for pr in self.progress.values():
                    pr.recent_active = False
                if active < quorum_size(len(self.peers)):
                    # We cannot reach a majority: stop pretending to lead.
                    self._become_follower(self.term, None)
                    return
        for pr in self.progress.values():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(self._reads[-1].context if self._reads else 0)

    def _broadcast_heartbeat(self, context: int) -> None:
        for p in self.others:
            pr = self.progress[p]
            self._send(MsgType.HEARTBEAT, p, commit=min(pr.match, self.commit), context=context)

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        if m.type is MsgType.APP_RESP:
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif m.type is MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and len(pr.inflight) >= pr.max_inflight:
                pr.inflight.popleft()  # an append was probably lost: let one more through
            if pr.state is ProgressState.SNAPSHOT and pr.snapshot_ticks >= self.cfg.election_ticks:
                pr.become_probe()  # the snapshot was probably lost: try again
            if pr.match < self.log.last_index():
                self._send_append(m.src)
            if m.context:
                self._ack_read(m.context, m.src)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            hint = m.hint_index
            if m.hint_term > 0:
                hint, _ = self._find_conflict_by_term(hint, m.hint_term)
            if pr.maybe_decrease(m.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.src)
            return
        was_paused = pr.paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        if self._maybe_commit():
            for p in self.others:
                self._send_append(p)
        elif was_paused:
            self._send_append(m.src)
        while self._send_append(m.src, send_if_empty=False):
            pass

    def _maybe_commit(self) -> bool:
        own = min(self.log.last_index(), self._stable)  # only what is on our disk counts
        matches = [own] + [pr.match for pr in self.progress.values()]
        idx = quorum_index(matches)
        if idx <= self.commit:
            return False
        if self.log.term(idx) != self.term and "old-term-commit" not in self.bugs:
            # Figure 8: an entry of an earlier term may be stored on a majority and still
            # be overwritten later; only count replicas of entries from our own term.
            # (BUG old-term-commit skips this check.)
            return False
        self._commit_to(idx)
        self._release_waiting_reads()
        return True

    def _send_append(self, to: str, send_if_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None or prev < self.log.offset:
            return self._send_snapshot(to, pr)
        last = min(self.log.last_index(), prev + self.cfg.max_batch)
        entries = self.log.slice(prev + 1, last) if last > prev else []
        if not entries and not send_if_empty:
            return False
        self._send(MsgType.APP, to, index=prev, log_term=prev_term, entries=tuple(entries),
                   commit=self.commit)
        if entries:
            pr.sent(entries[-1].index)
        elif pr.state is ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: str, pr: Progress) -> bool:
        if self.snapshot is None:
            raise AssertionError("log compacted without a snapshot")
        pr.become_snapshot(self.snapshot.index)
        self._send(MsgType.SNAP, to, snapshot=self.snapshot)
        return False

    def _append(self, data: list[Any]) -> int:
        last = self.log.last_index()
        new = [Entry(self.term, last + 1 + k, d) for k, d in enumerate(data)]
        self.log.truncate_append(new)
        self._mark_unstable(new[0].index)
        self._need_broadcast = True
        if "early-ack" in self.bugs and new[0].data is not None:
            # BUG early-ack: the leader treats its own copy as enough and commits (and so
            # acknowledges) at once, before any follower has the entry.
            self._commit_to(self.log.last_index())
        return self.log.last_index()

    # ------------------------------------------------------------------ reads

    def _committed_in_term(self) -> bool:
        return self.log.term(self.commit) == self.term

    def _start_read(self, ctx: int) -> None:
        if len(self.peers) == 1:
            self._read_states.append(ReadState(ctx, self.commit))
            return
        self._reads.append(_ReadRequest(ctx, self.commit, {self.id}))
        self._broadcast_heartbeat(ctx)

    def _release_waiting_reads(self) -> None:
        if self._reads_waiting_commit and self._committed_in_term():
            waiting, self._reads_waiting_commit = self._reads_waiting_commit, []
            for ctx in waiting:
                self._start_read(ctx)

    def _ack_read(self, ctx: int, peer: str) -> None:
        for k, req in enumerate(self._reads):
            if req.context == ctx:
                req.acks.add(peer)
                if len(req.acks) >= quorum_size(len(self.peers)):
                    # A majority still followed us after this request arrived, so our
                    # commit index then was as high as any acknowledged write: every
                    # earlier request is confirmed too.
                    done, self._reads = self._reads[: k + 1], self._reads[k + 1 :]
                    self._read_states.extend(ReadState(r.context, r.index) for r in done)
                return

    def _abort_reads(self) -> None:
        self._dropped_reads.extend(r.context for r in self._reads)
        self._dropped_reads.extend(self._reads_waiting_commit)
        self._reads = []
        self._reads_waiting_commit = []

    # ------------------------------------------------------------------ helpers

    def _commit_to(self, index: int) -> None:
        if index > self.commit:
            self.commit = index

    def _mark_unstable(self, index: int) -> None:
        if self._unstable_from is None or index < self._unstable_from:
            self._unstable_from = index

    def _send(self, kind: MsgType, to: str, **fields: Any) -> None:
        fields.setdefault("term", self.term)
        self._msgs.append(Message(type=kind, src=self.id, dst=to, **fields))
