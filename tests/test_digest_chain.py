"""raftkv's digest chain (``nodes/server.py``; ``nodes/PROTOCOL.md``, "Digests"): what a
member's data directory tells it about its chain when it starts, old snapshots included.
The chain across real restarts and snapshot installs: ``tests/test_processes.py``."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from nodes.kv import KVStore
from nodes.server import GENESIS_CHAIN, Logger, Node, NodeOptions, chain_step, split_image
from nodes.types import Entry, HardState, Snapshot
from nodes.wal import WAL

WRITE = {"op": "write", "key": "x", "value": 1}


def node_on(tmp_path: Path, snapshot_data: Any | None, entries: list[Entry]
            ) -> tuple[Node, io.StringIO]:
    wal, _ = WAL.open(tmp_path, fsync=False, log=lambda ev, f: None)
    if snapshot_data is not None:
        wal.save_snapshot(Snapshot(1, 1, snapshot_data, ("n1",)), HardState(1, None, 1), [])
    wal.save(HardState(1, None, 1 + len(entries)), entries)
    wal.close()
    out = io.StringIO()
    opts = NodeOptions(id="n1", data_dir=tmp_path, peer_listen=("127.0.0.1", 0),
                       client_listen=("127.0.0.1", 0), peers={}, fsync=False, digest_every=1)
    return Node(opts, Logger("n1", out)), out


def digests(out: io.StringIO) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, out.getvalue().splitlines()) if r["event"] == "digest"]


def test_the_chain_is_a_function_of_index_term_and_the_canonical_command() -> None:
    a = chain_step(GENESIS_CHAIN, Entry(1, 1, {"op": "write", "key": "x", "value": 1}))
    assert a == chain_step(GENESIS_CHAIN, Entry(1, 1, {"value": 1, "key": "x", "op": "write"}))
    assert a != chain_step(GENESIS_CHAIN, Entry(2, 1, WRITE))  # another term
    assert a != chain_step(GENESIS_CHAIN, Entry(1, 1, {**WRITE, "value": 2}))
    assert len(a) == 64 and chain_step(a, Entry(1, 2, None)) != a


def test_a_snapshot_carries_the_chain_and_one_without_it_leaves_it_unknown(
        tmp_path: Path) -> None:
    kv = KVStore()
    kv.apply(1, WRITE)
    chain = chain_step(GENESIS_CHAIN, Entry(1, 1, WRITE))
    assert split_image({**kv.snapshot(), "chain": chain}) == (kv.snapshot(), chain)
    assert split_image({**kv.snapshot(), "chain": "nonsense"}) == (kv.snapshot(), None)
    assert split_image(kv.snapshot()) == (kv.snapshot(), None)  # from before chains

    node, out = node_on(tmp_path / "new", {**kv.snapshot(), "chain": chain}, [])
    node.log_digest()
    [d] = digests(out)
    assert (d["index"], d["term"], d["log"], d["state"]) == (1, 1, chain, kv.digest())
    node.wal.close()

    # an old data directory still loads; its digests say the chain is unknown, not wrong
    old, out = node_on(tmp_path / "old", kv.snapshot(), [])
    old.log_digest()
    [d] = digests(out)
    assert (d["index"], d["log"], d["state"]) == (1, None, kv.digest())
    old._apply_entry(Entry(1, 2, {**WRITE, "value": 2}))  # and stays unknown after it
    assert [d["log"] for d in digests(out)] == [None, None]
    old.wal.close()
