"""Safety seen from outside the clients: what the members said about themselves.

Three checks of Raft's safety rules, none of which a client can always see:
:func:`election_safety` over the status polls (systems whose status gives the current
term: ``SystemSpec.status_term_is_current``) and :func:`leader_safety` over the
leaderships the members logged (``SystemSpec.leader_claims``), :func:`vote_safety` over
the votes the members logged once cast (``SystemSpec.votes``) and :func:`commit_safety`
over the committed-entry conflicts the members logged (``SystemSpec.commit_conflicts``;
the spec is :class:`lab.systems.types.SystemSpec`). :func:`log_check` says how much each
log-based check could say: a member whose log holds none of the events a check reads is
"no evidence", never "fine".

Raft's *election safety* -- at most one leader per term -- is not something a client can
always see (two leaders of one term may never serve conflicting answers to the lab's
clients), but the lab polls every member's status a few times a second
(``cluster.jsonl``: ``node``, ``role``, ``term``, ``leader``). Two members that each said
"I am the leader of term T" break it, whatever the history shows.

Only self-claims count (``role == "leader"``), never a follower's idea of who leads: a
follower's leader and term can come from two different moments. And a claim counts only
once the member has made it in two polls: a status assembled from two reads (etcd's
leader and term) can pair an old leader with a new term for an instant, but not twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from typing import Any

#: How many polls must show a member leading a term before its claim counts.
CONFIRMATIONS = 2


def election_safety(polls: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anomalies (``type`` ``two-leaders-in-one-term``) from status polls in time order."""
    seen: dict[tuple[int, str], list[int]] = defaultdict(list)  # (term, node) -> poll times
    for p in polls:
        if not isinstance(p, dict) or p.get("role") != "leader":
            continue
        term, node, t = p.get("term"), p.get("node"), p.get("time")
        if type(term) is int and isinstance(node, str) and type(t) is int:
            seen[(term, node)].append(t)
    leaders: dict[int, dict[str, list[int]]] = defaultdict(dict)
    for (term, node), times in seen.items():
        if len(times) >= CONFIRMATIONS:
            leaders[term][node] = times
    out = []
    for term in sorted(leaders):
        claims = leaders[term]
        if len(claims) < 2:
            continue
        nodes = sorted(claims, key=lambda n: claims[n][0])
        spans = ", ".join(f"{n} from {claims[n][0] / 1e9:.2f} s to {claims[n][-1] / 1e9:.2f} s"
                          f" ({len(claims[n])} polls)" for n in nodes)
        out.append(_two_leaders(term, nodes, f"{len(nodes)} members said they were the "
                                             f"leader of term {term}: {spans}."))
    return out


def _two_leaders(term: int, nodes: list[str], seen: str) -> dict[str, Any]:
    """A ``two-leaders-in-one-term`` anomaly; ``seen`` says where the claims come from."""
    return {
        "type": "two-leaders-in-one-term",
        "term": term,
        "leaders": nodes,
        "ops": [],
        "explanation": (
            f"{seen} Raft allows at most one leader per term (election safety): some member "
            "must have voted twice in that term, or a candidate counted a vote it never "
            "got. Two leaders of one term can each commit a different entry at the same "
            "index."),
    }


def vote_safety(votes: Iterable[Any]) -> list[dict[str, Any]]:
    """Anomalies (``type`` ``double-vote``) from logged votes (:class:`lab.systems.types.Vote`):
    a member that voted for two candidates in one term forgot a vote it gave -- Raft
    writes ``votedFor`` to disk before answering, so that a restart cannot undo it."""
    given: dict[tuple[str, int], dict[str, int]] = defaultdict(dict)  # -> candidate -> line
    for v in votes:
        given[(v.member, v.term)].setdefault(v.candidate, v.line)
    out = []
    for (member, term), cands in sorted(given.items()):
        if len(cands) < 2:
            continue
        names = sorted(cands, key=lambda c: cands[c])
        which = ", ".join(f"{c} (its log, line {cands[c]})" for c in names)
        out.append({
            "type": "double-vote",
            "term": term,
            "member": member,
            "candidates": names,
            "ops": [],
            "explanation": (
                f"{member} voted for {len(names)} candidates in term {term}: {which}. A "
                "member votes at most once per term, and must remember that vote across a "
                "crash; with two votes from one member, two candidates can each count a "
                "majority and both lead the term."),
        })
    return out


