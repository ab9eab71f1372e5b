"""Proxies, toxics and the collection: the state the HTTP API reads and changes.

Every method here is called with the API lock held (`_api.py`), so the state changes one
request at a time. Anything that touches live connections is synchronous (see
`_link.py`), so a request never waits for the data path; only binding a listener and
resolving names await.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
from dataclasses import dataclass, field
from random import Random

import trio

from ._addr import (
    AddressError,
    format_sockname,
    parse_port,
    resolve_listen,
    resolved_string,
    split_host_port,
)
from ._errors import ApiError, proxy_already_exists, proxy_not_found
from ._link import Connection, FastPath, SocketHandle
from ._toxics import Toxic

__all__ = ["DIRECTIONS", "Metrics", "Proxy", "ProxyCollection", "Runtime", "Toxic"]

log = logging.getLogger("lab.toxiproxy")

DIRECTIONS = ("upstream", "downstream")
"""Stream names; toxics are listed upstream first."""

_BACKLOG = 1024


@dataclass
class Metrics:
    """Prometheus counters, as upstream's ``-proxy-metrics``/``-runtime-metrics``.

    Byte counters are added when a connection ends (upstream adds them when each link's
    copy loop ends), not while data flows.
    """

    proxy_metrics: bool = False
    runtime_metrics: bool = False
    received: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    sent: dict[tuple[str, str, str, str], int] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.proxy_metrics or self.runtime_metrics

    def count(self, labels: tuple[str, str, str, str], received: int, sent: int) -> None:
        if not self.proxy_metrics:
            return
        self.received[labels] = self.received.get(labels, 0) + received
        self.sent[labels] = self.sent.get(labels, 0) + sent

    def render(self) -> str:
        lines: list[str] = []
        if self.proxy_metrics:
            for metric, values, what in (
                ("toxiproxy_proxy_received_bytes_total", self.received, "received"),
                ("toxiproxy_proxy_sent_bytes_total", self.sent, "sent"),
            ):
                lines.append(f"# HELP {metric} The total bytes {what}")
                lines.append(f"# TYPE {metric} counter")
                for (direction, proxy, listener, upstream), value in sorted(values.items()):
                    labels = (
                        f'direction="{_label(direction)}",listener="{_label(listener)}",'
                        f'proxy="{_label(proxy)}",upstream="{_label(upstream)}"'
                    )
                    lines.append(f"{metric}{{{labels}}} {value}")
        if self.runtime_metrics:
            usage = resource.getrusage(resource.RUSAGE_SELF)
            lines += [
                "# HELP process_cpu_seconds_total Total user and system CPU time spent.",
                "# TYPE process_cpu_seconds_total counter",
                f"process_cpu_seconds_total {usage.ru_utime + usage.ru_stime}",
                "# HELP process_resident_memory_bytes Resident memory size in bytes.",
                "# TYPE process_resident_memory_bytes gauge",
                f"process_resident_memory_bytes {_rss_bytes()}",
                "# HELP process_open_fds Number of open file descriptors.",
                "# TYPE process_open_fds gauge",
                f"process_open_fds {_open_fds()}",
            ]
        return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


@dataclass
class Runtime:
    """What proxies need from the server: where to run tasks, randomness, metrics."""

    nursery: trio.Nursery
    rng: Random
    metrics: Metrics
    fast: FastPath | None = None  # where idle fast-mode links wait (else each has a task)


class ProxyAlreadyStarted(Exception):
    """`Proxy.start` on an enabled proxy (reset treats it as success)."""


class Proxy:
    """One listener with a fixed upstream, its toxics, and its live connections."""

    def __init__(self, runtime: Runtime, name: str, listen: str, upstream: str) -> None:
        self._rt = runtime
        self.name = name
        self.listen = listen
        self.upstream = upstream
        self.enabled = False
        self.chains: dict[str, list[Toxic]] = {d: [] for d in DIRECTIONS}
        self.connections: set[Connection] = set()
        self._listener: SocketHandle | None = None
        self._accept_scope: trio.CancelScope | None = None

    # -- views ------------------------------------------------------------------------------

    def toxics(self) -> list[Toxic]:
        return [t for d in DIRECTIONS for t in self.chains[d]]

    def find_toxic(self, name: str) -> Toxic | None:
        for toxic in self.toxics():
            if toxic.name == name:
                return toxic
        return None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.enabled,
            "toxics": [t.to_json() for t in self.toxics()],
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and listen; ``listen`` becomes the bound address. 500 on failure."""
        if self.enabled:
            raise ProxyAlreadyStarted
        try:
            target = await resolve_listen(self.listen)
        except AddressError as exc:
            raise ApiError(f"listen tcp: {exc}", 500) from None
        try:
            sock = socket.socket(target.family, socket.SOCK_STREAM)
        except OSError as exc:
            raise ApiError(f"listen tcp {target.display}: socket: {exc.strerror}", 500) from None
        step = "bind"
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if target.dual_stack:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(target.sockaddr)
            step = "listen"
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ApiError(f"listen tcp {target.display}: {step}: {reason}", 500) from None
        self.listen = format_sockname(sock.getsockname())
        self.enabled = True
        self._listener = SocketHandle(sock)
        self._accept_scope = trio.CancelScope()
        self._rt.nursery.start_soon(self._accept_loop, self._listener, self._accept_scope)
        log.info("started proxy %s on %s -> %s", self.name, self.listen, self.upstream)

    def stop(self) -> None:
        """Close the listener and every connection (both sockets) now."""
        if not self.enabled:
            return
        self.enabled = False
        if self._accept_scope is not None:
            self._accept_scope.cancel()
        if self._listener is not None:
            self._listener.close()
        self._listener = None
        self._accept_scope = None
        for conn in list(self.connections):
            conn.close()
        log.info("stopped proxy %s", self.name)

    async def differs(self, listen: str, upstream: str) -> bool:
        """Whether ``listen``/``upstream`` would change this proxy (Go's ``Differs``)."""
        if upstream != self.upstream:
            return True
        try:
            return await resolved_string(listen) != self.listen
        except AddressError as exc:
            raise ApiError(str(exc), 500) from None

    async def update(self, listen: str, upstream: str, enabled: bool) -> None:
        """Apply an update: restart on a real address change, then follow ``enabled``."""
        if await self.differs(listen, upstream):
            self.stop()
            self.listen = listen
            self.upstream = upstream
        if enabled != self.enabled:
            if enabled:
                await self.start()
            else:
                self.stop()

    async def _accept_loop(self, listener: SocketHandle, scope: trio.CancelScope) -> None:
        try:
            await self._accept_forever(listener, scope)
        except Exception:  # never let one proxy take the server down
            log.exception("proxy %s: accept loop failed", self.name)
            if listener is self._listener:
                self.stop()

    async def _accept_forever(self, listener: SocketHandle, scope: trio.CancelScope) -> None:
        with scope:
            while not listener.closed:
                try:
                    client, _ = listener.sock.accept()
                except BlockingIOError:
                    try:
                        await trio.lowlevel.wait_readable(listener.sock)
                    except (trio.ClosedResourceError, OSError, ValueError):
                        return
                    continue
                except OSError as exc:
                    if listener.closed:
                        return
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        log.warning("accept on %s failed: %s", self.listen, exc)
                        await trio.sleep(0.05)
                    continue
                self._spawn_connection(client)
                await trio.lowlevel.checkpoint()

    def _spawn_connection(self, client: socket.socket) -> None:
        host, port = "", None
        try:
            host, port_text = split_host_port(self.upstream)
            port = parse_port(port_text)
        except AddressError:
            log.warning("proxy %s: bad upstream %r", self.name, self.upstream)
        labels = (self.name, self.listen, self.upstream)
        conn = Connection(
            client,
            host or "localhost",
            port,
            self.chains,
            self._rt.rng,
            lambda c: self._forget(c, labels),
            self._rt.fast,
        )
        self.connections.add(conn)
        self._rt.nursery.start_soon(conn.run)

    def _forget(self, conn: Connection, labels: tuple[str, str, str]) -> None:
        self.connections.discard(conn)
        for direction, link in conn.links.items():
            self._rt.metrics.count((direction, *labels), link.bytes_in, link.bytes_out)

    # -- toxics -------------------------------------------------------------------------------

    def add_toxic(self, toxic: Toxic) -> None:
        """Append to the end of its stream's chain and to every live link of that stream."""
        self.chains[toxic.direction].append(toxic)
        for conn in list(self.connections):
            link = conn.link(toxic.direction)
            if link is not None:
                link.add_toxic(toxic)

    def update_toxic(self, toxic: Toxic, attrs: dict[str, int], toxicity: float) -> None:
        toxic.attrs = attrs
        toxic.toxicity = toxicity
        for conn in list(self.connections):
            link = conn.link(toxic.direction)
            if link is not None:
                link.update_toxic(toxic)

    def remove_toxic(self, toxic: Toxic) -> None:
        self.chains[toxic.direction].remove(toxic)
        for conn in list(self.connections):
            link = conn.link(toxic.direction)
            if link is not None:
                link.remove_toxic(toxic)

    def reset_toxics(self) -> None:
        for direction in DIRECTIONS:
            while self.chains[direction]:
                self.remove_toxic(self.chains[direction][0])


