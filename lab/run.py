"""One experiment: a workload and a fault scenario against a real cluster.

Data flow: load and validate both files -> start the proxy server and one proxy per
directed link and per client link -> start N members whose peers are proxy addresses -> C
client workers and the nemesis run until the time limit while an observer polls every
member -> heal, let the cluster recover, run the final phase -> stop the members and prove
nothing is left behind -> ``results.json``. Then the verdict (:func:`lab.verdict.decide`,
which ``raftlab run`` calls next) checks the history and records its outcome there.

Every artefact lands in the run directory (:class:`lab.store.RunDir`) as it is produced
(``history.jsonl`` is flushed every 20 ms and fsynced every second), so a run cut short by
Ctrl-C, SIGTERM or even SIGKILL still leaves a history that ``raftlab analyze`` can check.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from lab import procs
from lab.console import say
from lab.fastjson import dumps
from lab.history import History
from lab.nemesis import Nemesis
from lab.network import Network
from lab.scenario import DEFAULT_TIME_LIMIT, FaultScenario, Workload, home_member
from lab.store import RunDir
from lab.systems import (
    DEFAULT_SYSTEM,
    ClientFactory,
    SystemClient,
    SystemCluster,
    make_system,
    spec,
    to_ms,
)
from lab.systems.types import DigestPoller
from lab.toxiclient import open_toxiproxy
from lab.workload import Generator, Invocation

log = logging.getLogger("raftlab")

#: How long at least the lab waits, after the final phase, for every member to apply what
#: the cluster committed (and twenty election timeouts if that is longer)...
CONVERGE_S = 15.0
#: ...and how long at most (or four election timeouts if longer) while no member behind
#: gets any further: a stuck member (a buggy run) does not cost the whole wait.
STALL_S = 3.0

#: A reader's reads in flight at most (each ends by the workload's timeout, so at a
#: client's pace it seldom has more than a few).
READS_IN_FLIGHT = 8


@dataclass
class RunOptions:
    nodes: int = 5
    time_limit: float = DEFAULT_TIME_LIMIT
    seed: int = 0
    concurrency: int | None = None  # default: the workload's clients
    rate: float | None = None  # default: the workload's rate
    bugs: tuple[str, ...] = ()
    toxiproxy: str | None = None
    out: Path = Path("reports")
    system: str = DEFAULT_SYSTEM
    command: list[str] = field(default_factory=list)
    live: bool | None = None  # live progress line; None = when stdout is a terminal
    replay_of: str | None = None  # the run directory this run replays (``--replay``)


def fresh_dir(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``... whichever does not exist yet."""
    d, k = base, 1
    while d.exists():
        k += 1
        d = base.with_name(f"{base.name}-{k}")
    return d


def run_dir_for(out: Path, w: Workload, f: FaultScenario, seed: int) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime())
    d = fresh_dir(out / f"{w.name}-{f.name}" / f"{stamp}-s{seed}")
    d.mkdir(parents=True)
    return d


async def wait_converged(cluster: SystemCluster, limit: float, stall: float
                         ) -> dict[str, Any]:
    """Wait, every fault healed and the clients stopped, until every running member has
    applied what the cluster had committed when the wait began (the highest commit index
    any member reports), for at most ``limit`` seconds, and no longer than ``stall``
    seconds in which no member behind got further (a stuck member makes no progress; one
    catching up does). ``results.json``
    ``convergence``: ``converged``; ``behind`` (with the members that were not there, or
    never answered, when the time was up: :func:`lab.checker.member_lags` makes each an
    anomaly); or ``not available`` when the members answer without their commit and
    applied indexes."""
    began = moved = trio.current_time()
    target: int | None = None
    applied: dict[str, int | None] = {}
    while True:
        st = await cluster.statuses(timeout=0.5)
        before = dict(applied)
        running = sorted(m for m in st if cluster.alive(m))
        for m in running:
            a = (st.get(m) or {}).get("applied")
            if type(a) is int:
                applied[m] = a
            else:
                applied.setdefault(m, None)
        if target is None:
            answers = [s for s in st.values() if s is not None]
            commits = [c for c in (s.get("commit") for s in answers) if type(c) is int]
            if answers and (not commits or all(type(s.get("applied")) is not int
                                               for s in answers)):
                # The members answer, but not with both indexes: nothing to compare.
                return {"status": "not available", "target": None, "waited_s": 0.0,
                        "limit_s": limit, "stall_s": stall, "members": {}, "behind": []}
            if commits:
                target = max(commits)
        behind = [m for m in running if target is None or applied.get(m) is None
                  or (applied[m] or 0) < target]
        now = trio.current_time()
        if any(applied.get(m) != before.get(m) for m in behind):
            moved = now
        waited = round(now - began, 2)
        if not behind or waited >= limit or now - moved >= stall:
            return {"status": "behind" if behind else "converged", "target": target,
                    "waited_s": waited, "limit_s": limit, "stall_s": stall,
                    "members": {m: {"applied": applied.get(m)} for m in running},
                    "behind": behind}
        await trio.sleep(0.2)


