"""Network faults over a cluster wired through Toxiproxy: one proxy per directed link.

Wiring (:meth:`Network.create`): for every ordered pair of members a proxy ``"i->j"``
listens on a free 127.0.0.1 port with upstream = j's real peer address, and member i is
told to dial it to reach j (``Network.dial`` is a ``RaftkvCluster.dial``); for every
member a proxy ``"client->i"`` fronts its client port (``Network.client_addr``).

Theory of operation (``docs/architecture.md``, "Directed links"; ``docs/toxiproxy.md``): a
proxy cannot tell which way bytes go between two *members*, only between its client
(the dialler) and its upstream. So an effect on "what a sends to b" is installed on two
streams: proxy ``a->b`` **upstream** (what a writes on the connection it dialled) and proxy
``b->a`` **downstream** (what a answers on the connection b dialled). That holds for
systems where only the sender dials (raftkv) and those where the receiver dials too
(etcd). A symmetric cut between a and b is the two directed cuts (four toxics).

Primitives and their toxics (``toxicity`` 1 always):

* :meth:`Network.cut` / :meth:`Network.partition`: ``timeout`` with ``timeout: 0`` — a
  black hole that keeps sockets open (writes still succeed: only application timeouts
  notice). Healing removes the toxic, which makes the proxy *close* the connections of
  that stream; the members reconnect and whatever was sent meanwhile is lost.
* :meth:`Network.latency` (``latency``/``jitter`` ms, per chunk),
  :meth:`Network.bandwidth` (``rate`` KB/s, 1 KB = 1000 B, per connection),
  :meth:`Network.slice` (``slicer``), :meth:`Network.reset_peer` (``reset_peer``: RST on
  the next data, and on every new connection's first data, until healed),
  :meth:`Network.apply_grid` (a :class:`lab.topology.Grid` of per-link latencies).
* :meth:`Network.cut_client`: black-holes the client link of a member (requests and/or
  answers).
* :meth:`Network.down`: disables the proxies of some directed links (hard down: existing
  connections closed, new dials refused). Not one-way for systems where both sides dial.

Every primitive returns a :class:`NetworkFault`: a record of exactly what it installed (toxic
names are ``"<fault id>-<tag>-up|down"``, unique per fault, e.g. ``"f7-cut-up"``), so
:meth:`Network.heal` undoes precisely that fault and nothing else, even when faults
overlap (two cuts of one link are two toxics; healing one leaves the link cut).
:meth:`Network.active` lists the active faults; :meth:`NetworkFault.to_json` is what the lab
writes to ``schedule.jsonl``. :meth:`Network.heal_all` returns every proxy of the network
to clean (whatever is on it, including toxics added behind its back).

Operations are serialised by a lock (a heal never interleaves with an install); within
one operation the toxics go in concurrently, so a partition takes effect within a few
milliseconds. If any toxic of a fault fails to install, the ones that did are removed and
the error is raised; nothing is recorded.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio

from lab.procs import free_ports
from lab.topology import Grid, Link, ordered
from lab.toxiclient import ProxyInfo, ToxiproxyClient, ToxiproxyError, parse_addr

__all__ = [
    "Address",
    "Network",
    "NetworkFault",
    "Placement",
    "client_proxy_name",
    "link_proxy_name",
]

Address = tuple[str, int]
AddressLike = Address | str


def link_proxy_name(src: str, dst: str) -> str:
    """The proxy ``src`` dials to reach ``dst``."""
    return f"{src}->{dst}"


def client_proxy_name(node: str) -> str:
    """The proxy clients dial to reach ``node``'s client port."""
    return f"client->{node}"


@dataclass(frozen=True)
class Placement:
    """One toxic that a fault installed."""

    proxy: str
    name: str
    type: str
    stream: str
    attributes: Mapping[str, int]
    toxicity: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {"proxy": self.proxy, "name": self.name, "type": self.type,
                "stream": self.stream, "attributes": dict(self.attributes),
                "toxicity": self.toxicity}


@dataclass(frozen=True)
class NetworkFault:
    """An active (or healed) network fault: what it means and what it installed.

    ``links`` are the directed member links it affects, in natural order; ``clients`` the
    members whose client link it affects; ``params`` its settings (ms, rate, ...)."""

    id: str
    kind: str
    links: tuple[Link, ...]
    clients: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    toxics: tuple[Placement, ...] = ()
    disabled: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind,
                "links": [list(link) for link in self.links],
                "clients": list(self.clients), "params": dict(self.params),
                "toxics": [t.to_json() for t in self.toxics],
                "disabled": list(self.disabled)}


