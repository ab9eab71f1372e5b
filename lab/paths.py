"""Where the project's own files are: the built-in workloads, fault scenarios and suites,
and the default reports folder."""

from __future__ import annotations

from pathlib import Path

#: The project's root (the folder holding ``lab/``, ``workloads/`` and ``faults/``).
ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = ROOT / "workloads"
FAULTS = ROOT / "faults"
SUITES = ROOT / "lab" / "suites"
REPORTS = ROOT / "reports"


def find_builtin(path: str, folder: str) -> Path:
    """A file as given if it exists, else a built-in one: ``path`` under the project root,
    under ``folder`` (``workloads``, ``faults``), or ``folder/<path>.yaml`` by name. A name
    found nowhere comes back as given, for the loader to report missing."""
    p = Path(path)
    if p.exists():
        return p
    for candidate in (ROOT / path, ROOT / folder / path, ROOT / folder / f"{path}.yaml"):
        if candidate.exists():
            return candidate
    return p