class Observer:
    """Polls every member's status a few times a second into ``cluster.jsonl`` and keeps
    the current leader for the nemesis and the progress line."""

    def __init__(self, cluster: SystemCluster, path: Path, history: History) -> None:
        self.cluster = cluster
        self.history = history
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self.leader: str | None = None
        self.term = 0
        self.leaders_seen: list[tuple[int, str]] = []  # (term, leader) in order of observation
        # Members that exited without the lab ending them (``collect_exits``), with the
        # history time they were noticed at.
        self.exits: list[dict[str, Any]] = []

    def note_exits(self) -> None:
        now = self.history.now()
        for e in self.cluster.collect_exits():
            self.exits.append({"time": now, **e})

    async def poll_once(self) -> None:
        st = await self.cluster.statuses(timeout=0.3)
        self.note_exits()
        now = self.history.now()
        best: tuple[int, str] | None = None
        for mid, s in sorted(st.items()):
            rec: dict[str, Any] = {"time": now, "node": mid, "alive": self.cluster.alive(mid)}
            if s is not None:
                rec.update({k: s.get(k) for k in ("role", "term", "leader", "commit",
                                                   "applied", "last_index", "snapshot_index")})
                if s.get("role") == "leader" and (best is None or s["term"] > best[0]):
                    best = (int(s["term"]), mid)
            else:
                rec["reachable"] = False
            self._f.write(dumps(rec).decode() + "\n")
        self._f.flush()
        if best is not None:
            self.term, self.leader = best
            if not self.leaders_seen or self.leaders_seen[-1] != best:
                self.leaders_seen.append(best)
        elif all(s is None or s.get("role") != "leader" for s in st.values()):
            self.leader = None

    async def run(self, interval: float = 0.25) -> None:
        while True:
            await self.poll_once()
            await trio.sleep(interval)

    def close(self) -> None:
        self._f.close()


class DigestRecorder:
    """Asks the members for digests every few seconds into ``digests.jsonl``
    (``SystemSpec.digest_poller``; each record stamped with the history's clock). A round
    that fails is logged and skipped: the recorder never ends a run. Without a poller
    (the system could not be asked here) it records that once."""

    def __init__(self, poller: DigestPoller | None, path: Path, history: History) -> None:
        self.poller = poller
        self.history = history
        self.rounds = 0
        self._f = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
        if poller is None:
            self._write([{"event": "not-available",
                          "reason": "the members could not be asked for digests here "
                                    "(lab.log says why)"}])

    def _write(self, records: list[dict[str, Any]]) -> None:
        now = self.history.now()
        for r in records:
            self._f.write(dumps({"time": now, **r}).decode() + "\n")
        self._f.flush()

    async def round_once(self) -> None:
        if self.poller is None:
            return
        try:
            records = await self.poller.round()
        except Exception:  # ours to fix, never the run's end
            log.exception("a round of digest polling failed")
            return
        self.rounds += 1
        self._write(records)

    async def run(self, interval: float = 3.0) -> None:
        while True:
            await trio.sleep(interval)
            await self.round_once()

    def close(self) -> None:
        self._f.close()


