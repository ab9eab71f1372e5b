"""How much each log-based check could say (``lab.checker.log_check``, ``results.json``'s
``log_checks``): a member whose log holds none of the events a check reads is "no
evidence", never "fine"; a system whose logs cannot say is "not available"; neither is
a pass, and neither changes the verdict. For each check: logs that give no evidence,
logs that are fine, logs that show a violation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lab.checker import log_check
from lab.systems.types import LeaderClaim
from lab.verdict import decide

ROLES = [{"event": "term", "role": "follower", "term": 1, "leader": None}]
VOTE = {"event": "vote", "term": 2, "candidate": "n1"}
LEADER = {"event": "role", "role": "leader", "term": 2}


def fabricated(run: Path, logs: dict[str, list[Any] | None], system: str = "raftkv"
               ) -> dict[str, Any]:
    """A run of ``system`` whose members' logs hold ``logs`` (records as JSON lines,
    strings as they are; None: a member folder without a log); its decided results."""
    run.mkdir()
    (run / "scenario.yaml").write_text(json.dumps(
        {"system": system, "workload": {"model": "register"}, "faults": {"name": "none"}}))
    (run / "history.jsonl").write_text("")
    (run / "results.json").write_text(json.dumps({"counts": {"ok": 0}}))
    for member, lines in logs.items():
        (run / "nodes" / member).mkdir(parents=True)
        if lines is not None:
            (run / "nodes" / member / "node.log").write_text("".join(
                (x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return decide(run)


def statuses(r: dict[str, Any]) -> dict[str, str]:
    return {k: c["status"] for k, c in r["log_checks"].items()}


def test_the_check_statuses() -> None:
    claim = LeaderClaim("n1", 2, 5)
    assert log_check(None, None, ["n1"], []) == {
        "status": "not available", "members": [], "silent": [], "records": 0, "anomalies": 0}
    assert log_check([], [], ["n1", "n2"], []) == {
        "status": "no evidence", "members": [], "silent": ["n1", "n2"], "records": 0,
        "anomalies": 0}
    assert log_check([], None, ["n1"], [])["status"] == "no evidence"
    fine = log_check([claim], ["n2"], ["n1", "n2", "n3"], [])
    assert fine["status"] == "fine" and fine["members"] == ["n1", "n2"]
    assert fine["silent"] == ["n3"]  # fine where there was evidence; none from n3
    assert log_check([claim], None, ["n1"], [{"type": "x"}])["status"] == "violated"


def test_raftkv_logs_without_the_events_a_check_reads_are_no_evidence(tmp_path: Path
                                                                     ) -> None:
    r = fabricated(tmp_path / "run", {"n1": ["started, not JSON"], "n2": [], "n3": None})
    assert statuses(r) == dict.fromkeys(("leader_claims", "votes", "commit_conflicts"),
                                        "no evidence")
    for c in r["log_checks"].values():
        assert c["silent"] == ["n1", "n2", "n3"] and c["members"] == []
        assert c["check"] and c["reads"]
    assert r["verdict"] != "invalid"  # no evidence is no verdict


def test_raftkv_logs_that_hold_the_events_are_fine_and_a_silent_member_is_named(
        tmp_path: Path) -> None:
    follower = [*ROLES, VOTE]
    r = fabricated(tmp_path / "run", {"n1": [*follower, LEADER], "n2": follower,
                                      "n3": [{"event": "started"}]})
    assert statuses(r) == {"leader_claims": "fine", "votes": "fine",
                           "commit_conflicts": "fine"}
    checks = r["log_checks"]
    assert checks["leader_claims"]["members"] == ["n1", "n2"]  # n2 logged a term, never led
    assert checks["leader_claims"]["silent"] == ["n3"] and checks["votes"]["silent"] == ["n3"]
    assert checks["commit_conflicts"]["silent"] == []  # n3's log holds raftkv's events
    assert checks["leader_claims"]["records"] == 1


@pytest.mark.parametrize("check, logs", [
    ("leader_claims", {"n1": [LEADER], "n2": [LEADER]}),
    ("votes", {"n1": [VOTE, {**VOTE, "candidate": "n2"}], "n2": [*ROLES]}),
    ("commit_conflicts", {"n1": [*ROLES], "n2": [{"event": "committed-conflict",
                                                 "index": 7, "leader": "n1", "term": 3,
                                                 "commit": 9}]}),
])
def test_raftkv_logs_that_break_a_rule_are_a_violation(tmp_path: Path, check: str,
                                                       logs: dict[str, Any]) -> None:
    r = fabricated(tmp_path / "run", logs)
    assert r["log_checks"][check]["status"] == "violated"
    assert r["log_checks"][check]["anomalies"] == 1
    assert r["verdict"] == "invalid"


def test_etcd_votes_are_not_available_and_its_raft_lines_are_the_evidence(
        tmp_path: Path) -> None:
    r = fabricated(tmp_path / "quiet", {"n1": [], "n2": ['{"msg":"starting etcd"}']},
                   system="etcd")
    assert statuses(r) == {"leader_claims": "no evidence", "votes": "not available",
                           "commit_conflicts": "no evidence"}
    r = fabricated(tmp_path / "fine", {
        "n1": ['{"msg":"a60a became follower at term 1"}',
               '{"msg":"a60a became leader at term 2"}'],
        "n2": ['{"msg":"ec70 became follower at term 2"}'], "n3": None}, system="etcd")
    assert statuses(r) == {"leader_claims": "fine", "votes": "not available",
                           "commit_conflicts": "fine"}
    assert r["log_checks"]["leader_claims"]["silent"] == ["n3"]
    r = fabricated(tmp_path / "split", {
        "n1": ['{"msg":"a60a became leader at term 2"}'],
        "n2": ['{"msg":"ec70 became leader at term 2"}']}, system="etcd")
    assert r["log_checks"]["leader_claims"]["status"] == "violated"


def test_the_report_shows_the_log_checks(tmp_path: Path) -> None:
    from test_report import Synth, render, write_run

    d_ = write_run(tmp_path / "run", Synth().register_ops(300), check=False)
    for member, lines in (("n1", [*ROLES, VOTE, LEADER]), ("n2", [*ROLES, VOTE]),
                          ("n3", ["nothing"])):
        log = d_ / "nodes" / member / "node.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n"
                               for x in lines))
    decide(d_)
    panel = render(d_)[1].text_of("log-checks")
    assert panel.startswith("Checks of the members' logs")
    assert "leaderships" in panel and "votes" in panel
    assert "committed-entry conflicts" in panel
    assert "n3 (no evidence)" in panel and "fine" in panel
