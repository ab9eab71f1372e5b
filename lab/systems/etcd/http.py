"""etcd's HTTP client: JSON POSTs to etcd's gRPC gateway over kept-alive HTTP/1.1.

A request ends in one of three ways: an answer (status and decoded JSON),
:class:`NotSent` (the connection could not be made: the request certainly never left),
or :class:`Lost` (it may have been sent, and no complete answer came). Answers are read
by :mod:`lab.http1`.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from lab.fastjson import dumps
from lab.http1 import BadResponse, Closed, Connection
from lab.systems.types import Address


class NotSent(Exception):
    """The request certainly never left: the connection could not be made."""


class Lost(Exception):
    """The request may have been sent, and no complete answer came (``timeout`` or a lost
    or garbled connection)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Pool:
    """Kept-alive HTTP/1.1 connections to a few addresses, one request per connection at
    a time. Not thread-safe; use within one trio run. ``users``: the client drivers
    sharing it (the last one out closes it)."""

    def __init__(self) -> None:
        self._idle: dict[Address, list[Connection]] = {}
        self.users = 0

    def close(self) -> None:
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for c in conns:
                c.close()

    async def post(self, addr: Address, path: str, body: Any, deadline: float
                   ) -> tuple[int, Any]:
        """POST ``body`` as JSON; return (HTTP status, decoded JSON answer). Raises
        :class:`NotSent` or :class:`Lost`."""
        payload = dumps(body)
        raw = (f"POST {path} HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
               "\r\n").encode() + payload
        conn: Connection | None = None
        idle = self._idle.setdefault(addr, [])
        while idle:
            c = idle.pop()
            if c.stale():
                c.close()
            else:
                conn = c
                break
        if conn is None:
            try:
                with trio.fail_after(max(0.0, deadline - trio.current_time())):
                    conn = Connection(await trio.open_tcp_stream(*addr))
            except (OSError, trio.TooSlowError) as e:
                raise NotSent("timeout" if isinstance(e, trio.TooSlowError) else
                              "refused") from None
        try:
            with trio.fail_after(max(0.0, deadline - trio.current_time())):
                response = await conn.exchange(raw, "POST")
        except trio.TooSlowError:
            conn.close()
            raise Lost("timeout") from None
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, Closed,
                BadResponse):
            conn.close()
            raise Lost("connection") from None
        except BaseException:
            conn.close()
            raise
        if response.keep_alive:
            self._idle.setdefault(addr, []).append(conn)
        else:
            conn.close()
        try:
            return response.status, json.loads(response.body) if response.body.strip() else {}
        except ValueError:
            raise Lost("garbled answer") from None


_SHARED: trio.lowlevel.RunVar[Pool] = trio.lowlevel.RunVar("lab.systems.etcd.shared")


def shared_pool() -> Pool:
    """This trio run's pool shared by all client workers (``connections: shared``): an
    idle kept-alive connection serves whichever worker asks next. HTTP/1.1 carries one
    request at a time, so the workers still use as many connections as they have requests
    in flight."""
    try:
        return _SHARED.get()
    except LookupError:
        _SHARED.set(Pool())
        return _SHARED.get()
