"""A member that never catches up is a finding: after the final phase, every fault healed
and the clients stopped, the lab waits for every running member to apply what the
cluster committed (``lab.run.wait_converged``); one that is still behind when the time is
up makes the run invalid (``member-behind``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
import trio.testing
from test_report import Synth, write_run

from lab.checker import member_lags
from lab.run import wait_converged
from lab.verdict import decide


class Members:
    """Status answers scripted over (trio) time: ``script[m]`` is a function of the
    seconds since the start to that member's status (None: no answer)."""

    def __init__(self, script: dict[str, Any], down: set[str] | None = None) -> None:
        self.script = script
        self.down = down or set()
        self.t0 = trio.current_time()
        self.polls = 0

    def alive(self, mid: str) -> bool:
        return mid not in self.down

    async def statuses(self, timeout: float = 0.5) -> dict[str, dict[str, Any] | None]:
        self.polls += 1
        t = trio.current_time() - self.t0
        return {m: (None if m in self.down else f(t)) for m, f in self.script.items()}


def _status(commit: int, applied: int) -> dict[str, Any]:
    return {"role": "follower", "term": 3, "commit": commit, "applied": applied}


def _converge(script: dict[str, Any], limit: float = 15.0, down: set[str] | None = None,
              stall: float = 100.0) -> tuple[dict[str, Any], int]:
    got: dict[str, Any] = {}

    async def main() -> None:
        members = Members(script, down)
        got.update(await wait_converged(members, limit, stall))  # type: ignore[arg-type]
        got["_polls"] = members.polls

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    polls = got.pop("_polls")
    return got, polls


def test_members_already_there_converge_at_the_first_poll() -> None:
    got, polls = _converge({m: (lambda t: _status(90, 90)) for m in ("n1", "n2", "n3")})
    assert got["status"] == "converged" and got["target"] == 90 and polls == 1
    assert got["behind"] == [] and got["members"]["n2"] == {"applied": 90}


def test_a_member_that_catches_up_in_time_converges() -> None:
    late = lambda t: _status(90, 40 if t < 3 else 95)  # noqa: E731 (a scripted status)
    got, polls = _converge({"n1": lambda t: _status(90, 90), "n2": late})
    assert got["status"] == "converged" and got["waited_s"] >= 3 and polls > 1


def test_a_member_still_behind_at_the_limit_is_behind() -> None:
    got, _ = _converge({"n1": lambda t: _status(90, 90), "n2": lambda t: _status(40, 40),
                        "n3": lambda t: None}, limit=5)
    assert got["status"] == "behind" and got["target"] == 90
    assert got["behind"] == ["n2", "n3"]  # n3 never answered its status
    assert got["members"] == {"n1": {"applied": 90}, "n2": {"applied": 40},
                              "n3": {"applied": None}}
    assert 5 <= got["waited_s"] < 6


def test_a_stuck_member_is_behind_after_the_stall_not_the_limit() -> None:
    """No progress for ``stall`` seconds ends the wait; steady progress keeps it going
    (up to the limit) until the member is there."""
    stuck, _ = _converge({"n1": lambda t: _status(90, 90), "n2": lambda t: _status(40, 40)},
                         limit=15, stall=3)
    assert stuck["status"] == "behind" and 3 <= stuck["waited_s"] < 4
    assert stuck["stall_s"] == 3
    steady = lambda t: _status(90, min(95, 40 + int(t * 5)))  # noqa: E731 (5 a second)
    got, _ = _converge({"n1": lambda t: _status(90, 90), "n2": steady}, limit=15, stall=3)
    assert got["status"] == "converged" and got["waited_s"] >= 10


def test_a_member_that_is_down_is_not_waited_for() -> None:
    """Its exit is a finding of its own (``member-crashed``), not a lag."""
    got, polls = _converge({"n1": lambda t: _status(90, 90), "n2": lambda t: _status(9, 9)},
                           down={"n2"})
    assert got["status"] == "converged" and polls == 1 and "n2" not in got["members"]


def test_members_that_report_no_indexes_are_not_available() -> None:
    got, _ = _converge({"n1": lambda t: {"role": "leader", "term": 2}})
    assert got["status"] == "not available" and got["behind"] == []
    got, _ = _converge({"n1": lambda t: {"role": "leader", "term": 2, "commit": 7}})
    assert got["status"] == "not available"  # a commit index but no applied one


def _with(d: Path, convergence: Any) -> dict[str, Any]:
    r = json.loads((d / "results.json").read_text())
    r["convergence"] = convergence
    (d / "results.json").write_text(json.dumps(r))
    return decide(d)


def test_a_member_behind_makes_a_clean_run_invalid_and_says_who(tmp_path: Path) -> None:
    d = write_run(tmp_path / "run", Synth().register_ops(800))
    assert decide(d)["verdict"] == "valid"
    ok = {"status": "converged", "target": 900, "waited_s": 0.0, "limit_s": 15.0,
          "members": {"n1": {"applied": 900}}, "behind": []}
    assert _with(d, ok)["verdict"] == "valid"
    assert _with(d, {**ok, "status": "not available"})["verdict"] == "valid"
    out = _with(d, {**ok, "status": "behind", "waited_s": 15.1, "behind": ["n3", "n4"],
                    "members": {"n1": {"applied": 900}, "n3": {"applied": 412},
                                "n4": {"applied": None}}})
    assert out["verdict"] == "invalid"
    assert "a member never caught up (n3: applied 412 of 900, n4: no status)" \
        in out["verdict_reason"]
    lags = [a for a in out["checker"]["anomalies"] if a["type"] == "member-behind"]
    assert [a["member"] for a in lags] == ["n3", "n4"]
    assert "412 of the 900 entries" in lags[0]["explanation"]
    assert "15.1 s" in lags[0]["explanation"] and "never answered" in lags[1]["explanation"]


def test_member_lags_reads_only_what_says_behind() -> None:
    assert member_lags(None) == [] and member_lags("behind") == []
    assert member_lags({"status": "converged", "behind": ["n1"]}) == []
    got = member_lags({"status": "behind", "target": 5, "waited_s": 15, "behind": ["n2"],
                       "members": "garbage"})
    assert [a["member"] for a in got] == ["n2"] and got[0]["applied"] is None