@dataclass
class PopulateEntry:
    name: str
    listen: str
    upstream: str
    enabled: bool


class PopulateFailed(Exception):
    """Populate stopped at an element; ``done`` are the proxies handled before it."""

    def __init__(self, error: ApiError, done: list[Proxy]) -> None:
        super().__init__(error.message)
        self.error = error
        self.done = done


class ProxyCollection:
    """All proxies by name, in creation order."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.proxies: dict[str, Proxy] = {}

    def get(self, name: str) -> Proxy:
        proxy = self.proxies.get(name)
        if proxy is None:
            raise proxy_not_found()
        return proxy

    def new(self, name: str, listen: str, upstream: str) -> Proxy:
        return Proxy(self.runtime, name, listen, upstream)

    async def add(self, proxy: Proxy, enabled: bool) -> None:
        """Create: 409 if the name exists (checked before binding); 500 if binding fails."""
        if proxy.name in self.proxies:
            raise proxy_already_exists()
        if enabled:
            await proxy.start()
        self.proxies[proxy.name] = proxy

    def remove(self, name: str) -> None:
        proxy = self.get(name)
        proxy.stop()
        del self.proxies[name]

    async def populate(self, entries: list[PopulateEntry]) -> list[Proxy]:
        """Create or replace each entry in order; stop at the first failure.

        An existing proxy whose resolved listen address and upstream are unchanged is
        kept as it is (listener, connections, toxics, enabled state); a changed one is
        stopped and replaced by a fresh proxy (its toxics are lost).
        """
        done: list[Proxy] = []
        for entry in entries:
            try:
                done.append(await self._add_or_replace(entry))
            except ApiError as exc:
                raise PopulateFailed(exc, done) from None
        return done

    async def _add_or_replace(self, entry: PopulateEntry) -> Proxy:
        existing = self.proxies.get(entry.name)
        if existing is not None:
            if not await existing.differs(entry.listen, entry.upstream):
                return existing
            existing.stop()
        proxy = self.new(entry.name, entry.listen, entry.upstream)
        if entry.enabled:
            await proxy.start()
        self.proxies[entry.name] = proxy
        return proxy

    async def reset(self) -> None:
        """Enable every proxy and remove every toxic (500 stops at a proxy failing to bind)."""
        for proxy in list(self.proxies.values()):
            try:
                await proxy.start()
            except ProxyAlreadyStarted:
                pass
            proxy.reset_toxics()

    def stop_all(self) -> None:
        for proxy in self.proxies.values():
            proxy.stop()
