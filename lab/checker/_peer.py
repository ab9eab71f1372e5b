"""Where the peer histories live: public histories with known verdicts (a folder with a
``MANIFEST.json`` listing each file, its model, initial value and expected verdict), used
by the tests and the checker benchmark. They are data kept outside the repository: the
folder is named by ``$RAFTLAB_PEER_HISTORIES``, and without it the tests that need it
skip with a reason.
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
    if not env:
        return None
    folder = Path(env)
    return folder.resolve() if (folder / "MANIFEST.json").is_file() else None


def peer_manifest(folder: Path) -> list[dict[str, Any]]:
    """The manifest entries (``file``, ``model``, ``initial_value``, ``expected``...)."""
    entries: list[dict[str, Any]] = json.loads((folder / "MANIFEST.json").read_text())
    return entries
