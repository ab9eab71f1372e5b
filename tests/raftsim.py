"""A deterministic, in-memory simulator for the sans-IO Raft core (``nodes.raft``).

The simulator is the "driver" of every node: it follows the ``Ready`` contract exactly
(persist snapshot, hard state and entries into a per-node durable store; then send the
messages; then apply the snapshot and committed entries to a small key-value state
machine; then serve reads) and owns everything the core does not: a virtual clock, a
seeded network and the faults.

* **Virtual time.** :meth:`Sim.step` ticks every live node once, then delivers every
  message that is due. A message sent at step ``t`` is due at ``t + d`` with ``d`` drawn
  from ``[min_delay, max_delay]``; messages due in the current step are delivered in
  rounds (the answers to a delay-0 message may be delivered in the same step).
* **Network faults**, all drawn from one seeded RNG: drop probability, duplication,
  reordering (random delays), and partitions as a set of blocked *directed* links, so
  ``block(a, b)`` cuts only ``a -> b``. A blocked link drops the message at delivery time.
* **Manual network.** With ``manual=True`` nothing is delivered automatically: messages
  wait in :attr:`Sim.held` and tests pick what to deliver, drop, or reorder
  (:meth:`Sim.deliver`, :meth:`Sim.drop`). This drives exact message-level scenarios and
  the Hypothesis state machine.
* **Crash/restart.** :meth:`Sim.crash` discards the ``Raft`` object and everything not
  persisted (pending reads, messages in flight *to* the node). :meth:`Sim.restart`
  builds a new ``Raft`` from the durable store and a state machine from the stored
  snapshot; committed entries are re-applied as they come out of ``ready()``.
* **Invariants** are checked as the run goes (every delivery, every ``Ready``, every
  step) and a violation raises :class:`InvariantViolation` naming the check, the seed
  and the step. The checks, by name:

  ``leader``   at most one leader per term (every (term, leader) ever seen is recorded);
  ``vote``     a node grants at most one candidate per term, and its persisted vote for
               a term never changes once set;
  ``persist``  the persisted term and commit never decrease; the durable log stays
               consecutive and covers the persisted commit index;
  ``log``      log matching: an (index, term) pair always names the same entry with the
               same predecessor term (checked incrementally on every persisted entry,
               which by induction gives the full property), plus a full pairwise
               comparison of the in-memory logs every ``full_check_every`` steps;
  ``apply``    no two nodes apply different entries at one index; each node applies a
               gapless, increasing sequence; snapshots match the applied history;
  ``commit``   a node's commit index never decreases while it lives, and a leader of
               term T holds every entry whose commit was observed in a term below T
               (leader completeness: the committed prefix never shrinks);
  ``readindex`` a ReadState's index covers every write committed (applied anywhere)
               before the read was requested;
  ``read``     so the value a read returns is never older than such a write;
  ``protocol`` the core raised ``ProtocolViolation`` on a message from a peer.

Typical use (every failure message names the seed and the step; re-running the same
seed replays the same run exactly)::

    sim = Sim(5, seed=7, drop=0.1, max_delay=4)
    leader = sim.wait_leader()
    sim.propose_and_wait("v1")
    sim.isolate(leader)
    sim.wait_leader(among=[n for n in sim.ids if n != leader])
    chaos(sim, 500)      # random traffic and faults
    repair(sim)          # heal, restart, demand progress, run the full checks
"""

from __future__ import annotations

import bisect
import heapq
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nodes.raft import Config, NotLeader, ProtocolViolation, Raft, Role
from nodes.types import Entry, HardState, Message, MsgType, Snapshot

ALL_CHECKS = frozenset(
    {"leader", "vote", "persist", "log", "apply", "commit", "readindex", "read", "protocol"}
)


def seeds(default: int) -> range:
    """The seeds a scenario runs over: ``RAFTSIM_SEEDS`` (if set) overrides the count
    ``default``; ``RAFTSIM_SEED_START`` shifts the range to explore new seeds."""
    start = int(os.environ.get("RAFTSIM_SEED_START", 0))
    return range(start, start + int(os.environ.get("RAFTSIM_SEEDS", default)))


#: What each scenario cost: name -> (seeds, node-steps, CPU seconds). Printed by conftest.py.
COSTS: dict[str, tuple[int, int, float]] = {}

R = TypeVar("R")


