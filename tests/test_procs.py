"""``lab.procs.listening_ports``: a run's leftover listener counts, another program's
listener on a port the run let go does not (runs and tests share one machine)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from lab import procs

LISTEN = ("import socket, sys, time; s = socket.socket(); "
          "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); "
          "open(sys.argv[2], 'w').close(); time.sleep(60)")


def orphan_listener(port: int, ready: Path, *extra: str) -> int:
    """A listener on ``port`` that is not this process's child (its parent, a shell,
    has exited): another program, as far as the run can tell. Its pid."""
    pidfile = ready.with_suffix(".pid")
    subprocess.run(["sh", "-c", f'"$0" -c "$1" "$2" "$3" {" ".join(extra)} & echo $! > "$4"',
                    sys.executable, LISTEN, str(port), str(ready), str(pidfile)], check=True)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, "the listener never started"
        time.sleep(0.02)
    return int(pidfile.read_text())


def test_only_the_runs_own_listeners_are_left_behind(tmp_path: Path) -> None:
    port = procs.free_ports(1)[0]
    pid = orphan_listener(port, tmp_path / "ready", "/some/other/run")
    try:
        assert procs.listening_ports([port]) == [port]  # without owners: any listener
        assert procs.listening_ports([port], pids=[], marker="/this/run") == []
        assert procs.listening_ports([port], pids=[pid]) == [port]
        assert procs.listening_ports([port], pids=[], marker="/some/other/run") == [port]
    finally:
        subprocess.run(["kill", str(pid)], check=False)
    with socket.socket() as mine:  # a listener of this process's own
        mine.bind(("127.0.0.1", 0))
        mine.listen()
        own = mine.getsockname()[1]
        assert procs.listening_ports([own], pids=[], marker="/no/such/run") == []  # not a child
