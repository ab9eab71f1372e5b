"""``raftlab serve``: the reports folder over HTTP, on 127.0.0.1 only, read-only.

``/`` (and ``/index.html``) is the runs index, rendered again whenever a run appeared,
finished or was re-rendered since the last request (and on every request while a run is
in progress), so runs show up as they land. Everything else is a file under the root:
GET and HEAD only, nothing outside the root (a ``..`` segment, plain or percent-encoded,
and a symbolic link that leads out are refused), a directory without ``index.html``
gets a plain listing (a run still in progress has none yet).

It is the standard library's threaded HTTP server, one thread per connection, with the
accept loop in a thread of its own, so the main thread only waits for Ctrl-C or SIGTERM
and then shuts the server down. Every request is one line on stderr; a malformed request
gets a 400 and a failure inside a handler a 500, each logged as one line, never a
traceback.
"""

from __future__ import annotations

import html
import mimetypes
import shutil
import signal
import socketserver
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

from lab.exitcode import ExitCode
from lab.report.index_page import INDEX, fingerprint, index_html, writable_index
from lab.store import write_atomically

HOST = "127.0.0.1"  # never 0.0.0.0: the reports may name hosts, ports and data
TEXT = "text/plain; charset=utf-8"
TYPES = {
    ".html": "text/html; charset=utf-8", ".htm": "text/html; charset=utf-8",
    ".json": "application/json", ".jsonl": TEXT, ".log": TEXT, ".txt": TEXT, ".md": TEXT,
    ".yaml": TEXT, ".yml": TEXT, ".csv": TEXT, ".edn": TEXT, ".tmp": TEXT,
    ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
}
FAVICON = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
           b'<rect width="16" height="16" rx="3" fill="#1a7f37"/>'
           b'<rect x="4" y="4" width="8" height="8" rx="1" fill="#fff"/></svg>')


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in TYPES:
        return TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


