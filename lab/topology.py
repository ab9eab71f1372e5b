"""Partition shapes as sets of directed links to cut. Pure: no I/O, no clock.

A *cut* ``(src, dst)`` means "everything ``src`` sends to ``dst`` is lost"; the network
layer (`lab.network`) turns each into toxics. Every partition shape is a set of cuts, so
shapes compose with set operations (``|``, ``-``) and one-way faults are first-class.

Node order: every function sorts the node ids it is given "naturally" (``n2`` before
``n10``) before using them, so results never depend on the order (or hash seed) of the
input collection. Shapes that involve chance take a :class:`random.Random`; the same seed
gives the same shape.

Vocabulary used by the docstrings and the analysis helpers: node ``x`` *hears* ``y`` when
``(y, x)`` is not cut (every node hears itself); ``x`` and ``y`` *see each other* when
neither direction is cut.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from random import Random

__all__ = [
    "Cuts",
    "Grid",
    "Link",
    "LinkLatency",
    "all_links",
    "bisect",
    "bridge",
    "complement",
    "components",
    "halves",
    "hears",
    "is_symmetric",
    "isolate",
    "leader_cannot_receive",
    "leader_cannot_send",
    "majority",
    "majority_ring",
    "one_way",
    "ordered",
    "random_halves",
    "random_isolate",
    "reverse",
    "symmetric",
    "untouched",
]

Link = tuple[str, str]
"""A directed node link ``(src, dst)``."""

Cuts = frozenset[Link]
"""A set of directed links to cut."""

_DIGITS = re.compile(r"(\d+)")


def _natural_key(node: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((1, int(p)) if p.isdigit() else (0, p) for p in _DIGITS.split(node) if p)


def ordered(nodes: Iterable[str]) -> list[str]:
    """The distinct ``nodes`` in natural order (``n1, n2, ..., n10``)."""
    return sorted(set(nodes), key=_natural_key)


def majority(n: int) -> int:
    """The smallest majority of ``n`` nodes."""
    return n // 2 + 1


def all_links(nodes: Iterable[str]) -> Cuts:
    """Every directed link between two distinct nodes: ``n * (n - 1)`` links."""
    ns = ordered(nodes)
    return frozenset((a, b) for a in ns for b in ns if a != b)


def one_way(src_group: Iterable[str], dst_group: Iterable[str]) -> Cuts:
    """Everything any node of ``src_group`` sends to any node of ``dst_group`` (never a
    node to itself). Not symmetric: the other direction still flows."""
    dsts = ordered(dst_group)
    return frozenset((s, d) for s in ordered(src_group) for d in dsts if s != d)


def reverse(cuts: Iterable[Link]) -> Cuts:
    """Every cut turned around."""
    return frozenset((d, s) for s, d in cuts)


def symmetric(cuts: Iterable[Link]) -> Cuts:
    """``cuts`` closed under reversal: each cut link is cut both ways."""
    cs = frozenset(cuts)
    return cs | reverse(cs)


def is_symmetric(cuts: Iterable[Link]) -> bool:
    cs = frozenset(cuts)
    return cs == reverse(cs)


def complement(cuts: Iterable[Link], nodes: Iterable[str]) -> Cuts:
    """The links among ``nodes`` that ``cuts`` leaves up (cutting them instead keeps only
    what ``cuts`` removed)."""
    return all_links(nodes) - frozenset(cuts)


def components(groups: Iterable[Iterable[str]]) -> Cuts:
    """Cut every link between nodes of different groups, both ways: each group becomes
    an island that only talks to itself. Groups must not overlap."""
    gs = [ordered(g) for g in groups]
    seen: set[str] = set()
    for g in gs:
        overlap = seen.intersection(g)
        if overlap:
            raise ValueError(f"node(s) {ordered(overlap)} in more than one group")
        seen.update(g)
    return frozenset(
        (a, b) for i, ga in enumerate(gs) for j, gb in enumerate(gs) if i != j
        for a in ga for b in gb
    )


def isolate(node: str, nodes: Iterable[str]) -> Cuts:
    """``node`` neither sends to nor hears anybody: ``2 * (n - 1)`` cuts."""
    ns = ordered(nodes)
    if node not in ns:
        raise ValueError(f"{node!r} is not one of {ns}")
    return components([[node], [x for x in ns if x != node]])


def random_isolate(nodes: Iterable[str], rng: Random) -> Cuts:
    """:func:`isolate` of a node chosen by ``rng``."""
    ns = ordered(nodes)
    return isolate(rng.choice(ns), ns)


def bisect(nodes: Iterable[str]) -> tuple[list[str], list[str]]:
    """(minority, majority): the first ``n // 2`` nodes in natural order, and the rest (as
    Jepsen's ``bisect``; for even ``n`` the two halves are equal)."""
    ns = ordered(nodes)
    k = len(ns) // 2
    return ns[:k], ns[k:]


