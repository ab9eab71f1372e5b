"""The lab's own async Toxiproxy client (trio, HTTP/1.1 keep-alive, no dependencies).

``ToxiproxyClient("127.0.0.1:8474")`` speaks the Toxiproxy 2.x HTTP API (the one
:mod:`lab.toxiproxy` serves) to our built-in server or a real ``toxiproxy-server``.
Answers are decoded once, here, into :class:`ProxyInfo` and :class:`ToxicInfo` (what
the server says of its proxies and toxics; the server's own classes are in
:mod:`lab.toxiproxy`). Every non-2xx answer raises :class:`ToxiproxyError` with the
server's status and ``error`` text; a server that cannot be reached (refused, reset, no
answer within ``timeout``) raises its subclass :class:`ToxiproxyUnavailable` (status 0).

Up to ``max_connections`` requests run at once, each on its own kept-alive connection;
idle connections are reused (a request that finds its reused connection closed by the
server before any answer byte is retried once on a new one, as Go's client does).
Answers are read by :mod:`lab.http1`.

:func:`open_toxiproxy` finds or starts a server and cleans up after it.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import trio

from lab import procs
from lab.http1 import BadResponse, Closed, Connection, Response

__all__ = [
    "ProxyInfo",
    "ToxicInfo",
    "ToxiproxyClient",
    "ToxiproxyError",
    "ToxiproxyUnavailable",
    "open_toxiproxy",
    "parse_addr",
]

_IDLE_REUSE = 20.0  # servers drop idle API connections after 60 s; never reuse near that


class ToxiproxyError(Exception):
    """The server answered ``status`` (>= 300) with ``message`` (its ``error`` field)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status else self.message


class ToxiproxyUnavailable(ToxiproxyError):
    """No usable answer: the server is down, hung up, timed out or spoke no HTTP."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


@dataclass(frozen=True)
class ToxicInfo:
    name: str
    type: str
    stream: str
    toxicity: float
    attributes: Mapping[str, int]

    @classmethod
    def from_json(cls, obj: Any) -> ToxicInfo:
        try:
            return cls(str(obj["name"]), str(obj["type"]), str(obj.get("stream", "downstream")),
                       float(obj.get("toxicity", 1.0)),
                       {str(k): int(v) for k, v in (obj.get("attributes") or {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ToxiproxyUnavailable(f"malformed toxic in answer: {obj!r}") from e


@dataclass(frozen=True)
class ProxyInfo:
    name: str
    listen: str
    upstream: str
    enabled: bool
    toxics: tuple[ToxicInfo, ...] = ()

    @classmethod
    def from_json(cls, obj: Any) -> ProxyInfo:
        try:
            return cls(str(obj["name"]), str(obj["listen"]), str(obj["upstream"]),
                       bool(obj["enabled"]),
                       tuple(ToxicInfo.from_json(t) for t in (obj.get("toxics") or [])))
        except (KeyError, TypeError, AttributeError) as e:
            raise ToxiproxyUnavailable(f"malformed proxy in answer: {obj!r}") from e

    @property
    def address(self) -> tuple[str, int]:
        """``listen`` as ``(host, port)``."""
        return parse_addr(self.listen)


def parse_addr(addr: str) -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[V6]:PORT"`` or ``"http://HOST:PORT"`` -> ``(host, port)``."""
    text = addr.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