class ReportsServer(ThreadingHTTPServer):
    """Serves one reports root; keeps the rendered runs index between requests."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, port: int, log: Any = None) -> None:
        self.root = root.resolve()
        self.log = log if log is not None else sys.stderr
        self._lock = threading.Lock()
        self._index: bytes | None = None
        self._fingerprint: tuple[Any, ...] | None = None
        self._live = False  # the last index showed a run in progress
        super().__init__((HOST, port), Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind asks DNS for the host's name; loopback needs no lookup.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = HOST, int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        e = sys.exc_info()[1]
        self.say(f"{client_address[0]} connection error: {type(e).__name__}: {e}")

    def say(self, line: str) -> None:
        try:
            print(line, file=self.log, flush=True)
        except (OSError, ValueError):
            pass

    def index_page(self) -> bytes:
        """The runs index, rendered again if anything it shows may have changed."""
        with self._lock:
            fp = fingerprint(self.root)
            if self._index is None or self._live or fp != self._fingerprint:
                text, rows = index_html(self.root)
                self._index = text.encode("utf-8")
                self._live = any(r["status"] == "running" for r in rows)
                try:
                    write_atomically(writable_index(self.root), text)
                except OSError:
                    pass  # a read-only folder, or another page of that name: served anyway
                self._fingerprint = fingerprint(self.root)  # summaries may have been cached
            return self._index


class Handler(BaseHTTPRequestHandler):
    server: ReportsServer
    server_version = "raftlab-serve"
    default_request_version = "HTTP/1.0"  # so even a garbled request line gets a status line
    timeout = 30  # a client that stalls mid-request is dropped

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def _not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "read-only: GET and HEAD only",
                    {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = (
        _not_allowed)

    def _serve(self, body: bool) -> None:
        try:
            self._route(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away
        except Exception as e:
            self.server.say(f"{self.client_address[0]} error serving {self.path!r}: "
                            f"{type(e).__name__}: {e}")
            try:
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
            except OSError:
                pass

    def _route(self, body: bool) -> None:
        target = self.path
        if target[:8].lower().startswith(("http://", "https://")):  # the absolute form
            target = urlsplit(target).path or "/"
        target = target.split("?", 1)[0].split("#", 1)[0]
        if not target.startswith("/"):
            self._error(HTTPStatus.BAD_REQUEST, "the path must start with /")
            return
        path = unquote(target, errors="replace")
        if "\0" in path:
            self._error(HTTPStatus.BAD_REQUEST, "bad path")
            return
        parts = [p for p in path.split("/") if p]
        if any(p in ("..", ".") for p in parts):
            self._error(HTTPStatus.FORBIDDEN, "no path outside the reports folder")
            return
        if not parts or parts == [INDEX]:
            self._send(HTTPStatus.OK, "text/html; charset=utf-8", self.server.index_page(),
                       body)
            return
        if parts == ["favicon.ico"] and not (self.server.root / "favicon.ico").exists():
            self._send(HTTPStatus.OK, "image/svg+xml", FAVICON, body)
            return
        try:
            real = self.server.root.joinpath(*parts).resolve(strict=True)
        except (OSError, RuntimeError):
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        if not real.is_relative_to(self.server.root):
            self._error(HTTPStatus.FORBIDDEN, "no path outside the reports folder")
            return
        if real.is_dir():
            if not target.endswith("/"):  # so that relative links inside work
                self.send_response(HTTPStatus.MOVED_PERMANENTLY)
                # rebuilt from the checked segments: "//host/x" must not leave the site
                self.send_header("Location", "/" + quote("/".join(parts)) + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if (real / INDEX).is_file():
                self._file(real / INDEX, body)
            else:
                self._send(HTTPStatus.OK, "text/html; charset=utf-8", self._listing(real),
                           body)
            return
        self._file(real, body)

    def _file(self, path: Path, body: bool) -> None:
        try:
            f: BinaryIO = open(path, "rb")  # noqa: SIM115 (closed below)
        except OSError:
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        with f:
            size = path.stat().st_size
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", content_type(path))
            self.send_header("Content-Length", str(size))
            self._common_headers()
            self.end_headers()
            if body:
                shutil.copyfileobj(f, self.wfile, 1 << 16)

    def _listing(self, d: Path) -> bytes:
        rel = d.relative_to(self.server.root).as_posix()
        items = []
        for p in sorted(d.iterdir(), key=lambda p: (not p.is_dir(), p.name)):
            if p.name.startswith("."):
                continue
            name = p.name + ("/" if p.is_dir() else "")
            size = "" if p.is_dir() else f"{p.stat().st_size:,} B"
            items.append(f'<li><a href="{quote(name)}">{html.escape(name)}</a> '
                         f'<span style="color:#626a73">{size}</span></li>')
        up = '<p><a href="/">all runs</a></p>'
        page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
                f"<title>{html.escape(rel)}/</title></head>"
                f'<body style="font:15px/1.5 system-ui,sans-serif;margin:20px">{up}'
                f"<h1>{html.escape(rel)}/</h1><p>No report here yet (a run in progress "
                f"renders its page when it ends).</p><ul>{''.join(items)}</ul></body></html>")
        return page.encode("utf-8")

    def _common_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")

    def _send(self, status: HTTPStatus, ctype: str, data: bytes, body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self._common_headers()
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: HTTPStatus, message: str,
               headers: dict[str, str] | None = None) -> None:
        data = f"{status.value} {status.phrase}: {message}\n".encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", TEXT)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # One line per request on stderr; the base class's extra "code 400, message ..."
    # line for errors is folded away (the request line says it).
    def log_error(self, format: str, *args: Any) -> None:
        pass

    def log_message(self, format: str, *args: Any) -> None:
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in format % args)
        self.server.say(f"{self.client_address[0]} [{time.strftime('%H:%M:%S')}] {text}")


def serve(root: Path, port: int, out: Any = None) -> ExitCode:
    """Serve ``root`` until Ctrl-C or SIGTERM; print the URL first. Returns an exit code."""
    out = sys.stdout if out is None else out
    if not root.is_dir():
        print(f"raftlab: {root}: not a directory (the reports folder to serve)",
              file=sys.stderr)
        return ExitCode.BAD_INPUT
    try:
        server = ReportsServer(root, port)
    except OSError as e:
        print(f"raftlab: cannot listen on {HOST}:{port}: {e.strerror or e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.25},
                              name="raftlab-serve", daemon=True)
    thread.start()
    try:
        print(f"serving {server.root} at http://{HOST}:{server.server_port}/ "
              "(Ctrl-C to stop)", file=out, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        for s, h in previous.items():
            signal.signal(s, h)
    server.say("raftlab serve: stopped")
    return ExitCode.VALID
