"""Replica agreement on etcd: the members' HashKV at a revision all of them have reached,
polled during the run (``lab.systems.etcd.hashkv``) into ``digests.jsonl`` and compared
by ``lab.checker.replica_agreement``.

* The poller's rounds run against scripted members (no etcd needed): the revision asked
  is the lowest any running member reported, no member is asked beyond its own
  revision, and a member that is down, silent, slow or answers garbage is skipped for
  the round with a record saying why, never a traceback.
* etcd-shaped records read back from ``digests.jsonl``: a hash that differs at one
  revision is a divergence naming both members; hashes after different compactions are
  not compared.
* One real ``raftlab run --system etcd`` (slow) whose ``results.json`` says ``agree``.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from needs import missing
from test_etcd import RAFTLAB, ROOT, need_etcd

from lab.checker import replica_agreement
from lab.run import DigestRecorder
from lab.systems.etcd.hashkv import HashPoller, find_etcdctl, hash_of, revision_of
from lab.systems.types import POLLED_DIGESTS, read_polled_digests
from lab.verdict import decide


@dataclass
class Member:
    client: tuple[str, int] = ("127.0.0.1", 1)


@dataclass
class FakeCluster:
    running: dict[str, bool]
    members: dict[str, Member] = field(init=False)

    def __post_init__(self) -> None:
        self.members = {m: Member() for m in self.running}

    def alive(self, mid: str) -> bool:
        return self.running[mid]


def status(rev: Any) -> dict[str, Any]:
    return {"header": {"cluster_id": "1", "member_id": "2", "revision": rev,
                       "raft_term": "2"}, "raftIndex": "9"}


def hashkv(h: int, compact: int = 0, rev: int = 50) -> list[dict[str, Any]]:
    kv: dict[str, Any] = {"header": {"revision": rev}, "hash": h}
    if compact:
        kv["compact_revision"] = compact
    return [{"Endpoint": "127.0.0.1:1", "HashKV": kv}]


class Script:
    """Scripted members: what each says to a status request and to HashKV."""

    def __init__(self, statuses: dict[str, Any], hashes: dict[str, Any]) -> None:
        self.statuses, self.hashes = statuses, hashes
        self.asked: list[tuple[str, int]] = []

    async def status(self, mid: str) -> Any:
        s = self.statuses[mid]
        if s == "hang":
            await trio.sleep_forever()
        return s

    async def hashkv(self, mid: str, rev: int) -> Any:
        self.asked.append((mid, rev))
        h = self.hashes[mid]
        if h == "hang":
            await trio.sleep_forever()
        if isinstance(h, Exception):
            raise h
        return h(rev) if callable(h) else h


def rounds(cluster: FakeCluster, script: Script, n: int = 1) -> list[list[dict[str, Any]]]:
    poller = HashPoller(cluster, status=script.status, hashkv=script.hashkv)

    async def main() -> list[list[dict[str, Any]]]:
        return [await poller.round() for _ in range(n)]

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def by_event(records: list[dict[str, Any]], event: str) -> dict[str, dict[str, Any]]:
    return {r["member"]: r for r in records if r["event"] == event}


def test_the_revision_asked_is_the_lowest_any_member_reached() -> None:
    cluster = FakeCluster({"n1": True, "n2": True, "n3": True})
    script = Script({"n1": status("12"), "n2": status("10"), "n3": status(11)},
                    {"n1": hashkv(7), "n2": hashkv(7), "n3": hashkv(7)})
    [records] = rounds(cluster, script)
    assert sorted(script.asked) == [("n1", 10), ("n2", 10), ("n3", 10)]
    digests = by_event(records, "digest")
    assert digests["n2"] == {"event": "digest", "member": "n2", "index": 10, "term": None,
                             "log": None, "state": "7", "scope": 0, "member_revision": 10}
    assert {d["index"] for d in digests.values()} == {10}


def test_members_down_or_silent_are_skipped_and_none_is_asked_beyond_its_revision() -> None:
    cluster = FakeCluster({"n1": True, "n2": True, "n3": False, "n4": True})
    script = Script({"n1": status("20"), "n2": "hang", "n3": status("30"), "n4": None},
                    {"n1": hashkv(5), "n2": hashkv(5), "n3": hashkv(5), "n4": hashkv(5)})
    [records] = rounds(cluster, script)
    assert script.asked == [("n1", 20)]  # the others never reported a revision
    skipped = by_event(records, "skipped")
    assert skipped["n3"]["reason"] == "not running"
    assert skipped["n2"]["reason"] == "no status" and skipped["n4"]["reason"] == "no status"
    assert list(by_event(records, "digest")) == ["n1"]


def test_a_revision_is_asked_once_per_member_and_latecomers_are_asked_too() -> None:
    cluster = FakeCluster({"n1": True, "n2": True, "n3": True})
    script = Script({"n1": status("8"), "n2": status("8"), "n3": None},
                    {"n1": hashkv(1), "n2": hashkv(1), "n3": hashkv(1)})
    poller = HashPoller(cluster, status=script.status, hashkv=script.hashkv)

    async def main() -> list[list[dict[str, Any]]]:
        out = [await poller.round(), await poller.round()]
        script.statuses["n3"] = status("9")
        out.append(await poller.round())
        return out

    first, second, third = trio.run(main)
    assert len(by_event(first, "digest")) == 2 and by_event(second, "digest") == {}
    assert list(by_event(third, "digest")) == ["n3"]  # 8 again: only n3 is new there
    assert sorted(script.asked) == [("n1", 8), ("n2", 8), ("n3", 8)]


def test_garbage_answers_are_recorded_as_skipped_never_raised() -> None:
    members = [f"n{k}" for k in range(1, 10)]
    cluster = FakeCluster(dict.fromkeys(members, True))
    statuses: dict[str, Any] = dict.fromkeys(members, status("40"))
    statuses.update({"n7": status("x"), "n8": {"error": "etcdserver: too many requests"},
                     "n9": ["not", "a", "status"]})
    script = Script(statuses, {
        "n1": hashkv(99), "n2": "garbage", "n3": [], "n4": hashkv(-1),
        "n5": ValueError("boom"), "n6": "hang", "n7": hashkv(1), "n8": hashkv(1),
        "n9": hashkv(1)})
    [records] = rounds(cluster, script)
    assert list(by_event(records, "digest")) == ["n1"]
    skipped = by_event(records, "skipped")
    assert sorted(skipped) == members[1:]
    assert skipped["n5"]["reason"] == "ValueError: boom"
    assert skipped["n6"]["reason"] == "no HashKV answer in time"
    assert {skipped[m]["reason"] for m in ("n7", "n8", "n9")} == {"bad status answer"}
    assert all(skipped[m]["revision"] == 40 for m in ("n2", "n3", "n4", "n5", "n6"))


def test_a_compacted_revision_is_skipped_and_not_asked_again() -> None:
    cluster = FakeCluster({"n1": True, "n2": True})
    script = Script({"n1": status("30"), "n2": status("30")},
                    {"n1": hashkv(3, compact=12), "n2": hashkv(3, compact=30)})
    poller = HashPoller(cluster, status=script.status, hashkv=script.hashkv)

    async def main() -> list[list[dict[str, Any]]]:
        out = [await poller.round()]
        script.statuses = {"n1": status("12"), "n2": status("31")}
        out.append(await poller.round())
        return out

    first, second = trio.run(main)
    assert by_event(first, "digest")["n1"]["scope"] == 12
    assert "compacted" in by_event(first, "skipped")["n2"]["reason"]
    assert second == [{"event": "round-skipped", "revision": 12,
                       "reason": "not above the compaction revision 12"}]


def test_hash_and_revision_parsing() -> None:
    assert revision_of(status("17")) == 17 and revision_of(status(17)) == 17
    for bad in (None, {}, status(None), status(True), status("0"), status([1]),
                {"error": "x", "header": {"revision": "3"}}):
        assert revision_of(bad) is None
    assert hash_of(hashkv(5, compact=2), 9) == (5, 2)
    assert hash_of([{"HashKV": {}}], 9) == (0, 0)  # etcdctl leaves zero fields out
    assert hash_of(hashkv(5, compact=-1), 9) == (5, -1)  # never compacted
    assert hash_of({"error": "Error: context deadline exceeded"}, 9).startswith("Error")
    for bad in ("x", [], [1], [{"HashKV": None}], [{"HashKV": {"hash": 1.5}}], hashkv(1) * 2,
                hashkv(1, compact=-2)):
        assert isinstance(hash_of(bad, 9), str)


def write_polled(run: Path, records: list[dict[str, Any]]) -> Path:
    path = run / POLLED_DIGESTS
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"torn\n')
    return path


def digest(member: str, rev: int, h: str, scope: int = 0) -> dict[str, Any]:
    return {"time": 1, "event": "digest", "member": member, "index": rev, "term": None,
            "log": None, "state": h, "scope": scope}


def test_a_hash_that_differs_at_one_revision_is_a_divergence_naming_both(
        tmp_path: Path) -> None:
    path = write_polled(tmp_path, [
        digest("n1", 10, "111"), digest("n2", 10, "111"), digest("n3", 10, "111"),
        {"time": 2, "event": "skipped", "member": "n3", "reason": "no status"},
        digest("n1", 25, "222"), digest("n2", 25, "333"),
        digest("n1", 40, "444", scope=30), digest("n2", 40, "555", scope=0)])
    digests = read_polled_digests(path)
    assert digests is not None and len(digests) == 7
    assert digests[3].source == POLLED_DIGESTS and digests[3].line == 5
    agreement, anomalies = replica_agreement(digests, ["n1", "n2", "n3"])
    assert agreement["status"] == "diverge"
    first = agreement["first_state_divergence"]
    assert first["index"] == 25 and first["members"] == ["n1", "n2"]
    assert [(e["member"], e["state"]) for e in first["entries"]] == [("n1", "222"),
                                                                   ("n2", "333")]
    [a] = anomalies
    assert a["type"] == "replica-state-divergence"
    assert "n1 (digests.jsonl, line 5)" in a["explanation"]
    assert "n2 (digests.jsonl, line 6)" in a["explanation"]
    # revision 40: hashes after different compactions are not compared
    agreement, anomalies = replica_agreement(digests[:3] + digests[5:])
    assert agreement["status"] == "agree" and agreement["indexes_compared"] == 1


def fabricated_etcd_run(run: Path) -> None:
    run.mkdir()
    (run / "scenario.yaml").write_text(json.dumps(
        {"system": "etcd", "workload": {"model": "register"}, "faults": {"name": "none"}}))
    (run / "history.jsonl").write_text("")
    (run / "results.json").write_text(json.dumps({"counts": {"ok": 0}}))
    for m in ("n1", "n2", "n3"):
        (run / "nodes" / m).mkdir(parents=True)
        (run / "nodes" / m / "node.log").write_text(
            f'{{"msg":"{m} became follower at term 1"}}\n')


def test_the_verdict_reads_etcd_digests_from_the_run(tmp_path: Path) -> None:
    agree, diverge, unasked, cannot = (tmp_path / n for n in ("a", "d", "u", "c"))
    for run in (agree, diverge, unasked, cannot):
        fabricated_etcd_run(run)
    write_polled(agree, [digest(m, 10, "7") for m in ("n1", "n2", "n3")])
    r = decide(agree)
    assert r["agreement"]["status"] == "agree" and r["agreement"]["indexes_compared"] == 1
    write_polled(diverge, [digest("n1", 10, "7"), digest("n3", 10, "8")])
    r = decide(diverge)
    assert r["verdict"] == "invalid" and r["agreement"]["silent"] == ["n2"]
    assert "members' states differ at index 10 (n1 vs n3)" in r["verdict_reason"]
    # no digests.jsonl at all: etcd offers digests, none were recorded
    assert decide(unasked)["agreement"]["status"] == "no evidence"
    write_polled(cannot, [{"time": 0, "event": "not-available", "reason": "no etcdctl"}])
    assert decide(cannot)["agreement"]["status"] == "not available"


def test_a_failing_round_is_logged_and_the_recorder_goes_on(tmp_path: Path,
                                                          caplog: Any) -> None:
    class Clock:
        def now(self) -> int:
            return 5

    class Flaky:
        calls = 0

        async def round(self) -> list[dict[str, Any]]:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("first round breaks")
            return [{k: v for k, v in digest("n1", 3, "9").items() if k != "time"}]

    rec = DigestRecorder(Flaky(), tmp_path / POLLED_DIGESTS, Clock())  # type: ignore[arg-type]

    async def main() -> None:
        await rec.round_once()
        await rec.round_once()

    trio.run(main)
    rec.close()
    assert "a round of digest polling failed" in caplog.text
    lines = [json.loads(x) for x in (tmp_path / POLLED_DIGESTS).read_text().splitlines()]
    assert [x["event"] for x in lines] == ["digest"] and lines[0]["time"] == 5


@pytest.mark.etcd
@pytest.mark.processes
@pytest.mark.slow
def test_a_real_etcd_run_agrees_by_hashkv(tmp_path: Path) -> None:
    need_etcd()
    if find_etcdctl() is None:
        missing("etcd", "etcdctl not found (Debian: apt-get install etcd-client)")
    out = tmp_path / "out"
    args = ["run", "workloads/register.yaml", "faults/none.yaml", "--system", "etcd",
            "--nodes", "3", "--time-limit", "8", "--out", str(out)]
    proc = subprocess.run([*RAFTLAB, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    (run_dir,) = [p for p in out.glob("*/*") if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["agreement"]["status"] == "agree", (results["agreement"],
                                                       proc.stdout[-2000:])
    assert results["agreement"]["indexes_compared"] >= 1
    assert results["agreement"]["members"] == ["n1", "n2", "n3"]
    assert results["log_checks"]["leader_claims"]["status"] == "fine"
    assert results["log_checks"]["votes"]["status"] == "not available"
    polled = [json.loads(x) for x in (run_dir / POLLED_DIGESTS).read_text().splitlines()]
    assert any(r["event"] == "digest" for r in polled)
