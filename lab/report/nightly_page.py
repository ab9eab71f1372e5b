"""``reports/nightly/<date>/index.html``: the page a team opens after a nightly suite.

Rendered from the suite's ``summary.json`` (see :mod:`lab.suite`): the counts per
category, the detection matrix (seeded bug or system x workload x faults), and every run
with its verdict, linked to its own report. Self-contained like the run pages.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import jinja2

from lab.store import RunDir

TEMPLATES = Path(__file__).resolve().parent / "templates"


def render_nightly(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``out/index.html`` from ``summary`` (atomically) and return its path."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    runs = []
    for r in summary.get("runs", []):
        link = None
        if r.get("run_dir"):
            page = RunDir(r["run_dir"]).page_path
            if page.exists():
                link = os.path.relpath(page, out)
        runs.append({**r, "link": link})
    html = env.get_template("nightly.html.j2").render(
        s=summary, runs=runs, css=(TEMPLATES / "run.css").read_text(encoding="utf-8"),
        started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary.get("started", 0))),
        cell_class=_cell_class)
    tmp = out / "index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out / "index.html")
    return out / "index.html"


def _cell_class(row: str, cell: dict[str, int] | None) -> str:
    """Colour of a matrix cell: for a seeded bug, detection is good; else it is an alarm."""
    if not cell or not cell.get("runs"):
        return ""
    seeded = "+" in row
    if cell["invalid"]:
        return "m-good" if seeded else "m-bad"
    return "m-bad" if seeded else "m-good"
