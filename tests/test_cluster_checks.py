"""Raft's safety rules checked from the members' own status reports and logs
(``lab.checker.election_safety``, ``leader_safety``, ``vote_safety``, ``commit_safety``)
and their place in a run's verdict (``lab.verdict.decide``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lab.checker import election_safety


def poll(t_ms: int, node: str, role: str, term: int, leader: str | None = None
         ) -> dict[str, Any]:
    return {"time": t_ms * 1_000_000, "node": node, "alive": True, "role": role,
            "term": term, "leader": leader if leader is not None else
            (node if role == "leader" else None)}


def test_two_confirmed_leaders_of_one_term_are_an_anomaly() -> None:
    polls = [poll(0, "n1", "leader", 3), poll(0, "n2", "follower", 3, "n1"),
             poll(250, "n1", "leader", 3), poll(250, "n3", "leader", 3),
             poll(500, "n3", "leader", 3), poll(500, "n1", "leader", 3)]
    [a] = election_safety(polls)
    assert a["type"] == "two-leaders-in-one-term" and a["term"] == 3
    assert a["leaders"] == ["n1", "n3"] and a["ops"] == []
    assert "term 3" in a["explanation"] and "n3 from 0.25 s" in a["explanation"]


def test_leaders_of_different_terms_and_single_claims_are_fine() -> None:
    polls = [poll(0, "n1", "leader", 3), poll(250, "n1", "leader", 3),
             poll(500, "n2", "leader", 4), poll(750, "n2", "leader", 4),
             # an old leader that has not heard of term 4 yet: still term 3's leader
             poll(750, "n1", "leader", 3),
             # one poll pairing a stale leader with a new term (two reads): not confirmed
             poll(1000, "n3", "leader", 4),
             poll(1250, "n3", "follower", 4, "n2"),
             # followers' opinions never count
             poll(1250, "n4", "follower", 4, "n5"), poll(1500, "n4", "follower", 4, "n5")]
    assert election_safety(polls) == []


def test_garbage_polls_are_ignored() -> None:
    polls: list[Any] = [None, "x", {"role": "leader"}, {"role": "leader", "term": "3",
                                                       "node": "n1", "time": 0},
                        poll(0, "n1", "leader", 3), poll(1, "n1", "leader", 3)]
    assert election_safety(polls) == []


def test_the_verdict_turns_a_valid_history_invalid_on_two_leaders(tmp_path: Path) -> None:
    from lab.verdict import decide

    (tmp_path / "scenario.yaml").write_text(json.dumps(
        {"workload": {"model": "register"}, "faults": {"name": "none"}}))
    events = [
        {"index": 0, "time": 1, "process": 0, "type": "invoke", "f": "write", "key": "x",
         "value": 1},
        {"index": 1, "time": 2, "process": 0, "type": "ok", "f": "write", "key": "x",
         "value": 1},
    ]
    (tmp_path / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (tmp_path / "results.json").write_text(json.dumps({"counts": {"ok": 1}}))
    good = [poll(0, "n1", "leader", 2), poll(250, "n1", "leader", 2)]
    (tmp_path / "cluster.jsonl").write_text("".join(json.dumps(p) + "\n" for p in good))
    assert decide(tmp_path)["verdict"] != "invalid"
    bad = [*good, poll(300, "n2", "leader", 2), poll(550, "n2", "leader", 2)]
    (tmp_path / "cluster.jsonl").write_text("".join(json.dumps(p) + "\n" for p in bad)
                                            + '{"torn')
    r = decide(tmp_path)
    assert r["verdict"] == "invalid", r
    assert "two leaders in one term (term 2)" in r["verdict_reason"]
    assert r["checker"]["anomalies"][0]["type"] == "two-leaders-in-one-term"


def test_a_member_that_voted_for_two_candidates_in_one_term_is_an_anomaly() -> None:
    from lab.checker import vote_safety
    from lab.systems import Vote

    votes = [Vote("n3", 4, "n1", 10), Vote("n3", 4, "n1", 12),  # asked again: same vote
             Vote("n3", 5, "n4", 20), Vote("n1", 5, "n1", 7),    # a new term, a self-vote
             Vote("n3", 5, "n2", 31)]                             # forgot it: again in 5
    [a] = vote_safety(votes)
    assert (a["type"], a["member"], a["term"], a["candidates"]) == (
        "double-vote", "n3", 5, ["n4", "n2"])
    assert "line 20" in a["explanation"] and "line 31" in a["explanation"]
    assert vote_safety(votes[:4]) == []


def test_votes_are_read_from_raftkv_member_logs_and_not_from_etcds(tmp_path: Path) -> None:
    from lab.systems import Vote, spec
    from lab.systems.raftkv.logs import read_votes

    log = tmp_path / "nodes" / "n3" / "node.log"
    log.parent.mkdir(parents=True)
    log.write_text(
        '{"ts": 1.0, "node": "n3", "event": "started", "term": 4}\n'
        '{"ts": 1.1, "node": "n3", "event": "vote", "term": 5, "candidate": "n4"}\n'
        'Traceback (most recent call last): "vote"\n'
        '{"ts": 1.2, "node": "n3", "event": "vote", "term": "5", "candidate": "n2"}\n'
        '{"ts": 1.3, "node": "n3", "event": "vote", "term": 5, "candidate": "n2"}\n')
    want = [Vote("n3", 5, "n4", 2), Vote("n3", 5, "n2", 5)]
    assert read_votes("n3", log) == want
    assert spec("raftkv").votes(tmp_path / "nodes") == want
    # etcd logs a vote before it is on disk: a crash in between is no double vote
    assert spec("etcd").votes(tmp_path / "nodes") is None


def test_the_verdict_turns_a_valid_history_invalid_on_a_double_vote(tmp_path: Path) -> None:
    from lab.verdict import decide

    (tmp_path / "scenario.yaml").write_text(json.dumps(
        {"system": "raftkv", "workload": {"model": "register"}, "faults": {"name": "none"}}))
    (tmp_path / "history.jsonl").write_text("")
    (tmp_path / "results.json").write_text(json.dumps({"counts": {"ok": 0}}))
    log = tmp_path / "nodes" / "n3" / "node.log"
    log.parent.mkdir(parents=True)
    log.write_text('{"event": "vote", "term": 5, "candidate": "n4"}\n')
    assert decide(tmp_path)["verdict"] != "invalid"
    with open(log, "a") as f:
        f.write('{"event": "vote", "term": 5, "candidate": "n2"}\n')
    r = decide(tmp_path)
    assert r["verdict"] == "invalid", r
    assert "n3 voted twice" not in r["verdict_reason"]
    assert "a member voted twice in one term (n3 in term 5)" in r["verdict_reason"]
    assert r["checker"]["anomalies"][0]["type"] == "double-vote"


def test_committed_entry_conflicts_are_read_from_raftkv_and_etcd_logs(tmp_path: Path) -> None:
    from lab.checker import commit_safety
    from lab.systems import spec

    nodes = tmp_path / "nodes"
    (nodes / "n2").mkdir(parents=True)
    (nodes / "n2" / "node.log").write_text(
        '{"ts": 1.0, "node": "n2", "event": "started", "term": 4}\n'
        '{"ts": 1.1, "node": "n2", "event": "rejected-peer-message", "peer": "n9"}\n'
        'garbage "committed-conflict"\n'
        '{"ts": 1.2, "node": "n2", "event": "committed-conflict", "leader": "n5", '
        '"term": 9, "index": 24, "commit": 25}\n'
        '{"ts": 1.3, "node": "n2", "event": "committed-conflict", "leader": "n5", '
        '"term": 10, "index": 24, "commit": 25}\n')
    found = spec("raftkv").commit_conflicts(nodes)
    assert [(c.member, c.index, c.leader, c.term, c.line) for c in found] == [
        ("n2", 24, "n5", 9, 4), ("n2", 24, "n5", 10, 5)]
    [a] = commit_safety(found)  # one per member and index
    assert (a["type"], a["member"], a["index"], a["leader"]) == (
        "committed-entry-conflict", "n2", 24, "n5")
    assert "line 4" in a["explanation"]
    assert commit_safety([]) == []
    # etcd's raft says this, then panics (raft/log.go, maybeAppend)
    (nodes / "n3").mkdir()
    (nodes / "n3" / "node.log").write_text(
        '{"level":"info","msg":"raft.node: 8e9e05c52164694d elected leader"}\n'
        '{"level":"panic","msg":"entry 7 conflict with committed entry [committed(8)]"}\n')
    [c] = spec("etcd").commit_conflicts(nodes)
    assert (c.member, c.line, c.index) == ("n3", 2, 7) and "committed(8)" in c.text
    assert spec("raftkv").commit_conflicts(tmp_path / "nowhere") == []


def test_the_verdict_turns_a_valid_history_invalid_on_a_lost_committed_entry(
        tmp_path: Path) -> None:
    from lab.verdict import decide

    (tmp_path / "scenario.yaml").write_text(json.dumps(
        {"system": "raftkv", "workload": {"model": "register"}, "faults": {"name": "none"}}))
    (tmp_path / "history.jsonl").write_text("")
    (tmp_path / "results.json").write_text(json.dumps({"counts": {"ok": 0}}))
    log = tmp_path / "nodes" / "n1" / "node.log"
    log.parent.mkdir(parents=True)
    log.write_text('{"event": "rejected-peer-message", "peer": "n5", "reason": "x"}\n')
    assert decide(tmp_path)["verdict"] != "invalid"
    with open(log, "a") as f:
        f.write('{"event": "committed-conflict", "leader": "n5", "term": 4, "index": 24, '
                '"commit": 24}\n')
    r = decide(tmp_path)
    assert r["verdict"] == "invalid", r
    assert "a leader's log contradicts a committed entry (n1 at index 24)" in r["verdict_reason"]
    assert r["checker"]["anomalies"][0]["type"] == "committed-entry-conflict"


def test_leaderships_are_read_from_raftkv_and_etcd_logs(tmp_path: Path) -> None:
    from lab.checker import leader_safety
    from lab.systems import LeaderClaim, spec

    nodes = tmp_path / "nodes"
    for n in ("n1", "n2"):
        (nodes / n).mkdir(parents=True)
    (nodes / "n1" / "node.log").write_text(
        '{"ts": 1, "node": "n1", "event": "role", "role": "leader", "term": 4, '
        '"leader": "n1"}\n'
        '{"ts": 2, "node": "n1", "event": "leader", "term": 5, "leader": "n2"}\n')
    (nodes / "n2" / "node.log").write_text(
        '{"ts": 2, "node": "n2", "event": "role", "role": "leader", "term": 5, '
        '"leader": "n2"}\n')
    claims = spec("raftkv").leader_claims(nodes)
    assert claims == [LeaderClaim("n1", 4, 1), LeaderClaim("n2", 5, 1)]
    assert leader_safety(claims) == []
    (nodes / "n2" / "node.log").write_text(
        '{"level":"info","msg":"a60a became leader at term 5"}\n'
        '{"level":"info","msg":"raft.node: a60a elected leader a60a at term 5"}\n')
    (nodes / "n1" / "node.log").write_text(
        '{"level":"info","msg":"ec70 became follower at term 5"}\n'
        '{"level":"info","msg":"ec70 became leader at term 5"}\n')
    claims = spec("etcd").leader_claims(nodes)
    assert claims == [LeaderClaim("n1", 5, 2), LeaderClaim("n2", 5, 1)]
    [a] = leader_safety(claims)
    assert (a["type"], a["term"], a["leaders"]) == ("two-leaders-in-one-term", 5, ["n1", "n2"])


def test_etcd_status_terms_are_not_taken_for_leaderships(tmp_path: Path) -> None:
    # etcd's raftTerm is the term of the last applied entry: a leader of term 5 that has
    # applied nothing of term 5 yet reports term 4, like the leader of term 4 before it.
    from lab.verdict import decide

    (tmp_path / "scenario.yaml").write_text(json.dumps(
        {"system": "etcd", "workload": {"model": "register"}, "faults": {"name": "none"}}))
    (tmp_path / "history.jsonl").write_text("")
    (tmp_path / "results.json").write_text(json.dumps({"counts": {"ok": 0}}))
    polls = [poll(0, "n3", "leader", 4), poll(250, "n3", "leader", 4),
             poll(9000, "n2", "leader", 4), poll(9250, "n2", "leader", 4)]
    (tmp_path / "cluster.jsonl").write_text("".join(json.dumps(p) + "\n" for p in polls))
    for n, term in (("n3", 4), ("n2", 5)):
        (tmp_path / "nodes" / n).mkdir(parents=True)
        (tmp_path / "nodes" / n / "node.log").write_text(
            f'{{"msg":"{n} became leader at term {term}"}}\n')
    assert decide(tmp_path)["verdict"] != "invalid"
    with open(tmp_path / "nodes" / "n2" / "node.log", "a") as f:
        f.write('{"msg":"n2 became leader at term 4"}\n')
    r = decide(tmp_path)
    assert r["verdict"] == "invalid", r
    assert "two leaders in one term (term 4)" in r["verdict_reason"]
