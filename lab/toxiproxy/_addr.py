"""``host:port`` strings the way Go's ``net`` package reads and prints them.

Toxiproxy stores ``listen`` and ``upstream`` as strings and reports a proxy's ``listen``
as the listener's real address after binding (``localhost:0`` → ``127.0.0.1:40123``).
Go rules reproduced here: IPv6 hosts are bracketed, an empty host means every
interface (reported as ``[::]:port``), an empty port means 0, a hostname resolves to
its first IPv4 address when it has one. Errors carry Go's wording, since the API
returns them verbatim.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import trio

__all__ = [
    "AddressError",
    "ListenTarget",
    "format_sockname",
    "parse_port",
    "resolve_listen",
    "resolved_string",
    "split_host_port",
]


class AddressError(Exception):
    """A listen/upstream string that cannot be used; the message is Go-style."""


def split_host_port(addr: str) -> tuple[str, str]:
    """Split like Go's ``net.SplitHostPort``; raises `AddressError` with Go's messages."""

    def fail(why: str) -> AddressError:
        return AddressError(f"address {addr}: {why}")

    if addr.startswith("["):
        end = addr.find("]")
        if end < 0:
            raise fail("missing ']' in address")
        rest = addr[end + 1 :]
        if not rest:
            raise fail("missing port in address")
        if rest[0] != ":":
            raise fail("missing port in address" if end + 1 == len(addr) else "unexpected ']'")
        host, port = addr[1:end], rest[1:]
        if ":" in port:
            raise fail("too many colons in address")
    else:
        colon = addr.rfind(":")
        if colon < 0:
            raise fail("missing port in address")
        host, port = addr[:colon], addr[colon + 1 :]
        if ":" in host:
            raise fail("too many colons in address")
    if "[" in host or "]" in host:
        raise fail("unexpected '[' or ']' in host")
    return host, port


def parse_port(port: str) -> int:
    """A decimal port 0-65535, a service name, or '' (which means 0)."""
    if port == "":
        return 0
    if port.isdigit() and port.isascii():
        value = int(port)
        if value > 65535:
            raise AddressError(f"address {port}: invalid port")
        return value
    try:
        return socket.getservbyname(port, "tcp")
    except OSError:
        raise AddressError(f"lookup tcp/{port}: unknown port") from None


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _join(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


async def _lookup(host: str, port: int) -> str:
    """First IPv4 address of ``host`` if it has one, else its first IPv6 address."""
    try:
        infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError):  # ValueError: not encodable (NUL, IDNA label too long)
        raise AddressError(f"lookup {host}: no such host") from None
    v4 = [info[4][0] for info in infos if info[0] == socket.AF_INET]
    v6 = [info[4][0] for info in infos if info[0] == socket.AF_INET6]
    found = v4 or v6
    if not found:
        raise AddressError(f"lookup {host}: no such host")
    return str(found[0])


def _has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


_IPV6 = _has_ipv6()


@dataclass(frozen=True)
class ListenTarget:
    """Where to bind: address family, sockaddr, whether it is the dual-stack wildcard."""

    family: socket.AddressFamily
    sockaddr: tuple[str, int] | tuple[str, int, int, int]
    display: str
    dual_stack: bool = False


async def resolve_listen(listen: str) -> ListenTarget:
    """Resolve a ``listen`` string for binding; raises `AddressError`.

    The empty string means every interface, random port (as Go's ``net.Listen``).
    """
    host, port_text = split_host_port(listen) if listen else ("", "0")
    port = parse_port(port_text)
    if host == "":
        if _IPV6:
            return ListenTarget(socket.AF_INET6, ("::", port, 0, 0), f"[::]:{port}", True)
        return ListenTarget(socket.AF_INET, ("0.0.0.0", port), f"0.0.0.0:{port}")
    literal = _ip_literal(host)
    ip = str(literal) if literal is not None else await _lookup(host, port)
    if ":" in ip:
        return ListenTarget(socket.AF_INET6, (ip, port, 0, 0), _join(ip, port), ip == "::")
    return ListenTarget(socket.AF_INET, (ip, port), _join(ip, port))


async def resolved_string(addr: str) -> str:
    """What Go's ``net.ResolveTCPAddr("tcp", addr).String()`` gives.

    Used to decide whether an update or populate really changes a proxy's listen address:
    ``localhost:7070`` equals a stored ``127.0.0.1:7070``; an empty host stays empty
    (``:7070``) and so never equals a bound ``[::]:7070``; port 0 never equals a bound
    port.
    """
    host, port_text = split_host_port(addr) if addr else ("", "0")
    port = parse_port(port_text)
    if host == "":
        return f":{port}"
    literal = _ip_literal(host)
    ip = str(literal) if literal is not None else await _lookup(host, port)
    return _join(ip, port)


def format_sockname(sockname: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """``host:port`` of a bound socket, IPv6 bracketed, IPv4-mapped shown as IPv4."""
    ip, port = sockname[0], sockname[1]
    if ip.startswith("::ffff:") and "." in ip:
        ip = ip[len("::ffff:") :]
    return _join(ip, port)