def over_seeds(name: str, default: int, scenario: Callable[[int], R]) -> list[R]:
    """Run ``scenario(seed)`` for every seed of :func:`seeds`, record its cost in
    :data:`COSTS`, and return the results. A failure names the scenario and the seed."""
    t0 = time.process_time()
    before = Sim.node_steps
    results = []
    todo = seeds(default)
    for seed in todo:
        try:
            results.append(scenario(seed))
        except AssertionError as e:
            e.add_note(f"scenario {name!r}, seed {seed} (replay: RAFTSIM_SEED_START={seed} "
                       f"RAFTSIM_SEEDS=1)")
            raise
    COSTS[name] = (len(todo), Sim.node_steps - before, time.process_time() - t0)
    return results


class InvariantViolation(AssertionError):
    """A safety invariant broke. ``check`` names it (see the module docstring)."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


class LivenessFailure(AssertionError):
    """Something a scenario waited for did not happen within its step budget."""


@dataclass(slots=True)
class Store:
    """A node's durable state: what survives a crash."""

    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)  # consecutive, above the snapshot

    def first_index(self) -> int:
        return (self.snapshot.index if self.snapshot else 0) + 1

    def last_index(self) -> int:
        return self.first_index() - 1 + len(self.entries)


@dataclass(slots=True)
class Read:
    node: str
    key: str
    requested: int  # step
    required: int  # every write applied anywhere before the request has index <= this
    index: int = -1  # the ReadState's index once confirmed
    value: Any = None
    write_index: int = 0  # index of the write whose value was returned (0: none)
    served: int = -1  # step the value was returned, -1 while pending
    dropped: bool = False


@dataclass(slots=True)
class Applied:
    term: int
    data: Any
    step: int  # when it was first applied (so committed) anywhere
    commit_term: int  # an upper bound on the term in which the entry was committed


class Node:
    __slots__ = (
        "applied", "id", "incarnation", "kv", "last_commit", "raft", "reads", "store",
        "waiting_reads",
    )

    def __init__(self, nid: str) -> None:
        self.id = nid
        self.raft: Raft | None = None
        self.store = Store()
        self.incarnation = 0
        self.kv: dict[str, tuple[Any, int]] = {}  # key -> (value, index of the write)
        self.applied = 0
        self.last_commit = 0
        self.reads: dict[int, Read] = {}  # read context -> read, until a ReadState arrives
        self.waiting_reads: list[Read] = []  # confirmed, waiting for applied >= index


def node_ids(n: int) -> tuple[str, ...]:
    return tuple(f"n{k}" for k in range(1, n + 1))


def cmd(value: Any, key: str = "x") -> dict[str, Any]:
    """The command the simulator's state machine understands: set ``key`` to ``value``."""
    return {"k": key, "v": value}


