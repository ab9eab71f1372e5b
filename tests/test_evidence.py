"""Runs that mean something: a valid verdict stands only when the faults bit and enough
operations succeeded; otherwise the run is ``unknown`` with the reason, and every fault's
evidence is in ``results.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from test_report import FAULT, MS, Synth, write_run

from lab.verdict import decide


def reschedule(d: Path, node: str) -> None:
    """Make the run's one fault an isolation of ``node`` instead of n1 (the leader)."""
    others = [n for n in ("n1", "n2", "n3") if n != node]
    links = [[node, o] for o in others] + [[o, node] for o in others]
    rows = [{"time": FAULT[0], "offset_s": 2.0, "phase": "start", "action": "isolate",
             "fault": 1, "nodes": [node], "links": links},
            {"time": FAULT[1], "offset_s": 3.0, "phase": "end", "action": "isolate",
             "fault": 1, "nodes": [node]}]
    (d / "schedule.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def steady_polls(d: Path, stuck: str | None = None) -> None:
    """n1 leads throughout; ``stuck`` (if any) stops committing during the fault."""
    rows: list[dict[str, Any]] = []
    polls = [json.loads(line) for line in (d / "cluster.jsonl").read_text().splitlines()]
    for p in polls:
        t = p["time"]
        c = 10 + t // (25 * MS)
        if p["node"] == stuck and FAULT[0] <= t < FAULT[1] + 500 * MS:
            c = 10 + FAULT[0] // (25 * MS)
        rows.append({**p, "role": "leader" if p["node"] == "n1" else "follower", "term": 1,
                     "leader": "n1", "commit": c, "applied": c})
    (d / "cluster.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_fault_on_the_leader_bites_and_valid_stands(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", Synth().register_ops(800))
    r = json.loads((d / "results.json").read_text())
    assert r["verdict"] == "valid", r["verdict_reason"]
    [ev] = r["evidence"]["faults"]
    assert ev["leader_hit"] and ev["bit"] and ev["leader_before"] == "n1"
    assert r["evidence"]["faults_bit"] is True


def test_a_fault_that_never_bit_makes_the_run_unknown(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", Synth().register_ops(800, outage=False), check=False)
    reschedule(d, "n3")
    steady_polls(d)
    r = decide(d)
    assert r["verdict"] == "unknown"
    assert r["verdict_reason"].startswith("The faults never bit")
    [ev] = r["evidence"]["faults"]
    assert not ev["leader_hit"] and not ev["bit"] and not ev["fell_behind"]


def test_a_member_left_behind_counts_as_a_bite(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", Synth().register_ops(800, outage=False), check=False)
    reschedule(d, "n3")
    steady_polls(d, stuck="n3")
    r = decide(d)
    assert r["verdict"] == "valid", r["verdict_reason"]
    assert r["evidence"]["faults"][0]["fell_behind"] == ["n3"]


def test_too_few_ok_operations_make_the_run_unknown(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", Synth().register_ops(12))
    r = json.loads((d / "results.json").read_text())
    assert r["verdict"] == "unknown" and "too few successful operations" in r["verdict_reason"]


def test_an_anomaly_is_never_downgraded(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", Synth().register_ops(10, outage=False).stale_read(),
                  check=False)
    reschedule(d, "n3")
    steady_polls(d)
    r = decide(d)
    assert r["verdict"] == "invalid"


def test_a_partition_that_changed_nothing_did_not_bite(tmp_path: Path) -> None:
    """Random halves that cut n3 off, while n3 kept committing: the cut never took."""
    d = write_run(tmp_path / "run", Synth().register_ops(800, outage=False), check=False)
    links = [["n1", "n3"], ["n3", "n1"], ["n2", "n3"], ["n3", "n2"]]
    rows = [{"time": FAULT[0], "offset_s": 2.0, "phase": "start",
             "action": "partition-random-halves", "fault": 1, "nodes": [], "links": links},
            {"time": FAULT[1], "offset_s": 3.0, "phase": "end",
             "action": "partition-random-halves", "fault": 1, "nodes": []}]
    (d / "schedule.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    steady_polls(d)
    r = decide(d)
    assert r["verdict"] == "unknown", r["evidence"]
    assert not r["evidence"]["faults"][0]["bit"]
    steady_polls(d, stuck="n3")  # now the cut-off side stops committing: it bit
    assert decide(d)["verdict"] == "valid"


def test_faults_that_were_all_skipped_did_not_bite(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", Synth().register_ops(800, outage=False), check=False)
    rows = [{"time": FAULT[0], "offset_s": 2.0, "phase": "skipped", "action": "kill",
             "fault": 1, "nodes": [], "reason": "target ('leader',) resolved to no node"}]
    (d / "schedule.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    steady_polls(d)
    r = decide(d)
    assert r["verdict"] == "unknown" and "skipped" in r["verdict_reason"], r["verdict_reason"]


def test_a_ring_that_leaves_a_member_behind_bit(tmp_path: Path) -> None:
    """Only n1<->n3 is cut: everyone still sees a majority (no split), but n3 no longer
    hears the leader n1 and falls behind. That is the fault taking effect."""
    d = write_run(tmp_path / "run", Synth().register_ops(800, outage=False), check=False)
    rows = [{"time": FAULT[0], "offset_s": 2.0, "phase": "start", "action": "majority-ring",
             "fault": 1, "nodes": [], "links": [["n1", "n3"], ["n3", "n1"]]},
            {"time": FAULT[1], "offset_s": 3.0, "phase": "end", "action": "majority-ring",
             "fault": 1, "nodes": []}]
    (d / "schedule.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    steady_polls(d)
    assert decide(d)["verdict"] == "unknown"
    steady_polls(d, stuck="n3")
    r = decide(d)
    assert r["verdict"] == "valid", r["verdict_reason"]
    ev = r["evidence"]["faults"][0]
    assert ev["fell_behind"] == ["n3"] and not ev["quorum_split"] and not ev["leader_hit"]


def test_a_scenario_whose_faults_never_started_is_unknown(tmp_path: Path) -> None:
    """The scenario has a nemesis, but the time limit ended before its first fault."""
    import yaml

    d = write_run(tmp_path / "run", Synth().register_ops(800, outage=False), check=False)
    (d / "schedule.jsonl").write_text("")
    events = [json.loads(line) for line in (d / "history.jsonl").read_text().splitlines()]
    (d / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events
                                             if e["process"] != "nemesis"))
    steady_polls(d)
    sc = yaml.safe_load((d / "scenario.yaml").read_text())
    assert decide(d)["verdict"] == "valid"  # no faults planned: a baseline run
    sc["faults"]["random"] = {"start": 5.0, "interval": [4.0, 6.0], "duration": [4.0, 5.0],
                              "actions": ["kill"], "targets": ["leader"]}
    (d / "scenario.yaml").write_text(yaml.safe_dump(sc))
    r = decide(d)
    assert r["verdict"] == "unknown" and "no fault of the scenario" in r["verdict_reason"]


def with_premise(d: Path, **premise: Any) -> None:
    """Record the run's initial_leader premise in results.json (as the runner does)."""
    results = json.loads((d / "results.json").read_text())
    results["premises"] = [{"premise": "initial_leader", "wanted": "n2", "got": "n2",
                            "held": True, "delay_s": 0.0, **premise}]
    (d / "results.json").write_text(json.dumps(results))


def test_a_failed_premise_makes_a_valid_run_unknown_and_says_why(tmp_path: Path) -> None:
    """The scenario wanted n2 to lead when the clients started, and n1 did: its faults
    ran against another cluster than written, so its clean history proves little."""
    d = write_run(tmp_path / "run", Synth().register_ops(800), check=False)
    with_premise(d, got="n1", held=False, delay_s=21.5)
    r = decide(d)
    sentence = "the scenario's premise failed: initial_leader n2 was not obtained (n1 led)"
    assert r["verdict"] == "unknown" and r["verdict_reason"] == sentence
    assert r["checker"]["verdict"] == "valid"  # the history itself checked out
    assert r["evidence"]["premises"] == [{"premise": "initial_leader", "wanted": "n2",
                                          "got": "n1", "held": False, "delay_s": 21.5}]
    assert r["evidence"]["faults_bit"] is True  # the faults' evidence is still there
    assert "notes" not in r  # said once, as the reason
    # checked again (raftlab analyze), the same
    assert decide(d)["verdict_reason"] == sentence


def test_a_failed_premise_leaves_an_invalid_run_invalid_with_a_note(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", Synth().register_ops(800).stale_read(), check=False)
    with_premise(d, got=None, held=False, delay_s=20.0)
    r = decide(d)
    sentence = "the scenario's premise failed: initial_leader n2 was not obtained " \
               "(no member led)"
    assert r["verdict"] == "invalid"
    assert r["verdict_reason"].endswith(f"(note: {sentence})"), r["verdict_reason"]
    assert r["notes"] == [sentence]
    assert decide(d)["notes"] == [sentence]  # not repeated by a second check


def test_a_premise_that_held_changes_nothing_but_is_recorded(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", Synth().register_ops(800), check=False)
    with_premise(d, delay_s=3.25)
    r = decide(d)
    assert r["verdict"] == "valid", r["verdict_reason"]
    assert r["evidence"]["premises"][0]["held"] is True
    assert r["evidence"]["premises"][0]["delay_s"] == 3.25
    assert "notes" not in r and "premise" not in r["verdict_reason"]


def test_the_runner_s_premise_record_is_what_the_verdict_reads() -> None:
    from lab.run import initial_leader_premise
    from lab.verdict import failed_premises

    held = initial_leader_premise("n2", "n2", 0.0)
    assert held == {"premise": "initial_leader", "wanted": "n2", "got": "n2", "held": True,
                    "delay_s": 0.0}
    failed = initial_leader_premise("n2", "n1", 20.41234)
    assert failed["held"] is False and failed["delay_s"] == 20.412
    assert failed_premises({"premises": [held, failed]}) == [
        "the scenario's premise failed: initial_leader n2 was not obtained (n1 led)"]
    assert failed_premises({}) == failed_premises({"premises": "garbled"}) == []
