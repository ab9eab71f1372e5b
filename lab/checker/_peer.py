"""Where the peer histories live (public histories with known verdicts, used by the
tests and the benchmark; they are data beside the repository, never part of it).

``$RAFTLAB_PEER_HISTORIES``, when set, is the only place looked at; otherwise
``../shared/peer-histories`` next to the repository root (this file is
``<root>/lab/checker/_peer.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ENV = "RAFTLAB_PEER_HISTORIES"


def peer_histories_dir() -> Path | None:
    """The folder holding ``MANIFEST.json``, or ``None`` when it is absent."""
    env = os.environ.get(ENV)
    folder = (Path(env) if env else
              Path(__file__).resolve().parents[2] / ".." / "shared" / "peer-histories")
    return folder.resolve() if (folder / "MANIFEST.json").is_file() else None


def peer_manifest(folder: Path) -> list[dict[str, Any]]:
    """The manifest entries (``file``, ``model``, ``initial_value``, ``expected``...)."""
    entries: list[dict[str, Any]] = json.loads((folder / "MANIFEST.json").read_text())
    return entries
