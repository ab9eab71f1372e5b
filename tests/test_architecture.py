"""The import contracts (``pyproject.toml``, ``[tool.importlinter]``; ``lint-imports`` in
``make test`` checks them) cover every module of the lab: a module left out of the
layers would be free to import anything."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_lab_module_has_a_layer() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = [layer for contract in config["contracts"] if contract["type"] == "layers"
              for layer in contract["layers"]]
    placed = set(re.findall(r"lab\.[a-z_0-9]+", " ".join(layers)))
    modules = {f"lab.{p.stem}" for p in (ROOT / "lab").glob("*.py") if p.stem != "__init__"}
    modules |= {f"lab.{p.parent.name}" for p in (ROOT / "lab").glob("*/__init__.py")}
    assert modules - placed == set(), "modules without a layer in pyproject.toml"
    assert placed - modules == set(), "layers naming modules that do not exist"
