"""A reader who goes away (``raftlab run ... | head -1``) stops the printing, never the
run: it still writes results.json and its report, and exits with its verdict's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import pytest

from lab import cli, verdict
from lab.console import say
from lab.exitcode import ExitCode

ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).with_name("raftlab")
RAFTLAB: list[str] = ([str(_SCRIPT)] if _SCRIPT.exists() else
                      [sys.executable, "-c", "import sys; from lab.cli import main; "
                                             "sys.exit(main())"])


@pytest.fixture
def closed_pipe() -> Iterator[TextIO]:
    """A text stream whose reader has gone: the write end of a pipe with its read end
    closed, as stdout is after ``| head -1`` has printed its line."""
    r, w = os.pipe()
    os.close(r)
    stream = open(w, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
    try:
        yield stream
    finally:
        stream.close()  # must not raise: what is left is flushed to /dev/null


def test_say_to_a_closed_pipe_stops_printing_without_an_error(closed_pipe: TextIO) -> None:
    assert say("first line", stream=closed_pipe) is False
    say("later lines go nowhere", stream=closed_pipe)
    say("\r[ 1.0/5 s] running ...", end="", stream=closed_pipe)
    closed_pipe.write("even a plain write")
    closed_pipe.flush()


def test_say_to_an_open_stream_writes_and_flushes(tmp_path: Path) -> None:
    with open(tmp_path / "out.txt", "w", encoding="utf-8") as f:
        assert say("one", stream=f) is True
        assert say("two", end="", stream=f) is True
        assert (tmp_path / "out.txt").read_text() == "one\ntwo"


def test_the_cli_summary_survives_a_closed_stdout(closed_pipe: TextIO, tmp_path: Path,
                                                  monkeypatch: Any) -> None:
    """``_say_run`` and ``_check_and_say`` print after the run; a closed stdout must not
    keep them from checking the history and returning the verdict's code."""
    monkeypatch.setattr(sys, "stdout", closed_pipe)
    checked: list[Path] = []

    def decide(run_dir: Path) -> dict[str, Any]:
        checked.append(run_dir)
        return {"verdict": "invalid", "verdict_reason": "a stale read",
                "checker": {"anomalies": [{"explanation": "stale read of k1"}]},
                "notes": ["a note"]}

    monkeypatch.setattr(verdict, "decide", decide)
    monkeypatch.setattr(cli, "_render_report", lambda run_dir: "report: (not rendered)")
    results = {"events": 2, "counts": {"ok": 1}, "exit_reason": "completed"}
    code = cli._say_run(tmp_path, results, tmp_path)
    assert code == ExitCode.INVALID and checked == [tmp_path]


@pytest.mark.processes
def test_a_run_piped_into_head_still_writes_its_results(tmp_path: Path) -> None:
    """``raftlab run ... | head -1``: the reader goes after the first line."""
    out = tmp_path / "out"
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(
            [*RAFTLAB, "run", "workloads/register.yaml", "faults/none.yaml", "--nodes", "3",
             "--time-limit", "5", "--out", str(out)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        proc.stdout.close()  # what head does once it has its line
        code = proc.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert first.startswith("run directory: "), first
    (results_path,) = out.glob("*/*/results.json")
    run_dir = results_path.parent
    results = json.loads(results_path.read_text())
    log = (run_dir / "lab.log").read_text()
    assert "Traceback" not in log and "BrokenPipe" not in log, log
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert results["exit_reason"] == "completed", results
    # correct raftkv without faults: a closed stdout changes nothing about the verdict
    assert results.get("verdict") == "valid", results.get("verdict_reason")
    assert code == ExitCode.VALID, (code, results["verdict"])
    assert (run_dir / "index.html").is_file()
