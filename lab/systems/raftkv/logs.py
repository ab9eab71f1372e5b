"""What raftkv members say in their logs (JSON lines, ``nodes/PROTOCOL.md``): the votes,
leaderships, committed-entry conflicts and digests the cluster checks read."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from lab.systems.types import CommitConflict, Digest, LeaderClaim, Vote, member_logs


def log_events(log: Path, event: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` for every JSON record ``{"event": event, ...}`` in a
    raftkv member's log; other lines (torn, foreign, other events) are skipped."""
    needle = f'"{event}"'
    with open(log, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, 1):
            if needle not in line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("event") == event:
                yield n, rec


def read_votes(member: str, log: Path) -> list[Vote]:
    """The votes a raftkv member logged (``{"event": "vote", "term": T, "candidate": C}``,
    self-votes included); lines that are not such records are skipped."""
    return [Vote(member, rec["term"], rec["candidate"], n) for n, rec in log_events(log, "vote")
            if type(rec.get("term")) is int and isinstance(rec.get("candidate"), str)]


def votes(nodes_dir: Path) -> list[Vote]:
    """Every vote the members of a run logged, in log order per member. raftkv logs a
    vote when its answer is sent, so once it is on disk: a logged vote was given."""
    return [v for member, log in member_logs(nodes_dir) for v in read_votes(member, log)]


def commit_conflicts(nodes_dir: Path) -> list[CommitConflict]:
    """Every ``committed-conflict`` event the members of a run logged."""
    out: list[CommitConflict] = []
    for member, log in member_logs(nodes_dir):
        for n, rec in log_events(log, "committed-conflict"):
            index, leader, term = rec.get("index"), rec.get("leader"), rec.get("term")
            out.append(CommitConflict(
                member, index if type(index) is int else None,
                leader if isinstance(leader, str) else None,
                term if type(term) is int else None, n,
                f"leader {leader} of term {term} sent an entry at index {index}, which "
                f"it holds as committed (commit index {rec.get('commit')})"))
    return out


def leader_claims(nodes_dir: Path) -> list[LeaderClaim]:
    """Every ``role`` event with ``role: leader`` the members of a run logged."""
    return [LeaderClaim(member, rec["term"], n) for member, log in member_logs(nodes_dir)
            for n, rec in log_events(log, "role")
            if rec.get("role") == "leader" and type(rec.get("term")) is int]


def _hex(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def digests(nodes_dir: Path) -> list[Digest]:
    """Every ``digest`` event the members of a run logged (``{"event": "digest", "index":
    I, "term": T, "log": HEX | null, "state": HEX}``), in log order per member; a member
    that restarted may log one index more than once (once per life)."""
    return [Digest(member, rec["index"], rec["term"] if type(rec.get("term")) is int else None,
                   _hex(rec.get("log")), _hex(rec.get("state")), n)
            for member, log in member_logs(nodes_dir) for n, rec in log_events(log, "digest")
            if type(rec.get("index")) is int]


#: The events of a raftkv member's role changes (``nodes/PROTOCOL.md``).
ROLE_CHANGES = frozenset({"role", "term", "leader"})

_EVENT = re.compile(r'"event":\s*"([^"]+)"')


def events_logged(log: Path) -> set[str]:
    """The names of the events a raftkv member's log holds (any record, any line)."""
    out: set[str] = set()
    with open(log, encoding="utf-8", errors="replace") as f:
        for line in f:
            out.update(_EVENT.findall(line))
    return out


def log_evidence(nodes_dir: Path) -> Mapping[str, Collection[str]]:
    """Which members' logs hold the events each log-based check reads: ``vote`` events
    (votes); the role changes, ``role``, ``term`` or ``leader`` events (leaderships: a
    member that logged its roles and never led is evidence too; every member logs its
    first term as a follower); and any event at all (committed-entry conflicts, which a
    member logs only when one happens: a log with raftkv's events is one the check
    read)."""
    seen = {member: events_logged(log) for member, log in member_logs(nodes_dir)}
    return {"votes": [m for m, ev in seen.items() if "vote" in ev],
            "leader_claims": [m for m, ev in seen.items() if ev & ROLE_CHANGES],
            "commit_conflicts": [m for m, ev in seen.items() if ev]}
