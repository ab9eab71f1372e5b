"""What a ``crash-at`` did, for the verdict's evidence and the shrinker: the members it
hit are those that died at its point, not every member it armed; and its members may be
down until twice its ``for`` after it starts."""

from __future__ import annotations

import json
from pathlib import Path

from test_evidence import steady_polls
from test_report import FAULT, Synth, write_run

from lab.scenario import Step
from lab.shrink import MARGIN, Shrinker
from lab.verdict import decide


def crash_at_run(tmp_path: Path, armed: list[str], fired: list[str]) -> dict[str, object]:
    """A run whose one fault is a crash-at over ``armed`` (n1 leads throughout) of which
    ``fired`` died at the point: that fault's evidence."""
    d = write_run(tmp_path / "run", Synth().register_ops(800, outage=False), check=False)
    rows = [{"time": FAULT[0], "offset_s": 2.0, "phase": "start", "action": "crash-at",
             "fault": 1, "nodes": armed, "params": {"point": "wal-after-write"},
             "for_s": 1.0},
            {"time": FAULT[1], "offset_s": 3.0, "phase": "end", "action": "crash-at",
             "fault": 1, "nodes": armed, "fired": fired, "fired_s": {n: 2.5 for n in fired},
             "never_fired": [n for n in armed if n not in fired]}]
    (d / "schedule.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    steady_polls(d)
    [ev] = decide(d)["evidence"]["faults"]
    return ev  # type: ignore[no-any-return]


def test_an_armed_leader_that_never_fired_was_not_hit(tmp_path: Path) -> None:
    ev = crash_at_run(tmp_path, ["n1", "n2"], ["n2"])
    assert not ev["leader_hit"]
    assert ev["cut_off"] == []  # one member of three down: the majority stands


def test_a_leader_that_fired_was_hit_and_a_fired_majority_has_no_quorum(
        tmp_path: Path) -> None:
    ev = crash_at_run(tmp_path, ["n1", "n2"], ["n1", "n2"])
    assert ev["leader_hit"] and ev["cut_off"] == ["n1", "n2", "n3"]


def test_the_tight_limit_leaves_a_crash_at_twice_its_for() -> None:
    steps = [Step(1, 10.0, "crash-at", ("n1",), 4.0, {"point": "before-apply"}),
             Step(2, 12.0, "kill", ("n2",), 3.0)]
    s = Shrinker.__new__(Shrinker)
    s.steps = steps
    assert s.tight_limit([0]) >= 10.0 + 2 * 4.0 + MARGIN
    assert s.tight_limit([1]) < 10.0 + 2 * 4.0 + MARGIN  # a kill: its own end
