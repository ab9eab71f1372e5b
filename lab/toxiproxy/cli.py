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

from ._api import VERSION
from ._server import ToxiproxyServer

__all__ = ["main"]

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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab.toxiproxy",
        description=f"Raftlab's built-in Toxiproxy-compatible server (API of Toxiproxy {VERSION}).",
    )
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


def main(argv: list[str] | None = None) -> int:
    """Run the server until interrupted; returns the process exit status."""
    args = _parser().parse_args(argv)
    if args.version:
        print(f"toxiproxy-server version {VERSION}")
        return 0
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
        return 1
    return 0
