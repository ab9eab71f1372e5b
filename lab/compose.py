"""Composed random faults (``random: {compose: true}``): the pure draws. No I/O, no clock.

The nemesis (:mod:`lab.nemesis`) keeps up to ``max_active`` faults going at once, each
undone after its own duration. Each new one is drawn here from the fine-grained steps the
crafted scenarios use, with everything chance decided made explicit, so that
``schedule.jsonl`` records it as an ordinary action a replay applies again:

* ``kill``, ``stop``, ``pause``: one member (:func:`pick`), never one that would leave
  fewer than a majority of members running and unpaused;
* ``isolate``, ``leader-send-only``, ``leader-receive-only``: one member;
* ``cut-links``: one shape of :data:`CUT_SHAPES` (the member cannot send, or cannot
  receive; a random split cut one way or both ways; 1 to 3 random directed links), as
  the explicit list of directed links;
* ``latency``: with chance :data:`SLOW_NETWORK` on every directed link, from half a
  heartbeat to half an election timeout (a slow network: no timer misfires, but every
  round of votes, appends and commits takes a good part of a timeout, so a new leader's
  commit index lags what the old one acknowledged for that long, candidates overlap and
  the windows between a message and its answer open wide); otherwise from one heartbeat
  to :data:`LATENCY_ELECTIONS` election timeouts, on the links touching the member or on
  a random set of directed links. Jitter is up to half the delay. Above the election
  timeout, timers misfire: followers behind a slow leader elect another while it still
  believes it leads and its answers take that long to say otherwise, the window in which
  a deposed leader's reads and a new leader's first reads can go wrong.
  Every latency is explicit in ``links``.

:func:`working_majority` says whether some majority of members would still be running,
unpaused and all connected to each other both ways; the nemesis starts a draw that
leaves none only with the scenario's ``unsafe`` chance (and then for a short time).

Every draw uses the :class:`random.Random` it is given, in a fixed order, and sorts the
node ids it draws from: the same seed and the same cluster state give the same draw.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from random import Random
from typing import Any

from lab import topology
from lab.scenario import COMPOSE_ACTIONS
from lab.topology import Cuts

__all__ = ["CUT_SHAPES", "PROCESS", "SLOW_NETWORK", "Draw", "State", "draw", "keeps_majority",
           "pick",
           "working_majority"]

#: Composed actions that take a member down (killed, stopped or paused).
PROCESS = ("kill", "stop", "pause")
#: The longest composed latency, in election timeouts.
LATENCY_ELECTIONS = 3
#: The chance that a composed ``latency`` slows every link (shape ``everywhere``), by half
#: a heartbeat to half an election timeout.
SLOW_NETWORK = 0.3
#: The shapes a composed ``cut-links`` draws from.
CUT_SHAPES = ("cannot-send", "cannot-receive", "split-one-way", "split-both", "links")


@dataclass(frozen=True)
class State:
    """What the cluster looks like to the nemesis when it draws."""

    members: tuple[str, ...]
    leader: str | None = None  # as last observed; None if no leader is known
    down: frozenset[str] = frozenset()  # killed or stopped
    paused: frozenset[str] = frozenset()
    cuts: Cuts = frozenset()  # the directed links active faults cut

    @property
    def running(self) -> list[str]:
        """Members neither down nor paused, in natural order."""
        return [m for m in topology.ordered(self.members)
                if m not in self.down and m not in self.paused]


@dataclass(frozen=True)
class Draw:
    """One composed fault, as the nemesis applies and records it."""

    action: str
    target: str  # the target drawn: leader, follower, random or a node id
    member: str | None  # the member it picked (None for shapes of no member)
    nodes: tuple[str, ...]  # the target the nemesis applies (explicit node ids, or none)
    params: dict[str, Any] = field(default_factory=dict)  # explicit: links, ms, jitter
    cuts: Cuts = frozenset()  # the directed links it cuts
    shape: str = ""  # what was drawn (a :data:`CUT_SHAPES`, ``touching``, ``links``, ...)
    fallback: bool = False  # ``leader`` asked while none was known: a random member

    @property
    def takes_down(self) -> frozenset[str]:
        return frozenset(self.nodes) if self.action in PROCESS else frozenset()

    def note(self) -> dict[str, Any]:
        """What the schedule records of the draw besides the action itself."""
        out: dict[str, Any] = {"target": self.target, "shape": self.shape}
        if self.member is not None:
            out["member"] = self.member
        if self.fallback:
            out["fallback"] = "no leader known: a random member"
        return out


# --------------------------------------------------------------------------- majority


def working_majority(members: Iterable[str], out: Iterable[str], cuts: Iterable[topology.Link]
                     ) -> tuple[str, ...] | None:
    """A majority of ``members``, none of them ``out`` (down or paused), every two of
    which see each other (neither direction cut); None if there is none. The first such
    set in natural order."""
    ms = topology.ordered(members)
    gone = frozenset(out)
    cs = frozenset(cuts)
    up = [m for m in ms if m not in gone]
    k = topology.majority(len(ms))
    if len(up) < k:
        return None
    sees = {a: {b for b in up if b != a and (a, b) not in cs and (b, a) not in cs} for a in up}
    # Grow cliques in natural order (small clusters: this is exhaustive and quick).
    for group in itertools.combinations(up, k):
        if all(b in sees[a] for a, b in itertools.combinations(group, 2)):
            return group
    return None


def keeps_majority(state: State, d: Draw) -> bool:
    """Whether, with ``d`` added to the active faults, a working majority remains."""
    return working_majority(state.members, state.down | state.paused | d.takes_down,
                            state.cuts | d.cuts) is not None


# --------------------------------------------------------------------------- draws


def pick(target: str, state: State, rng: Random, running_only: bool = False
         ) -> tuple[str | None, bool]:
    """The member ``target`` names now, and whether ``leader`` fell back to a random
    member (no leader known). ``running_only``: only members neither down nor paused
    (process faults). None if no member fits."""
    members = topology.ordered(state.members)
    running = state.running
    pool = running if running_only else [m for m in members if m not in state.down] or members
    if not pool:
        return None, False
    if target == "leader":
        if state.leader is not None and state.leader in pool:
            return state.leader, False
        return rng.choice(pool), True
    if target == "follower":
        return rng.choice([m for m in pool if m != state.leader] or pool), False
    if target == "random":
        return rng.choice(pool), False
    return (target if target in pool else None), False


def draw(action: str, target: str, state: State, rng: Random, election: float,
         heartbeat: float) -> Draw | None:
    """One fault of ``action`` on ``target`` (:data:`lab.scenario.COMPOSE_TARGETS` or a
    node id), for a run whose election timeout and heartbeat are ``election`` and
    ``heartbeat`` seconds. None if it cannot be made now: a process fault that would
    leave fewer than a majority of members running and unpaused, or a target that names
    no member that fits."""
    if action not in COMPOSE_ACTIONS:
        raise ValueError(f"{action!r} is not a composed action")
    members = topology.ordered(state.members)
    if action in PROCESS:
        if len(state.running) - 1 < topology.majority(len(members)):
            return None
        member, fallback = pick(target, state, rng, running_only=True)
        if member is None:
            return None
        return Draw(action, target, member, (member,), shape="member", fallback=fallback)
    member, fallback = pick(target, state, rng)
    if member is None:
        return None
    others = [m for m in members if m != member]
    if action == "isolate":
        return Draw(action, target, member, (member,), cuts=topology.isolate(member, members),
                    shape="member", fallback=fallback)
    if action == "leader-send-only":
        return Draw(action, target, member, (member,),
                    cuts=topology.leader_cannot_receive(member, members), shape="member",
                    fallback=fallback)
    if action == "leader-receive-only":
        return Draw(action, target, member, (member,),
                    cuts=topology.leader_cannot_send(member, members), shape="member",
                    fallback=fallback)
    if action == "latency":
        hb_ms, el_ms = max(1, round(heartbeat * 1000)), max(1, round(election * 1000))
        everything = sorted(topology.all_links(members),
                            key=lambda link: (members.index(link[0]), members.index(link[1])))
        roll = rng.random()
        if roll < SLOW_NETWORK:
            # The whole network slow, below the election timeout: nobody times out for
            # it, but every exchange takes a good part of a timeout.
            ms = rng.randint(max(1, hb_ms // 2), max(1, hb_ms // 2, el_ms // 2))
            jitter = rng.randint(0, ms // 2)
            links, shape, member = frozenset(everything), "everywhere", None
        else:
            ms = rng.randint(min(hb_ms, el_ms), LATENCY_ELECTIONS * el_ms)
            jitter = rng.randint(0, ms // 2)
            if roll < (1 + SLOW_NETWORK) / 2:
                links, shape = topology.components([[member], others]), "touching"
            else:
                k = rng.randint(1, max(1, len(everything) // 2))
                links, shape, member = frozenset(rng.sample(everything, k)), "links", None
        return Draw(action, target, member, (), {"links": _listed(links, members), "ms": ms,
                                                "jitter": jitter},
                    shape=shape, fallback=fallback and member is not None)
    # cut-links
    shape = rng.choice(CUT_SHAPES)
    if shape == "cannot-send":
        cuts = topology.one_way([member], others)
    elif shape == "cannot-receive":
        cuts = topology.one_way(others, [member])
    elif shape in ("split-one-way", "split-both"):
        shuffled = list(members)
        rng.shuffle(shuffled)
        k = rng.randint(1, len(shuffled) - 1)
        a, b = shuffled[:k], shuffled[k:]
        cuts = topology.one_way(a, b) if shape == "split-one-way" else \
            topology.components([a, b])
        member = None
    else:
        everything = sorted(topology.all_links(members),
                            key=lambda link: (members.index(link[0]), members.index(link[1])))
        cuts = frozenset(rng.sample(everything, min(len(everything), rng.randint(1, 3))))
        member = None
    return Draw(action, target, member, (), {"links": _listed(cuts, members)}, cuts=cuts,
                shape=shape, fallback=fallback and member is not None)


def _listed(links: Iterable[topology.Link], members: list[str]) -> list[list[str]]:
    """Links as ``[[from, to], ...]`` in natural node order (how the schedule lists them)."""
    rank = {m: i for i, m in enumerate(members)}
    return [list(link) for link in sorted(set(links), key=lambda x: (rank[x[0]], rank[x[1]]))]
