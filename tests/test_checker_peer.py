"""All 228 peer histories (porcupine etcd and kv, knossos cas-register) get the verdict
their source checker gives them (``MANIFEST.json``). Skipped when the folder is absent.

The manifest's verdict is about linearizability alone. Four knossos "good" files have no
acknowledged operation at all (vacuously linearizable); our sanity rule calls those
``unknown`` by default, so the verdict is compared with ``min_ok: 0`` and the default
is checked to say unknown for them.
"""

from __future__ import annotations

from typing import Any

import pytest

from lab.checker import check_history, load_history
from lab.checker._peer import ENV, peer_histories_dir, peer_manifest

FOLDER = peer_histories_dir()
ENTRIES: list[Any] = (
    [pytest.param(e, id=e["file"].removesuffix(".jsonl")) for e in peer_manifest(FOLDER)]
    if FOLDER is not None else
    [pytest.param(None, marks=pytest.mark.skip(
        reason=f"peer histories not found: set ${ENV} to their folder"))]
)


def test_manifest_lists_all_228_histories() -> None:
    if FOLDER is None:
        pytest.skip(f"peer histories not found (set ${ENV})")
    assert len(peer_manifest(FOLDER)) == 228


@pytest.mark.parametrize("entry", ENTRIES)
def test_peer_history_verdict_matches_manifest(entry: dict[str, Any]) -> None:
    assert FOLDER is not None
    hist = load_history(FOLDER / entry["file"])
    res = check_history(hist, entry["model"], initial=entry["initial_value"],
                        options={"min_ok": 0})
    expected = {"linearizable": True, "not-linearizable": False}[entry["expected"]]
    assert res.valid is expected, res.explain()
    if expected is False:
        assert res.anomalies and res.anomalies[0]["explanation"]
        assert res.per_key is not None and "invalid" in res.per_key.values()


def test_peer_histories_without_ok_ops_are_unknown_by_default() -> None:
    if FOLDER is None:
        pytest.skip(f"peer histories not found (set ${ENV})")
    empty = [e for e in peer_manifest(FOLDER) if e["stats"]["ok"] == 0]
    assert len(empty) == 4
    for entry in empty:
        res = check_history(load_history(FOLDER / entry["file"]), entry["model"],
                            initial=entry["initial_value"])
        assert res.valid is None, entry["file"]
        assert "acknowledged" in res.reason