def _addr(value: AddressLike) -> str:
    if isinstance(value, str):
        host, port = parse_addr(value)
    else:
        host, port = value
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Network:
    """The proxies of one cluster and the faults installed on them. Build it with
    :meth:`create`."""

    def __init__(self, client: ToxiproxyClient, nodes: Iterable[str],
                 proxies: Mapping[str, ProxyInfo]) -> None:
        self.client = client
        self.nodes: tuple[str, ...] = tuple(ordered(nodes))
        self.proxies: dict[str, ProxyInfo] = dict(proxies)
        self._faults: dict[str, NetworkFault] = {}
        self._ids = itertools.count(1)
        self._lock = trio.Lock()
        missing = [name for name in self._names() if name not in self.proxies]
        if missing:
            raise ValueError(f"no proxy for {missing}")

    def _names(self) -> list[str]:
        return ([link_proxy_name(a, b) for a in self.nodes for b in self.nodes if a != b]
                + [client_proxy_name(x) for x in self.nodes])

    @classmethod
    async def create(cls, client: ToxiproxyClient,
                     nodes: Mapping[str, tuple[AddressLike, AddressLike]],
                     *, host: str = "127.0.0.1",
                     listen: Callable[[str, str], Address | None] | None = None) -> Network:
        """Create (``/populate``) every proxy for ``nodes`` (id -> (peer address, client
        address)), each listening on a free port of ``host`` -- or, for link i->j, where
        ``listen(i, j)`` says if it says anything -- and return the network.
        Its :meth:`dial` / :meth:`dial_map` say where member i reaches member j."""
        ids = ordered(nodes)
        if len(ids) != len(nodes):
            raise ValueError(f"duplicate node ids in {list(nodes)}")
        # Explicit ports from the same source as the members' (never bind(0) here: the
        # kernel could hand a proxy a member's port that is chosen but not yet bound).
        spare = iter(free_ports(len(ids) * len(ids), host))

        def where(a: str, b: str) -> str:
            fixed = listen(a, b) if listen is not None else None
            return f"{host}:{next(spare)}" if fixed is None else _addr(fixed)

        entries = [{"name": link_proxy_name(a, b), "listen": where(a, b),
                    "upstream": _addr(nodes[b][0]), "enabled": True}
                   for a in ids for b in ids if a != b]
        entries += [{"name": client_proxy_name(x), "listen": f"{host}:{next(spare)}",
                     "upstream": _addr(nodes[x][1]), "enabled": True} for x in ids]
        created = await client.populate(entries)
        return cls(client, ids, {p.name: p for p in created})

    # ----------------------------------------------------------------- addresses

    def dial(self, src: str, dst: str) -> Address:
        """Where ``src`` dials to reach ``dst`` (the listen address of proxy src->dst)."""
        try:
            return self.proxies[link_proxy_name(src, dst)].address
        except KeyError:
            raise KeyError(f"no link {src}->{dst} among {list(self.nodes)}") from None

    def client_addr(self, node: str) -> Address:
        """Where clients dial to reach ``node`` (through proxy client->node)."""
        try:
            return self.proxies[client_proxy_name(node)].address
        except KeyError:
            raise KeyError(f"no member {node!r} among {list(self.nodes)}") from None

    def dial_map(self) -> dict[Link, Address]:
        return {(a, b): self.dial(a, b) for a in self.nodes for b in self.nodes if a != b}

    def ports(self) -> list[int]:
        """Every proxy's listening port (to prove none is left behind)."""
        return sorted(p.address[1] for p in self.proxies.values())

    # ----------------------------------------------------------------- faults

    def active(self) -> list[NetworkFault]:
        """The active faults, oldest first."""
        return list(self._faults.values())

    async def cut(self, src: str, dst: str) -> NetworkFault:
        """Black-hole everything ``src`` sends to ``dst`` (only that direction)."""
        return await self.partition([(src, dst)])

    async def partition(self, cuts: Iterable[Link]) -> NetworkFault:
        """Black-hole every directed link of ``cuts`` (e.g. from :mod:`lab.topology`)."""
        return await self._directed("cut", cuts, "cut", "timeout", {"timeout": 0}, {})

    async def latency(self, links: Iterable[Link], ms: int, jitter: int = 0) -> NetworkFault:
        """Delay what each ``(src, dst)`` sends by ``ms`` ± ``jitter`` ms (per chunk)."""
        return await self._directed("latency", links, "latency", "latency",
                                    {"latency": ms, "jitter": jitter},
                                    {"ms": ms, "jitter": jitter})

    async def bandwidth(self, links: Iterable[Link], rate_kb: int) -> NetworkFault:
        """Throttle what each ``(src, dst)`` sends to ``rate_kb`` KB/s per connection
        (0 pauses it, delivering everything on heal). A slow follower ``x``:
        ``bandwidth(topology.isolate(x, nodes), rate)`` (every link in and out of it)."""
        return await self._directed("bandwidth", links, "bw", "bandwidth",
                                    {"rate": rate_kb}, {"rate_kb": rate_kb})

    async def slice(self, links: Iterable[Link], average_size: int, size_variation: int = 0,
                    delay_us: int = 0) -> NetworkFault:
        """Cut what each ``(src, dst)`` sends into small pieces, ``delay_us`` apart."""
        attrs = {"average_size": average_size, "size_variation": size_variation,
                 "delay": delay_us}
        return await self._directed("slice", links, "slice", "slicer", attrs, dict(attrs))

    async def reset_peer(self, links: Iterable[Link], timeout_ms: int = 0) -> NetworkFault:
        """Reset (RST) the connections of each ``(src, dst)`` ``timeout_ms`` after ``src``
        next sends on them; new connections keep being reset until healed."""
        return await self._directed("reset_peer", links, "reset", "reset_peer",
                                    {"timeout": timeout_ms}, {"timeout_ms": timeout_ms})

    async def apply_grid(self, grid: Grid) -> NetworkFault:
        """Install a :class:`lab.topology.Grid`: one latency toxic pair per directed link
        with a non-zero class (links inside a site are left alone)."""
        placements: list[Placement] = []
        links: list[Link] = []
        for (src, dst), lat in sorted(grid.links.items()):
            self._check_link(src, dst)
            if lat.latency_ms == 0 and lat.jitter_ms == 0:
                continue
            links.append((src, dst))
            attrs = {"latency": lat.latency_ms, "jitter": lat.jitter_ms}
            placements += self._pair(src, dst, "grid", "latency", attrs)
        params = {"sites": [list(s) for s in grid.sites],
                  "links": {f"{s}->{d}": [v.latency_ms, v.jitter_ms]
                            for (s, d), v in sorted(grid.links.items())}}
        return await self._install("grid", self._links(links), (), params, placements)

    async def cut_client(self, node: str, *, requests: bool = True,
                         answers: bool = True) -> NetworkFault:
        """Black-hole ``node``'s client link: what clients send it (``requests``) and/or
        what it answers (``answers``)."""
        proxy = self._client_proxy(node)
        streams = [s for s, on in (("upstream", requests), ("downstream", answers)) if on]
        if not streams:
            raise ValueError("cut_client: nothing to cut")
        placements = [Placement(proxy, f"client-cut-{'up' if s == 'upstream' else 'down'}",
                                "timeout", s, {"timeout": 0}) for s in streams]
        return await self._install("cut_client", (), (node,),
                                   {"requests": requests, "answers": answers}, placements)

    async def down(self, links: Iterable[Link]) -> NetworkFault:
        """Disable the proxy of each directed link: its connections close at once and new
        dials are refused until healed."""
        ls = self._links(links)
        return await self._install("down", ls, (), {}, [],
                                   disable=[link_proxy_name(s, d) for s, d in ls])

    async def heal(self, *faults: NetworkFault | str) -> None:
        """Undo exactly these faults (objects or ids); unknown or healed ones are ignored."""
        async with self._lock:
            for f in faults:
                fid = f if isinstance(f, str) else f.id
                fault = self._faults.pop(fid, None)
                if fault is not None:
                    await self._uninstall(fault)

    async def heal_all(self) -> None:
        """Every proxy of this network back to clean: every toxic on it removed (ours or
        not), every disabled one enabled; no fault stays active."""
        async with self._lock:
            self._faults.clear()
            current = await self.client.proxies()
            async with trio.open_nursery() as nursery:
                for name in self._names():
                    proxy = current.get(name)
                    if proxy is None:
                        continue
                    for toxic in proxy.toxics:
                        nursery.start_soon(self._remove, name, toxic.name)
                    if not proxy.enabled:
                        nursery.start_soon(self._enable, name)

    async def aclose(self) -> None:
        """Delete every proxy of this network (its members can no longer reach each
        other). Not needed when the server goes away with the network (built-in or
        child server); on a shared server it frees the proxies' ports."""
        async with self._lock:
            self._faults.clear()
            async with trio.open_nursery() as nursery:
                for name in self._names():
                    nursery.start_soon(self._delete, name)

    # ----------------------------------------------------------------- internals

    def _check_link(self, src: str, dst: str) -> None:
        if src == dst or src not in self.nodes or dst not in self.nodes:
            raise ValueError(f"no directed link {src!r}->{dst!r} among {list(self.nodes)}")

    def _links(self, links: Iterable[Link]) -> tuple[Link, ...]:
        ls = set(links)
        for src, dst in ls:
            self._check_link(src, dst)
        rank = {x: i for i, x in enumerate(self.nodes)}
        return tuple(sorted(ls, key=lambda link: (rank[link[0]], rank[link[1]])))

    def _client_proxy(self, node: str) -> str:
        if node not in self.nodes:
            raise ValueError(f"no member {node!r} among {list(self.nodes)}")
        return client_proxy_name(node)

    @staticmethod
    def _pair(src: str, dst: str, tag: str, type_: str,
              attrs: Mapping[str, int]) -> list[Placement]:
        """The two toxics that act on what ``src`` sends to ``dst`` (names without the
        fault id, which `_install` prefixes)."""
        return [Placement(link_proxy_name(src, dst), f"{tag}-up", type_, "upstream", attrs),
                Placement(link_proxy_name(dst, src), f"{tag}-down", type_, "downstream",
                          attrs)]

    async def _directed(self, kind: str, links: Iterable[Link], tag: str, type_: str,
                        attrs: Mapping[str, int], params: Mapping[str, Any]) -> NetworkFault:
        ls = self._links(links)
        placements = [p for s, d in ls for p in self._pair(s, d, tag, type_, dict(attrs))]
        return await self._install(kind, ls, (), params, placements)

    async def _install(self, kind: str, links: Sequence[Link], clients: Sequence[str],
                       params: Mapping[str, Any], placements: Sequence[Placement],
                       disable: Sequence[str] = ()) -> NetworkFault:
        async with self._lock:
            fid = f"f{next(self._ids)}"
            named = tuple(Placement(p.proxy, f"{fid}-{p.name}", p.type, p.stream,
                                    p.attributes, p.toxicity) for p in placements)
            fault = NetworkFault(fid, kind, tuple(links), tuple(clients), dict(params), named,
                          tuple(disable))
            errors: list[ToxiproxyError] = []

            async def add(p: Placement) -> None:
                try:
                    await self.client.add_toxic(p.proxy, p.type, p.stream, p.attributes,
                                                name=p.name, toxicity=p.toxicity)
                except ToxiproxyError as e:
                    errors.append(e)

            async def off(name: str) -> None:
                try:
                    await self.client.update_proxy(name, enabled=False)
                except ToxiproxyError as e:
                    errors.append(e)

            try:
                async with trio.open_nursery() as nursery:
                    for p in named:
                        nursery.start_soon(add, p)
                    for name in disable:
                        nursery.start_soon(off, name)
            except BaseException:
                await self._uninstall(fault)  # cancelled half-way: take back what went in
                raise
            if errors:
                await self._uninstall(fault)
                raise errors[0]
            self._faults[fid] = fault
            return fault

    async def _uninstall(self, fault: NetworkFault) -> None:
        """Remove what ``fault`` installed (missing toxics are fine); re-enable the proxies
        it disabled unless another active fault still holds them down."""
        still_down = {name for f in self._faults.values() if f.id != fault.id
                      for name in f.disabled}
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for p in fault.toxics:
                    nursery.start_soon(self._remove, p.proxy, p.name)
                for name in fault.disabled:
                    if name not in still_down:
                        nursery.start_soon(self._enable, name)

    async def _remove(self, proxy: str, name: str) -> None:
        try:
            await self.client.remove_toxic(proxy, name)
        except ToxiproxyError as e:
            if e.status != 404:
                raise

    async def _enable(self, proxy: str) -> None:
        await self.client.update_proxy(proxy, enabled=True)

    async def _delete(self, proxy: str) -> None:
        try:
            await self.client.delete_proxy(proxy)
        except ToxiproxyError as e:
            if e.status != 404:
                raise
