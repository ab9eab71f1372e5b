"""The mutation benchmark's mutants (bench/mutants/*.patch) stay usable: each says what it
is, touches only the system under test's code, and applies cleanly to the current nodes/
(a patch that no longer applies would make bench/detection.py fail, or measure nothing)."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _detection():  # bench/ is not a package: load the script as a module
    spec = importlib.util.spec_from_file_location("bench_detection",
                                                  ROOT / "bench" / "detection.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


detection = _detection()
NAMES = detection.mutant_names()


def test_there_are_at_least_fifteen_mutants() -> None:
    assert len(NAMES) >= 15, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_mutant_has_a_header_and_touches_only_nodes(name: str) -> None:
    text = detection.patch_path(name).read_text()
    head = detection.header(text)
    words = " ".join(ln.lstrip("#").strip() for ln in head)
    assert head and all(ln.startswith("#") or not ln.strip() for ln in head), head
    assert len(words) > 200, f"{name}: the header must say what, where from, what it breaks"
    for needed in ("Source:", "Breaks:"):
        assert needed in words, f"{name}: the header lacks {needed!r}"
    files = detection.changed_files(text)
    assert files and all(f.startswith("nodes/") and f.endswith(".py") for f in files), files


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
@pytest.mark.parametrize("name", NAMES)
def test_mutant_applies_cleanly_and_changes_something(name: str, tmp_path: Path) -> None:
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "nodes", copy / "nodes",
                    ignore=shutil.ignore_patterns("__pycache__"))
    detection.apply_patch(name, copy)  # raises PatchError when it does not apply
    changed = [f for f in detection.changed_files(detection.patch_path(name).read_text())
               if (copy / f).read_bytes() != (ROOT / f).read_bytes()]
    assert changed, f"{name}: applying the patch changed nothing"
    r = subprocess.run([sys.executable, "-c", "import nodes.server"], cwd=copy,
                       env=detection.child_env(copy), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
