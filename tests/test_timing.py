"""A fault scenario's ``timing``: the members' election timeout and heartbeat."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab.scenario import ScenarioError, load_faults
from lab.systems import make_system, spec, timing_problem

ROOT = Path(__file__).resolve().parent.parent
HEAD = "name: fast\ndescription: quick elections\n"


def faults(tmp_path: Path, timing: str) -> Path:
    p = tmp_path / "fast.yaml"
    p.write_text(HEAD + timing + "schedule:\n  - {at: 1s, action: kill, target: leader, for: 2s}\n")
    return p


def test_timing_is_read_in_seconds(tmp_path: Path) -> None:
    f = load_faults(faults(tmp_path, "timing: {election: 300ms, heartbeat: 50ms}\n"))
    assert (f.election_timeout, f.heartbeat) == (0.3, 0.05)
    f = load_faults(faults(tmp_path, "timing: {election: 2s}\n"))
    assert (f.election_timeout, f.heartbeat) == (2.0, None)


@pytest.mark.parametrize("timing, words", [
    ("timing: {election: 100ms, heartbeat: 50ms}\n", "at least 5 x heartbeat"),
    ("timing: {election: 5ms}\n", "from 10ms to 50s"),
    ("timing: {elections: 1s}\n", "unknown key 'elections'"),
    ("timing: {heartbeat: soon}\n", "cannot parse duration"),
    ("timing: 300ms\n", "must be a mapping"),
])
def test_bad_timing_names_the_line(tmp_path: Path, timing: str, words: str) -> None:
    p = faults(tmp_path, timing)
    with pytest.raises(ScenarioError) as e:
        load_faults(p)
    assert str(e.value).startswith(f"{p}:3:") and words in str(e.value), str(e.value)


def test_raftkv_members_get_the_timing(tmp_path: Path) -> None:
    s = make_system("raftkv", tmp_path, 3, options={"election_ms": 300, "heartbeat_ms": 40})
    argv = s.cluster.argv("n1")  # type: ignore[attr-defined]
    assert argv[argv.index("--election-timeout-ms") + 1] == "300"
    assert argv[argv.index("--heartbeat-ms") + 1] == "40"
    plain = make_system("raftkv", tmp_path, 3).cluster.argv("n1")  # type: ignore[attr-defined]
    assert "--election-timeout-ms" not in plain


def test_half_a_timing_is_checked_against_the_systems_default() -> None:
    raftkv, etcd = spec("raftkv"), spec("etcd")
    assert timing_problem(raftkv, 300, None) is None  # raftkv's heartbeat is 50 ms
    assert "at least 5 x heartbeat (100 ms)" in str(timing_problem(etcd, 300, None))
    assert timing_problem(etcd, 300, 50) is None
    assert timing_problem(etcd, None, None) is None


def test_a_timing_the_system_cannot_take_is_bad_input(tmp_path: Path) -> None:
    p = faults(tmp_path, "timing: {election: 200ms}\n")
    r = subprocess.run([sys.executable, "-m", "lab.cli", "run", "register", str(p), "--system",
                        "etcd", "--nodes", "3", "--time-limit", "5", "--out", str(tmp_path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