class Experiment:
    def __init__(self, workload: Workload, faults: FaultScenario, opts: RunOptions) -> None:
        self.workload = workload
        self.faults = faults
        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.gen = Generator(workload, random.Random(opts.seed + 1))
        self.concurrency = opts.concurrency or workload.clients
        self.rate = workload.rate if opts.rate is None else opts.rate
        self.dir = run_dir_for(opts.out, workload, faults, opts.seed)
        self.run_dir = RunDir(self.dir)
        self.exit_reason = "completed"
        self.proxy_kind = "none"
        self.started = time.time()
        self.phase = "starting"
        # Readers come after the clients; a new process id comes after both.
        self.readers = workload.readers * opts.nodes
        self.convergence: dict[str, Any] | None = None  # after the final phase: _converge
        self._next_process = self.concurrency + self.readers
        self.history: History | None = None
        # What the scenario assumed before its schedule starts, and whether it held
        # (``results.json``'s ``premises``; :func:`initial_leader_premise`).
        self.premises: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ files

    def write_scenario(self) -> None:
        resolved = {
            "version": 1,
            "command": self.opts.command,
            "system": self.opts.system,
            "nodes": self.opts.nodes,
            "seed": self.opts.seed,
            "time_limit": self.opts.time_limit,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "bugs": list(self.opts.bugs),
            "workload": {k: v for k, v in dataclasses.asdict(self.workload).items()},
            "faults": to_plain_data(dataclasses.asdict(self.faults)),
        }
        if self.opts.replay_of is not None:
            resolved["replay_of"] = self.opts.replay_of
        self.run_dir.write_scenario(resolved)

    def timing(self) -> tuple[float, float]:
        """The run's election timeout and heartbeat (seconds): the scenario's ``timing``,
        else the system's default."""
        e0, h0 = spec(self.opts.system).default_timing
        return (self.faults.election_timeout or e0 / 1000, self.faults.heartbeat or h0 / 1000)

    # ------------------------------------------------------------------ the run

    async def run(self) -> dict[str, Any]:
        rd = self.run_dir
        handler = logging.FileHandler(rd.lab_log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        self.write_scenario()
        self.history = History(rd.history_path)
        options: dict[str, Any] = {"election_ms": to_ms(self.faults.election_timeout),
                                   "heartbeat_ms": to_ms(self.faults.heartbeat),
                                   **self.faults.system_options.get(self.opts.system, {})}
        system = make_system(self.opts.system, rd.nodes_dir, self.opts.nodes,
                             bugs=self.opts.bugs,
                             options={k: v for k, v in options.items() if v is not None})
        cluster = system.cluster
        self.client_factory: ClientFactory = system.client
        self.version = cluster.version()
        observer = Observer(cluster, rd.cluster_path, self.history)
        make_poller = spec(self.opts.system).digest_poller
        digests = (DigestRecorder(make_poller(cluster), rd.digests_path, self.history)
                   if make_poller is not None else None)
        nemesis: Nemesis | None = None
        proxy_pid: int | None = None
        proxy_ports: list[int] = []
        leftovers: dict[str, list[int]] = {}
        try:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async with trio.open_nursery() as guard:
                    guard.start_soon(self._watch_signals, signals, guard.cancel_scope)
                    try:
                        async with open_toxiproxy(self.opts.toxiproxy,
                                                  rd.toxiproxy_log_path) as (client, kind):
                            self.proxy_kind = kind
                            proxy_pid = getattr(client, "server_pid", None)
                            log.info("proxy server: %s", kind)
                            net = await Network.create(client, {
                                m.id: (m.peer, m.client) for m in cluster.members.values()},
                                listen=cluster.proxy_listen)
                            proxy_ports = net.ports()
                            cluster.dial = net.dial
                            try:
                                nemesis = Nemesis(self.faults, cluster, net, self.history,
                                                  rd.schedule_path, self.rng,
                                                  lambda: observer.leader,
                                                  timing=self.timing(),
                                                  crash_points=spec(
                                                      self.opts.system).crash_points)
                                await self._experiment(cluster, net, observer, nemesis,
                                                       digests)
                            finally:
                                with trio.CancelScope(shield=True):
                                    self.phase = "stopping"
                                    await cluster.stop_all()
                                    await net.aclose()
                    except Exception as e:  # any failure of ours (or the proxy's) ends the run
                        self.exit_reason = f"harness error: {_describe(e)}"
                        log.exception("the run failed")
                        print(f"\nraftlab: {self.exit_reason}", file=sys.stderr)
                    guard.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await cluster.stop_all()
            observer.note_exits()  # a member that died after the last poll
            observer.close()
            if digests is not None:
                digests.close()
            if nemesis is not None:
                nemesis.close()
            self.history.close()
            pids = cluster.pids() + ([proxy_pid] if proxy_pid else [])
            leftovers = {"processes": procs.descendants_alive(pids),
                         "ports": procs.listening_ports(cluster.ports() + proxy_ports,
                                                        pids=pids, marker=str(self.dir))}
            log.removeHandler(handler)
            handler.close()
        return self._results(observer, nemesis, leftovers)

    async def _watch_signals(self, signals: Any, scope: trio.CancelScope) -> None:
        async for sig in signals:
            self.exit_reason = f"interrupted by {signal.Signals(sig).name}"
            log.warning("%s: stopping the run", self.exit_reason)
            print(f"\nraftlab: {self.exit_reason}; stopping cleanly", file=sys.stderr)
            scope.cancel()
            return

    async def _experiment(self, cluster: SystemCluster, net: Network, observer: Observer,
                          nemesis: Nemesis, digests: DigestRecorder | None = None) -> None:
        assert self.history is not None
        cluster.start_all()
        self.phase = "waiting for a leader"
        try:
            leader = await cluster.wait_leader(timeout=30)
        except trio.TooSlowError:
            self.exit_reason = "harness error: no leader within 30 s of starting the cluster"
            log.error(self.exit_reason)
            return
        log.info("leader %s elected", leader)
        want = self.faults.initial_leader
        if want is not None:
            steered = trio.current_time()
            if leader != want:
                self.phase = f"moving leadership to {want}"
                leader = await self._steer_leader(cluster, leader, want)
            self.premises.append(initial_leader_premise(want, leader,
                                                        trio.current_time() - steered))
        self.initial_leader = leader
        addrs = {mid: net.client_addr(mid) for mid in cluster.members}
        if self.workload.model == "bank" and not await self._setup_bank(addrs):
            self.exit_reason = "harness error: could not write the bank's initial balances"
            log.error(self.exit_reason)
            return
        t0 = trio.current_time()
        self.t_end = t0 + self.opts.time_limit
        self.phase = "running"
        async with trio.open_nursery() as bg:
            bg.start_soon(observer.run)
            bg.start_soon(self.history.sync_every)
            bg.start_soon(self._progress, observer, nemesis, t0)
            if digests is not None:
                bg.start_soon(digests.run)
            async with trio.open_nursery() as main:
                for i in range(self.concurrency):
                    main.start_soon(self._worker, i, addrs)
                members = sorted(addrs)
                for j in range(self.readers):
                    main.start_soon(self._reader, j, members[j % len(members)], addrs)
                main.start_soon(nemesis.run, self.opts.time_limit)
            self.phase = "healing"
            await nemesis.heal_everything()
            self.phase = "recovering"
            with trio.move_on_after(self.workload.settle):
                await cluster.wait_leader(timeout=self.workload.settle)
            await trio.sleep(min(1.0, self.workload.settle))
            self.phase = "final phase"
            await self._final_phase(addrs)
            self.phase = "catching up"
            election = self.timing()[0]
            self.convergence = await wait_converged(
                cluster, max(CONVERGE_S, 20 * election), max(STALL_S, 4 * election))
            await observer.poll_once()
            if digests is not None:
                # Once more at the end, before the members stop: the final phase's writes
                # are applied everywhere by now, so every member answers at one revision.
                await digests.round_once()
            bg.cancel_scope.cancel()

    async def _steer_leader(self, cluster: SystemCluster, leader: str, want: str) -> str:
        """Make ``want`` the leader before the clients start (a scenario's
        ``initial_leader``): pause whoever else leads until another member is elected,
        then resume it. Who wins each round is up to the election (one of the others, so
        with 5 members ``want`` wins a round about one time in four): up to 24 rounds
        within a minute, which misses ``want`` about once in a thousand runs (8 rounds in
        20 s missed it on a busy machine). Returns the leader in the end, ``want`` or not
        (a run whose leader could not be moved still runs, but its ``premises`` say so and
        its verdict cannot be ``valid``)."""
        began = trio.current_time()
        deadline = began + 60.0
        for _ in range(24):
            if leader == want or want not in cluster.members \
                    or trio.current_time() > deadline:
                break
            cluster.signal(leader, signal.SIGSTOP)
            try:
                with trio.move_on_after(5.0):
                    await cluster.wait_leader(timeout=5.0, exclude=[leader])
            except trio.TooSlowError:
                pass
            finally:
                cluster.signal(leader, signal.SIGCONT)
            try:
                leader = await cluster.wait_leader(timeout=10.0)
            except trio.TooSlowError:
                break
        (log.info if leader == want else log.warning)(
            "initial leader: wanted %s, got %s (after %.1f s: the clients and the schedule "
            "start that much later)", want, leader, trio.current_time() - began)
        return leader

    def _client(self, addrs: dict[str, Any], timeout: float, rng: random.Random,
                accounts: Sequence[str] = (), worker: int | None = None,
                home: str | None = None) -> SystemClient:
        """A client worker's driver, on the connections the workload asks for, bound to
        ``home``, else to the member its placement gives worker ``worker`` (none for
        other clients)."""
        if home is None and worker is not None:
            home = home_member(self.workload.placement, worker, sorted(addrs))
        return self.client_factory(addrs, timeout, rng, accounts,
                                   shared=self.workload.connections == "shared", home=home)

    async def _setup_bank(self, addrs: dict[str, Any]) -> bool:
        balances = self.gen.initial_balances()
        async with self._client(addrs, 2.0, random.Random(0)) as c:
            for _ in range(20):
                if await c.write_initial(balances):
                    return True
                await trio.sleep(0.2)
        return False

    def _new_process(self) -> int:
        p = self._next_process
        self._next_process += 1
        return p

    async def _op(self, client: SystemClient, process: int, f: str, key: Any, value: Any
                  ) -> str:
        """Invoke one operation and record its invoke and completion. Returns the type."""
        h = self.history
        assert h is not None
        h.append(process, "invoke", f, key, value)
        completed = False
        try:
            c = await client.invoke(self.workload.model, f, key, value)
            out = c.value if c.type == "ok" else (value if f not in ("read",) else None)
            h.append(process, c.type, f, key, out, node=c.node, error=c.error)
            completed = True
            return c.type
        finally:
            if not completed:
                # Cancelled mid-flight (the run was interrupted): the outcome is unknown.
                h.append(process, "fail" if f == "read" else "info", f, key,
                         None if f == "read" else value, error="aborted")

    def _accounts(self) -> Sequence[str]:
        """The keys a client driver reads as one bank (none for other models)."""
        return self.gen.keys if self.workload.model == "bank" else ()

    async def _pace(self, rng: random.Random, mean_gap: float) -> None:
        """A client's wait before its next operation: exponential with mean ``mean_gap``
        (so that all of them together keep the workload's rate), never past the end."""
        await trio.sleep(min(rng.expovariate(1 / mean_gap),
                             max(0.0, self.t_end - trio.current_time())))

    async def _worker(self, i: int, addrs: dict[str, Any]) -> None:
        rng = random.Random(self.opts.seed * 1_000 + i)
        process = i
        mean_gap = self.concurrency / self.rate if self.rate > 0 else 0.0
        accounts = self._accounts()
        async with self._client(addrs, self.workload.timeout, rng, accounts, i) as client:
            while trio.current_time() < self.t_end:
                if mean_gap:
                    await self._pace(rng, mean_gap)
                    if trio.current_time() >= self.t_end:
                        return
                op = self.gen.next_op()
                if await self._op(client, process, op.f, op.key, op.value) == "info":
                    process = self._new_process()

    async def _reader(self, j: int, member: str, addrs: dict[str, Any]) -> None:
        """Reader ``j``: read-only operations, each sent first to ``member`` (following
        the system's redirects from there), started at a client worker's pace whether or
        not the earlier ones have ended (up to :data:`READS_IN_FLIGHT` at once, each as a
        process of its own). A member that was cut off, paused or deposed keeps being
        asked, at moments spread over the fault, while the clients have moved on to the
        new leader (or stall on it: its writes cannot commit), so whatever it answers
        meets the new leader's writes in one history."""
        rng = random.Random(self.opts.seed * 1_000 + 500 + j)
        mean_gap = self.concurrency / self.rate if self.rate > 0 else 0.0
        accounts = self._accounts()
        free = [self.concurrency + j]  # process numbers with nothing in flight
        slots = trio.Semaphore(READS_IN_FLIGHT)

        async def one(client: SystemClient, process: int, op: Invocation) -> None:
            try:
                if await self._op(client, process, op.f, op.key, op.value) != "info":
                    free.append(process)  # (an info process never invokes again)
            finally:
                slots.release()

        async with self._client(addrs, self.workload.timeout, rng, accounts,
                                home=member) as client, trio.open_nursery() as reads:
            while trio.current_time() < self.t_end:
                if mean_gap:
                    await self._pace(rng, mean_gap)
                await slots.acquire()
                if trio.current_time() >= self.t_end:
                    slots.release()
                    return
                process = free.pop() if free else self._new_process()
                reads.start_soon(one, client, process, self.gen.next_read())

    async def _final_phase(self, addrs: dict[str, Any]) -> None:
        accounts = self._accounts()
        async with self._client(addrs, max(self.workload.timeout, 2.0), random.Random(7),
                                accounts) as client:
            for op in self.gen.final_ops():
                for _attempt in range(10):
                    process = self._new_process()
                    if await self._op(client, process, op.f, op.key, op.value) == "ok":
                        break
                    await trio.sleep(0.5)

    async def _progress(self, observer: Observer, nemesis: Nemesis, t0: float) -> None:
        live = sys.stdout.isatty() if self.opts.live is None else self.opts.live
        h = self.history
        assert h is not None
        last_plain = -10.0
        while True:
            await trio.sleep(0.5)
            now = trio.current_time() - t0
            faults = ", ".join(f"{a.action}({','.join(a.nodes)})" for a in nemesis.active())
            line = (f"[{min(now, self.opts.time_limit):5.1f}/{self.opts.time_limit:g} s] "
                    f"{self.phase}: ok {h.counts['ok']} fail {h.counts['fail']} "
                    f"info {h.counts['info']} | leader {observer.leader or '-'} "
                    f"(term {observer.term}) | faults: {faults or 'none'}")
            if live:
                say("\r" + line[:160].ljust(160), end="")
            elif now - last_plain >= 5:
                say(line)
                last_plain = now

    # ------------------------------------------------------------------ results

    def _results(self, observer: Observer, nemesis: Nemesis | None,
                 leftovers: dict[str, list[int]]) -> dict[str, Any]:
        h = self.history
        assert h is not None
        results: dict[str, Any] = {
            "version": 1,
            "run_dir": str(self.dir),
            "system": self.opts.system,
            "system_version": getattr(self, "version", None),
            "nodes": self.opts.nodes,
            "workload": self.workload.name,
            "model": self.workload.model,
            "faults": self.faults.name,
            "seed": self.opts.seed,
            "time_limit": self.opts.time_limit,
            "concurrency": self.concurrency,
            "readers": self.readers,
            "rate": self.rate,
            "bugs": list(self.opts.bugs),
            "command": self.opts.command,
            "proxy": self.proxy_kind,
            "started": self.started,
            "duration_s": round(time.time() - self.started, 3),
            "exit_reason": self.exit_reason,
            "partial": self.exit_reason != "completed",
            "events": h.index,
            "counts": dict(h.counts),
            "nemesis_events": h.nemesis_events,
            "leaders": [{"term": t, "leader": n} for t, n in observer.leaders_seen],
            # members that exited without the lab ending them: a crash is a finding
            "member_exits": observer.exits,
            "convergence": self.convergence,
            "faults_applied": [r for r in (nemesis.applied if nemesis else [])],
            # the random nemesis as it ran: its unit resolved to seconds with the run's timing
            "random": nemesis.random_info if nemesis is not None else None,
            # history time (s) the scenario's offsets count from (clients and nemesis start)
            "initial_leader": getattr(self, "initial_leader", None),  # when clients started
            "premises": self.premises,
            "schedule_origin_s": (round(nemesis.origin_ns / 1e9, 6)
                                  if nemesis is not None and nemesis.origin_ns is not None
                                  else None),
            "leftovers": leftovers,
            "nothing_left_behind": not leftovers.get("processes") and not leftovers.get("ports"),
        }
        self.run_dir.write_results(results)
        return results


def initial_leader_premise(wanted: str, got: str | None, delay_s: float) -> dict[str, Any]:
    """The record of a scenario's ``initial_leader`` premise: the member it wanted to
    lead when the clients start, the one that did, whether that is the one wanted, and
    how many seconds moving leadership held back the clients and the schedule (whose
    offsets count from then, ``schedule_origin_s``)."""
    return {"premise": "initial_leader", "wanted": wanted, "got": got, "held": got == wanted,
            "delay_s": round(max(0.0, delay_s), 3)}


def _describe(e: BaseException) -> str:
    while isinstance(e, BaseExceptionGroup) and len(e.exceptions) == 1:
        e = e.exceptions[0]
    return f"{type(e).__name__}: {e}"


def to_plain_data(v: Any) -> Any:
    """Tuples as lists, all the way down (for YAML and JSON)."""
    if isinstance(v, dict):
        return {k: to_plain_data(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [to_plain_data(x) for x in v]
    return v


async def run_experiment(workload: Workload, faults: FaultScenario, opts: RunOptions
                         ) -> tuple[Path, dict[str, Any]]:
    exp = Experiment(workload, faults, opts)
    say(f"run directory: {exp.dir}")
    return exp.dir, await exp.run()
