"""raftkv, this repository's Raft key-value store (``nodes``), as a system under test.

The adapter: :mod:`.cluster` (members as ``python -m nodes`` processes), :mod:`.client`
(the client driver), :mod:`.wire` (the client protocol's connections) and :mod:`.logs`
(what the members' logs say). This module is its :class:`~lab.systems.types.SystemSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lab.systems.raftkv import logs
from lab.systems.types import System, SystemSpec

#: The seeded bugs a member can be started with (``--bug``; ``nodes/PROTOCOL.md``).
BUGS = ("stale-read", "forget-vote", "early-ack", "no-truncate", "old-term-commit")

#: The crash points a member can be armed with (``crash-at``; ``nodes/PROTOCOL.md``,
#: "Crash points"), in the order a batch of work passes them.
CRASH_POINTS = ("wal-before-write", "wal-after-write", "wal-after-sync",
                "snapshot-install-between", "snapshot-before-truncate", "before-apply")

#: A member's election timeout and heartbeat (ms) when it is not told: the defaults of
#: its command line (``nodes/cli.py``), which the lab therefore does not pass.
DEFAULT_TIMING = (150, 50)

#: Members started by the lab log a digest at every multiple of this index (raftkv keeps
#: none unless told: a digest costs every applied entry a hash).
DIGEST_EVERY = 256

#: The member flags behind :func:`make`'s options.
_FLAGS = {"election_ms": "--election-timeout-ms", "heartbeat_ms": "--heartbeat-ms",
          "max_append_entries": "--max-append-entries", "digest_every": "--digest-every",
          "snapshot_entries": "--snapshot-entries"}


def make(base_dir: Path, size: int, bugs: Sequence[str], options: Mapping[str, Any]
         ) -> System:
    from lab.systems.raftkv.client import RaftkvClient
    from lab.systems.raftkv.cluster import RaftkvCluster

    opts = {"digest_every": DIGEST_EVERY, **options}
    extra: list[str] = []
    for key, flag in _FLAGS.items():
        if opts.get(key) is not None:
            extra += [flag, str(opts.pop(key))]
    if any(v is not None for v in opts.values()):
        raise ValueError(f"unknown raftkv options {sorted(opts)}")
    return System(RaftkvCluster(base_dir, size=size, bugs=bugs, extra_args=extra),
                  RaftkvClient)


SPEC = SystemSpec(
    name="raftkv",
    make=make,
    default_timing=DEFAULT_TIMING,
    options={
        "max_append_entries": (1, 1_000_000, "log entries per append message (raftkv's "
                               "--max-append-entries; small values make a new leader send "
                               "an old backlog in many steps)"),
        "digest_every": (1, 1_000_000,
                         "log a digest of the applied log and state at every multiple of "
                         "this index (raftkv's --digest-every; the lab's default "
                         f"{DIGEST_EVERY}); smaller values give the replica agreement "
                         "check more indexes to compare"),
        "snapshot_entries": (1, 1_000_000,
                             "take a snapshot once this many entries were applied since the "
                             "last (raftkv's --snapshot-entries, default 10000); small values "
                             "make snapshots, log compaction and snapshot installs happen "
                             "within short runs"),
    },
    bugs=BUGS,
    crash_points=CRASH_POINTS,
    status_term_is_current=True,  # a member's status says its current term
    votes=logs.votes,
    commit_conflicts=logs.commit_conflicts,
    leader_claims=logs.leader_claims,
    digests=logs.digests,
    log_evidence=logs.log_evidence,
)
