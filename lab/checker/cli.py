"""``raftlab check HISTORY.jsonl... --model MODEL``: check history files from the shell.

Exit codes (:class:`lab.exitcode.ExitCode`): 0 valid, 1 invalid, 2 bad input or usage, 3
unknown. With several files the worst wins, in the order bad input > invalid > unknown >
valid. Bad input is one line on stderr, ``FILE:LINE: what was wrong``, never a traceback;
the other files are still checked. ``--json`` prints one JSON object per file on stdout.

:func:`add_arguments` is the one definition of the arguments: ``raftlab check`` (a
subcommand of :mod:`lab.cli`) and ``python -m lab.checker.cli`` both build on it, and
:func:`run` does the checking.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lab.checker._api import UnknownModelError, check_history
from lab.checker._events import HistoryError, load_history
from lab.checker._models import MODELS
from lab.cliargs import Parser, number, one_of
from lab.exitcode import ExitCode

_SEVERITY = [ExitCode.BAD_INPUT, ExitCode.INVALID, ExitCode.UNKNOWN, ExitCode.VALID]

DESCRIPTION = """\
Check histories (JSON lines, one event per line: what 'raftlab run' writes as
RUN_DIR/history.jsonl) against a consistency model, and print each file's verdict with
the anomalies found, explained. Nothing is written."""

EPILOG = """\
exit codes (the worst over all files):
  0  valid: no anomaly
  1  invalid: an anomaly was found
  2  bad input or usage (a malformed history is one line, FILE:LINE: what was wrong)
  3  unknown: the time limit ran out, or the history is too weak to mean anything

example:
  raftlab check reports/register-mixed/*/history.jsonl --model cas-register"""


def worst(codes: Iterable[int]) -> ExitCode:
    """The overall exit code of several files: bad input > invalid > unknown > valid."""
    seen = set(codes)
    return next((code for code in _SEVERITY if code in seen), ExitCode.VALID)


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(
            f"must be JSON (e.g. null, 0, '\"\"'): {e.msg}") from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"must be a JSON object: {e.msg}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return value


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``raftlab check``, added to ``p``; every value is validated here,
    while parsing."""
    p.add_argument("files", nargs="+", type=Path, metavar="HISTORY.jsonl",
                   help="history files to check, each on its own (e.g. a run's "
                        "history.jsonl)")
    p.add_argument("--model", required=True, type=one_of(MODELS, "model"), metavar="MODEL",
                   help=f"the consistency model to check against: {', '.join(MODELS)}")
    p.add_argument("--initial", type=_json_value, metavar="JSON",
                   help="the model's initial value as JSON, e.g. null, 0, '\"\"' (default: "
                        "the model's own, e.g. null for registers, 0 for counter)")
    p.add_argument("--time-limit", type=number(0, above=True, what="a number of seconds"),
                   metavar="SECONDS",
                   help="give up (unknown, exit 3) after this long per file (default: no "
                        "limit)")
    p.add_argument("--options", type=_json_object, default={}, metavar="JSON",
                   help="model options as a JSON object, e.g. '{\"total\": 100}' for bank "
                        "or '{\"realtime\": false}' (default: none)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per file instead of text")
    return p


def _parser() -> argparse.ArgumentParser:
    return add_arguments(Parser(prog="raftlab check", description=DESCRIPTION,
                                epilog=EPILOG))


def _stats_line(stats: dict[str, Any]) -> str:
    t = stats["by_type"]
    return (f"{stats['ops']} ops ({t['ok']} ok, {t['fail']} fail, {t['info']} info, "
            f"{t['pending']} pending), {stats['processes']} processes")


def main(argv: list[str] | None = None) -> ExitCode:
    """Run ``raftlab check``; returns the exit code."""
    try:
        a = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # a usage error (one line said) or --help
        return ExitCode.VALID if e.code in (0, None) else ExitCode.BAD_INPUT
    return run(a)


def run(a: argparse.Namespace) -> ExitCode:
    """Check every file of parsed ``raftlab check`` arguments (:func:`add_arguments`)."""
    codes = []
    for path in a.files:
        try:
            res = check_history(load_history(path), a.model, initial=a.initial,
                                time_limit=a.time_limit, options=a.options)
        except (HistoryError, UnknownModelError) as e:
            print(str(e), file=sys.stderr)
            if a.json:
                print(json.dumps({"file": str(path), "verdict": "bad-input", "valid": None,
                                  "error": str(e)}))
            codes.append(ExitCode.BAD_INPUT)
            continue
        codes.append(res.exit_code)
        if a.json:
            print(json.dumps({"file": str(path), **res.to_json()}, default=str))
        else:
            print(f"{path}: {res.explain()}")
            print(f"  {_stats_line(res.stats)}; checked in {res.elapsed:.3f} s")
    return worst(codes)


if __name__ == "__main__":
    raise SystemExit(main())
