"""etcd (3.4, Debian ``etcd-server``) as a system under test.

The adapter: :mod:`.cluster` (members in their own mount namespaces, so that every
directed link goes through its proxy), :mod:`.client` (the client driver), :mod:`.http`
(its HTTP client). This module is its :class:`~lab.systems.types.SystemSpec`, with what
the lab reads in etcd's logs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from lab.systems.types import (
    CommitConflict,
    DigestPoller,
    LeaderClaim,
    System,
    SystemCluster,
    SystemSpec,
    member_logs,
)

#: An election timeout and heartbeat (ms) when a scenario sets none. etcd's own defaults
#: are 1000 and 100 too; they suit a loaded two-core machine, and scenarios that want
#: faster failover can lower them (e.g. 300 / 50).
DEFAULT_TIMING = (1000, 100)

#: Workload models the client driver implements.
MODELS = ("register", "cas-register", "set", "counter", "bank", "list-append")


def problem(model: str | None = None, binary: str = "etcd") -> str | None:
    """Why etcd cannot be run here (or with ``model``), in one line; None if it can."""
    if model is not None and model not in MODELS:
        return f"--system etcd: no client driver for model {model!r} " \
               f"(supported: {', '.join(MODELS)})"
    if shutil.which(binary) is None:
        return f"--system etcd: {binary!r} not found on PATH " \
               "(Debian: apt-get install etcd-server etcd-client)"
    if shutil.which("unshare") is None:
        return "--system etcd: 'unshare' (util-linux) not found on PATH"
    if os.geteuid() != 0:
        return "--system etcd: needs root, to give each member a private /etc/hosts " \
               "(unshare --mount) so that every directed link goes through its proxy"
    return None


def make(base_dir: Path, size: int, bugs: Sequence[str], options: Mapping[str, Any]
         ) -> System:
    from lab.systems.etcd.client import EtcdClient
    from lab.systems.etcd.cluster import EtcdCluster

    return System(EtcdCluster(base_dir, size=size, options=options), EtcdClient)


# --------------------------------------------------------------------------- its logs

#: What etcd's raft says (and then panics) when a leader's entry conflicts with a
#: committed one (raft/log.go, ``maybeAppend``).
CONFLICT = "conflict with committed entry"
_CONFLICT_INDEX = re.compile(r"entry (\d+) conflict with committed entry")

#: What etcd's raft logs when a member becomes leader (raft/raft.go, becomeLeader).
_LEADER = re.compile(r"became leader at term (\d+)")


def commit_conflicts(nodes_dir: Path) -> list[CommitConflict]:
    """Every line etcd's raft wrote, before it panicked, on a committed-entry conflict."""
    out: list[CommitConflict] = []
    for member, log in member_logs(nodes_dir):
        with open(log, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                if CONFLICT not in line:
                    continue
                try:
                    said_json: Any = json.loads(line)
                except ValueError:
                    said_json = None
                said = str(said_json.get("msg") if isinstance(said_json, dict)
                           and said_json.get("msg") else line.strip())
                found = _CONFLICT_INDEX.search(said)
                out.append(CommitConflict(member, int(found[1]) if found else None, None,
                                          None, n, said[:300]))
    return out


def leader_claims(nodes_dir: Path) -> list[LeaderClaim]:
    """Every "became leader at term T" the members logged."""
    out: list[LeaderClaim] = []
    for member, log in member_logs(nodes_dir):
        with open(log, encoding="utf-8", errors="replace") as f:
            for n, line in enumerate(f, 1):
                found = _LEADER.search(line) if "became leader at term" in line else None
                if found:
                    out.append(LeaderClaim(member, int(found[1]), n))
    return out


#: What etcd's raft logs on every change of role, from its start as a follower on
#: (raft/raft.go: becomeFollower, becomeCandidate, becomePreCandidate, becomeLeader).
_ROLE = re.compile(r"became (?:leader|follower|candidate|pre-candidate) at term \d+")


def log_evidence(nodes_dir: Path) -> Mapping[str, Collection[str]]:
    """The members whose logs hold raft's role changes (every etcd member logs "became
    follower at term T" as its raft starts): the leaderships check read them, and the
    committed-entry conflicts check read a log that raft wrote to."""
    heard = []
    for member, log in member_logs(nodes_dir):
        with open(log, encoding="utf-8", errors="replace") as f:
            if any("became" in line and _ROLE.search(line) for line in f):
                heard.append(member)
    return {"leader_claims": heard, "commit_conflicts": heard}


def digest_poller(cluster: SystemCluster) -> DigestPoller | None:
    """HashKV at a revision every member asked has reached (:mod:`.hashkv`)."""
    from lab.systems.etcd.hashkv import poller

    return poller(cluster)


SPEC = SystemSpec(
    name="etcd",
    make=make,
    default_timing=DEFAULT_TIMING,
    problem=problem,
    # ``raftTerm`` in etcd's status is the term of the last entry it applied: a new leader
    # that has not applied an entry of its own term yet reports the old term, so two
    # leaders of different terms can look like two of one. Election safety on etcd comes
    # from its logs instead.
    status_term_is_current=False,
    # etcd's raft logs "cast MsgVote" when it decides, before the vote reaches its WAL: a
    # member killed in between never gave that vote and may rightly vote again, so etcd's
    # logs cannot say which votes were cast.
    votes=lambda nodes_dir: None,
    commit_conflicts=commit_conflicts,
    leader_claims=leader_claims,
    digest_poller=digest_poller,
    log_evidence=log_evidence,
)
