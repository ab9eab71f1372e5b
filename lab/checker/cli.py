"""``raftlab check HISTORY.jsonl... --model MODEL``: check history files from the shell.

Exit codes (``DESIGN.md``): 0 valid, 1 invalid, 2 bad input or usage, 3 unknown. With
several files the worst wins, in the order bad input > invalid > unknown > valid. Bad
input is one line on stderr, ``FILE:LINE: what was wrong``, never a traceback; the other
files are still checked. ``--json`` prints one JSON object per file on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from lab.checker._api import MODELS, UnknownModelError, check_history
from lab.checker._events import HistoryError, load_history
from lab.checker._result import EXIT_BAD_INPUT, EXIT_INVALID, EXIT_UNKNOWN, EXIT_VALID

_SEVERITY = [EXIT_BAD_INPUT, EXIT_INVALID, EXIT_UNKNOWN, EXIT_VALID]


def worst(codes: list[int]) -> int:
    """The overall exit code of several files: bad input > invalid > unknown > valid."""
    for code in _SEVERITY:
        if code in codes:
            return code
    return EXIT_VALID


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raftlab check",
        description="Check histories (JSON lines) against a consistency model. Exit code: "
                    "0 valid, 1 invalid, 2 bad input, 3 unknown; the worst over all files.")
    p.add_argument("files", nargs="+", type=Path, metavar="HISTORY.jsonl")
    p.add_argument("--model", required=True, help=f"one of: {', '.join(MODELS)}")
    p.add_argument("--initial", metavar="JSON",
                   help="the model's initial value as JSON, e.g. null, 0, '\"\"'")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="give up (unknown) after this long per file")
    p.add_argument("--options", metavar="JSON", help="model options as a JSON object, "
                   'e.g. \'{"total": 100}\' for bank or \'{"realtime": false}\'')
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    return p


def _stats_line(stats: dict[str, Any]) -> str:
    t = stats["by_type"]
    return (f"{stats['ops']} ops ({t['ok']} ok, {t['fail']} fail, {t['info']} info, "
            f"{t['pending']} pending), {stats['processes']} processes")


def main(argv: list[str] | None = None) -> int:
    """Run ``raftlab check``; returns the exit code."""
    try:
        a = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # usage error (2) or --help (0)
        return e.code if isinstance(e.code, int) else EXIT_BAD_INPUT
    usage = None
    initial: Any = None
    options: dict[str, Any] = {}
    if a.model not in MODELS:
        usage = f"unknown model {a.model!r} (choose from {', '.join(MODELS)})"
    if a.initial is not None and usage is None:
        try:
            initial = json.loads(a.initial)
        except json.JSONDecodeError as e:
            usage = f"--initial must be JSON (e.g. null, 0, '\"\"'): {e.msg}"
    if a.options is not None and usage is None:
        try:
            options = json.loads(a.options)
        except json.JSONDecodeError as e:
            usage = f"--options must be a JSON object: {e.msg}"
        if usage is None and not isinstance(options, dict):
            usage = "--options must be a JSON object"
    if a.time_limit is not None and usage is None and not a.time_limit > 0:
        usage = "--time-limit must be a positive number of seconds"
    if usage is not None:
        print(f"raftlab check: {usage}", file=sys.stderr)
        return EXIT_BAD_INPUT
    codes = []
    for path in a.files:
        try:
            res = check_history(load_history(path), a.model, initial=initial,
                                time_limit=a.time_limit, options=options)
        except (HistoryError, UnknownModelError) as e:
            print(str(e), file=sys.stderr)
            if a.json:
                print(json.dumps({"file": str(path), "verdict": "bad-input", "valid": None,
                                  "error": str(e)}))
            codes.append(EXIT_BAD_INPUT)
            continue
        codes.append(res.exit_code)
        if a.json:
            print(json.dumps({"file": str(path), **res.to_json()}, default=str))
        else:
            print(f"{path}: {res.explain()}")
            print(f"  {_stats_line(res.stats)}; checked in {res.elapsed:.3f} s")
    return worst(codes)


if __name__ == "__main__":
    sys.exit(main())
