"""Shared pytest hooks and fixtures: start the long tests first; print what each Raft
simulation scenario cost; pretend etcd is installed where a test is about files that
name it, not about etcd."""

from __future__ import annotations

import sys
from typing import Any

import pytest

#: The two longest tests (two to three minutes each on the 2-core machine, about a fifth
#: of the suite's time together): they start first of all, or the suite ends with one
#: worker finishing them alone.
LONGEST = ("test_a_figure_8_failure_replays", "test_a_seeded_bug_failure_replays_and_shrinks")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The two longest tests first, then the slow detection runs, then the other
    real-process tests, then the rest (each group in its own order): with two workers
    taking tests as they free up (``--dist worksteal``), the long runs start early and
    the short tests fill the gaps, instead of one worker finishing a long run alone at
    the end."""
    def rank(item: pytest.Item) -> int:
        if item.name in LONGEST:
            return -1
        return 0 if item.get_closest_marker("slow") else (
            1 if item.get_closest_marker("processes") else 2)

    items.sort(key=rank)


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


@pytest.fixture
def etcd_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a suite or scenario that names etcd checks etcd can run here; a test about
    the files, not about etcd, pretends it can (on a machine without etcd as with it)."""
    import dataclasses

    from lab.systems import REGISTRY

    monkeypatch.setitem(REGISTRY, "etcd", dataclasses.replace(REGISTRY["etcd"],
                                                              problem=lambda model: None))
