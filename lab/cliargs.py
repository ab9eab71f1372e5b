"""What the lab's command lines share: a parser whose usage errors are one line and exit 2
(:class:`Parser`), help that shows every option's default (:class:`HelpFormatter`), and
``type=`` validators whose complaints say what would have been valid.

A validator runs while the arguments are parsed, so bad input is refused before anything
starts: ``raftlab run --bug typo`` exits 2 at once, naming the seeded bugs there are.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Collection
from typing import Any, NoReturn

from lab.exitcode import ExitCode


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs of several lines as written (laid out by hand), a
    one-line one wrapped, and ``(default: ...)`` after every option whose help does not
    already say its default."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default == []
                or default is argparse.SUPPRESS):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr, ``raftlab: what
    was wrong; see '... --help'``, and exit :attr:`ExitCode.BAD_INPUT` (2). Its
    subparsers are of this class too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        # argparse says "argument --bug: ..."; the lab's own messages say "--bug: ...".
        self.exit(ExitCode.BAD_INPUT,
                  f"raftlab: {message.removeprefix('argument ')}; "
                  f"see '{self.prog} --help'\n")


def one_of(names: Collection[str], what: str, listed: str = "choose from"
           ) -> Callable[[str], str]:
    """A ``type=`` validator accepting only ``names``; anything else is ``unknown WHAT
    'x' (LISTED a, b, c)``."""

    def check(text: str) -> str:
        if text not in names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {text!r} ({listed} {', '.join(names)})")
        return text

    return check


def whole_number(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """A ``type=`` validator for a whole number from ``lo`` (to ``hi``)."""
    span = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"

    def check(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be a whole number {span}, not {text!r}") from None
        if n < lo or (hi is not None and n > hi):
            raise argparse.ArgumentTypeError(f"must be {span}, not {n}")
        return n

    return check


def number(lo: float = 0.0, *, above: bool = False, what: str = "a number"
           ) -> Callable[[str], float]:
    """A ``type=`` validator for a finite number of at least ``lo`` (more than ``lo``
    with ``above``)."""
    span = f"more than {lo:g}" if above else f"at least {lo:g}"

    def check(text: str) -> float:
        try:
            x = float(text)
        except ValueError:
            x = math.nan
        if not math.isfinite(x) or x < lo or (above and x == lo):
            raise argparse.ArgumentTypeError(f"must be {what} {span}, not {text!r}")
        return x

    return check