def commit_safety(conflicts: Iterable[Any]) -> list[dict[str, Any]]:
    """Anomalies (``type`` ``committed-entry-conflict``) from the committed-entry
    conflicts members logged (:class:`lab.systems.types.CommitConflict`), one per member and
    index. A member holds an entry as committed only once a leader said so, and in a
    correct cluster every later leader has that very entry (leader completeness); a
    leader with a different one means a committed entry was lost (Raft paper, Figure 8)
    or the member applied an entry the others never committed."""
    first: dict[tuple[str, int | None], Any] = {}
    for c in conflicts:
        first.setdefault((c.member, c.index), c)
    out = []
    for (member, index), c in sorted(first.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        at = f" at index {index}" if index is not None else ""
        out.append({
            "type": "committed-entry-conflict",
            "member": member,
            "index": index,
            "leader": c.leader,
            "term": c.term,
            "ops": [],
            "explanation": (
                f"{member} held an entry{at} as committed, and a leader's log has a "
                f"different one there (its log, line {c.line}: {c.text}). Every leader "
                "must hold every committed entry (leader completeness), so either a "
                "committed entry was lost, or this member applied an entry that was never "
                "committed; either way members disagree on what was applied there."),
        })
    return out


def leader_safety(claims: Iterable[Any]) -> list[dict[str, Any]]:
    """Anomalies (``type`` ``two-leaders-in-one-term``) from the leaderships members
    logged (:class:`lab.systems.types.LeaderClaim`): two members that each became the leader
    of one term."""
    by_term: dict[int, dict[str, int]] = defaultdict(dict)  # term -> member -> first line
    for c in claims:
        by_term[c.term].setdefault(c.member, c.line)
    out = []
    for term in sorted(by_term):
        who = by_term[term]
        if len(who) < 2:
            continue
        nodes = sorted(who)
        which = ", ".join(f"{n} (its log, line {who[n]})" for n in nodes)
        out.append(_two_leaders(term, nodes, f"{len(nodes)} members logged that they "
                                             f"became the leader of term {term}: {which}."))
    return out


#: A log-based check's statuses (``results.json``'s ``log_checks``).
FINE, VIOLATED, NO_EVIDENCE, NOT_AVAILABLE = "fine", "violated", "no evidence", "not available"


def log_check(records: Sequence[Any] | None, evidence: Collection[str] | None,
              members: Iterable[str], anomalies: Sequence[Any]) -> dict[str, Any]:
    """How much a log-based check could say: ``records`` its reader returned (None: the
    system's logs cannot say), ``evidence`` the members whose logs hold any event it reads
    (None: the members with a record), ``members`` the run's members, ``anomalies`` what
    the check found.

    ``status``: ``violated`` (an anomaly), ``not available`` (the logs cannot say),
    ``no evidence`` (no member's log held any event the check reads), else ``fine``;
    ``members``: those whose logs gave evidence; ``silent``: the run's members whose logs
    gave none ("no evidence" for them, whatever the status; empty when not available);
    ``records``, ``anomalies``:
    counts. Neither ``no evidence`` nor ``not available`` is a pass."""
    if records is None:
        return {"status": NOT_AVAILABLE, "members": [], "silent": [],
                "records": 0, "anomalies": 0}
    heard = set(evidence) if evidence is not None else set()
    heard |= {r.member for r in records}
    status = VIOLATED if anomalies else FINE if heard else NO_EVIDENCE
    return {"status": status, "members": sorted(heard),
            "silent": sorted(set(members) - heard), "records": len(records),
            "anomalies": len(anomalies)}


#: What a member's last log lines say when it could not start because the machine, not the
#: system, failed it (its port was taken while it was down): the lab's problem.
HARNESS_EXIT = ("address already in use",)


def harness_exit(exit: Any) -> bool:
    """Whether an exit in ``member_exits`` was the machine's doing (:data:`HARNESS_EXIT`)."""
    tail = " ".join(str(x) for x in (exit.get("log_tail") or [])[-3:]).lower() \
        if isinstance(exit, dict) else ""
    return any(s in tail for s in HARNESS_EXIT)


def member_crashes(exits: Iterable[Any]) -> list[dict[str, Any]]:
    """Anomalies (``type`` ``member-crashed``) from the member exits the lab did not cause
    (``results.json`` ``member_exits``, :meth:`lab.procs.MemberProcesses.collect_exits`):
    a member of a healthy cluster exits only when it is told to. A crash, a panic, an
    assertion that fired or a member that refuses to start on its own data directory is a
    bug of the system (and often the only outward sign of a broken invariant), whatever
    the clients saw."""
    out = []
    for e in exits:
        if not isinstance(e, dict) or not isinstance(e.get("node"), str) or harness_exit(e):
            continue
        code = e.get("code")
        how = (f"was ended by signal {-code}" if type(code) is int and code < 0
               else f"exited with code {code}")
        tail = [str(x) for x in e.get("log_tail") or []]
        last = next((x for x in reversed(tail) if x.strip()), "")
        t = e.get("time")
        when = f" (noticed at {t / 1e9:.2f} s)" if type(t) is int else ""
        out.append({
            "type": "member-crashed",
            "member": e["node"],
            "code": code,
            "pid": e.get("pid"),
            "log_tail": tail,
            "ops": [],
            "explanation": (
                f"{e['node']} {how} without the lab stopping or killing it{when}"
                + (f"; its log ends: {last.strip()[:300]}" if last else "")
                + ". A member exits only when told to: this is a crash of the system "
                "under test (a failed assertion or consistency check, a panic, or a "
                "refusal to start on what it wrote before)."),
        })
    return out


def member_lags(convergence: Any) -> list[dict[str, Any]]:
    """Anomalies (``type`` ``member-behind``) from ``results.json`` ``convergence`` (what
    :meth:`lab.run.Experiment` saw after the final phase, every fault healed and the
    clients stopped): a member that was running but had not applied what the cluster
    had committed when the lab stopped waiting (or never answered its status) never
    caught up. A follower of a healed, idle cluster catches up within moments (by
    appends or a snapshot); one that does not is stuck: a liveness bug of the system
    (e.g. a leader that believes it holds entries the follower lacks, or a message it
    resends forever). Members that were down are not counted here (an exit the lab did
    not cause is a ``member-crashed`` anomaly of its own)."""
    if not isinstance(convergence, dict) or convergence.get("status") != "behind":
        return []
    target = convergence.get("target")
    limit = convergence.get("waited_s")
    members = convergence.get("members") or {}
    out = []
    for m in convergence.get("behind") or []:
        info = members.get(m) if isinstance(members, dict) else None
        applied = info.get("applied") if isinstance(info, dict) else None
        said = ("never answered its status" if applied is None
                else f"had applied {applied} of the {target} entries the cluster committed")
        out.append({
            "type": "member-behind",
            "member": m,
            "applied": applied,
            "target": target,
            "ops": [],
            "explanation": (
                f"{m} {said}, {limit} s after every fault was healed and the clients had "
                "stopped. A running member of a healed, idle cluster catches up within "
                "moments; this one never did (a follower stuck behind: a liveness bug)."),
        })
    return out
