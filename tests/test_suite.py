"""Suites (``raftlab nightly`` / ``raftlab matrix``): loading, sorting results, the matrix,
and a real run of the quick suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lab import suite as S
from lab.scenario import ScenarioError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    return p


GOOD = """\
name: t
description: a test suite
time_limit: 20s
nodes: 3
workloads: [register, set]
faults: [none]
pairs: [[counter, kill-leader]]
seeds: [4, 9]
bugs: [none, stale-read]
"""


def test_builtin_suites_load(etcd_installed: None) -> None:
    for name in ("quick", "full", "matrix", "alarms"):
        s = S.load_suite(S.find_suite(name))
        assert s.cells and s.name == name


def test_suite_cells(tmp_path: Path) -> None:
    s = S.load_suite(write(tmp_path, GOOD))
    pairs = {(c.workload, c.faults) for c in s.cells}
    assert pairs == {("register", "none"), ("set", "none"), ("counter", "kill-leader")}
    assert len(s.cells) == 2 * 2 * 3  # seeds x bug rows x pairs
    assert [c.seed for c in s.cells[:6]] == [4] * 6  # every pair of a seed before the next
    assert {c.bug for c in s.cells} == {None, "stale-read"}
    argv = s.cells[0].argv(tmp_path)
    assert argv[3:6] == ["run", "register", "none"] and "--time-limit" in argv


def test_etcd_gets_no_seeded_bugs(tmp_path: Path, etcd_installed: None) -> None:
    s = S.load_suite(write(tmp_path, GOOD.replace("nodes: 3", "nodes: 3\nsystems: [raftkv, etcd]")))
    assert {c.bug for c in s.cells if c.system == "etcd"} == {None}


@pytest.mark.parametrize("text, line, words", [
    (GOOD.replace("nodes: 3", "nodez: 3"), 4, "unknown key 'nodez'"),
    (GOOD.replace("bugs: [none, stale-read]", "bugs: [none, stale-reed]"), 9, "unknown bug"),
    (GOOD.replace("faults: [none]", "faults: [nope]"), 6, "no fault file 'nope'"),
    (GOOD.replace("seeds: [4, 9]", "seeds: -2"), 8, "seeds must be from 1"),
    (GOOD.replace("time_limit: 20s", "time_limit: soon"), 3, "cannot parse duration"),
    (GOOD.replace("faults: [none]\n", ""), 1, "needs 'faults' too"),
    ("name: x\ndescription: y\n", 1, "needs 'workloads' and 'faults', or 'pairs'"),
    (GOOD.replace("[[counter, kill-leader]]", "[[counter]]"), 7, "[workload, faults]"),
    ("name: [x\n", 2, "not valid YAML"),
])
def test_bad_suites_name_file_and_line(tmp_path: Path, text: str, line: int, words: str
                                       ) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ScenarioError) as e:
        S.load_suite(p)
    assert str(e.value).startswith(f"{p}:{line}:"), str(e.value)
    assert words in str(e.value)


def test_bad_suite_on_the_command_line_exits_2(tmp_path: Path) -> None:
    p = write(tmp_path, GOOD.replace("nodes: 3", "nodes: many"))
    r = subprocess.run([sys.executable, "-m", "lab.cli", "nightly", str(p), "--out",
                        str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and f"{p}:4:" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("code, results, category", [
    (0, {"verdict": "valid", "verdict_reason": "fine"}, "valid"),
    (1, {"verdict": "invalid", "verdict_reason": "lost"}, "anomaly"),
    (1, {"exit_reason": "completed"}, "harness error"),  # a crash, not a verdict
    (1, None, "harness error"),
    (3, {"exit_reason": "completed", "verdict_reason": "faults never bit"}, "unknown"),
    (3, {"exit_reason": "harness error: no leader"}, "harness error"),
    (3, None, "harness error"),
    (2, None, "harness error"),
    (None, None, "harness error"),
    (-9, {"exit_reason": "completed"}, "harness error"),
])
def test_classify(code: int | None, results: dict[str, Any] | None, category: str) -> None:
    assert S.classify(code, results)[0] == category


def outcome(row_bug: str | None, pair: tuple[str, str], category: str) -> S.Outcome:
    return S.Outcome(S.Cell("raftkv", pair[0], pair[1], 1, row_bug, 5.0, 3), category)


def test_worst_exit() -> None:
    p = ("register", "none")
    assert S.worst_exit([outcome(None, p, "valid")] * 3) == 0
    assert S.worst_exit([outcome(None, p, "valid"), outcome(None, p, "unknown")]) == 3
    assert S.worst_exit([outcome(None, p, "harness error"), outcome(None, p, "anomaly")]) == 1
    assert S.worst_exit([outcome(None, p, "skipped")]) == 3
    assert S.worst_exit([]) == 3


def test_matrix_counts_invalid_per_row_and_column() -> None:
    a, b = ("set", "isolate-leader"), ("register", "none")
    outs = [outcome("early-ack", a, "anomaly"), outcome("early-ack", a, "valid"),
            outcome("early-ack", a, "anomaly"), outcome(None, a, "valid"),
            outcome(None, b, "unknown"), outcome(None, b, "skipped")]
    m = S.matrix(outs)
    assert m["rows"] == ["raftkv +early-ack", "raftkv"]
    assert m["cells"]["raftkv +early-ack"]["set \u00d7 isolate-leader"]["invalid"] == 2
    assert m["cells"]["raftkv"]["register \u00d7 none"] == {"runs": 1, "invalid": 0,
                                                          "unknown": 1, "error": 0}
    text = S.matrix_text(m)
    assert "2/3" in text and "0/1 ?1" in text


def test_runner_keeps_going_and_sorts_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    """Fake runs (a script standing in for ``raftlab run``) end valid, invalid, crashed and
    unknown: the runner goes on past each and writes the summary and its page."""
    script = tmp_path / "fake_run.py"
    script.write_text(
        "import json, sys, pathlib\n"
        "d = pathlib.Path(sys.argv[1]) / ('run' + sys.argv[2]); d.mkdir(parents=True)\n"
        "print('run directory:', d, flush=True)\n"
        "code = int(sys.argv[2])\n"
        "if code == 70: raise SystemExit(70)\n"
        "verdict = {0: 'valid', 1: 'invalid'}.get(code, 'unknown')\n"
        "(d / 'results.json').write_text(json.dumps({'exit_reason': 'completed', "
        "'verdict': verdict, 'verdict_reason': 'because', 'counts': {'ok': 5}}))\n"
        "raise SystemExit(code)\n")
    codes = iter([0, 1, 70, 3])

    def fake_argv(self: S.Cell, out: Path) -> list[str]:
        return [sys.executable, str(script), str(out), str(next(codes))]

    monkeypatch.setattr(S.Cell, "argv", fake_argv)
    suite = S.Suite("fake", "fake runs", "x.yaml", 600.0, [
        S.Cell("raftkv", "register", "none", k, None, 0.1, 3) for k in range(4)])
    out = tmp_path / "nightly"
    outs = S.Runner(suite, out, say=lambda _s: None).run()
    assert [o.category for o in outs] == ["valid", "anomaly", "harness error", "unknown"]
    assert outs[0].counts == {"ok": 5} and outs[0].run_dir and outs[0].run_dir.endswith("run0")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["anomaly"] == 1 and summary["exit_code"] == 1
    page = (out / "index.html").read_text()
    assert "Detection matrix" in page and "harness error" in page


def test_budget_skips_what_does_not_fit(tmp_path: Path) -> None:
    suite = S.Suite("tight", "no time", "x.yaml", 20.0, [
        S.Cell("raftkv", "register", "none", 1, None, 15.0, 3)])
    outs = S.Runner(suite, tmp_path, say=lambda _s: None).run()
    assert [o.category for o in outs] == ["skipped"]
    assert S.worst_exit(outs) == 3


@pytest.mark.processes
@pytest.mark.slow
def test_quick_suite_runs_clean(tmp_path: Path) -> None:
    """The CI suite on correct raftkv: every run valid, a summary and a page that links
    every run's report."""
    r = subprocess.run([sys.executable, "-m", "lab.cli", "nightly", "quick", "--out",
                        str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    [night] = list((tmp_path / "nightly").iterdir())
    summary = json.loads((night / "summary.json").read_text())
    assert summary["counts"]["valid"] == summary["planned"] == 3
    page = (night / "index.html").read_text()
    for run in summary["runs"]:
        assert Path(run["run_dir"], "index.html").exists()
        assert run["counts"]["ok"] > 0
    assert page.count('index.html"') >= 3
    assert "raftkv" in r.stdout and "0/1" in r.stdout  # the matrix, printed