class ToxiproxyClient:
    """Async client of one Toxiproxy server at ``addr`` (``"HOST:PORT"``).

    ``created`` holds the names of the proxies this client created (or populated) and has
    not deleted since; :func:`open_toxiproxy` deletes them from an external server.
    """

    def __init__(self, addr: str, *, timeout: float = 10.0, max_connections: int = 8) -> None:
        self.host, self.port = parse_addr(addr)
        self.addr = f"{self.host}:{self.port}"
        self.timeout = timeout
        self.created: set[str] = set()
        self.server_pid: int | None = None  # set by open_toxiproxy for a server it started
        self._limiter = trio.CapacityLimiter(max_connections)
        self._idle: list[Connection] = []

    # ----------------------------------------------------------------- transport

    async def aclose(self) -> None:
        """Close the kept-alive connections. The client can still be used afterwards."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await _close_quietly(conn.stream)

    async def __aenter__(self) -> ToxiproxyClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _connect(self) -> Connection:
        try:
            stream = await trio.open_tcp_stream(self.host, self.port)
        except OSError as e:
            raise ToxiproxyUnavailable(
                f"cannot connect to Toxiproxy at {self.addr}: {e.strerror or e}") from e
        return Connection(stream)

    async def _take_idle(self) -> Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if trio.current_time() - conn.idle_since < _IDLE_REUSE:
                return conn
            await _close_quietly(conn.stream)
        return None

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; returns the decoded JSON answer (None for an empty body).
        Raises :class:`ToxiproxyError` for non-2xx answers."""
        payload = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.addr}",
                "User-Agent: raftlab-toxiclient", "Accept: application/json"]
        if body is not None or method in ("POST", "PATCH", "PUT"):
            head += ["Content-Type: application/json", f"Content-Length: {len(payload)}"]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode() + payload
        try:
            with trio.fail_after(self.timeout):
                async with self._limiter:
                    response = await self._exchange(method, raw)
        except trio.TooSlowError:
            raise ToxiproxyUnavailable(
                f"no answer from Toxiproxy at {self.addr} to {method} {path} "
                f"within {self.timeout} s") from None
        text = response.body.decode("utf-8", errors="replace")
        if not 200 <= response.status < 300:
            raise ToxiproxyError(response.status, _error_message(text))
        if not response.body.strip():
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise ToxiproxyUnavailable(
                f"{method} {path}: answer is not JSON: {text[:200]!r}") from None

    async def _exchange(self, method: str, raw: bytes) -> Response:
        for _attempt in range(2):
            conn = await self._take_idle()
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
            try:
                response = await conn.exchange(raw, method)
            except BadResponse as e:
                await _close_quietly(conn.stream)
                raise ToxiproxyUnavailable(str(e)) from None
            except (Closed, trio.BrokenResourceError, OSError) as e:
                await _close_quietly(conn.stream)
                answered = isinstance(e, Closed) and e.answered
                if reused and not answered:
                    continue  # the server had dropped the idle connection: retry once
                raise ToxiproxyUnavailable(
                    f"Toxiproxy at {self.addr} closed the connection: {e!r}") from None
            except BaseException:
                await _close_quietly(conn.stream)
                raise
            if response.keep_alive:
                conn.used += 1
                conn.idle_since = trio.current_time()
                self._idle.append(conn)
            else:
                await _close_quietly(conn.stream)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------- API

    async def version(self) -> str:
        answer = await self.request("GET", "/version")
        if isinstance(answer, dict) and "version" in answer:
            return str(answer["version"])
        return str(answer)

    async def proxies(self) -> dict[str, ProxyInfo]:
        answer = await self.request("GET", "/proxies")
        if not isinstance(answer, dict):
            raise ToxiproxyUnavailable(f"GET /proxies: expected an object, got {answer!r}")
        return {str(k): ProxyInfo.from_json(v) for k, v in answer.items()}

    async def create_proxy(self, name: str, listen: str, upstream: str,
                           enabled: bool = True) -> ProxyInfo:
        proxy = ProxyInfo.from_json(await self.request("POST", "/proxies", {
            "name": name, "listen": listen, "upstream": upstream, "enabled": enabled}))
        self.created.add(proxy.name)
        return proxy

    async def populate(self, proxies: Iterable[Mapping[str, Any]]) -> list[ProxyInfo]:
        """``POST /populate``: create or replace each ``{name, listen, upstream,
        enabled?}``; a proxy that exists with the same listen and upstream is kept as it
        is (toxics included). Returns the proxies in request order."""
        entries = [dict(p) for p in proxies]
        try:
            answer = await self.request("POST", "/populate", entries)
        except ToxiproxyError:
            # a failed populate may have created some: remember them all, to be safe
            self.created.update(str(e["name"]) for e in entries if e.get("name"))
            raise
        listed = answer.get("proxies") if isinstance(answer, dict) else None
        out = [ProxyInfo.from_json(p) for p in (listed or [])]
        self.created.update(p.name for p in out)
        return out

    async def get_proxy(self, name: str) -> ProxyInfo:
        return ProxyInfo.from_json(await self.request("GET", _proxy_path(name)))

    async def update_proxy(self, name: str, **fields: Any) -> ProxyInfo:
        """Change ``listen``, ``upstream`` and/or ``enabled``; others keep their value."""
        unknown = set(fields) - {"listen", "upstream", "enabled"}
        if unknown:
            raise TypeError(f"update_proxy: unknown field(s) {sorted(unknown)}")
        return ProxyInfo.from_json(await self.request("PATCH", _proxy_path(name), fields))

    async def delete_proxy(self, name: str) -> None:
        await self.request("DELETE", _proxy_path(name))
        self.created.discard(name)

    async def toxics(self, proxy: str) -> list[ToxicInfo]:
        answer = await self.request("GET", _proxy_path(proxy) + "/toxics")
        return [ToxicInfo.from_json(t) for t in (answer or [])]

    async def add_toxic(self, proxy: str, type: str, stream: str,
                        attributes: Mapping[str, int] | None = None, name: str | None = None,
                        toxicity: float = 1.0) -> ToxicInfo:
        body: dict[str, Any] = {"type": type, "stream": stream, "toxicity": toxicity,
                                "attributes": dict(attributes or {})}
        if name is not None:
            body["name"] = name
        return ToxicInfo.from_json(await self.request("POST", _proxy_path(proxy) + "/toxics", body))

    async def update_toxic(self, proxy: str, name: str,
                           attributes: Mapping[str, int] | None = None,
                           toxicity: float | None = None) -> ToxicInfo:
        """Change some attributes and/or the toxicity; the rest keep their values."""
        body: dict[str, Any] = {}
        if attributes is not None:
            body["attributes"] = dict(attributes)
        if toxicity is not None:
            body["toxicity"] = toxicity
        return ToxicInfo.from_json(await self.request(
            "PATCH", f"{_proxy_path(proxy)}/toxics/{quote(name, safe='')}", body))

    async def remove_toxic(self, proxy: str, name: str) -> None:
        await self.request("DELETE", f"{_proxy_path(proxy)}/toxics/{quote(name, safe='')}")

    async def reset(self) -> None:
        """``POST /reset``: every proxy enabled, every toxic removed (proxies stay)."""
        await self.request("POST", "/reset")


