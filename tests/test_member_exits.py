"""A member that exits without the lab ending it is a finding: the process side tells the
exits it caused (kill, stop) from those it did not, and the verdict makes the second an
anomaly (``member-crashed``) with the end of the member's log."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from test_report import Synth, write_run

from lab import procs
from lab.checker import member_crashes
from lab.verdict import decide


@dataclass
class Member:
    id: str
    script: str
    log_path: Path
    proc: Any = None
    starts: int = 0
    peer: tuple[str, int] = ("127.0.0.1", 0)
    client: tuple[str, int] = ("127.0.0.1", 0)


@dataclass
class Scripted(procs.MemberProcesses):
    """Members that run a Python one-liner each."""

    members: dict[str, Member] = field(default_factory=dict)

    def argv(self, mid: str) -> list[str]:
        return [sys.executable, "-c", self.members[mid].script]

    async def status(self, mid: str, timeout: float) -> dict[str, Any] | None:
        return None


CRASH = ("import sys; print('checking the log'); print('AssertionError: entries overlap'); "
         "sys.exit(3)")
SLEEP = "import time; time.sleep(60)"


def test_only_the_exits_the_lab_did_not_cause_are_collected_once(tmp_path: Path) -> None:
    async def main() -> None:
        c = Scripted({m: Member(m, CRASH if m == "n1" else SLEEP, tmp_path / f"{m}.log")
                      for m in ("n1", "n2", "n3")})
        c.start_all()
        try:
            with trio.fail_after(30):
                while c.alive("n1"):
                    await trio.sleep(0.01)
            await c.kill("n2")  # the lab's own doing: never reported
            exits = c.collect_exits()
            assert [(e["node"], e["code"]) for e in exits] == [("n1", 3)]
            assert exits[0]["log_tail"][-1] == "AssertionError: entries overlap"
            assert c.collect_exits() == []  # once only
            # A crash the lab restarts before anyone looked is still reported.
            c.start("n1")
            with trio.fail_after(30):
                while c.alive("n1"):
                    await trio.sleep(0.01)
            c.members["n1"].script = SLEEP  # its third life runs on
            c.start("n1")
            await c.stop("n3")
            later = c.collect_exits()
            assert [e["node"] for e in later] == ["n1"]  # its second life
            assert later[0]["pid"] != exits[0]["pid"]
        finally:
            await c.stop_members()
        assert c.collect_exits() == []  # stopped by the lab: nothing more to report

    trio.run(main)


def test_a_crash_makes_a_clean_run_invalid_and_names_the_member(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", Synth().register_ops(800))
    assert decide(d)["verdict"] == "valid"
    r = json.loads((d / "results.json").read_text())
    r["member_exits"] = [{"time": 2_500_000_000, "node": "n2", "pid": 4242, "code": 1,
                          "log_tail": ["Traceback (most recent call last):",
                                       "ValueError: entries are not consecutive: 57 then 57"]}]
    (d / "results.json").write_text(json.dumps(r))
    out = decide(d)
    assert out["verdict"] == "invalid"
    assert "a member crashed (n2, code 1)" in out["verdict_reason"]
    crash = [a for a in out["checker"]["anomalies"] if a["type"] == "member-crashed"]
    assert len(crash) == 1 and crash[0]["member"] == "n2"
    assert "entries are not consecutive" in crash[0]["explanation"]
    assert "2.50 s" in crash[0]["explanation"]


def test_member_crashes_skips_garbage_and_says_signals() -> None:
    got = member_crashes([None, {"code": 1}, {"node": "n3", "code": -6, "log_tail": []}])
    assert [a["member"] for a in got] == ["n3"]
    assert "signal 6" in got[0]["explanation"]


def test_a_member_whose_port_was_taken_is_the_machines_doing_not_a_crash(tmp_path: Path
                                                                          ) -> None:
    d = write_run(tmp_path / "run", Synth().register_ops(800))
    r = json.loads((d / "results.json").read_text())
    r["member_exits"] = [{"time": 1, "node": "n3", "pid": 1, "code": 2,
                          "log_tail": ["error: [Errno 98] Address already in use"]}]
    (d / "results.json").write_text(json.dumps(r))
    out = decide(d)
    assert out["verdict"] == "unknown" and "port was taken" in out["verdict_reason"]
    assert not [a for a in out["checker"]["anomalies"] if a["type"] == "member-crashed"]
