"""A small HTTP/1.1 server on trio, just enough for the Toxiproxy API.

Supported: keep-alive (HTTP/1.1 default, HTTP/1.0 with ``Connection: keep-alive``),
pipelined requests (answered in order), ``Content-Length`` bodies, ``Expect:
100-continue``. Refused: request bodies with ``Transfer-Encoding`` (411, connection
closed; every known Toxiproxy client sends ``Content-Length``).

Limits: request head 64 KiB (431), body 16 MiB (413), 15 s to receive a request once it
has started, 60 s idle between requests, 30 s to write a response. Anything that does
not parse gets ``400 Bad Request`` and the connection is closed; no input can make the
server raise. The parser (`parse_head`) is a pure function; `serve_connection` does the
I/O.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote

import trio

__all__ = [
    "MAX_BODY",
    "MAX_HEAD",
    "ProtocolError",
    "Request",
    "Response",
    "parse_head",
    "serve_connection",
]

log = logging.getLogger("lab.toxiproxy.http")

MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
READ_TIMEOUT = 15.0
IDLE_TIMEOUT = 60.0
WRITE_TIMEOUT = 30.0

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(r"^HTTP/1\.[0-9]$")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class ProtocolError(Exception):
    """The peer broke HTTP; answered with ``status`` and the connection is closed."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: str
    version: str
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


def _split_target(target: str) -> tuple[str, str]:
    if target.startswith("/"):
        path, _, query = target.partition("?")
    elif target.lower().startswith(("http://", "https://")):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        path, _, query = (rest[slash:] if slash >= 0 else "/").partition("?")
    else:
        raise ProtocolError(400, f"unsupported request target {target!r}")
    if _BAD_ESCAPE.search(path):
        raise ProtocolError(400, "invalid URL escape")
    return unquote(path, errors="replace"), query


def parse_head(head: bytes) -> Request:
    """Parse a request line and headers (without the blank line). Raises ProtocolError."""
    text = head.decode("latin-1")
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    request_line = lines[0]
    parts = request_line.split(" ")
    if len(parts) != 3:
        raise ProtocolError(400, "malformed request line")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise ProtocolError(400, "invalid method")
    if not _VERSION.match(version):
        if version.startswith("HTTP/"):
            raise ProtocolError(505, "unsupported HTTP version")
        raise ProtocolError(400, "malformed HTTP version")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise ProtocolError(400, "obsolete header line folding")
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise ProtocolError(400, "malformed header line")
        key = name.lower()
        value = value.strip(" \t")
        if key in headers:
            if key == "content-length" and headers[key] != value:
                raise ProtocolError(400, "conflicting Content-Length headers")
            if key != "content-length":
                headers[key] = f"{headers[key]}, {value}"
        else:
            headers[key] = value
    path, query = _split_target(target)
    return Request(method, target, path, query, version, headers)


def _body_length(request: Request) -> int:
    if "transfer-encoding" in request.headers:
        raise ProtocolError(411, "request bodies must have a Content-Length")
    raw = request.headers.get("content-length")
    if raw is None:
        return 0
    if not raw.isdigit() or not raw.isascii():
        raise ProtocolError(400, "invalid Content-Length")
    length = int(raw)
    if length > MAX_BODY:
        raise ProtocolError(413, "request body too large")
    return length


def _keep_alive(request: Request) -> bool:
    tokens = {t.strip().lower() for t in request.header("connection").split(",")}
    if request.version == "HTTP/1.0":
        return "keep-alive" in tokens
    return "close" not in tokens


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def render(response: Response, *, close: bool, head_only: bool = False) -> bytes:
    """The response bytes (status line, headers, body)."""
    lines = [f"HTTP/1.1 {response.status} {_reason(response.status)}"]
    if response.content_type is not None:
        lines.append(f"Content-Type: {response.content_type}")
    lines.extend(f"{name}: {value}" for name, value in response.headers)
    lines.append(f"Date: {formatdate(usegmt=True)}")
    if response.status >= 200 and response.status not in (204, 304):
        lines.append(f"Content-Length: {len(response.body)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace")
    if head_only or response.status in (204, 304):
        return head
    return head + response.body


def _find_head_end(buf: bytearray) -> tuple[int, int] | None:
    """(end of head, start of body) if the blank line has arrived."""
    crlf = buf.find(b"\r\n\r\n")
    lf = buf.find(b"\n\n")
    candidates = [(crlf, crlf + 4)] if crlf >= 0 else []
    if lf >= 0:
        candidates.append((lf, lf + 2))
    return min(candidates) if candidates else None


async def _send(stream: trio.abc.Stream, data: bytes) -> bool:
    with trio.move_on_after(WRITE_TIMEOUT):
        try:
            await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        return True
    return False


def _error_response(exc: ProtocolError) -> Response:
    text = f"{exc.status} {_reason(exc.status)}"
    if exc.detail:
        text += f": {exc.detail}"
    return Response(exc.status, text.encode(), "text/plain; charset=utf-8")


async def _receive(stream: trio.abc.Stream, deadline: float) -> bytes | None:
    """Some bytes, or ``None`` on EOF, error or deadline."""
    with trio.move_on_at(deadline):
        try:
            data = await stream.receive_some(65536)
            return bytes(data) if data else None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return None
    return None


async def serve_connection(stream: trio.abc.Stream, handler: Handler) -> None:
    """Answer requests on one connection until it closes, errs, idles out or asks to close."""
    buf = bytearray()
    try:
        while True:
            # Head: wait up to IDLE_TIMEOUT for the first byte, then READ_TIMEOUT for all.
            deadline = trio.current_time() + IDLE_TIMEOUT
            started = False
            while True:
                while buf[:2] == b"\r\n" or buf[:1] == b"\n":  # stray CRLFs between requests
                    del buf[: 2 if buf[:1] == b"\r" else 1]
                if buf and not started:
                    started = True
                    deadline = trio.current_time() + READ_TIMEOUT
                found = _find_head_end(buf)
                if found is not None:
                    break
                if len(buf) > MAX_HEAD:
                    raise ProtocolError(431, "request header too large")
                data = await _receive(stream, deadline)
                if data is None:
                    return
                buf += data
            head_end, body_start = found
            if head_end > MAX_HEAD:
                raise ProtocolError(431, "request header too large")
            request = parse_head(bytes(buf[:head_end]))
            length = _body_length(request)
            del buf[:body_start]
            expect = request.header("expect").lower()
            if expect and expect != "100-continue":
                raise ProtocolError(417, "unsupported expectation")
            wants_continue = expect and len(buf) < length and request.version == "HTTP/1.1"
            if wants_continue and not await _send(stream, b"HTTP/1.1 100 Continue\r\n\r\n"):
                return
            while len(buf) < length:
                data = await _receive(stream, deadline)
                if data is None:
                    return
                buf += data
            request.body = bytes(buf[:length])
            del buf[:length]
            keep = _keep_alive(request)
            try:
                response = await handler(request)
            except Exception:  # a bug in a handler must not take the server down
                log.exception("handler failed for %s %s", request.method, request.target)
                response = Response(500, b"internal error\n", "text/plain; charset=utf-8")
            data_out = render(response, close=not keep, head_only=request.method == "HEAD")
            if not await _send(stream, data_out) or not keep:
                return
    except ProtocolError as exc:
        await _send(stream, render(_error_response(exc), close=True))
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
