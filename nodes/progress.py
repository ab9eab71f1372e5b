"""Per-follower replication progress kept by a leader, and quorum arithmetic.

Small pure pieces beside the core (after etcd-io/raft's ``tracker`` and ``quorum``):

* A follower is in one of three states. **probe**: we do not know where its log ends, so
  send one append at a time and wait for the answer. **replicate**: its log is known to
  match up to ``match``; appends are pipelined, optimistically advancing ``next``, with at
  most ``max_inflight`` unacknowledged messages. **snapshot**: it needs a snapshot; send
  nothing else until it acknowledges one (or the attempt times out).
* ``quorum_index`` is the highest index that a majority has stored.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Iterable


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = (
        "inflight",
        "match",
        "max_inflight",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_ticks",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.recent_active = False
        self.max_inflight = max_inflight
        # Last index carried by each unacknowledged append, oldest first.
        self.inflight: collections.deque[int] = collections.deque()

    def __repr__(self) -> str:
        return f"Progress({self.state.value} match={self.match} next={self.next})"

    def become_probe(self) -> None:
        # After a snapshot, resume right after it; otherwise just after what is known to match.
        if self.state is ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, snapshot_index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.snapshot_ticks = 0
        self.inflight.clear()

    def paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def sent(self, last_index: int) -> None:
        """Record that an append carrying entries up to ``last_index`` went out."""
        if self.state is ProgressState.REPLICATE:
            self.next = last_index + 1
            self.inflight.append(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement that the follower's log matches ours up to ``index``.
        Returns whether it taught us anything new."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decrease(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append whose previous index was ``rejected``.
        Returns False for a stale rejection (an answer to an older message)."""
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True


def quorum_size(voters: int) -> int:
    return voters // 2 + 1


def quorum_index(matches: Iterable[int]) -> int:
    """The largest index stored by a majority of the given match indexes."""
    ordered = sorted(matches, reverse=True)
    return ordered[quorum_size(len(ordered)) - 1]
