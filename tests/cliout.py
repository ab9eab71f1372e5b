"""Running ``raftlab`` in-process in a test and reading what it said."""

from __future__ import annotations

from typing import Any

from lab.cli import main


def cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """``raftlab ARGV...`` in this process: its exit code, stdout and stderr."""
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    """The one line a refusal writes to stderr (never a traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]
