"""Replica agreement: the members' digests of their applied logs and states, compared at
every index two of them logged (``lab.checker.replica_agreement``), read from raftkv's
logs, decided on by the verdict and shown by the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.checker import replica_agreement
from lab.systems import spec
from lab.systems.types import Digest
from lab.verdict import decide

A, B, C = "a" * 64, "b" * 64, "c" * 64


def d(member: str, index: int, log: str | None = A, state: str | None = A,
      line: int = 1) -> Digest:
    return Digest(member, index, 2, log, state, line)


def test_digests_that_agree_agree() -> None:
    agreement, anomalies = replica_agreement(
        [d("n1", 256), d("n2", 256), d("n3", 256), d("n1", 512, B, B), d("n2", 512, B, B),
         d("n3", 600, C, C)], ["n1", "n2", "n3"])
    assert anomalies == []
    assert agreement["status"] == "agree"
    assert agreement["members"] == ["n1", "n2", "n3"]
    assert agreement["indexes_compared"] == 2  # 600 was logged by n3 alone
    assert agreement["highest_common_index"] == 512
    assert agreement["first_divergence"] is None and agreement["silent"] == []


def test_the_first_log_divergence_is_reported_with_both_members_entries() -> None:
    agreement, anomalies = replica_agreement(
        [d("n1", 256), d("n3", 256), d("n1", 512, B, B, line=7), d("n3", 512, C, C, line=9),
         d("n1", 768, B), d("n3", 768, C)])
    assert agreement["status"] == "diverge"
    first = agreement["first_divergence"]
    assert first["index"] == 512 and first["members"] == ["n1", "n3"]
    assert [(e["member"], e["log"], e["line"]) for e in first["entries"]] == [
        ("n1", B, 7), ("n3", C, 9)]
    assert [a["type"] for a in anomalies] == ["replica-divergence"]  # state: same index
    assert anomalies[0]["index"] == 512 and "line 7" in anomalies[0]["explanation"]


def test_a_state_divergence_under_agreeing_logs_is_its_own_anomaly() -> None:
    agreement, anomalies = replica_agreement([d("n1", 256, A, A), d("n2", 256, A, B)])
    assert agreement["status"] == "diverge" and agreement["first_divergence"] is None
    assert agreement["first_state_divergence"]["index"] == 256
    [a] = anomalies
    assert a["type"] == "replica-state-divergence" and "logs agree" in a["explanation"]


def test_an_unknown_log_digest_is_not_compared_but_its_state_is() -> None:
    agreement, anomalies = replica_agreement([d("n1", 256, None, A), d("n2", 256, B, A)])
    assert agreement["status"] == "agree" and anomalies == []


def test_two_lives_of_one_member_that_disagree_diverge() -> None:
    agreement, _ = replica_agreement([d("n1", 256), d("n2", 256), d("n1", 256, B)])
    assert agreement["status"] == "diverge"
    assert agreement["first_divergence"]["members"] == ["n1", "n1"]


def test_no_common_index_is_no_evidence_and_none_is_not_available() -> None:
    agreement, anomalies = replica_agreement([d("n1", 256), d("n2", 300)], ["n1", "n2", "n3"])
    assert (agreement["status"], anomalies) == ("no evidence", [])
    assert agreement["silent"] == ["n3"] and agreement["indexes_compared"] == 0
    assert replica_agreement([], ["n1"])[0]["status"] == "no evidence"
    agreement, anomalies = replica_agreement(None, ["n1"])
    assert (agreement["status"], anomalies) == ("not available", [])


def test_raftkv_digests_are_read_from_the_logs_and_etcd_offers_none(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    (nodes / "n1").mkdir(parents=True)
    (nodes / "n1" / "node.log").write_text(
        '{"ts": 1, "node": "n1", "event": "started"}\n'
        'garbage "digest"\n'
        f'{{"ts": 2, "node": "n1", "event": "digest", "index": 256, "term": 3, "log": "{A}", '
        f'"state": "{B}"}}\n'
        '{"ts": 3, "node": "n1", "event": "digest", "index": 512, "term": 3, "log": null, '
        f'"state": "{B}"}}\n')
    assert spec("raftkv").digests(nodes) == [Digest("n1", 256, 3, A, B, 3),
                                             Digest("n1", 512, 3, None, B, 4)]
    assert spec("etcd").digests(nodes) is None


def fabricated_run(d_: Path, logs: dict[str, list[tuple[int, str]]], system: str = "raftkv"
                   ) -> None:
    (d_ / "scenario.yaml").write_text(json.dumps(
        {"system": system, "workload": {"model": "register"}, "faults": {"name": "none"}}))
    (d_ / "history.jsonl").write_text("")
    (d_ / "results.json").write_text(json.dumps({"counts": {"ok": 0}}))
    for member, digests in logs.items():
        log = d_ / "nodes" / member / "node.log"
        log.parent.mkdir(parents=True)
        log.write_text("".join(
            json.dumps({"event": "digest", "index": i, "term": 1, "log": h, "state": h}) + "\n"
            for i, h in digests))


def test_the_verdict_records_agreement_and_a_divergence_makes_the_run_invalid(
        tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    fabricated_run(good, {"n1": [(256, A)], "n2": [(256, A)], "n3": [(256, A)]})
    r = decide(good)
    assert r["verdict"] != "invalid", r
    assert r["agreement"]["status"] == "agree" and r["agreement"]["indexes_compared"] == 1
    fabricated_run(bad, {"n1": [(256, A), (512, B)], "n2": [(256, A)], "n3": [(256, A),
                                                                             (512, C)]})
    r = decide(bad)
    assert r["verdict"] == "invalid", r
    assert ("members' applied logs diverge at index 512 (n1 vs n3), by their digests"
            in r["verdict_reason"])
    assert r["checker"]["anomalies"][0]["type"] == "replica-divergence"
    assert r["agreement"]["first_divergence"]["index"] == 512
    assert json.loads((bad / "results.json").read_text())["agreement"]["status"] == "diverge"


def test_the_verdict_says_not_available_without_digests_and_no_evidence_for_silent_members(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from lab.systems import REGISTRY

    none, etcd, silent = tmp_path / "none", tmp_path / "etcd", tmp_path / "silent"
    none.mkdir(), etcd.mkdir(), silent.mkdir()
    # a system that neither logs digests nor can be asked for them
    monkeypatch.setitem(REGISTRY, "etcd", dataclasses.replace(spec("etcd"),
                                                              digest_poller=None))
    fabricated_run(none, {"n1": [], "n2": []}, system="etcd")
    assert decide(none)["agreement"]["status"] == "not available"
    monkeypatch.undo()
    # etcd is asked for digests during a run: a run that recorded none has no evidence
    fabricated_run(etcd, {"n1": [], "n2": []}, system="etcd")
    assert decide(etcd)["agreement"]["status"] == "no evidence"
    fabricated_run(silent, {"n1": [(256, A)], "n2": []})
    r = decide(silent)
    assert r["agreement"]["status"] == "no evidence" and r["agreement"]["silent"] == ["n2"]


def test_the_report_shows_the_agreement_panel(tmp_path: Path) -> None:
    from test_report import Synth, render, write_run

    d_ = write_run(tmp_path / "run", Synth().register_ops(300), check=False)
    for member, h in (("n1", B), ("n2", A), ("n3", C)):
        log = d_ / "nodes" / member / "node.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(json.dumps({"event": "digest", "index": 256, "term": 1, "log": A,
                                   "state": A}) + "\n"
                       + json.dumps({"event": "digest", "index": 512, "term": 2, "log": h,
                                     "state": h}) + "\n")
    r = decide(d_)
    assert r["verdict"] == "invalid" and r["agreement"]["first_divergence"]["index"] == 512
    _, page = render(d_)
    panel = page.text_of("agreement")
    assert panel.startswith("Replica agreement diverge")
    assert "members compared n1, n2, n3" in panel and "indexes compared 2" in panel
    assert "highest common index 512" in panel
    assert "First divergence of the applied logs: index 512" in panel
    assert B in panel and A in panel  # both members' entries (n1 vs n2)
    assert "members' applied logs diverge at index 512 (n1 vs n2)" in page.text_of("verdict")
    # a run whose system offers no digests says so, and one never checked says that
    for member in ("n1", "n2", "n3"):
        (d_ / "nodes" / member / "node.log").write_text("started\n")
    decide(d_)
    panel = render(d_)[1].text_of("agreement")
    assert "no evidence" in panel and "not a pass" in panel
    results = json.loads((d_ / "results.json").read_text())
    results["agreement"] = {"status": "not available", "members": [], "indexes_compared": 0,
                            "highest_common_index": None, "first_divergence": None,
                            "first_state_divergence": None, "silent": []}
    (d_ / "results.json").write_text(json.dumps(results))
    panel = render(d_)[1].text_of("agreement")
    assert "not available" in panel and "offers no digests" in panel
    del results["agreement"]
    (d_ / "results.json").write_text(json.dumps(results))
    assert "not checked" in render(d_)[1].text_of("agreement")
