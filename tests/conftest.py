"""Shared pytest hooks: print what each Raft simulation scenario cost."""

from __future__ import annotations

import sys
from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    raftsim = sys.modules.get("raftsim")
    costs = getattr(raftsim, "COSTS", None)
    if not costs:
        return
    tr = terminalreporter
    tr.section("raft simulation cost per scenario")
    tr.write_line(f"{'scenario':<44} {'seeds':>6} {'node-steps':>11} {'cpu s':>7} {'nsteps/s':>9}")
    for name, (n, steps, secs) in sorted(costs.items()):
        rate = steps / secs if secs else 0.0
        tr.write_line(f"{name:<44} {n:>6} {steps:>11} {secs:>7.2f} {rate:>9.0f}")
    total = sum(c[2] for c in costs.values())
    tr.write_line(f"{'total':<44} {'':>6} {sum(c[1] for c in costs.values()):>11} {total:>7.2f}")