class Sim:
    """A cluster of ``n`` Raft nodes driven in virtual time. See the module docstring."""

    node_steps = 0  # over all instances: the cost measure reported per scenario

    def __init__(
        self,
        n: int = 3,
        seed: int = 0,
        *,
        election_ticks: int = 10,
        heartbeat_ticks: int = 3,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_inflight: int = 64,
        max_batch: int = 1024,
        bugs: Iterable[str] = (),
        min_delay: int = 0,
        max_delay: int = 2,
        drop: float = 0.0,
        dup: float = 0.0,
        manual: bool = False,
        compact_every: int | None = None,
        full_check_every: int = 50,
        checks: frozenset[str] = ALL_CHECKS,
    ) -> None:
        self.seed = seed
        self.ids = node_ids(n)
        self.bugs = frozenset(bugs)
        self.configs = {
            nid: Config(
                id=nid, peers=self.ids, election_ticks=election_ticks,
                heartbeat_ticks=heartbeat_ticks, pre_vote=pre_vote, check_quorum=check_quorum,
                max_inflight=max_inflight, max_batch=max_batch, bugs=self.bugs,
            )
            for nid in self.ids
        }
        self.nodes = {nid: Node(nid) for nid in self.ids}
        self.net_rng = random.Random(f"net/{seed}")
        #: For scenarios to draw their own choices from (kept apart from the network's).
        self.rng = random.Random(f"scenario/{seed}")
        self.min_delay, self.max_delay = min_delay, max_delay
        self.drop_rate, self.dup_rate = drop, dup
        self.manual = manual
        self.compact_every = compact_every
        self.full_check_every = full_check_every
        self.checks = checks
        self.now = 0
        self.blocked: set[tuple[str, str]] = set()
        self._queue: list[tuple[int, int, Message]] = []
        self._seq = 0
        self.held: list[Message] = []  # manual mode: sent, not yet delivered or dropped
        self.stats: Counter[str] = Counter()
        # Global history for the invariants.
        self.leaders: dict[int, str] = {}  # term -> the leader seen for it
        self.granted: dict[tuple[str, int], str] = {}  # (voter, term) -> candidate
        self.entry_ids: dict[tuple[int, int], tuple[Any, int | None]] = {}
        self.applied: dict[int, Applied] = {}  # index -> first application anywhere
        self.max_applied = 0
        self.key_writes: dict[str, list[int]] = {}  # key -> indexes of its writes, ascending
        self.reads: list[Read] = []
        self.value_index: dict[Any, int] = {}  # value -> index it was applied at
        self._ref_cache: dict[int, dict[str, tuple[Any, int]]] = {}
        self.violation: InvariantViolation | None = None  # the first one raised, if any
        for node in self.nodes.values():
            self._boot(node)

    # ------------------------------------------------------------------ queries

    def raft(self, nid: str) -> Raft:
        r = self.nodes[nid].raft
        if r is None:
            raise AssertionError(f"{nid} is down")
        return r

    def live(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.raft is not None]

    def is_up(self, nid: str) -> bool:
        return self.nodes[nid].raft is not None

    def leader(self, among: Iterable[str] | None = None) -> str | None:
        """The leader of the highest term among the live nodes in ``among`` (default all),
        or None if the node(s) of that term have no leader."""
        pool = [self.nodes[i] for i in (among if among is not None else self.ids)]
        rafts = [n.raft for n in pool if n.raft is not None]
        if not rafts:
            return None
        top = max(r.term for r in rafts)
        found = [r.id for r in rafts if r.term == top and r.role is Role.LEADER]
        return found[0] if found else None

    def role(self, nid: str) -> Role | None:
        r = self.nodes[nid].raft
        return None if r is None else r.role

    def term(self, nid: str) -> int:
        return self.raft(nid).term

    def commit_index(self, nid: str) -> int:
        return self.raft(nid).commit

    def has_applied(self, value: Any, nid: str) -> bool:
        idx = self.value_index.get(value)
        return idx is not None and self.nodes[nid].applied >= idx

    def kv(self, nid: str) -> dict[str, Any]:
        return {k: v for k, (v, _) in self.nodes[nid].kv.items()}

    def fail(self, what: str) -> LivenessFailure:
        return LivenessFailure(f"[seed={self.seed} step={self.now}] {what}")

    # ------------------------------------------------------------------ faults

    def block(self, src: str, dst: str) -> None:
        """Cut the one-way link ``src -> dst``."""
        self.blocked.add((src, dst))

    def unblock(self, src: str, dst: str) -> None:
        self.blocked.discard((src, dst))

    def isolate(self, nid: str) -> None:
        for other in self.ids:
            if other != nid:
                self.block(nid, other)
                self.block(other, nid)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups (nodes in no group are isolated)."""
        self.heal()
        where: dict[str, int] = {}
        for k, g in enumerate(groups):
            for nid in g:
                where[nid] = k
        for a in self.ids:
            for b in self.ids:
                if a != b and (a not in where or where.get(a) != where.get(b)):
                    self.blocked.add((a, b))

    def heal(self) -> None:
        self.blocked.clear()

    def crash(self, nid: str) -> None:
        node = self.nodes[nid]
        if node.raft is None:
            return
        node.raft = None
        for r in node.reads.values():
            r.dropped = True
        for r in node.waiting_reads:
            r.dropped = True
        node.reads, node.waiting_reads = {}, []
        node.kv, node.applied = {}, 0
        if self._queue:
            self._queue = [q for q in self._queue if q[2].dst != nid]
            heapq.heapify(self._queue)
        self.held = [m for m in self.held if m.dst != nid]
        self.stats["crash"] += 1

    def restart(self, nid: str) -> None:
        node = self.nodes[nid]
        if node.raft is not None:
            raise AssertionError(f"{nid} is already up")
        node.incarnation += 1
        self._boot(node)
        self.stats["restart"] += 1

    def _boot(self, node: Node) -> None:
        st = node.store
        node.raft = Raft(
            self.configs[node.id],
            hard_state=st.hard_state,
            snapshot=st.snapshot,
            entries=list(st.entries),
            rng=random.Random(f"node/{self.seed}/{node.id}/{node.incarnation}"),
        )
        node.kv, node.applied = {}, 0
        if st.snapshot is not None:
            self._install(node, st.snapshot)
        node.last_commit = node.raft.commit

    def compact(self, nid: str) -> Snapshot | None:
        """Snapshot ``nid``'s state machine at its applied index and compact its log."""
        node = self.nodes[nid]
        raft = node.raft
        if raft is None or node.applied <= raft.log.offset:
            return None
        snap = raft.compact(node.applied, {"kv": dict(node.kv)})
        self._check_snapshot(node, snap, "compact")
        st = node.store
        drop = snap.index - st.first_index() + 1
        del st.entries[: max(0, drop)]
        st.snapshot = snap
        self.stats["compact"] += 1
        return snap

    # ------------------------------------------------------------------ client operations

    def propose(self, value: Any, key: str = "x", at: str | None = None) -> tuple[str, int] | None:
        """Propose ``cmd(value, key)`` to ``at`` (default: the current leader).
        Returns (node, index) or None if there is no leader / it refused (NotLeader)."""
        nid = at if at is not None else self.leader()
        if nid is None or self.nodes[nid].raft is None:
            return None
        raft = self.raft(nid)
        try:
            index = raft.propose(cmd(value, key))
        except NotLeader:
            return None
        self.stats["proposed"] += 1
        if self.manual:
            self._ready(self.nodes[nid])
        return nid, index

    def read(self, nid: str | None = None, key: str = "x") -> Read | None:
        """Ask ``nid`` (default: the leader) for a linearizable read of ``key``."""
        nid = nid if nid is not None else self.leader()
        if nid is None or self.nodes[nid].raft is None:
            return None
        try:
            ctx = self.raft(nid).read_index()
        except NotLeader:
            return None
        r = Read(nid, key, self.now, self.max_applied)
        self.nodes[nid].reads[ctx] = r
        self.reads.append(r)
        if self.manual:
            self._ready(self.nodes[nid])
        return r

    def campaign(self, nid: str) -> None:
        """Make ``nid``'s election timeout fire now."""
        raft = self.raft(nid)
        raft.campaign()
        if raft.role is Role.LEADER:  # a one-node cluster wins at once
            self._saw_leader(raft.term, self.nodes[nid])
        self._ready(self.nodes[nid])

    # ------------------------------------------------------------------ time

    def step(self) -> None:
        """One step of virtual time: tick every live node, deliver what is due."""
        self.now += 1
        live = self.live()
        Sim.node_steps += len(live)
        for node in live:
            raft = node.raft
            assert raft is not None
            raft.tick()
            if raft.role is Role.LEADER:
                self._saw_leader(raft.term, node)
            self._ready(node)
        if not self.manual:
            self._deliver_due()
        if self.compact_every is not None:
            for node in live:
                if node.raft is not None and (
                    node.applied - node.raft.log.offset >= self.compact_every
                ):
                    self.compact(node.id)
        if self.full_check_every and self.now % self.full_check_every == 0:
            self.check_logs()

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def run_until(self, pred: Callable[[], bool], max_steps: int, what: str = "") -> int:
        """Step until ``pred()`` holds; returns the steps taken. LivenessFailure if not."""
        for k in range(max_steps + 1):
            if pred():
                return k
            self.step()
        raise self.fail(f"not within {max_steps} steps: {what or pred}")

    def wait_leader(self, max_steps: int = 300, among: Iterable[str] | None = None) -> str:
        pool = tuple(among) if among is not None else None
        self.run_until(lambda: self.leader(pool) is not None, max_steps, f"a leader in {pool}")
        found = self.leader(pool)
        assert found is not None
        return found

    def wait_committed(
        self, value: Any, nodes: Iterable[str] | None = None, max_steps: int = 300
    ) -> int:
        """Wait until every node in ``nodes`` (default: every live node) applied the entry
        proposed with ``value``; returns its index."""
        pool = tuple(nodes) if nodes is not None else None

        def done() -> bool:
            targets = pool if pool is not None else [n.id for n in self.live()]
            return all(self.has_applied(value, nid) for nid in targets)

        self.run_until(done, max_steps, f"{value!r} applied on {pool or 'all live nodes'}")
        return self.value_index[value]

    def propose_and_wait(
        self, value: Any, nodes: Iterable[str] | None = None, max_steps: int = 300,
        retry_every: int = 30, key: str = "x",
    ) -> int:
        """Propose ``value`` until it is applied on ``nodes`` (re-proposing to whoever
        leads every ``retry_every`` steps, as a client would); returns its index."""
        pool = tuple(nodes) if nodes is not None else None
        for _ in range(max(1, max_steps // retry_every)):
            if value not in self.value_index:
                self.propose(value, key, at=self.leader(pool))
            try:
                return self.wait_committed(value, pool, retry_every)
            except LivenessFailure:
                continue
        raise self.fail(f"{value!r} not applied on {pool or 'all live nodes'}")

    def converged(self, nodes: Iterable[str] | None = None) -> bool:
        """All the given live nodes applied the same, highest index anyone applied."""
        pool = [self.nodes[i] for i in nodes] if nodes is not None else self.live()
        return all(n.raft is not None and n.applied == self.max_applied for n in pool)

    # ------------------------------------------------------------------ manual network

    def set_manual(self, manual: bool) -> None:
        """Switch between the manual and the scheduled network; held messages become
        due now (leaving manual mode) or are held (entering it)."""
        if manual and not self.manual:
            self.held.extend(m for _, _, m in sorted(self._queue))
            self._queue = []
        elif not manual and self.manual:
            for m in self.held:
                self._seq += 1
                heapq.heappush(self._queue, (self.now, self._seq, m))
            self.held = []
        self.manual = manual

    def deliver(
        self,
        src: str | None = None,
        dst: str | None = None,
        types: Iterable[MsgType] | None = None,
        limit: int | None = None,
        where: Callable[[Message], bool] | None = None,
    ) -> int:
        """Manual mode: deliver held messages that match, oldest first (answers they
        cause are held in turn). Returns how many were delivered."""
        pick = self._matcher(src, dst, types, where)
        chosen = [m for m in self.held if pick(m)]
        if limit is not None:
            chosen = chosen[:limit]
        ids = {id(m) for m in chosen}
        self.held = [m for m in self.held if id(m) not in ids]
        for m in chosen:
            node = self._deliver_one(m)
            if node is not None:
                self._ready(node)
        return len(chosen)

    def deliver_all(self, max_rounds: int = 100) -> int:
        """Manual mode: deliver until nothing is held (or ``max_rounds`` rounds)."""
        total = 0
        for _ in range(max_rounds):
            if not self.held:
                break
            total += self.deliver(limit=len(self.held))
        return total

    def drop(
        self,
        src: str | None = None,
        dst: str | None = None,
        types: Iterable[MsgType] | None = None,
        where: Callable[[Message], bool] | None = None,
    ) -> int:
        pick = self._matcher(src, dst, types, where)
        before = len(self.held)
        self.held = [m for m in self.held if not pick(m)]
        self.stats["dropped"] += before - len(self.held)
        return before - len(self.held)

    def pending(
        self, src: str | None = None, dst: str | None = None,
        types: Iterable[MsgType] | None = None,
    ) -> list[Message]:
        pick = self._matcher(src, dst, types, None)
        return [m for m in self.held if pick(m)]

    @staticmethod
    def _matcher(
        src: str | None, dst: str | None, types: Iterable[MsgType] | None,
        where: Callable[[Message], bool] | None,
    ) -> Callable[[Message], bool]:
        kinds = frozenset(types) if types is not None else None

        def pick(m: Message) -> bool:
            return (
                (src is None or m.src == src)
                and (dst is None or m.dst == dst)
                and (kinds is None or m.type in kinds)
                and (where is None or where(m))
            )

        return pick

    # ------------------------------------------------------------------ the driver

    def _send(self, m: Message) -> None:
        stats = self.stats
        stats["sent"] += 1
        if self.manual:
            self.held.append(m)
            return
        rng = self.net_rng
        if self.drop_rate and rng.random() < self.drop_rate:
            stats["dropped"] += 1
            return
        copies = 2 if self.dup_rate and rng.random() < self.dup_rate else 1
        for _ in range(copies):
            delay = (
                self.min_delay if self.max_delay == self.min_delay
                else rng.randint(self.min_delay, self.max_delay)
            )
            self._seq += 1
            heapq.heappush(self._queue, (self.now + delay, self._seq, m))
        if copies == 2:
            stats["duplicated"] += 1

    def _deliver_due(self) -> None:
        q = self._queue
        for _ in range(20):  # rounds of delay-0 answers within one step
            if not q or q[0][0] > self.now:
                return
            touched: dict[str, Node] = {}
            while q and q[0][0] <= self.now:
                m = heapq.heappop(q)[2]
                node = self._deliver_one(m)
                if node is not None:
                    touched[node.id] = node
            for node in touched.values():
                if node.raft is not None:
                    self._ready(node)

    def _deliver_one(self, m: Message) -> Node | None:
        node = self.nodes[m.dst]
        raft = node.raft
        if raft is None or (m.src, m.dst) in self.blocked:
            self.stats["lost"] += 1
            return None
        stats = self.stats
        stats["delivered"] += 1
        if m.reject and m.type is MsgType.APP_RESP:
            stats["app_reject"] += 1
        elif m.type is MsgType.SNAP:
            stats["snap"] += 1
        try:
            raft.step(m)
        except ProtocolViolation as e:
            raise self._violation("protocol", f"{m.dst} rejected {m}: {e}") from e
        if raft.role is Role.LEADER:
            self._saw_leader(raft.term, node)
        return node

    def _ready(self, node: Node) -> None:
        raft = node.raft
        assert raft is not None
        rd = raft.ready()
        if rd.empty():
            return
        st = node.store
        # 1. Persist: snapshot, hard state, entries.
        if rd.snapshot is not None:
            st.snapshot = rd.snapshot
            st.entries = []
        if rd.hard_state is not None:
            self._check_hard_state(node, st.hard_state, rd.hard_state)
            st.hard_state = rd.hard_state
        if rd.entries:
            self._persist_entries(node, rd.entries)
        if rd.hard_state is not None and rd.hard_state.commit > st.last_index():
            raise self._violation("persist", f"{node.id} persisted commit "
                                  f"{rd.hard_state.commit} beyond its durable log "
                                  f"(last {st.last_index()})")
        # 2. Send.
        for m in rd.messages:
            if m.type is MsgType.VOTE_RESP and not m.reject:
                self._check_vote(m)
            self._send(m)
        # 3. Apply.
        if rd.snapshot is not None:
            self._install(node, rd.snapshot)
        for e in rd.committed:
            self._apply(node, e)
        if raft.commit < node.last_commit:
            raise self._violation("commit", f"{node.id} commit index went back from "
                                  f"{node.last_commit} to {raft.commit}")
        node.last_commit = raft.commit
        # 4. Reads.
        for rs in rd.read_states:
            r = node.reads.pop(rs.context, None)
            if r is None:
                raise self._violation("read", f"{node.id} confirmed unknown read {rs}")
            r.index = rs.index
            if "readindex" in self.checks and rs.index < r.required:
                raise self._violation(
                    "readindex", f"{node.id} confirmed a read requested at step {r.requested} "
                    f"at index {rs.index}, but index {r.required} was already committed then")
            node.waiting_reads.append(r)
        for ctx in rd.dropped_reads:
            r = node.reads.pop(ctx, None)
            if r is not None:
                r.dropped = True
                self.stats["read_dropped"] += 1
        if node.waiting_reads:
            self._serve_reads(node)

    def _persist_entries(self, node: Node, entries: list[Entry]) -> None:
        st = node.store
        raft = node.raft
        assert raft is not None
        first = entries[0].index
        if "log" in self.checks:
            prev_term = raft.log.term(first - 1)
            ids = self.entry_ids
            for e in entries:
                key = (e.index, e.term)
                seen = ids.get(key)
                if seen is None:
                    ids[key] = (e.data, prev_term)
                elif seen[0] != e.data or seen[1] != prev_term:
                    raise self._violation(
                        "log", f"{node.id} holds entry {e} after term {prev_term}, but "
                        f"({e.index}, {e.term}) was {seen[0]!r} after term {seen[1]} elsewhere")
                prev_term = e.term
        keep = first - st.first_index()
        if keep < 0 or keep > len(st.entries):
            raise self._violation("persist", f"{node.id}: entries from {first} do not join "
                                  f"the durable log [{st.first_index()}, {st.last_index()}]")
        del st.entries[keep:]
        st.entries.extend(entries)

    def _check_hard_state(self, node: Node, old: HardState, new: HardState) -> None:
        if "persist" in self.checks and (new.term < old.term or new.commit < old.commit):
            raise self._violation("persist", f"{node.id} persisted {new} after {old}")
        if (
            "vote" in self.checks and new.term == old.term and old.vote is not None
            and new.vote != old.vote
        ):
            raise self._violation("vote", f"{node.id} changed its persisted vote in term "
                                  f"{new.term} from {old.vote} to {new.vote}")

    def _check_vote(self, m: Message) -> None:
        key = (m.src, m.term)
        prev = self.granted.setdefault(key, m.dst)
        if prev != m.dst and "vote" in self.checks:
            raise self._violation("vote", f"{m.src} granted its vote in term {m.term} to "
                                  f"both {prev} and {m.dst}")

    def _saw_leader(self, term: int, node: Node) -> None:
        prev = self.leaders.get(term)
        if prev == node.id:
            return
        if prev is not None:
            if "leader" in self.checks:
                raise self._violation("leader", f"two leaders in term {term}: {prev} and "
                                      f"{node.id}")
            return
        self.leaders[term] = node.id
        self.stats["elections"] += 1
        if "commit" not in self.checks:
            return
        # Leader completeness: everything committed in an earlier term is in its log.
        raft = node.raft
        assert raft is not None
        log = raft.log
        applied = self.applied
        for i in range(log.offset + 1, self.max_applied + 1):
            a = applied.get(i)
            if a is not None and a.commit_term < term and log.term(i) != a.term:
                raise self._violation(
                    "commit", f"new leader {node.id} of term {term} lacks committed entry "
                    f"{i} (term {a.term}); its log has term {log.term(i)} there")

    def _apply(self, node: Node, e: Entry) -> None:
        if e.index != node.applied + 1:
            raise self._violation("apply", f"{node.id} applied {e.index} after {node.applied}")
        a = self.applied.get(e.index)
        if a is None:
            raft = node.raft
            assert raft is not None
            a = Applied(e.term, e.data, self.now, raft.term)
            self.applied[e.index] = a
            self.max_applied = e.index
            if e.data is not None:
                self.key_writes.setdefault(e.data["k"], []).append(e.index)
                self.value_index.setdefault(e.data["v"], e.index)
            self._check_leaders_hold(e, a)
        elif (a.term != e.term or a.data != e.data) and "apply" in self.checks:
            raise self._violation("apply", f"{node.id} applied {e} at index {e.index}, but "
                                  f"{Entry(a.term, e.index, a.data)} was applied there before")
        node.applied = e.index
        if e.data is not None:
            node.kv[e.data["k"]] = (e.data["v"], e.index)

    def _check_leaders_hold(self, e: Entry, a: Applied) -> None:
        if "commit" not in self.checks:
            return
        for other in self.nodes.values():
            r = other.raft
            if (
                r is not None and r.role is Role.LEADER and r.term > a.commit_term
                and e.index > r.log.offset and r.log.term(e.index) != e.term
            ):
                raise self._violation(
                    "commit", f"leader {r.id} of term {r.term} lacks entry {e} committed "
                    f"in term {a.commit_term} or before")

    def _install(self, node: Node, snap: Snapshot) -> None:
        if snap.index < node.applied:
            raise self._violation("apply", f"{node.id} installs snapshot {snap.index} "
                                  f"below its applied index {node.applied}")
        self._check_snapshot(node, snap, "install")
        node.kv = dict(snap.data["kv"])
        node.applied = snap.index

    def _check_snapshot(self, node: Node, snap: Snapshot, what: str) -> None:
        if "apply" not in self.checks:
            return
        a = self.applied.get(snap.index)
        if a is not None and a.term != snap.term:
            raise self._violation("apply", f"{node.id} {what}: snapshot ({snap.index}, "
                                  f"{snap.term}) but entry {snap.index} was applied with "
                                  f"term {a.term}")
        ref = self._reference_kv(snap.index)
        if ref is not None and ref != snap.data["kv"]:
            raise self._violation("apply", f"{node.id} {what}: snapshot at {snap.index} "
                                  f"differs from the applied history")

    def _reference_kv(self, index: int) -> dict[str, tuple[Any, int]] | None:
        """The state machine after applying the globally applied entries 1..index."""
        ref = self._ref_cache.get(index)
        if ref is None:
            kv: dict[str, tuple[Any, int]] = {}
            for i in range(1, index + 1):
                a = self.applied.get(i)
                if a is None:
                    return None
                if a.data is not None:
                    kv[a.data["k"]] = (a.data["v"], i)
            ref = self._ref_cache[index] = kv
        return ref

    def _serve_reads(self, node: Node) -> None:
        still: list[Read] = []
        for r in node.waiting_reads:
            if node.applied < r.index:
                still.append(r)
                continue
            r.value, r.write_index = node.kv.get(r.key, (None, 0))
            r.served = self.now
            self.stats["read_served"] += 1
            if "read" in self.checks:
                writes = self.key_writes.get(r.key, [])
                k = bisect.bisect_right(writes, r.required)
                latest = writes[k - 1] if k else 0
                if r.write_index < latest:
                    raise self._violation(
                        "read", f"{node.id} returned {r.key}={r.value!r} (written at "
                        f"{r.write_index}) for a read requested at step {r.requested}, after "
                        f"the write at index {latest} committed at step "
                        f"{self.applied[latest].step}")
        node.waiting_reads = still

    # ------------------------------------------------------------------ full checks

    def check_logs(self) -> None:
        """Pairwise log matching over the whole in-memory logs of the live nodes."""
        if "log" not in self.checks:
            return
        logs = [(n.id, n.raft.log) for n in self.live() if n.raft is not None]
        for k, (ida, a) in enumerate(logs):
            for idb, b in logs[k + 1:]:
                lo = max(a.offset, b.offset) + 1
                hi = min(a.last_index(), b.last_index())
                i = hi
                while i >= lo and a.term(i) != b.term(i):
                    i -= 1
                if i < lo:
                    continue
                ea, eb = a.slice(lo, i), b.slice(lo, i)
                if ea != eb:
                    j = next(x for x, y in zip(ea, eb, strict=True) if x != y)
                    raise self._violation(
                        "log", f"{ida} and {idb} agree on ({i}, {a.term(i)}) but differ "
                        f"at index {j.index}: {j} vs {eb[j.index - lo]}")

    def check_all(self) -> None:
        """The end-of-scenario checks: full log matching, and replicas that applied the
        same index hold the same state machine."""
        self.check_logs()
        for n in self.live():
            if n.applied:
                ref = self._reference_kv(n.applied)
                if ref is not None and ref != n.kv and "apply" in self.checks:
                    raise self._violation("apply", f"{n.id}'s state machine at {n.applied} "
                                          f"differs from the applied history")

    def _violation(self, check: str, message: str) -> InvariantViolation:
        self.violation = InvariantViolation(check, f"[seed={self.seed} step={self.now}] {message}")
        return self.violation


# ---------------------------------------------------------------------- random workloads


def chaos(
    sim: Sim,
    steps: int,
    *,
    propose: float = 0.25,
    read: float = 0.07,
    crash: float = 0.03,
    partition: float = 0.02,
    one_way: float = 0.01,
    heal: float = 0.02,
    keys: str = "abc",
    read_anywhere: bool = False,
) -> None:
    """``steps`` steps of random client traffic and faults, drawn from ``sim.rng``. Per
    step, with the given probabilities (one action at most): a write to the leader; a read
    (at the leader, or any node with ``read_anywhere``); crash or restart a random node;
    a random 3-node partition; a one-way cut; heal every link."""
    rng = sim.rng
    cuts = [propose, read, crash, partition, one_way, heal]
    for k in range(1, len(cuts)):
        cuts[k] += cuts[k - 1]
    for k in range(steps):
        x = rng.random()
        if x < cuts[0]:
            sim.propose(f"w{sim.seed}.{k}", key=rng.choice(keys))
        elif x < cuts[1]:
            sim.read(rng.choice(sim.ids) if read_anywhere else None, key=rng.choice(keys))
        elif x < cuts[2]:
            nid = rng.choice(sim.ids)
            if sim.is_up(nid):
                sim.crash(nid)
            else:
                sim.restart(nid)
        elif x < cuts[3]:
            sim.partition(rng.sample(sim.ids, min(3, len(sim.ids) - 1)))
        elif x < cuts[4]:
            sim.block(*rng.sample(sim.ids, 2))
        elif x < cuts[5]:
            sim.heal()
        sim.step()


def election_storm(sim: Sim, steps: int, reboot: float = 0.3) -> None:
    """Nodes reboot all the time and leaders get cut off: with short timeouts and slow
    links this makes many split votes, and voters that restart between two vote
    requests of one term."""
    rng = sim.rng
    for _ in range(steps):
        if rng.random() < reboot:
            nid = rng.choice(sim.ids)
            sim.crash(nid)
            sim.restart(nid)
        if rng.random() < 0.05:
            sim.isolate(sim.leader() or rng.choice(sim.ids))
        if rng.random() < 0.1:
            sim.heal()
        sim.step()


def repair(sim: Sim, max_steps: int = 2000) -> None:
    """Heal every link, restart every node, then demand progress and convergence."""
    sim.heal()
    for nid in sim.ids:
        if not sim.is_up(nid):
            sim.restart(nid)
    sim.propose_and_wait(f"final.{sim.seed}", max_steps=max_steps)
    sim.run_until(sim.converged, max_steps // 2, "convergence after repair")
    sim.check_all()