def halves(nodes: Iterable[str]) -> Cuts:
    """A symmetric split into a minority and a majority (:func:`bisect`); 5 nodes give a
    2|3 split, i.e. ``2 * 2 * 3 = 12`` cuts."""
    return components(bisect(nodes))


def random_halves(nodes: Iterable[str], rng: Random) -> Cuts:
    """:func:`halves` after shuffling the nodes with ``rng``."""
    ns = ordered(nodes)
    rng.shuffle(ns)
    k = len(ns) // 2
    return components([ns[:k], ns[k:]])


def majority_ring(nodes: Iterable[str], rng: Random | None = None) -> Cuts:
    """Every node hears a majority (itself included), but no two hear the same one
    (Jepsen's ``majorities-ring``): place the nodes on a ring (natural order, or shuffled
    by ``rng``); for each window of ``m = majority(n)`` consecutive nodes, the window's
    middle node (index ``m // 2``) hears only the nodes of its window.

    The cuts are symmetric when ``m`` is odd (n = 4, 5, 8, 9, ...: each node sees its
    ``m // 2`` neighbours on either side) and one-way otherwise (n = 3, 6, 7, ...), exactly
    as Jepsen's grudge. Needs at least 3 nodes.
    """
    ring = ordered(nodes)
    n = len(ring)
    if n < 3:
        raise ValueError(f"a majority ring needs at least 3 nodes, got {n}")
    if rng is not None:
        rng.shuffle(ring)
    m = majority(n)
    cuts: set[Link] = set()
    for start in range(n):
        window = [ring[(start + k) % n] for k in range(m)]
        centre = window[m // 2]
        cuts.update((other, centre) for other in ring if other not in window)
    return frozenset(cuts)


def bridge(nodes: Iterable[str], rng: Random | None = None) -> Cuts:
    """Two sides that cannot reach each other, joined by one node that sees both (Jepsen's
    ``bridge``): after :func:`bisect` (of the nodes in natural order, or shuffled by
    ``rng``) the first node of the majority half is the bridge; the rest of each half is a
    side. 5 nodes: ``n1 n2 | n3 | n4 n5``, ``2 * 2 * 2 = 8`` cuts. Needs at least 3 nodes.
    """
    ns = ordered(nodes)
    if len(ns) < 3:
        raise ValueError(f"a bridge needs at least 3 nodes, got {len(ns)}")
    if rng is not None:
        rng.shuffle(ns)
    k = len(ns) // 2
    return components([ns[:k], ns[k + 1:]])


def leader_cannot_receive(leader: str, nodes: Iterable[str]) -> Cuts:
    """"The leader can send but not receive": cut every ``(other, leader)``."""
    return one_way([x for x in ordered(nodes) if x != leader], [leader])


def leader_cannot_send(leader: str, nodes: Iterable[str]) -> Cuts:
    """"The leader can receive but not send": cut every ``(leader, other)``."""
    return one_way([leader], [x for x in ordered(nodes) if x != leader])


# --------------------------------------------------------------------------- analysis


def hears(cuts: Iterable[Link], nodes: Iterable[str]) -> dict[str, frozenset[str]]:
    """For each node, the nodes whose messages reach it directly (itself included)."""
    cs = frozenset(cuts)
    ns = ordered(nodes)
    return {x: frozenset(y for y in ns if y == x or (y, x) not in cs) for x in ns}


def untouched(cuts: Iterable[Link], nodes: Iterable[str]) -> list[str]:
    """The nodes that no cut involves (e.g. the bridge node of :func:`bridge`)."""
    involved = {x for link in cuts for x in link}
    return [x for x in ordered(nodes) if x not in involved]


# --------------------------------------------------------------------------- latency grid


@dataclass(frozen=True)
class LinkLatency:
    """One-way delay of a directed link, as a Toxiproxy ``latency`` toxic takes it."""

    latency_ms: int
    jitter_ms: int


@dataclass(frozen=True)
class Grid:
    """Nodes spread over sites ("data centres") with a latency class per directed link.

    Inside a site a link gets ``LinkLatency(0, 0)`` (loopback: well under 1 ms, so no
    toxic is needed); between two sites it gets a one-way delay drawn once per *pair of
    sites* from ``[low_ms, high_ms]`` (both directions of a site pair share it, like a
    real WAN path) and a jitter of ``jitter_frac`` of it.
    """

    sites: tuple[tuple[str, ...], ...]
    links: Mapping[Link, LinkLatency]

    @classmethod
    def build(
        cls,
        nodes: Iterable[str],
        rng: Random,
        sizes: Sequence[int] = (2, 2, 1),
        *,
        low_ms: int = 30,
        high_ms: int = 80,
        jitter_frac: float = 0.1,
        shuffle: bool = False,
    ) -> Grid:
        """Split ``nodes`` (natural order, or shuffled by ``rng`` if ``shuffle``) into sites
        of ``sizes`` (which must add up to the number of nodes; default 2+2+1) and draw the
        inter-site delays from ``rng``."""
        ns = ordered(nodes)
        if sum(sizes) != len(ns) or any(s <= 0 for s in sizes):
            raise ValueError(f"site sizes {list(sizes)} do not split {len(ns)} nodes")
        if not 0 <= low_ms <= high_ms:
            raise ValueError(f"bad latency range [{low_ms}, {high_ms}] ms")
        if shuffle:
            rng.shuffle(ns)
        sites: list[tuple[str, ...]] = []
        at = 0
        for size in sizes:
            sites.append(tuple(ns[at:at + size]))
            at += size
        return cls.from_sites(sites, rng, low_ms=low_ms, high_ms=high_ms,
                              jitter_frac=jitter_frac)

    @classmethod
    def from_sites(
        cls,
        sites: Sequence[Sequence[str]],
        rng: Random,
        *,
        low_ms: int = 30,
        high_ms: int = 80,
        jitter_frac: float = 0.1,
    ) -> Grid:
        """A grid over explicit ``sites`` (lists of node ids, disjoint)."""
        components(sites)  # validates that sites do not overlap
        frozen = tuple(tuple(s) for s in sites)
        pair_delay: dict[tuple[int, int], LinkLatency] = {}
        for i in range(len(frozen)):
            for j in range(i + 1, len(frozen)):
                ms = rng.randint(low_ms, high_ms)
                pair_delay[(i, j)] = LinkLatency(ms, round(ms * jitter_frac))
        site_of = {x: i for i, s in enumerate(frozen) for x in s}
        links: dict[Link, LinkLatency] = {}
        for a, b in all_links(site_of):
            i, j = site_of[a], site_of[b]
            links[(a, b)] = (LinkLatency(0, 0) if i == j
                             else pair_delay[(min(i, j), max(i, j))])
        return cls(frozen, links)

    def site_of(self, node: str) -> int:
        for i, s in enumerate(self.sites):
            if node in s:
                return i
        raise KeyError(node)

    def classes(self) -> dict[LinkLatency, Cuts]:
        """The links grouped by latency class (the zero class included)."""
        out: dict[LinkLatency, set[Link]] = {}
        for link, lat in self.links.items():
            out.setdefault(lat, set()).add(link)
        return {lat: frozenset(ls) for lat, ls in sorted(
            out.items(), key=lambda kv: (kv[0].latency_ms, kv[0].jitter_ms))}
