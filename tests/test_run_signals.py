"""``raftlab run`` stopped by a signal: Ctrl-C and SIGTERM stop the run cleanly, SIGKILL
takes every member and the proxy server with the controller.

The controller runs in its own session; once its history has ok operations the test
records every process the run started (the controller's descendants, and any process
whose command line names the run directory) with the TCP ports they listen on, then
signals the controller alone (never its group), and checks that all of those processes
die and all of those ports close, and what the run directory says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from test_run_e2e import RAFTLAB, ROOT, check_history_well_formed, client_events

from lab.history import read_history

pytestmark = pytest.mark.processes

MEMBERS = 3


class Started:
    """A ``raftlab run`` in the background, in its own session."""

    def __init__(self, tmp_path: Path, seed: int) -> None:
        self.out = tmp_path / "out"
        self.stdout_path = tmp_path / "stdout.txt"
        self.stderr_path = tmp_path / "stderr.txt"
        with open(self.stdout_path, "wb") as so, open(self.stderr_path, "wb") as se:
            self.proc = subprocess.Popen(
                [*RAFTLAB, "run", "workloads/register.yaml", "faults/mixed.yaml", "--nodes",
                 str(MEMBERS), "--time-limit", "30", "--seed", str(seed), "--out",
                 str(self.out)],
                cwd=ROOT, stdout=so, stderr=se, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self.dir: Path | None = None

    def output(self) -> str:
        return (f"--- stdout ---\n{self.stdout_path.read_text(errors='replace')[-3000:]}\n"
                f"--- stderr ---\n{self.stderr_path.read_text(errors='replace')[-6000:]}")

    def wait_for_ok_ops(self, at_least: int = 20, timeout: float = 45.0) -> Path:
        """Poll until the run directory's history holds ``at_least`` ok events."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"raftlab exited early\n{self.output()}"
            for h in self.out.glob("*/*/history.jsonl"):
                oks = sum(1 for e in read_history(h) if e["type"] == "ok"
                          and e["process"] != "nemesis")
                if oks >= at_least:
                    self.dir = h.parent
                    return h.parent
            time.sleep(0.1)
        raise AssertionError(f"no {at_least} ok operations within {timeout}s\n{self.output()}")

    def wait_for_fault(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll until the nemesis has a fault in force; return the active faults."""
        assert self.dir is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"raftlab exited early\n{self.output()}"
            active = active_faults(self.dir)
            if active:
                return active
            time.sleep(0.1)
        raise AssertionError(f"no fault within {timeout}s\n{self.output()}")

    def stop(self) -> None:
        """Whatever happened, leave nothing running (the test's own cleanup)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def active_faults(run_dir: Path) -> list[dict[str, Any]]:
    """Faults started and not yet ended, per ``schedule.jsonl`` (complete lines only)."""
    path = run_dir / "schedule.jsonl"
    if not path.exists():
        return []
    recs = [json.loads(ln) for ln in path.read_text().split("\n")[:-1] if ln.strip()]
    ended = {r["fault"] for r in recs if r["phase"] == "end"}
    return [r for r in recs if r["phase"] == "start" and r["fault"] not in ended]


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def spawned_by_run(controller: int, run_dir: Path) -> dict[int, psutil.Process]:
    """Every process the run started: the controller's descendants, and any process
    whose command line names the run directory (members put their data there)."""
    found: dict[int, psutil.Process] = {}
    try:
        for p in psutil.Process(controller).children(recursive=True):
            found[p.pid] = p
    except (psutil.NoSuchProcess, ValueError):
        pass
    for p in psutil.process_iter():
        if p.pid != controller and any(str(run_dir) in arg for arg in _cmdline(p)):
            found.setdefault(p.pid, p)
    return found


def listening_ports(procs: dict[int, psutil.Process]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for pid, p in procs.items():
        try:
            conns = p.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        out[pid] = sorted(c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN)
    return out


def running(p: psutil.Process) -> bool:
    """Still running (the same process: psutil checks the start time; a zombie is dead)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def still_listening(ports: set[int]) -> set[int]:
    return {c.laddr.port for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports}


def assert_all_gone(procs: dict[int, psutil.Process], ports: set[int], run_dir: Path,
                    what: str, timeout: float = 10.0) -> None:
    """Every recorded process, and any process naming the run directory (e.g. a member
    restarted after the recording), is gone and no recorded port is listening."""
    deadline = time.monotonic() + timeout
    while True:
        alive = {pid: _cmdline(p) for pid, p in {**spawned_by_run(-1, run_dir),
                                                  **procs}.items() if running(p)}
        listening = still_listening(ports)
        if not alive and not listening:
            return
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    raise AssertionError(f"{what}: left behind after {timeout}s: processes {alive}, "
                         f"listening ports {sorted(listening)}")


def record(run: Started, run_dir: Path, down: int = 0
           ) -> tuple[dict[int, psutil.Process], set[int]]:
    """The run's processes and their listening ports, while it is in full flight (with
    ``down`` members killed by the nemesis at the moment)."""
    procs = spawned_by_run(run.proc.pid, run_dir)
    members = [p for p in procs.values() if "nodes" in _cmdline(p) and "-m" in _cmdline(p)]
    proxy = [p for p in procs.values() if "lab.toxiproxy" in _cmdline(p)
             or any(a.endswith("toxiproxy-server") for a in _cmdline(p))]
    assert MEMBERS - down <= len(members) <= MEMBERS, {pid: _cmdline(p) for pid, p in procs.items()}
    assert len(proxy) == 1, {pid: _cmdline(p) for pid, p in procs.items()}
    ports = listening_ports(procs)
    # each member listens for peers and clients; the proxy server for its API and proxies
    for p in members:
        assert len(ports.get(p.pid, [])) >= 2, (p.pid, ports)
    assert len(ports.get(proxy[0].pid, [])) >= 1 + MEMBERS * MEMBERS, ports
    return procs, {port for ps in ports.values() for port in ps}


def _down(active: list[dict[str, Any]]) -> int:
    return len({n for f in active if f["action"] in ("kill", "stop") for n in f["nodes"]})


#: (signal, seed, signal it while a fault is in force). With seed 1 the first fault of
#: mixed.yaml is (at the time of writing) a pause of the leader: a SIGSTOPped member.
CASES = [(signal.SIGINT, 1, True), (signal.SIGTERM, 0, False)]


@pytest.mark.parametrize(("sig", "seed", "during_fault"), CASES,
                         ids=["SIGINT-during-fault", "SIGTERM-early"])
def test_interrupt_stops_the_run_cleanly(tmp_path: Path, sig: signal.Signals, seed: int,
                                         during_fault: bool) -> None:
    run = Started(tmp_path, seed)
    try:
        run_dir = run.wait_for_ok_ops()
        active = run.wait_for_fault() if during_fault else []
        procs, ports = record(run, run_dir, _down(active))
        os.kill(run.proc.pid, sig)  # the controller only, not its group
        try:
            rc = run.proc.wait(20)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running 20s after {sig.name}\n{run.output()}"
                                 ) from None
        out = run.output()
        assert rc == 3, out
        assert "Traceback" not in out, out
        assert f"interrupted by {sig.name}" in run.stderr_path.read_text(), out
        assert_all_gone(procs, ports, run_dir, sig.name)
        results: dict[str, Any] = json.loads((run_dir / "results.json").read_text())
        assert results["exit_reason"] == f"interrupted by {sig.name}"
        assert results["partial"] is True
        assert results["nothing_left_behind"] is True, results["leftovers"]
        assert results["leftovers"] == {"processes": [], "ports": []}
        assert results["duration_s"] < 30
        if during_fault:  # the fault in force when the signal came is on record
            assert {f["fault"] for f in active} <= {
                f["fault"] for f in results["faults_applied"] if f["phase"] == "start"}
        # operations in flight were completed as aborted: every invoke has its completion
        # (a fault in force at the signal may have no end event: the run just stopped)
        events = check_history_well_formed(run_dir / "history.jsonl", complete=True,
                                           healed=False)
        assert results["events"] == len(events)
        assert sum(1 for e in client_events(events) if e["type"] == "ok") >= 20
        aborted = [e for e in client_events(events) if e.get("error") == "aborted"]
        assert all(e["type"] == ("fail" if e["f"] == "read" else "info") for e in aborted)
        assert events[-1]["time"] < 30e9
        for name in ("scenario.yaml", "schedule.jsonl", "cluster.jsonl", "lab.log"):
            assert (run_dir / name).is_file(), name
        assert sig.name in (run_dir / "lab.log").read_text()
    finally:
        run.stop()


def test_sigkill_takes_members_and_proxy_with_the_controller(tmp_path: Path) -> None:
    run = Started(tmp_path, seed=1)
    try:
        run_dir = run.wait_for_ok_ops()
        active = run.wait_for_fault()
        procs, ports = record(run, run_dir, _down(active))
        os.kill(run.proc.pid, signal.SIGKILL)
        assert run.proc.wait(10) == -signal.SIGKILL
        # members and the proxy server die with it (parent-death signal)
        assert_all_gone(procs, ports, run_dir, "SIGKILL")
        # the history survives: every complete line is JSON, a torn last one is ignored
        path = run_dir / "history.jsonl"
        raw = path.read_text()
        complete_lines = raw.split("\n")[:-1]
        parsed = []
        for n, line in enumerate(complete_lines, 1):
            try:
                parsed.append(json.loads(line))
            except ValueError:
                raise AssertionError(f"{path}:{n}: a complete line is not JSON: "
                                     f"{line[:200]!r}") from None
        events = read_history(path)
        assert events[:len(parsed)] == parsed
        assert len(parsed) <= len(events) <= len(parsed) + 1
        checked = check_history_well_formed(path, complete=False, torn_ok=True)
        assert [e["index"] for e in checked] == list(range(len(checked)))
        assert sum(1 for e in client_events(checked) if e["type"] == "ok") >= 20
    finally:
        run.stop()

