"""``OUT/index.html`` of ``raftlab explore``: the exploration at a glance.

Rendered from ``explore.json`` (see :mod:`lab.explore`): what was explored, how many runs
with which seeds, the elections seen, the time and runs to the first anomaly, its kind,
the shrunk scenario, and every run linked to its own report (relative links, so the
folder can be moved or served as it is). Self-contained like the run pages.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import jinja2

from lab.store import RunDir

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _link(target: str | Path | None, out: Path) -> str | None:
    if not target or not Path(target).exists():
        return None
    return os.path.relpath(Path(target), out)


def render_explore(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``out/index.html`` from ``summary`` (atomically) and return its path."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    runs = [{**r, "link": _link(RunDir(r["run_dir"]).page_path if r.get("run_dir") else None,
                                out),
             "console": _link(out / "console" / f"{r['k'] + 1:03d}.log", out)}
            for r in summary.get("runs", [])]
    first = summary.get("first_anomaly")
    shrink = summary.get("shrink") or None
    html = env.get_template("explore.html.j2").render(
        s=summary, runs=runs, first=first, shrink=shrink,
        first_link=_link(RunDir(first["run_dir"]).page_path
                         if first and first.get("run_dir") else None, out),
        shrunk_link=_link(shrink.get("scenario") if shrink else None, out),
        css=(TEMPLATES / "run.css").read_text(encoding="utf-8"),
        name=lambda p: Path(str(p)).stem,
        started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary.get("started", 0))))
    tmp = out / "index.html.tmp"
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out / "index.html")
    return out / "index.html"
