"""``python -m nodes``: start one raftkv node (see ``nodes/PROTOCOL.md``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from nodes.raft import CORE_BUGS
from nodes.server import NodeOptions, run_node
from nodes.wal import WALError


def _addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def _peer(text: str) -> tuple[str, tuple[str, int]]:
    name, sep, addr = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected ID=HOST:PORT, got {text!r}")
    return name, _addr(addr)


def _bug(text: str) -> str:
    if text not in CORE_BUGS:
        raise argparse.ArgumentTypeError(
            f"unknown bug {text!r} (expected one of: {', '.join(sorted(CORE_BUGS))})")
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nodes", description="Run one raftkv node.")
    p.add_argument("--id", required=True, help="this node's id, e.g. n1")
    p.add_argument("--data-dir", required=True, type=Path, help="WAL and snapshots live here")
    p.add_argument("--peer-listen", required=True, type=_addr, metavar="HOST:PORT")
    p.add_argument("--client-listen", required=True, type=_addr, metavar="HOST:PORT")
    p.add_argument("--peer", action="append", type=_peer, default=[], metavar="ID=HOST:PORT",
                   help="another member and the address to dial it at (repeatable)")
    p.add_argument("--peer-client", action="append", type=_peer, default=[],
                   metavar="ID=HOST:PORT", help="a member's client address, for leader hints")
    p.add_argument("--tick-ms", type=float, default=10.0)
    p.add_argument("--election-timeout-ms", type=float, default=150.0,
                   help="minimum election timeout; each node draws from [T, 2T)")
    p.add_argument("--heartbeat-ms", type=float, default=50.0)
    p.add_argument("--snapshot-entries", type=int, default=10_000,
                   help="take a snapshot once this many entries were applied since the last")
    p.add_argument("--digest-every", type=int, default=0, metavar="N",
                   help="log a digest of the applied log and state at every index that is a "
                        "multiple of N (and at shutdown), for the lab's replica agreement "
                        "check; 0 (the default) keeps no digest: it costs every applied "
                        "entry a hash")
    p.add_argument("--max-inflight", type=int, default=64,
                   help="unacknowledged append messages per follower")
    p.add_argument("--max-append-entries", type=int, default=1024,
                   help="log entries per append message (small values send a new leader's "
                        "backlog in many steps)")
    p.add_argument("--request-timeout", type=float, default=10.0)
    p.add_argument("--unsafe-no-fsync", action="store_true",
                   help="do not fsync (acknowledged writes can be lost on a crash)")
    p.add_argument("--bug", action="append", type=_bug, default=[],
                   help="switch on a seeded bug (repeatable): " + ", ".join(sorted(CORE_BUGS)))
    p.add_argument("--seed", type=int, default=None, help="seed for election timeouts")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    peers = dict(a.peer)
    if a.id in peers:
        print(f"error: --peer names this node ({a.id}) itself", file=sys.stderr)
        return 2
    if a.tick_ms <= 0 or a.heartbeat_ms < a.tick_ms or a.election_timeout_ms <= a.heartbeat_ms:
        print("error: need 0 < tick-ms <= heartbeat-ms < election-timeout-ms", file=sys.stderr)
        return 2
    opts = NodeOptions(
        id=a.id,
        data_dir=a.data_dir,
        peer_listen=a.peer_listen,
        client_listen=a.client_listen,
        peers=peers,
        peer_clients={k: f"{h}:{p}" for k, (h, p) in a.peer_client},
        tick_ms=a.tick_ms,
        election_ms=a.election_timeout_ms,
        heartbeat_ms=a.heartbeat_ms,
        snapshot_entries=max(1, a.snapshot_entries),
        digest_every=max(0, a.digest_every),
        fsync=not a.unsafe_no_fsync,
        bugs=frozenset(a.bug),
        request_timeout=a.request_timeout,
        max_inflight=max(1, a.max_inflight),
        max_append_entries=max(1, a.max_append_entries),
        seed=a.seed,
    )
    try:
        trio.run(run_node, opts)
    except WALError as e:
        print(f"error: refusing to start: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
