"""What a test needs from the machine (etcd, a browser, Node, vagrant): skip when it is
absent, with one line saying why and how to get it, and fail instead only where
``.ci/run`` said it installed it (``RAFTLAB_CI_INSTALLED``, a space-separated list of
names), since a tool that was installed and still is not found is a real failure."""

from __future__ import annotations

import os

import pytest


def installed_by_ci(name: str) -> bool:
    return name in os.environ.get("RAFTLAB_CI_INSTALLED", "").split()


def missing(name: str, why: str) -> None:
    """Skip (or, where CI installed ``name``, fail) the current test: ``why`` is absent."""
    if installed_by_ci(name):
        pytest.fail(f"{why} (but .ci/run installed {name})")
    pytest.skip(why)