def _proxy_path(name: str) -> str:
    return "/proxies/" + quote(name, safe="")


def _error_message(text: str) -> str:
    try:
        obj = json.loads(text)
    except ValueError:
        return text.strip() or "(empty answer)"
    if isinstance(obj, dict) and "error" in obj:
        return str(obj["error"])
    return text.strip()


async def _close_quietly(stream: trio.SocketStream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass


# --------------------------------------------------------------------------- servers


async def _wait_answering(client: ToxiproxyClient, timeout: float,
                          proc: subprocess.Popen[bytes] | None, log_path: Path | None) -> str:
    """Poll ``GET /version`` until it answers; fail clearly on timeout or a dead child."""
    last: Exception | None = None
    with trio.move_on_after(timeout):
        while True:
            if proc is not None and proc.poll() is not None:
                raise ToxiproxyUnavailable(
                    f"the Toxiproxy server exited with status {proc.returncode} before "
                    f"answering on {client.addr}{_log_tail(log_path)}")
            try:
                with trio.fail_after(1.0):
                    return await client.version()
            except (ToxiproxyError, trio.TooSlowError) as e:
                last = e
            await trio.sleep(0.05)
    raise ToxiproxyUnavailable(
        f"no Toxiproxy answered GET /version on {client.addr} within {timeout} s "
        f"(last error: {last}){_log_tail(log_path)}")


def _log_tail(log_path: Path | None, lines: int = 8) -> str:
    if log_path is None or not log_path.exists():
        return ""
    tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    return f"; its log {log_path} ends with:\n  " + "\n  ".join(tail) if tail else ""


async def _stop_child(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    procs.signal_process(proc, signal.SIGTERM)
    with trio.move_on_after(grace):
        while proc.poll() is None:
            await trio.sleep(0.02)
    if proc.poll() is None:
        procs.signal_process(proc, signal.SIGKILL)
        await trio.to_thread.run_sync(proc.wait)


@asynccontextmanager
async def open_toxiproxy(
    addr: str | None,
    log_path: Path | str,
    *,
    use_binary: bool = True,
    startup_timeout: float = 10.0,
) -> AsyncIterator[tuple[ToxiproxyClient, str]]:
    """A client of a Toxiproxy server and its kind, from the first that works of:

    1. ``addr`` (``"HOST:PORT"``) given: the server already running there (``"external"``);
    2. a ``toxiproxy-server`` on PATH (unless ``use_binary`` is false), started as a child
       process on a free 127.0.0.1 port (``"toxiproxy-server"``);
    3. the built-in server, ``python -m lab.toxiproxy``, started the same way
       (``"built-in"``).

    Children log to ``log_path``, run in their own process group and die
    with the lab (parent-death signal). Startup waits at most ``startup_timeout`` seconds
    for ``GET /version`` to answer, then fails with :class:`ToxiproxyUnavailable` naming
    the address and the end of the log. On the way out the child is stopped (SIGTERM,
    then SIGKILL) and reaped; an external server is never stopped, but the proxies this
    client created on it are deleted.
    """
    log_path = Path(log_path)
    if addr is not None:
        client = ToxiproxyClient(addr)
        try:
            await _wait_answering(client, startup_timeout, None, None)
            yield client, "external"
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                for name in sorted(client.created):
                    try:
                        await client.delete_proxy(name)
                    except ToxiproxyError:
                        pass
            await client.aclose()
        return

    binary = shutil.which("toxiproxy-server") if use_binary else None
    kind = "toxiproxy-server" if binary else "built-in"
    base = [binary] if binary else [sys.executable, "-m", "lab.toxiproxy"]
    proc: subprocess.Popen[bytes] | None = None
    child_client: ToxiproxyClient | None = None
    try:
        for attempt in range(3):  # a free port can be taken between probing and binding
            port = procs.free_ports(1)[0]
            proc = procs.spawn([*base, "-host", "127.0.0.1", "-port", str(port)],
                               log_path=log_path)
            child_client = ToxiproxyClient(f"127.0.0.1:{port}")
            child_client.server_pid = proc.pid
            try:
                await _wait_answering(child_client, startup_timeout, proc, log_path)
                break
            except ToxiproxyUnavailable:
                if proc.poll() is None or attempt == 2:
                    raise
                proc = None
        assert child_client is not None
        yield child_client, kind
    finally:
        if child_client is not None:
            await child_client.aclose()
        if proc is not None:
            with trio.CancelScope(shield=True):
                await _stop_child(proc)
