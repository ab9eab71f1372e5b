"""The nemesis: runs a fault scenario's schedule against a live cluster.

Targets (``leader``, ``random``, ``minority``, ...) are resolved at the moment a step
runs, from the observer's latest view of the cluster. Every fault's start and end is
written to the history (process ``"nemesis"``) and to ``schedule.jsonl`` with the
resolved nodes and directed links and exact offsets, so a run can be understood and
replayed. Faults with ``for`` are undone after that long; at the end of the run
:meth:`Nemesis.heal_everything` undoes whatever is still active.
"""

from __future__ import annotations

import json
import math
import random
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import trio

from lab import compose, topology
from lab.history import History
from lab.network import Network, NetworkFault
from lab.scenario import PROCESS_ACTIONS, UNTARGETED, FaultScenario, RandomNemesis, Step

#: How many times a composed round draws again before it skips (every draw impossible,
#: or leaving no working majority and not taken for its ``unsafe`` chance).
COMPOSE_ATTEMPTS = 4
#: A composed fault that may leave no working majority lasts at most this many election
#: timeouts.
UNSAFE_ELECTIONS = 2.0
#: How often (seconds) a ``crash-at`` looks whether its armed members have died.
CRASH_POLL = 0.02
#: How long (seconds) a ``crash-at`` waits before it asks again a member that did not
#: answer its disarm.
DISARM_RETRY = 0.5


class Cluster(Protocol):
    """What the nemesis needs from a system adapter."""

    @property
    def members(self) -> Any: ...

    async def kill(self, mid: str) -> None: ...
    async def stop(self, mid: str, grace: float = ...) -> None: ...
    def start(self, mid: str) -> None: ...
    def signal(self, mid: str, sig: int) -> None: ...
    def alive(self, mid: str) -> bool: ...
    async def crash_at(self, mid: str, point: str | None, skip: int = ...) -> bool | None: ...
    def process(self, mid: str) -> Any: ...
    def exit_code(self, process: Any) -> int | None: ...
    def exited_as_expected(self, process: Any) -> bool: ...


@dataclass
class ActiveFault:
    id: int
    action: str
    nodes: tuple[str, ...]
    undo: Callable[[], Awaitable[None]]
    network: NetworkFault | None = None
    info: dict[str, Any] = field(default_factory=dict)
    end_info: dict[str, Any] = field(default_factory=dict)  # for its end record
    # A ``crash-at``: the process of each member it was sent to (the cluster's ``process``
    # handle), and those of its members that died at the point.
    lives: dict[str, Any] = field(default_factory=dict)
    fired: set[str] = field(default_factory=set)


