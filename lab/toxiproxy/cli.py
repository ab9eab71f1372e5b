"""Command line: ``python -m lab.toxiproxy [--host H] [--port P] ...``.

Flags follow upstream's ``toxiproxy-server`` (Go's flag package accepts both ``-port``
and ``--port``, with ``=`` or a space). The API binds 127.0.0.1 unless ``--host`` says
otherwise. SIGINT/SIGTERM stop the server cleanly (every proxied socket is closed).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio

from lab.cliargs import HelpFormatter
from lab.exitcode import ExitCode

from ._api import VERSION
from ._server import ToxiproxyServer

__all__ = ["add_arguments", "main", "run"]

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}


DESCRIPTION = f"""\
Raftlab's built-in Toxiproxy-compatible server (the HTTP API of Toxiproxy {VERSION}), in
the foreground until Ctrl-C or SIGTERM. 'raftlab run' starts one by itself; run this one
to share a server between runs ('raftlab run --toxiproxy HOST:PORT') or to drive it with
any Toxiproxy client. Its flags are toxiproxy-server's own: -host, -port, -config... (Go
style, one dash; --host and -host=VALUE work too)."""


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """toxiproxy-server's flags, added to ``parser`` (``python -m lab.toxiproxy`` and
    ``raftlab toxiproxy`` both build on this)."""
    parser.add_argument("-host", "--host", default="127.0.0.1", help="API bind host")
    parser.add_argument("-port", "--port", type=int, default=8474, help="API bind port")
    parser.add_argument(
        "-config", "--config", default=None, help="JSON file of proxies to populate on start"
    )
    parser.add_argument(
        "-seed", "--seed", type=int, default=None, help="seed for toxicity, jitter, slicer"
    )
    parser.add_argument(
        "-proxy-metrics",
        "--proxy-metrics",
        action="store_true",
        help="serve proxy byte counters on /metrics",
    )
    parser.add_argument(
        "-runtime-metrics",
        "--runtime-metrics",
        action="store_true",
        help="serve process metrics on /metrics",
    )
    parser.add_argument("-version", "--version", action="store_true", help="print the version")
    return parser


def _parser() -> argparse.ArgumentParser:
    return add_arguments(
        argparse.ArgumentParser(prog="python -m lab.toxiproxy", description=DESCRIPTION,
                                formatter_class=HelpFormatter)
    )


async def _serve(server: ToxiproxyServer) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            async for signum in signals:
                logging.getLogger("lab.toxiproxy").info("caught %s, shutting down", signum)
                nursery.cancel_scope.cancel()
                break


def _first_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def main(argv: list[str] | None = None) -> ExitCode:
    """Run the server until interrupted; returns the process exit status."""
    return run(_parser().parse_args(argv))


def run(args: argparse.Namespace) -> ExitCode:
    """Serve with parsed arguments (:func:`add_arguments`) until interrupted: 0 after a
    clean stop, 2 when the server cannot listen (a bad host, a port taken)."""
    if args.version:
        print(f"toxiproxy-server version {VERSION}")
        return ExitCode.VALID
    level = _LEVELS.get(os.environ.get("LOG_LEVEL", "info").lower(), logging.INFO)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = ToxiproxyServer(
        args.host,
        args.port,
        config=args.config,
        seed=args.seed,
        proxy_metrics=args.proxy_metrics,
        runtime_metrics=args.runtime_metrics,
    )
    failure: BaseException | None = None
    try:
        try:
            trio.run(_serve, server)
        except* OSError as group:
            failure = _first_leaf(group)
    except KeyboardInterrupt:
        pass
    if failure is not None:
        print(f"toxiproxy: cannot serve on {args.host}:{args.port}: {failure}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    return ExitCode.VALID