class Nemesis:
    def __init__(self, scenario: FaultScenario, cluster: Cluster, network: Network,
                 history: History, schedule_path: Path, rng: random.Random,
                 leader: Callable[[], str | None], restart_delay: float = 0.0,
                 timing: tuple[float, float] | None = None,
                 crash_points: tuple[str, ...] = ()) -> None:
        self.scenario = scenario
        self.cluster = cluster
        self.net = network
        self.history = history
        self.rng = rng
        self.leader = leader
        self.restart_delay = restart_delay  # seconds between a restart's stop and start
        # The run's effective election timeout and heartbeat (seconds): what a random
        # nemesis's ``unit`` counts, and the scale of composed latencies.
        self.timing = timing or (scenario.election_timeout or 0.15, scenario.heartbeat or 0.05)
        # The system's crash points: a random ``crash-at`` draws one of them.
        self.crash_points = crash_points
        self._t_end = math.inf  # trio time the run's faults end (set by :meth:`run`)
        # The random nemesis in seconds (``results.json``'s ``random``), once it started.
        self.random_info: dict[str, Any] | None = None
        self.nodes = list(cluster.members)
        self._log: IO[str] = open(schedule_path, "a", encoding="utf-8")  # noqa: SIM115
        self._active: dict[int, ActiveFault] = {}
        self._ids = 0
        self.paused: set[str] = set()
        self.down: set[str] = set()
        self.applied: list[dict[str, Any]] = []  # every start/end record, for results.json
        self._extra_heals: dict[str, list[NetworkFault]] = {}  # client cuts healed as one fault
        # History time (ns) when :meth:`run` started: the scenario's offsets count from here.
        self.origin_ns: int | None = None
        # ``isolate-site`` cuts off a site of the scenario's ``datacenters`` step.
        self._sites: list[list[str]] = next(
            ([list(site) for site in step.params["sites"]] for step in scenario.schedule
             if step.action == "datacenters"), [])

    # ------------------------------------------------------------------ running

    async def run(self, time_limit: float) -> None:
        """Run the timed schedule and the random nemesis until ``time_limit`` seconds after
        the start; return once every step (and its undo) has run."""
        t0 = trio.current_time()
        self._t_end = t0 + time_limit
        self.origin_ns = self.history.now()
        async with trio.open_nursery() as nursery:
            for step in self.scenario.schedule:
                nursery.start_soon(self._timed, t0, step)
            if self.scenario.random is not None:
                nursery.start_soon(self._random, t0, time_limit)

    async def _timed(self, t0: float, step: Step) -> None:
        await trio.sleep_until(t0 + step.at)
        fault = await self.apply(step.action, step.target, step.params, step_line=step.line,
                                 duration=step.duration)
        if fault is not None and step.action == "crash-at":
            await self.crash_window(fault, step.duration)
        elif fault is not None and step.duration is not None:
            await trio.sleep(step.duration)
            await self.undo(fault)

    def resolved_random(self) -> RandomNemesis | None:
        """The scenario's random nemesis with its numbers in seconds (its ``unit`` resolved
        with the run's timing)."""
        r = self.scenario.random
        return None if r is None else r.in_seconds(*self.timing)

    async def _random(self, t0: float, time_limit: float) -> None:
        r = self.resolved_random()
        assert r is not None and self.scenario.random is not None
        self.random_info = {"unit": self.scenario.random.unit, "compose": r.compose,
                            "election_s": self.timing[0], "heartbeat_s": self.timing[1],
                            "start_s": round(r.start, 3),
                            "stop_s": None if r.stop is None else round(r.stop, 3),
                            "interval_s": [round(x, 3) for x in r.interval],
                            "duration_s": [round(x, 3) for x in r.duration]}
        if r.compose:
            self.random_info.update(max_active=r.max_active, unsafe=r.unsafe)
            await self._composed(r, t0, time_limit)
            return
        stop = min(time_limit, r.stop) if r.stop is not None else time_limit
        await trio.sleep_until(t0 + r.start)
        while True:
            await trio.sleep(self.rng.uniform(*r.interval))
            duration = self.rng.uniform(*r.duration)
            if trio.current_time() - t0 + duration > stop:
                return
            action = self.rng.choice(r.actions)
            target = (self.rng.choice(r.targets),)
            params: dict[str, Any] = {"ms": 100, "jitter": 50} if action == "latency" else {}
            if action == "bandwidth":
                params = {"rate": 1}  # KB/s: slower than any workload here writes
            if action == "crash-at":
                if not self.crash_points:
                    continue  # the pre-run checks refuse this; nothing to draw from
                params = {"point": self.rng.choice(self.crash_points), "skip": 0}
            fault = await self.apply(action, target, params, duration=duration)
            if fault is not None and action == "crash-at":
                await self.crash_window(fault, duration)
            elif fault is not None:
                await trio.sleep(duration)
                await self.undo(fault)

    async def _composed(self, r: RandomNemesis, t0: float, time_limit: float) -> None:
        """Composed faults: up to ``max_active`` at once, a new one every ``interval``,
        each undone after its own ``duration`` (:mod:`lab.compose` draws them)."""
        stop = min(time_limit, r.stop) if r.stop is not None else time_limit
        mine: set[int] = set()
        ended = trio.Event()

        async def end_after(fault: ActiveFault, duration: float) -> None:
            nonlocal ended
            await trio.sleep(duration)
            await self.undo(fault)
            mine.discard(fault.id)
            ended.set()
            ended = trio.Event()

        await trio.sleep_until(t0 + r.start)
        async with trio.open_nursery() as nursery:
            while True:
                await trio.sleep(self.rng.uniform(*r.interval))
                while len(mine) >= r.max_active:
                    await ended.wait()
                duration = self.rng.uniform(*r.duration)
                left = stop - (trio.current_time() - t0)
                if left < max(r.duration[0], 0.001):
                    return  # no fault fits before the end any more
                duration = min(duration, left)
                picked = self._compose_draw(r)
                if picked is None:
                    continue
                d, safe = picked
                if not safe:
                    duration = min(duration, UNSAFE_ELECTIONS * self.timing[0])
                note = {"compose": {**d.note(), "safe": safe}}
                fault = await self.apply(d.action, d.nodes, d.params, note=note)
                if fault is not None:
                    mine.add(fault.id)
                    nursery.start_soon(end_after, fault, duration)

    def _compose_state(self) -> compose.State:
        cuts = frozenset().union(*(f.network.links for f in self._active.values()
                                   if f.network is not None and f.network.kind == "cut"))
        return compose.State(tuple(self.nodes), self.leader(), frozenset(self.down),
                             frozenset(self.paused), cuts)

    def _compose_draw(self, r: RandomNemesis) -> tuple[compose.Draw, bool] | None:
        """A composed fault to start now and whether it keeps a working majority; None
        (and a ``skipped`` record) if no draw of this round may start."""
        state = self._compose_state()
        why = "no draw could be made"
        action = r.actions[0]
        for _ in range(COMPOSE_ATTEMPTS):
            action = self.rng.choice(r.actions)
            target = self.rng.choice(r.targets)
            d = compose.draw(action, target, state, self.rng, *self.timing)
            if d is None:
                why = (f"{action} on {target}: it would leave fewer than a majority running"
                       if action in compose.PROCESS else f"{action}: no member for {target}")
                continue
            if compose.keeps_majority(state, d):
                return d, True
            if self.rng.random() < r.unsafe:
                return d, False
            why = f"{action} ({d.shape}) would leave no working majority"
        self._record(action, "skipped", [], {"reason": f"composed: {why}"})
        return None

    # ------------------------------------------------------------------ targets

    def resolve(self, target: tuple[str, ...], default: str = "random") -> list[str]:
        """Node ids for a step's target, resolved now."""
        out: list[str] = []
        for t in target or (default,):
            leader = self.leader()
            live = [n for n in self.nodes if n not in self.down]
            if t == "leader":
                picked = [leader] if leader else []
            elif t == "followers":
                picked = [n for n in self.nodes if n != leader]
            elif t == "follower":
                picked = [self.rng.choice([n for n in live if n != leader] or self.nodes)]
            elif t == "random":
                picked = [self.rng.choice(live or self.nodes)]
            elif t in ("minority", "majority"):
                shuffled = self.rng.sample(self.nodes, len(self.nodes))
                k = topology.majority(len(self.nodes))
                picked = shuffled[:k] if t == "majority" else shuffled[: len(self.nodes) - k]
            elif t == "all":
                picked = list(self.nodes)
            elif t == "none":
                picked = []
            else:
                picked = [t] if t in self.nodes else []
            out.extend(p for p in picked if p not in out)
        return out

    # ------------------------------------------------------------------ actions

    async def apply(self, action: str, target: tuple[str, ...], params: dict[str, Any],
                    step_line: int | None = None, note: dict[str, Any] | None = None,
                    duration: float | None = None) -> ActiveFault | None:
        """Start one fault now. Returns the active fault, or None if it could not bite
        (e.g. ``leader`` while there is none) or cannot be undone (``heal``).
        ``duration``: the fault's ``for``, recorded for a ``crash-at`` (whose members stay
        down that long after they died, which a replay needs, not its end)."""
        if action == "heal":
            await self.heal_everything(network_only=True)
            self._record("heal", "start", [], {})
            return None
        if action in UNTARGETED or (action == "latency" and "links" in params):
            nodes = []  # the shape is the action's own; it says which nodes it cut off
        else:
            nodes = self.resolve(target, "leader" if action.startswith("leader-") else "random")
        info: dict[str, Any] = {"params": params} if params else {}
        if step_line is not None:
            info["step_line"] = step_line
        if note:
            info.update(note)
        if action == "crash-at":
            info["for_s"] = duration
            return await self._arm(nodes, params, target, info)
        if action in PROCESS_ACTIONS:
            if not nodes:
                self._record(action, "skipped", [], {"reason": f"target {target} resolved "
                                                              "to no node", **info})
                return None
            undo = await self._process(action, nodes)
            fault = self._activate(action, nodes, undo, None, info)
        else:
            net_fault = await self._network(action, nodes, params)
            if net_fault is None:
                self._record(action, "skipped", nodes, {"reason": "nothing to cut", **info})
                return None

            async def heal_it() -> None:
                await self.net.heal(net_fault)

            fault = self._activate(action, nodes, heal_it, net_fault, info)
        return fault

    async def _process(self, action: str, nodes: list[str]) -> Callable[[], Awaitable[None]]:
        c = self.cluster

        async def nothing() -> None:
            return None

        if action == "kill":
            for n in nodes:
                await c.kill(n)
                self.down.add(n)
                self.paused.discard(n)
            return self._restarter(nodes)
        if action == "stop":
            for n in nodes:
                await c.stop(n)
                self.down.add(n)
                self.paused.discard(n)
            return self._restarter(nodes)
        if action == "start":  # only members that are not running
            for n in nodes:
                if not c.alive(n):
                    c.start(n)
                self.down.discard(n)
            return nothing
        if action == "restart":  # stop each running member cleanly, then start them all
            for n in nodes:
                if c.alive(n):
                    await c.stop(n)  # SIGCONT, SIGTERM; SIGKILL after the grace period
                self.paused.discard(n)
            if self.restart_delay > 0:
                await trio.sleep(self.restart_delay)
            for n in nodes:
                if not c.alive(n):
                    c.start(n)
                self.down.discard(n)
            return nothing
        if action == "pause":
            for n in nodes:
                c.signal(n, signal.SIGSTOP)
                self.paused.add(n)

            async def resume() -> None:
                for n in nodes:
                    c.signal(n, signal.SIGCONT)
                    self.paused.discard(n)

            return resume
        # resume
        for n in nodes:
            c.signal(n, signal.SIGCONT)
            self.paused.discard(n)
        return nothing

    async def _arm(self, nodes: list[str], params: dict[str, Any], target: tuple[str, ...],
                   info: dict[str, Any]) -> ActiveFault | None:
        """``crash-at``: arm the crash point in each target member; the fault, whose undo
        starts again those that died at it, or None (a ``skipped`` record) if no member
        was armed or may have been. A member that did not answer may have armed itself:
        it is followed like an armed one, and the start record lists it (``unanswered``)."""
        c = self.cluster
        point, skip = params["point"], params.get("skip", 0)
        lives: dict[str, Any] = {}
        unanswered: list[str] = []
        for n in nodes:
            proc = c.process(n)  # the process the request goes to
            answer = await c.crash_at(n, point, skip)
            if answer is False:
                continue
            lives[n] = proc
            if answer is None:
                unanswered.append(n)
        if not lives:
            why = (f"target {target} resolved to no node" if not nodes else
                   f"{', '.join(nodes)} could not be armed at {point}")
            self._record("crash-at", "skipped", nodes, {"reason": why, **info})
            return None
        if unanswered:
            info = {**info, "unanswered": unanswered}

        async def restart_fired() -> None:
            # Only a member that died at the point and that nothing started since: a death
            # by another fault is that fault's to undo.
            for n in sorted(fault.fired):
                if c.process(n) == lives[n] and not c.alive(n):
                    c.start(n)
                    self.down.discard(n)

        fault = self._activate("crash-at", list(lives), restart_fired, None, info)
        fault.lives = lives
        return fault

    async def crash_window(self, fault: ActiveFault, downtime: float | None) -> None:
        """Follow a ``crash-at`` fault: each armed member whose armed process dies at the
        point within ``downtime`` of the arming (None: before the run's end) is started
        again ``downtime`` after it died (None, or past the run's end: when everything is
        healed). One still running then is disarmed; one whose disarm gets no answer is
        asked again until it answers, dies or the run's time is up. A member whose armed
        process dies of anything else (a ``kill`` or ``stop`` of another fault, a crash
        of its own) is no longer followed, and its restart is left to whatever ended it.
        The fault's end record says which fired (``fired``, ``fired_s``: offsets), which
        never did (``never_fired``), which died otherwise (``interrupted``) and which
        never answered a disarm by the run's end (``maybe_armed``)."""
        c = self.cluster
        start = trio.current_time()
        window_end = min(start + downtime, self._t_end) if downtime is not None \
            else self._t_end
        fired: dict[str, float] = {}
        never: list[str] = []
        interrupted: list[str] = []
        maybe_armed: list[str] = []

        async def follow(n: str) -> None:
            proc = fault.lives[n]
            while c.exit_code(proc) is None and trio.current_time() < window_end:
                await trio.sleep(CRASH_POLL)
            while c.exit_code(proc) is None:
                answer = await c.crash_at(n, None)
                if c.exit_code(proc) is not None:
                    break  # it died as it was being disarmed
                if answer:
                    never.append(n)
                    return
                if trio.current_time() >= self._t_end:
                    maybe_armed.append(n)  # no answer by the end: the final heal's
                    return
                retry = trio.current_time() + DISARM_RETRY
                while c.exit_code(proc) is None and trio.current_time() < retry:
                    await trio.sleep(CRASH_POLL)
            if not c.exited_as_expected(proc):
                interrupted.append(n)
                return
            fired[n] = round(self.history.now() / 1e9, 3)
            fault.fired.add(n)
            self.down.add(n)
            self.paused.discard(n)
            if downtime is None:
                return
            await trio.sleep_until(min(trio.current_time() + downtime, self._t_end))
            if c.process(n) == proc and not c.alive(n):  # nothing started it since
                c.start(n)
                self.down.discard(n)

        async with trio.open_nursery() as nursery:
            for n in fault.nodes:
                nursery.start_soon(follow, n)
        fault.end_info = {"fired": sorted(fired), "fired_s": fired, "never_fired": sorted(never)}
        if interrupted:
            fault.end_info["interrupted"] = sorted(interrupted)
        if maybe_armed:
            fault.end_info["maybe_armed"] = sorted(maybe_armed)
        if downtime is not None or not fired:
            await self.undo(fault)

    def _restarter(self, nodes: list[str]) -> Callable[[], Awaitable[None]]:
        async def restart() -> None:
            for n in nodes:
                if not self.cluster.alive(n):
                    self.cluster.start(n)
                self.down.discard(n)

        return restart

    async def _network(self, action: str, nodes: list[str], params: dict[str, Any]
                       ) -> NetworkFault | None:
        everyone = self.nodes
        net = self.net
        if action == "isolate":
            if not nodes:
                return None
            return await net.partition(topology.components(
                [nodes, [n for n in everyone if n not in nodes]]))
        if action == "partition-halves":
            return await net.partition(topology.halves(everyone))
        if action == "partition-random-halves":
            return await net.partition(topology.random_halves(everyone, self.rng))
        if action == "majority-ring":
            return await net.partition(topology.majority_ring(everyone, self.rng))
        if action == "bridge":
            return await net.partition(topology.bridge(everyone, self.rng))
        if action == "cut-links":
            cuts = frozenset((str(a), str(b)) for a, b in params["links"]
                             if a in everyone and b in everyone)
            return await net.partition(cuts) if cuts else None
        if action == "cut":
            dst = self.resolve(params.get("to", ()), "random")
            cuts = topology.one_way(nodes, [d for d in dst if d not in nodes])
            return await net.partition(cuts) if cuts else None
        if action == "leader-send-only":
            if not nodes:
                return None
            return await net.partition(frozenset().union(
                *(topology.leader_cannot_receive(n, everyone) for n in nodes)))
        if action == "leader-receive-only":
            if not nodes:
                return None
            return await net.partition(frozenset().union(
                *(topology.leader_cannot_send(n, everyone) for n in nodes)))
        if action == "datacenters":
            grid = topology.Grid.from_sites(params["sites"], self.rng,
                                            low_ms=params.get("ms", 30),
                                            high_ms=params.get("ms", 30) + params.get(
                                                "jitter", 50))
            return await net.apply_grid(grid)
        if action == "isolate-site":
            sites = self._sites
            if not sites or params["site"] >= len(sites):
                return None
            site = sites[params["site"]]
            nodes[:] = site
            return await net.partition(topology.components(
                [site, [n for n in everyone if n not in site]]))
        if action == "latency" and "links" in params:  # exactly these directed links
            slow = frozenset((str(a), str(b)) for a, b in params["links"]
                             if a in everyone and b in everyone)
            return await net.latency(slow, params.get("ms", 100), params.get("jitter", 0)
                                     ) if slow else None
        touching = topology.components([nodes, [n for n in everyone if n not in nodes]]) \
            if nodes else frozenset()
        if not touching and action != "cut-client":
            return None
        if action == "latency":
            return await net.latency(touching, params.get("ms", 100), params.get("jitter", 0))
        if action == "bandwidth":
            return await net.bandwidth(touching, params.get("rate", 10))
        if action == "slice":
            return await net.slice(touching, params.get("average_size", 64),
                                   params.get("size_variation", 32), params.get("delay_us", 100))
        if action == "reset-peer":
            return await net.reset_peer(touching, params.get("timeout", 0))
        if action == "cut-client":
            if not nodes:
                return None
            faults = [await net.cut_client(n) for n in nodes]
            return faults[0] if len(faults) == 1 else await self._merge(faults)
        raise ValueError(f"unknown network action {action!r}")

    async def _merge(self, faults: list[NetworkFault]) -> NetworkFault:
        # Several client cuts act as one fault: heal them together.
        first, rest = faults[0], faults[1:]
        self._extra_heals[first.id] = rest
        return first

    # ------------------------------------------------------------------ bookkeeping

    def _activate(self, action: str, nodes: list[str], undo: Callable[[], Awaitable[None]],
                  network: NetworkFault | None, info: dict[str, Any]) -> ActiveFault:
        self._ids += 1
        fault = ActiveFault(self._ids, action, tuple(nodes), undo, network, info)
        self._active[fault.id] = fault
        extra = dict(info)
        if network is not None:
            extra["links"] = [list(link) for link in network.links]
            if network.clients:
                extra["clients"] = list(network.clients)
        self._record(action, "start", nodes, extra, fault.id)
        return fault

    async def undo(self, fault: ActiveFault) -> None:
        if self._active.pop(fault.id, None) is None:
            return
        await fault.undo()
        if fault.network is not None:
            for extra in self._extra_heals.pop(fault.network.id, []):
                await self.net.heal(extra)
        self._record(fault.action, "end", list(fault.nodes), fault.end_info, fault.id)

    async def heal_everything(self, network_only: bool = False) -> None:
        """Undo every active fault (network faults only, for a ``heal`` step)."""
        for fault in list(self._active.values()):
            if network_only and fault.network is None:
                continue
            await self.undo(fault)
        if not network_only:
            await self.net.heal_all()
            for n in list(self.paused):
                self.cluster.signal(n, signal.SIGCONT)
            self.paused.clear()
            for n in self.nodes:
                if not self.cluster.alive(n):
                    self.cluster.start(n)
            self.down.clear()

    def _record(self, action: str, phase: str, nodes: list[str], extra: dict[str, Any],
                fault_id: int | None = None) -> None:
        f = action if phase == "start" else f"{phase}-{action}"
        value = {"nodes": nodes, **extra}
        ev = self.history.append("nemesis", "info", f, None, value, fault=fault_id)
        rec = {"time": ev["time"], "offset_s": round(ev["time"] / 1e9, 3), "phase": phase,
               "action": action, "fault": fault_id, **value}
        self.applied.append(rec)
        self._log.write(json.dumps(rec, separators=(",", ":"), default=str) + "\n")
        self._log.flush()

    def active(self) -> list[ActiveFault]:
        return list(self._active.values())

    def close(self) -> None:
        self._log.close()
