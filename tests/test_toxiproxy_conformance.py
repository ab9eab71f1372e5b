"""Conformance suite for Toxiproxy-compatible servers: the HTTP API and the toxics'
effects that ``docs/toxiproxy.md`` describes, and upstream Toxiproxy's behaviour that the
built-in server must match.

Every test runs against the built-in server (``python -m lab.toxiproxy`` in a subprocess)
and, when one is available, against a real upstream ``toxiproxy-server``: set
``TOXIPROXY_URL`` to use a running one (the suite deletes every proxy on it!) or put
``toxiproxy-server`` on PATH to have it started on a free port. Otherwise that variant is
skipped. Tests about our documented deviations run against the built-in server only.

The data-plane tests push real bytes over loopback through proxies to small threaded
upstream servers started here (echo, sink, and so on) and check the effect of each toxic.
A toxic's effect is checked from below (latency 100 ms adds at least 100 ms) and by
logic, never by a speed: one round trip faster than a toxic's delay proves it gone, and a
wait that does not end is caught by a generous timeout. The machine may be busy.
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import queue
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
IO_TIMEOUT = 5.0

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------------------------
# servers under test


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A Toxiproxy server under test: its API URL, kind, and process (if we started it)."""

    url: str
    kind: str
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def builtin(self) -> bool:
        return self.kind == "builtin"

    @property
    def api_port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].rstrip("/"))

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 10)
        if body is not None:
            kw["json"] = body
        return requests.request(method, self.url + path, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, **kw)

    def create(
        self, name: str, upstream: str | int, listen: str = f"{LOOPBACK}:0", **kw: Any
    ) -> dict[str, Any]:
        """Create a proxy and return its JSON (upstream may be just a loopback port)."""
        if isinstance(upstream, int):
            upstream = f"{LOOPBACK}:{upstream}"
        r = self.post("/proxies", {"name": name, "listen": listen, "upstream": upstream, **kw})
        assert r.status_code == 201, r.text
        data: dict[str, Any] = r.json()
        return data

    def add_toxic(self, proxy: str, type_: str, **kw: Any) -> dict[str, Any]:
        r = self.post(f"/proxies/{proxy}/toxics", {"type": type_, **kw})
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def remove_toxic(self, proxy: str, toxic: str) -> None:
        r = self.delete(f"/proxies/{proxy}/toxics/{toxic}")
        assert r.status_code == 204, r.text

    def clear(self) -> None:
        for name in self.get("/proxies").json():
            self.delete(f"/proxies/{name}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def wait_until_up(server: Server, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.proc is not None and server.proc.poll() is not None:
            break
        try:
            if requests.get(server.url + "/version", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.05)
    server.stop()
    log = server.log.read_text() if server.log and server.log.exists() else ""
    pytest.fail(f"{server.kind} toxiproxy server did not come up at {server.url}\n{log}")


def start_builtin(tmp: Path, *extra: str) -> Server:
    port = free_port()
    log = tmp / f"builtin-{port}.log"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lab.toxiproxy",
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                *extra,
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(f"http://{LOOPBACK}:{port}", "builtin", proc, log)
    wait_until_up(server)
    return server


def start_real(tmp: Path) -> Server:
    url = os.environ.get("TOXIPROXY_URL")
    if url:
        server = Server(url.rstrip("/"), "real")
        wait_until_up(server, 5)
        return server
    binary = shutil.which("toxiproxy-server")
    if binary is None:
        pytest.skip(REAL_MISSING)
    port = free_port()
    log = tmp / f"real-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-host", LOOPBACK, "-port", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(f"http://{LOOPBACK}:{port}", "real", proc, log)
    wait_until_up(server)
    return server


REAL_MISSING = (
    "no real Toxiproxy to compare with: set TOXIPROXY_URL to a running server, or put "
    "toxiproxy-server (github.com/Shopify/toxiproxy/releases) on PATH"
)
HAVE_REAL = bool(os.environ.get("TOXIPROXY_URL") or shutil.which("toxiproxy-server"))
VARIANTS = ["builtin", "real"] if HAVE_REAL else ["builtin"]


def test_real_toxiproxy_variant_is_available() -> None:
    """Every test below also runs against a real toxiproxy-server when there is one."""
    if not HAVE_REAL:
        pytest.skip(REAL_MISSING)


@pytest.fixture(scope="module", params=VARIANTS)
def server_process(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("toxiproxy")
    server = start_builtin(tmp) if request.param == "builtin" else start_real(tmp)
    try:
        yield server
    finally:
        with contextlib.suppress(requests.RequestException):
            server.clear()
        server.stop()


@pytest.fixture
def api(server_process: Server) -> Iterator[Server]:
    """The server under test, with no proxies before and after the test."""
    server_process.clear()
    yield server_process
    server_process.clear()


def builtin_only(server: Server, why: str) -> None:
    if not server.builtin:
        pytest.skip(f"built-in server only: {why}")


# ---------------------------------------------------------------------------------------
# upstream servers and socket helpers


class Upstream:
    """A threaded TCP server on 127.0.0.1 that proxies point at.

    ``handler(conn, self)`` runs per connection in its own thread. ``ended`` gets one item
    per connection whose peer closed or reset (what "the upstream sees its connection
    closed" means in the tests).
    """

    def __init__(self, handler: Callable[[socket.socket, Upstream], None]) -> None:
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = int(self.listener.getsockname()[1])
        self.handler = handler
        self.accepted = 0
        self.ended: queue.Queue[str] = queue.Queue()
        self.received: queue.Queue[tuple[int, float]] = queue.Queue()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._conns.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            self.handler(conn, self)
        except OSError:
            self.ended.put("error")
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.close()


def echo_handler(conn: socket.socket, server: Upstream) -> None:
    while True:
        data = conn.recv(65536)
        if not data:
            server.ended.put("eof")
            return
        conn.sendall(data)


def sink_handler(conn: socket.socket, server: Upstream) -> None:
    total = 0
    buf = bytearray(1 << 20)
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        total += n
    server.received.put((total, time.perf_counter()))
    server.ended.put("eof")


@pytest.fixture
def echo() -> Iterator[Upstream]:
    server = Upstream(echo_handler)
    yield server
    server.close()


@pytest.fixture
def sink() -> Iterator[Upstream]:
    server = Upstream(sink_handler)
    yield server
    server.close()


def addr(listen: str) -> tuple[str, int]:
    host, port = listen.rsplit(":", 1)
    return host.strip("[]"), int(port)


def connect(listen: str, timeout: float = IO_TIMEOUT) -> socket.socket:
    sock = socket.create_connection(addr(listen), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        data = sock.recv(n - len(chunks))
        if not data:
            raise AssertionError(f"EOF after {len(chunks)} of {n} bytes")
        chunks += data
    return bytes(chunks)


def roundtrip(sock: socket.socket, payload: bytes = b"ping") -> float:
    start = time.perf_counter()
    sock.sendall(payload)
    assert recv_exact(sock, len(payload)) == payload
    return time.perf_counter() - start


def not_all_at_least(times: list[float], delay: float) -> bool:
    """True if some round trip took less than ``delay``: a toxic that adds ``delay`` to
    every round trip cannot be in force. (A logical bound, not a speed claim: a slow
    machine makes round trips longer, and one fast one among several is enough.)"""
    return min(times) < delay


def is_open(listen: str) -> bool:
    try:
        with socket.create_connection(addr(listen), timeout=2):
            return True
    except ConnectionRefusedError:
        return False


def wait_closed(sock: socket.socket, timeout: float = 3.0) -> str:
    """Read until the peer closes: returns 'eof' or 'reset'; fails on data or timeout."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return "eof"
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        raise AssertionError("connection still open") from None


def silent_for(sock: socket.socket, seconds: float) -> bool:
    """True if nothing (no data, no close) arrives for ``seconds``."""
    sock.settimeout(seconds)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(IO_TIMEOUT)
    return False


# =======================================================================================
# API shape


def test_index_of_empty_server_is_empty_object(api: Server) -> None:
    r = api.get("/proxies")
    assert r.status_code == 200
    assert r.json() == {}
    assert r.headers["Content-Type"].startswith("application/json")


def test_create_returns_201_with_every_field_and_listens(api: Server, echo: Upstream) -> None:
    """enabled defaults to true; port 0 comes back as the real port."""
    r = api.post(
        "/proxies",
        {"name": "one", "listen": f"{LOOPBACK}:0", "upstream": f"{LOOPBACK}:{echo.port}"},
    )
    assert r.status_code == 201
    body = r.json()
    assert {"name", "listen", "upstream", "enabled", "toxics"} <= body.keys()
    assert body["name"] == "one"
    assert body["enabled"] is True
    assert body["toxics"] == []
    assert body["upstream"] == f"{LOOPBACK}:{echo.port}"
    host, port = addr(body["listen"])
    assert host == LOOPBACK and port != 0
    assert is_open(body["listen"])
    assert api.get("/proxies/one").json()["listen"] == body["listen"]


def test_create_with_localhost_reports_resolved_address(api: Server, echo: Upstream) -> None:
    port = free_port()
    body = api.create("local", echo.port, listen=f"localhost:{port}")
    assert body["listen"] == f"127.0.0.1:{port}"


def test_create_with_blank_name_or_upstream_is_400(api: Server) -> None:
    r = api.post("/proxies", {"name": "", "listen": f"{LOOPBACK}:0", "upstream": "127.0.0.1:1"})
    assert r.status_code == 400
    assert r.json() == {"error": "missing required field: name", "status": 400}
    r = api.post("/proxies", {"name": "x", "listen": f"{LOOPBACK}:0"})
    assert r.status_code == 400
    assert r.json() == {"error": "missing required field: upstream", "status": 400}
    assert api.get("/proxies").json() == {}


def test_create_duplicate_name_is_409_even_on_another_port(api: Server, echo: Upstream) -> None:
    api.create("dup", echo.port)
    r = api.post("/proxies", {"name": "dup", "listen": f"{LOOPBACK}:0", "upstream": "127.0.0.1:1"})
    assert r.status_code == 409
    assert r.json() == {"error": "proxy already exists", "status": 409}


def test_create_on_a_bound_port_is_500_until_the_owner_is_deleted(
    api: Server, echo: Upstream
) -> None:
    """the bind error text is reported; DELETE frees the port at once."""
    port = free_port()
    api.create("first", echo.port, listen=f"{LOOPBACK}:{port}")
    body = {"name": "second", "listen": f"{LOOPBACK}:{port}", "upstream": f"{LOOPBACK}:{echo.port}"}
    r = api.post("/proxies", body)
    assert r.status_code == 500
    assert r.json() == {
        "error": f"listen tcp {LOOPBACK}:{port}: bind: address already in use",
        "status": 500,
    }
    assert "second" not in api.get("/proxies").json()
    assert api.delete("/proxies/first").status_code == 204
    r = api.post("/proxies", body)
    assert r.status_code == 201, r.text


def test_disabled_proxy_binds_nothing_until_enabled(api: Server, echo: Upstream) -> None:
    """listen is echoed verbatim while never bound; toggling opens/closes it."""
    port = free_port()
    listen = f"localhost:{port}"
    body = api.create("off", echo.port, listen=listen, enabled=False)
    assert body["enabled"] is False
    assert body["listen"] == listen
    assert not is_open(f"{LOOPBACK}:{port}")
    r = api.post("/proxies/off", {"enabled": True})
    assert r.status_code == 200
    assert r.json()["enabled"] is True
    assert r.json()["listen"] == f"127.0.0.1:{port}"
    with connect(f"{LOOPBACK}:{port}") as sock:
        roundtrip(sock)
    r = api.post("/proxies/off", {"enabled": False})
    assert r.json()["enabled"] is False
    assert not is_open(f"{LOOPBACK}:{port}")


def test_delete_is_204_closes_the_port_and_a_second_delete_is_404(
    api: Server, echo: Upstream
) -> None:
    listen = api.create("gone", echo.port)["listen"]
    r = api.delete("/proxies/gone")
    assert r.status_code == 204
    assert r.content == b""
    assert not is_open(listen)
    assert "gone" not in api.get("/proxies").json()
    r = api.delete("/proxies/gone")
    assert r.status_code == 404
    assert r.json() == {"error": "proxy not found", "status": 404}


def test_browser_user_agent_is_forbidden(api: Server) -> None:
    browser = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"
    r = api.get("/proxies", headers={"User-Agent": browser})
    assert r.status_code == 403
    assert "User agent not allowed" in r.text
    r = api.post("/reset", headers={"User-Agent": browser})
    assert r.status_code == 403
    r = api.get("/proxies", headers={"User-Agent": "Wget/1.21"})
    assert r.status_code == 200


def test_every_routed_response_has_a_request_id(api: Server, echo: Upstream) -> None:
    """including errors of routed paths; unrouted 404s do not get one."""
    api.create("rid", echo.port)
    responses = [
        api.get("/proxies"),
        api.get("/proxies/rid"),
        api.get("/proxies/missing"),
        api.post("/proxies", {"name": "rid", "upstream": "x:1"}),
        api.get("/version"),
        api.post("/reset"),
    ]
    ids = [r.headers.get("X-Toxiproxy-Request-Id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)
    assert "X-Toxiproxy-Request-Id" not in api.get("/nothing-here").headers


def test_version_body_is_exact(api: Server) -> None:
    r = api.get("/version")
    assert r.status_code == 200
    assert re.fullmatch(r'\{"version": "[^"]+"\}\n', r.text), repr(r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    assert json.loads(r.text)["version"]


def test_errors_are_json_objects_with_matching_status(api: Server, echo: Upstream) -> None:
    api.create("err", echo.port)
    cases = [
        (api.get("/proxies/nope"), 404, "proxy not found"),
        (api.get("/proxies/err/toxics/nope"), 404, "toxic not found"),
        (api.post("/proxies/err/toxics", {"type": "bogus"}), 400, "invalid toxic type"),
        (api.post("/proxies", {"name": "err", "upstream": "x:1"}), 409, "proxy already exists"),
    ]
    for response, status, message in cases:
        assert response.status_code == status
        assert response.text.endswith("\n")
        assert json.loads(response.text) == {"error": message, "status": status}


def test_post_and_patch_both_update_proxies_and_toxics(api: Server, echo: Upstream) -> None:
    api.create("upd", echo.port)
    api.add_toxic("upd", "latency", attributes={"latency": 10})
    for method, value in (("POST", 20), ("PATCH", 30)):
        r = api.request(
            method, "/proxies/upd/toxics/latency_downstream", {"attributes": {"latency": value}}
        )
        assert r.status_code == 200
        assert r.json()["attributes"]["latency"] == value
    for method, enabled in (("POST", False), ("PATCH", True)):
        r = api.request(method, "/proxies/upd", {"enabled": enabled})
        assert r.status_code == 200
        assert r.json()["enabled"] is enabled


def test_metrics_route_is_absent_without_metrics_flags(api: Server) -> None:
    assert api.get("/metrics").status_code == 404


def test_metrics_route_counts_proxied_bytes_with_proxy_metrics(
    server_process: Server, tmp_path: Path, echo: Upstream
) -> None:
    """with -proxy-metrics the counters appear once a connection has ended."""
    builtin_only(server_process, "starts a second built-in server with --proxy-metrics")
    server = start_builtin(tmp_path, "--proxy-metrics")
    try:
        listen = server.create("m", echo.port)["listen"]
        with connect(listen) as sock:
            roundtrip(sock, b"x" * 1000)
        deadline = time.monotonic() + 5
        text = ""
        while time.monotonic() < deadline:
            text = server.get("/metrics").text
            if "toxiproxy_proxy_sent_bytes_total{" in text:
                break
            time.sleep(0.05)
        assert re.search(
            r'toxiproxy_proxy_received_bytes_total\{direction="upstream"[^}]*proxy="m"[^}]*\} 1000',
            text,
        ), text
        assert re.search(
            r'toxiproxy_proxy_sent_bytes_total\{direction="downstream"[^}]*\} 1000', text
        ), text
    finally:
        server.stop()


def test_unknown_path_is_plain_404_and_wrong_method_is_405(api: Server) -> None:
    """Router rules: no trailing-slash redirect, plain-text 404, empty 405."""
    for path in ("/nothing", "/proxies/", "/version/"):
        r = api.get(path)
        assert r.status_code == 404, path
        assert r.text == "404 page not found\n"
    r = api.request("PUT", "/proxies")
    assert r.status_code == 405
    assert r.content == b""
    assert api.request("DELETE", "/version").status_code == 405


def test_malformed_json_is_400_bad_request_body(api: Server, echo: Upstream) -> None:
    """bodies are decoded as JSON whatever the Content-Type says."""
    r = api.post("/proxies", data=b"{not json", headers={"Content-Type": "text/plain"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("bad request body: ")
    api.create("bad", echo.port)
    r = api.post("/proxies/bad/toxics", data=b"")
    assert r.status_code == 400
    assert r.json()["error"].startswith("bad request body")
    r = api.post("/proxies/bad/toxics", {"type": "latency", "attributes": {"latency": "100"}})
    assert r.status_code == 400
    assert r.json()["error"].startswith("bad request body")
    r = api.post("/proxies/bad/toxics", {"type": "latency", "attributes": {"latency": 100.5}})
    assert r.status_code == 400


def test_keep_alive_connection_serves_many_requests(api: Server, echo: Upstream) -> None:
    """HTTP/1.1 keep-alive, as the Node client (undici) and Go client use it."""
    host, port = addr(api.url.removeprefix("http://"))
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        for i in range(5):
            body = json.dumps(
                {"name": f"ka{i}", "listen": f"{LOOPBACK}:0", "upstream": f"{LOOPBACK}:{echo.port}"}
            )
            conn.request("POST", "/proxies", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            assert response.status == 201
            response.read()
            conn.request("DELETE", f"/proxies/ka{i}")
            response = conn.getresponse()
            assert response.status == 204
            response.read()
    finally:
        conn.close()


def test_garbage_request_gets_400_and_the_connection_closes(api: Server) -> None:
    """The HTTP layer never crashes on junk; the server still answers afterwards."""
    for junk in (
        b"\x00\x01\x02 garbage\r\n\r\n",
        b"GET /version\r\n\r\n",
        b"GET / HTTP/1.1\r\n bad\r\n\r\n",
    ):
        with socket.create_connection(addr(api.url.removeprefix("http://")), timeout=5) as sock:
            sock.sendall(junk)
            reply = b""
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                reply += data
            assert reply.startswith(b"HTTP/1.1 400"), (junk, reply[:80])
    assert api.get("/version").status_code == 200


def test_update_with_only_enabled_keeps_listen_and_upstream(api: Server, echo: Upstream) -> None:
    """the body {"enabled": ...} alone is what the Python and Ruby clients send."""
    created = api.create("only", echo.port)
    r = api.post("/proxies/only", {"enabled": False})
    assert r.status_code == 200
    assert r.json()["upstream"] == created["upstream"]
    r = api.post("/proxies/only", {"enabled": True})
    assert r.json()["listen"] == created["listen"]
    with connect(created["listen"]) as sock:
        roundtrip(sock)


# =======================================================================================
# populate and reset


def test_populate_creates_proxies_in_request_order(api: Server, echo: Upstream) -> None:
    body = [
        {"name": "b-second", "listen": f"{LOOPBACK}:0", "upstream": f"{LOOPBACK}:{echo.port}"},
        {
            "name": "a-first",
            "listen": f"{LOOPBACK}:0",
            "upstream": f"{LOOPBACK}:{echo.port}",
            "enabled": True,
        },
        {
            "name": "c-off",
            "listen": f"{LOOPBACK}:{free_port()}",
            "upstream": f"{LOOPBACK}:{echo.port}",
            "enabled": False,
        },
    ]
    r = api.post("/populate", body)
    assert r.status_code == 201, r.text
    proxies = r.json()["proxies"]
    assert [p["name"] for p in proxies] == ["b-second", "a-first", "c-off"]
    assert [p["enabled"] for p in proxies] == [True, True, False]
    for p in proxies[:2]:
        with connect(p["listen"]) as sock:
            roundtrip(sock)
    assert not is_open(proxies[2]["listen"])
    assert set(api.get("/proxies").json()) == {"a-first", "b-second", "c-off"}


def test_populate_keeps_an_equivalent_proxy_and_replaces_a_changed_one(
    api: Server, echo: Upstream
) -> None:
    """same resolved listen + upstream: untouched (toxics, connections survive)."""
    port = free_port()
    api.create("keep", echo.port, listen=f"{LOOPBACK}:{port}")
    api.create("swap", echo.port)
    api.add_toxic("keep", "latency", attributes={"latency": 1})
    api.add_toxic("swap", "latency", attributes={"latency": 1})
    with connect(f"{LOOPBACK}:{port}") as kept_conn:
        roundtrip(kept_conn)
        other = Upstream(echo_handler)
        try:
            r = api.post(
                "/populate",
                [
                    {
                        "name": "keep",
                        "listen": f"localhost:{port}",
                        "upstream": f"{LOOPBACK}:{echo.port}",
                    },
                    {
                        "name": "swap",
                        "listen": f"{LOOPBACK}:0",
                        "upstream": f"{LOOPBACK}:{other.port}",
                    },
                ],
            )
            assert r.status_code == 201, r.text
            proxies = api.get("/proxies").json()
            assert [t["name"] for t in proxies["keep"]["toxics"]] == ["latency_downstream"]
            assert proxies["swap"]["toxics"] == []
            assert proxies["swap"]["upstream"] == f"{LOOPBACK}:{other.port}"
            roundtrip(kept_conn)  # the kept proxy's connection is still alive
        finally:
            other.close()


def test_populate_with_a_nameless_element_is_400_and_creates_nothing(
    api: Server, echo: Upstream
) -> None:
    body = [
        {"name": "ok", "listen": f"{LOOPBACK}:0", "upstream": f"{LOOPBACK}:{echo.port}"},
        {"listen": f"{LOOPBACK}:0", "upstream": f"{LOOPBACK}:{echo.port}"},
    ]
    r = api.post("/populate", body)
    assert r.status_code == 400
    assert r.json()["error"] == "missing required field: name at proxy 2"
    assert r.json()["status"] == 400
    assert api.get("/proxies").json() == {}


def test_populate_stops_at_a_failing_element_and_reports_the_partial_list(
    api: Server, echo: Upstream
) -> None:
    """the first element stays created, later ones are not."""
    body = [
        {"name": "one", "listen": f"{LOOPBACK}:0", "upstream": f"{LOOPBACK}:{echo.port}"},
        {"name": "two", "listen": f"{LOOPBACK}:99999", "upstream": f"{LOOPBACK}:{echo.port}"},
        {"name": "three", "listen": f"{LOOPBACK}:0", "upstream": f"{LOOPBACK}:{echo.port}"},
    ]
    r = api.post("/populate", body)
    assert r.status_code >= 400
    data = r.json()
    assert data["error"]
    assert data["status"] == r.status_code
    names = set(api.get("/proxies").json())
    assert "two" not in names and "three" not in names
    if api.builtin:  # upstream 2.12 behaviour per the contract; newer upstream validates first
        assert r.status_code == 500
        assert [p["name"] for p in data["proxies"]] == ["one"]
        assert names == {"one"}


def test_reset_enables_every_proxy_and_removes_every_toxic(api: Server, echo: Upstream) -> None:
    api.create("r1", echo.port)
    api.create("r2", echo.port, enabled=False)
    api.add_toxic("r1", "latency", attributes={"latency": 1})
    api.add_toxic("r2", "bandwidth", stream="upstream", attributes={"rate": 1})
    r = api.post("/reset")
    assert r.status_code == 204
    assert r.content == b""
    proxies = api.get("/proxies").json()
    assert set(proxies) == {"r1", "r2"}
    for p in proxies.values():
        assert p["enabled"] is True
        assert p["toxics"] == []
        with connect(p["listen"]) as sock:
            roundtrip(sock)


def test_reset_keeps_established_connections_working(api: Server, echo: Upstream) -> None:
    listen = api.create("persist", echo.port)["listen"]
    with connect(listen) as sock:
        roundtrip(sock)
        api.add_toxic("persist", "latency", attributes={"latency": 1})
        assert api.post("/reset").status_code == 204
        roundtrip(sock)
        assert api.post("/reset").status_code == 204
        roundtrip(sock)


# =======================================================================================
# toxic API


def test_toxic_create_is_200_with_defaults(api: Server, echo: Upstream) -> None:
    api.create("tx", echo.port)
    r = api.post("/proxies/tx/toxics", {"type": "latency"})
    assert r.status_code == 200
    assert r.json() == {
        "attributes": {"latency": 0, "jitter": 0},
        "name": "latency_downstream",
        "type": "latency",
        "stream": "downstream",
        "toxicity": 1,
    }
    r = api.post("/proxies/tx/toxics", {"type": "noop", "stream": "upstream"})
    assert r.status_code == 200
    assert r.json()["name"] == "noop_upstream"
    assert r.json()["attributes"] == {}
    expected_attrs = {
        "bandwidth": {"rate": 0},
        "slow_close": {"delay": 0},
        "timeout": {"timeout": 0},
        "reset_peer": {"timeout": 0},
        "limit_data": {"bytes": 0},
    }
    for type_, attrs in expected_attrs.items():
        r = api.post("/proxies/tx/toxics", {"type": type_, "stream": "upstream"})
        assert r.status_code == 200, r.text
        assert r.json()["attributes"] == attrs


def test_toxic_names_are_unique_across_streams(api: Server, echo: Upstream) -> None:
    api.create("names", echo.port)
    api.add_toxic("names", "latency", name="shared", stream="upstream")
    r = api.post(
        "/proxies/names/toxics", {"type": "bandwidth", "name": "shared", "stream": "downstream"}
    )
    assert r.status_code == 409
    assert r.json() == {"error": "toxic already exists", "status": 409}
    assert api.add_toxic("names", "latency", stream="upstream")["name"] == "latency_upstream"
    assert api.add_toxic("names", "latency", stream="downstream")["name"] == "latency_downstream"
    r = api.post("/proxies/names/toxics", {"type": "latency", "stream": "downstream"})
    assert r.status_code == 409


def test_invalid_stream_or_type_is_400(api: Server, echo: Upstream) -> None:
    """including a missing type and the Node client's non-existent "down" type."""
    api.create("inv", echo.port)
    r = api.post("/proxies/inv/toxics", {"type": "latency", "stream": "walrustream"})
    assert r.status_code == 400
    assert r.json() == {
        "error": "stream was invalid, can be either upstream or downstream",
        "status": 400,
    }
    for body in ({"type": "walrus"}, {}, {"type": "down"}, {"type": "Latency"}):
        r = api.post("/proxies/inv/toxics", body)
        assert r.status_code == 400, body
        assert r.json() == {"error": "invalid toxic type", "status": 400}
    assert api.get("/proxies/inv/toxics").json() == []


def test_stream_is_parsed_case_insensitively_and_echoed_verbatim(
    api: Server, echo: Upstream
) -> None:
    api.create("case", echo.port)
    toxic = api.add_toxic("case", "latency", stream="UpStream")
    assert toxic["stream"] == "UpStream"
    assert toxic["name"] == "latency_UpStream"
    assert api.get("/proxies/case/toxics").json()[0]["stream"] == "UpStream"


def test_toxicity_given_on_create_round_trips(api: Server, echo: Upstream) -> None:
    api.create("tox", echo.port)
    assert api.add_toxic("tox", "latency", toxicity=0.2)["toxicity"] == 0.2
    assert api.get("/proxies/tox/toxics/latency_downstream").json()["toxicity"] == 0.2


def test_toxic_update_merges_attributes_and_keeps_toxicity(api: Server, echo: Upstream) -> None:
    api.create("merge", echo.port)
    api.add_toxic("merge", "latency", attributes={"latency": 100, "jitter": 10})
    r = api.patch(
        "/proxies/merge/toxics/latency_downstream",
        {"attributes": {"latency": 1000}, "toxicity": 0.5},
    )
    assert r.status_code == 200
    assert r.json()["attributes"] == {"latency": 1000, "jitter": 10}
    assert r.json()["toxicity"] == 0.5
    r = api.patch("/proxies/merge/toxics/latency_downstream", {"attributes": {"jitter": 3}})
    assert r.json()["attributes"] == {"latency": 1000, "jitter": 3}
    assert r.json()["toxicity"] == 0.5
    r = api.patch("/proxies/merge/toxics/nope", {"attributes": {"jitter": 3}})
    assert r.status_code == 404
    assert r.json() == {"error": "toxic not found", "status": 404}


def test_toxic_delete_is_204_then_404(api: Server, echo: Upstream) -> None:
    api.create("del", echo.port)
    api.add_toxic("del", "latency")
    r = api.delete("/proxies/del/toxics/latency_downstream")
    assert r.status_code == 204
    assert api.get("/proxies/del/toxics").json() == []
    r = api.delete("/proxies/del/toxics/latency_downstream")
    assert r.status_code == 404
    assert r.json() == {"error": "toxic not found", "status": 404}
    assert api.delete("/proxies/nope/toxics/x").json() == {
        "error": "proxy not found",
        "status": 404,
    }


def test_toxic_show_returns_the_toxic(api: Server, echo: Upstream) -> None:
    api.create("show", echo.port)
    api.add_toxic(
        "show", "slicer", attributes={"average_size": 64, "size_variation": 8, "delay": 5}
    )
    r = api.get("/proxies/show/toxics/slicer_downstream")
    assert r.status_code == 200
    assert r.json()["attributes"] == {"average_size": 64, "size_variation": 8, "delay": 5}


def test_toxics_are_listed_upstream_first_in_insertion_order(api: Server, echo: Upstream) -> None:
    """in GET .../toxics and in the proxy's toxics."""
    api.create("order", echo.port)
    for name, stream in (
        ("d1", "downstream"),
        ("u1", "upstream"),
        ("d2", "downstream"),
        ("u2", "upstream"),
    ):
        api.add_toxic("order", "noop", name=name, stream=stream)
    expected = ["u1", "u2", "d1", "d2"]
    assert [t["name"] for t in api.get("/proxies/order/toxics").json()] == expected
    assert [t["name"] for t in api.get("/proxies/order").json()["toxics"]] == expected


def test_dangerous_attributes_are_rejected(api: Server, echo: Upstream) -> None:
    """Deviation: what would crash or hang upstream is a 400 here."""
    builtin_only(api, "deviation: slicer and negative-value validation")
    api.create("val", echo.port)
    bad = [
        ("slicer", {"average_size": 0}),
        ("slicer", {"average_size": 10, "size_variation": 10}),
        ("slicer", {"average_size": 10, "size_variation": -1}),
        ("latency", {"latency": -1}),
        ("latency", {"jitter": -5}),
        ("bandwidth", {"rate": -1}),
        ("timeout", {"timeout": -1}),
        ("reset_peer", {"timeout": -1}),
        ("slow_close", {"delay": -1}),
        ("limit_data", {"bytes": -1}),
    ]
    for type_, attrs in bad:
        r = api.post("/proxies/val/toxics", {"type": type_, "attributes": attrs})
        assert r.status_code == 400, (type_, attrs)
        assert r.json()["error"].startswith(f"bad request body: {type_}: ")
    assert api.get("/proxies/val/toxics").json() == []
    api.add_toxic("val", "slicer", attributes={"average_size": 10, "size_variation": 9})
    r = api.patch("/proxies/val/toxics/slicer_downstream", {"attributes": {"average_size": 9}})
    assert r.status_code == 400
    assert (
        api.get("/proxies/val/toxics/slicer_downstream").json()["attributes"]["average_size"] == 10
    )


def test_integral_float_attributes_are_accepted(api: Server, echo: Upstream) -> None:
    """Deviation (benign extension): 1000.0, as Python's json writes floats, means 1000."""
    builtin_only(api, "deviation: integral floats accepted for integer attributes")
    api.create("flt", echo.port)
    toxic = api.add_toxic("flt", "latency", attributes={"latency": 1000.0, "jitter": 1e1})
    assert toxic["attributes"] == {"latency": 1000, "jitter": 10}


# =======================================================================================
# data plane


def test_bytes_pass_unchanged_small_big_and_split(api: Server, echo: Upstream) -> None:
    """including messages larger than a read buffer and split across writes."""
    listen = api.create("pass", echo.port)["listen"]
    with connect(listen) as sock:
        roundtrip(sock, b"hello world")
        big = random.Random(1).randbytes(1_500_000)
        reader_result: list[bytes] = []
        reader = threading.Thread(target=lambda: reader_result.append(recv_exact(sock, len(big))))
        reader.start()
        sock.sendall(big)
        reader.join(20)
        assert reader_result and reader_result[0] == big
        sock.sendall(b"two-")
        time.sleep(0.02)
        sock.sendall(b"parts")
        assert recv_exact(sock, 9) == b"two-parts"


def test_dead_upstream_accepts_then_closes(api: Server) -> None:
    """connect succeeds (no ECONNREFUSED), then EOF comes promptly."""
    listen = api.create("dead", free_port())["listen"]
    with connect(listen) as sock:
        assert wait_closed(sock, 10) in ("eof", "reset")  # EOF, not a connection left open


def test_disable_closes_connections_and_refuses_until_enabled(api: Server, echo: Upstream) -> None:
    """both sockets close; toxics survive; re-enabling binds the same address."""
    listen = api.create("toggle", echo.port)["listen"]
    api.add_toxic("toggle", "noop")
    with connect(listen) as sock:
        roundtrip(sock)
        assert api.post("/proxies/toggle", {"enabled": False}).status_code == 200
        assert wait_closed(sock) in ("eof", "reset")
    assert echo.ended.get(timeout=3)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(addr(listen), timeout=2)
    r = api.post("/proxies/toggle", {"enabled": True})
    assert r.json()["listen"] == listen
    assert [t["name"] for t in r.json()["toxics"]] == ["noop_downstream"]
    with connect(listen) as sock:
        roundtrip(sock)


def test_delete_closes_open_connections(api: Server, echo: Upstream) -> None:
    listen = api.create("drop", echo.port)["listen"]
    with connect(listen) as sock:
        roundtrip(sock)
        assert api.delete("/proxies/drop").status_code == 204
        assert wait_closed(sock) in ("eof", "reset")
    assert echo.ended.get(timeout=3)


def test_address_change_restarts_but_hostname_spelling_does_not(
    api: Server, echo: Upstream
) -> None:
    port = free_port()
    api.create("move", echo.port, listen=f"{LOOPBACK}:{port}")
    with connect(f"{LOOPBACK}:{port}") as sock:
        roundtrip(sock)
        r = api.patch("/proxies/move", {"listen": f"localhost:{port}"})
        assert r.status_code == 200
        assert r.json()["listen"] == f"127.0.0.1:{port}"
        roundtrip(sock)  # same address, differently spelled: nothing restarted
        other = Upstream(echo_handler)
        try:
            r = api.patch("/proxies/move", {"upstream": f"{LOOPBACK}:{other.port}"})
            assert r.status_code == 200
            assert wait_closed(sock) in ("eof", "reset")
            with connect(f"{LOOPBACK}:{port}") as new_sock:
                roundtrip(new_sock)
            assert other.accepted == 1
        finally:
            other.close()


def test_latency_adds_delay_per_direction_and_stacks(api: Server, echo: Upstream) -> None:
    """100 ms downstream, then upstream too: the round trip takes both."""
    listen = api.create("lat", echo.port)["listen"]
    with connect(listen) as sock:
        roundtrip(sock)
        api.add_toxic("lat", "latency", attributes={"latency": 100})
        times = [roundtrip(sock) for _ in range(5)]
        assert min(times) >= 0.100, times
        assert not_all_at_least(times, 0.200)  # one direction only
        api.add_toxic("lat", "latency", stream="upstream", attributes={"latency": 100})
        times = [roundtrip(sock) for _ in range(3)]
        assert min(times) >= 0.200, times
        assert not_all_at_least(times, 0.300)
        api.remove_toxic("lat", "latency_downstream")
        api.remove_toxic("lat", "latency_upstream")
        assert not_all_at_least([roundtrip(sock) for _ in range(5)], 0.100)


def test_upstream_latency_delays_what_the_server_receives(api: Server, sink: Upstream) -> None:
    listen = api.create("uplat", sink.port)["listen"]
    api.add_toxic("uplat", "latency", stream="upstream", attributes={"latency": 200})
    with connect(listen) as sock:
        start = time.perf_counter()
        sock.sendall(b"x" * 100)
        sock.shutdown(socket.SHUT_WR)
        total, at = sink.received.get(timeout=5)
    assert total == 100
    assert at - start >= 0.200


def test_two_latency_toxics_on_one_stream_add_up(api: Server, echo: Upstream) -> None:
    listen = api.create("two", echo.port)["listen"]
    api.add_toxic("two", "latency", name="a", attributes={"latency": 500})
    api.add_toxic("two", "latency", name="b", attributes={"latency": 500})
    with connect(listen) as sock:
        elapsed = roundtrip(sock)
    assert elapsed >= 1.0  # both, not the larger of the two


def test_latency_does_not_cap_throughput(api: Server, sink: Upstream) -> None:
    """pipelined: 32 MB through a 100 ms latency toxic moves at well over the
    ~0.6 MB/s a one-chunk-per-delay implementation would give."""
    listen = api.create("pipe", sink.port)["listen"]
    api.add_toxic("pipe", "latency", stream="upstream", attributes={"latency": 100})
    total = 32 << 20
    blob = b"z" * (1 << 20)
    with connect(listen, timeout=30) as sock:
        start = time.perf_counter()
        for _ in range(total >> 20):
            sock.sendall(blob)
        sock.shutdown(socket.SHUT_WR)
        received, at = sink.received.get(timeout=30)
    assert received == total
    rate = total / (at - start)
    assert rate > 3e6, f"{rate / 1e6:.1f} MB/s"  # 5 x what one chunk per delay would give


def test_toxic_added_to_an_open_connection_applies_live(api: Server, echo: Upstream) -> None:
    """and removal takes effect live too."""
    listen = api.create("live", echo.port)["listen"]
    with connect(listen) as sock:
        roundtrip(sock)
        api.add_toxic("live", "latency", attributes={"latency": 150})
        assert roundtrip(sock) >= 0.150
        api.remove_toxic("live", "latency_downstream")
        assert not_all_at_least([roundtrip(sock) for _ in range(5)], 0.150)


def test_adding_and_removing_toxics_repeatedly_loses_nothing(api: Server, echo: Upstream) -> None:
    """a numbered stream survives toxics churning on both streams."""
    listen = api.create("churn", echo.port)["listen"]
    count = 150_000
    payload = struct.pack(f">{count}I", *range(count))
    received = bytearray()
    with connect(listen, timeout=20) as sock:

        def read_all() -> None:
            while len(received) < len(payload):
                data = sock.recv(65536)
                if not data:
                    return
                received.extend(data)

        def write_all() -> None:
            rng = random.Random(7)
            pos = 0
            while pos < len(payload):
                step = rng.randrange(1, 20_000)
                sock.sendall(payload[pos : pos + step])
                pos += step
                time.sleep(rng.random() * 0.002)

        reader = threading.Thread(target=read_all)
        writer = threading.Thread(target=write_all)
        reader.start()
        writer.start()
        rng = random.Random(3)
        deadline = time.monotonic() + 2.0
        rounds = 0
        while time.monotonic() < deadline or rounds < 10:
            rounds += 1
            stream = rng.choice(["upstream", "downstream"])
            added = []
            for type_, attrs in (
                ("latency", {"latency": rng.randrange(0, 30), "jitter": rng.randrange(0, 5)}),
                ("slicer", {"average_size": 512, "size_variation": 100, "delay": 10}),
                ("bandwidth", {"rate": 50_000}),
                ("noop", {}),
            ):
                if rng.random() < 0.6:
                    name = f"{type_}{rounds}"
                    api.add_toxic(
                        "churn",
                        type_,
                        name=name,
                        stream=stream,
                        attributes=attrs,
                        toxicity=rng.choice([1.0, 0.5]),
                    )
                    added.append(name)
            if added and rng.random() < 0.5:
                api.patch(f"/proxies/churn/toxics/{added[0]}", {"toxicity": 1.0})
            time.sleep(rng.random() * 0.05)
            for name in rng.sample(added, len(added)):
                api.remove_toxic("churn", name)
        writer.join(30)
        reader.join(30)
    assert len(received) == len(payload)
    assert bytes(received) == payload


def test_bandwidth_limits_the_rate_in_kilobytes_of_1000_bytes(api: Server, echo: Upstream) -> None:
    """300 kB at rate 1000 (KB/s) takes about 300 ms."""
    listen = api.create("bw", echo.port)["listen"]
    api.add_toxic("bw", "bandwidth", attributes={"rate": 1000})
    size = 300_000
    with connect(listen) as sock:
        start = time.perf_counter()
        sock.sendall(b"b" * size)
        recv_exact(sock, size)
        elapsed = time.perf_counter() - start
    assert elapsed >= 0.29, elapsed


def test_bandwidth_zero_holds_data_until_removed(api: Server, echo: Upstream) -> None:
    """a pause without loss; the API answers at once meanwhile."""
    listen = api.create("pause", echo.port)["listen"]
    api.add_toxic("pause", "bandwidth", attributes={"rate": 0})
    with connect(listen) as sock:
        sock.sendall(b"held")
        assert silent_for(sock, 0.3)
        api.remove_toxic("pause", "bandwidth_downstream")  # answered while data is held
        assert recv_exact(sock, 4) == b"held"
        roundtrip(sock)


def test_timeout_zero_is_a_black_hole_and_removal_closes_both_ends(
    api: Server, echo: Upstream
) -> None:
    """data dropped, nothing closed; removing it closes client and server side."""
    listen = api.create("hole", echo.port)["listen"]
    with connect(listen) as sock:
        roundtrip(sock)
        api.add_toxic("hole", "timeout", attributes={"timeout": 0})
        sock.sendall(b"lost")
        assert silent_for(sock, 0.4)
        api.remove_toxic("hole", "timeout_downstream")
        assert wait_closed(sock, 10) == "eof"
    assert echo.ended.get(timeout=3) == "eof"


def test_timeout_closes_after_the_idle_time_and_toxicity_zero_passes(
    api: Server, echo: Upstream
) -> None:
    listen = api.create("idle", echo.port)["listen"]
    api.add_toxic("idle", "timeout", attributes={"timeout": 100})
    with connect(listen) as sock:
        start = time.perf_counter()
        sock.sendall(b"x")
        assert wait_closed(sock, 10) == "eof"
        assert time.perf_counter() - start >= 0.09
    api.remove_toxic("idle", "timeout_downstream")
    api.add_toxic("idle", "timeout", attributes={"timeout": 100}, toxicity=0.0)
    with connect(listen) as sock:
        roundtrip(sock)
        time.sleep(0.2)
        roundtrip(sock)


def test_removing_latency_in_front_of_a_black_hole_does_not_hang(
    api: Server, echo: Upstream
) -> None:
    """regression of upstream issue #159."""
    listen = api.create("nohang", echo.port)["listen"]
    api.add_toxic("nohang", "latency", attributes={"latency": 1000})
    api.add_toxic("nohang", "timeout", attributes={"timeout": 0})
    with connect(listen) as sock:
        for _ in range(20):
            sock.sendall(b"y" * 1000)
        time.sleep(0.1)
        api.remove_toxic("nohang", "latency_downstream")  # answers (the API's timeout) at all


@pytest.mark.parametrize("stream", ["downstream", "upstream"])
def test_reset_peer_resets_the_connection(api: Server, echo: Upstream, stream: str) -> None:
    """ECONNRESET then EOF, at once for timeout 0, ~100 ms later for 100."""
    listen = api.create("rst", echo.port)["listen"]
    api.add_toxic("rst", "reset_peer", stream=stream, attributes={"timeout": 0})
    with connect(listen) as sock:
        sock.sendall(b"trigger")
        with pytest.raises(ConnectionResetError):
            sock.settimeout(3)
            while sock.recv(100):
                pass
        assert sock.recv(100) == b""
    api.patch(f"/proxies/rst/toxics/reset_peer_{stream}", {"attributes": {"timeout": 100}})
    with connect(listen) as sock:
        start = time.perf_counter()
        sock.sendall(b"trigger")
        with pytest.raises(ConnectionResetError):
            sock.settimeout(3)
            while sock.recv(100):
                pass
        assert time.perf_counter() - start >= 0.09


def test_limit_data_truncates_then_closes(api: Server, echo: Upstream) -> None:
    """bytes=100: 90 + 20 in, 90 + 10 out, then closed; bytes=0 closes at once."""
    listen = api.create("limit", echo.port)["listen"]
    api.add_toxic("limit", "limit_data", attributes={"bytes": 100})
    with connect(listen) as sock:
        sock.sendall(b"a" * 90)
        assert recv_exact(sock, 90) == b"a" * 90
        sock.sendall(b"b" * 20)
        assert recv_exact(sock, 10) == b"b" * 10
        assert wait_closed(sock) == "eof"
    api.patch("/proxies/limit/toxics/limit_data_downstream", {"attributes": {"bytes": 0}})
    with connect(listen) as sock:
        sock.sendall(b"c")
        assert wait_closed(sock) == "eof"


def test_slicer_cuts_data_into_small_delayed_pieces(api: Server, echo: Upstream) -> None:
    """every byte arrives, in order, in many small reads."""
    listen = api.create("slice", echo.port)["listen"]
    api.add_toxic(
        "slice", "slicer", attributes={"average_size": 10, "size_variation": 5, "delay": 2000}
    )
    data = bytes(range(256)) + bytes(range(44))
    with connect(listen) as sock:
        sock.sendall(data)
        got = bytearray()
        reads = 0
        while len(got) < len(data):
            piece = sock.recv(65536)
            assert piece
            got += piece
            reads += 1
    assert bytes(got) == data
    assert reads >= 4, reads  # unsliced, the 300 bytes come back in one read
    api.patch(
        "/proxies/slice/toxics/slicer_downstream",
        {"attributes": {"average_size": 1, "size_variation": 0, "delay": 3000}},
    )
    with connect(listen) as sock:
        sock.sendall(b"0123456789")
        got = bytearray()
        reads = 0
        while len(got) < 10:
            piece = sock.recv(65536)
            assert piece
            got += piece
            reads += 1
    assert bytes(got) == b"0123456789"
    assert reads >= 3, reads


def test_slow_close_delays_the_close(api: Server, echo: Upstream) -> None:
    """the client sees the server side's close `delay` ms late."""
    listen = api.create("slow", echo.port)["listen"]
    api.add_toxic("slow", "slow_close", attributes={"delay": 500})
    with connect(listen) as sock:
        roundtrip(sock)
        start = time.perf_counter()
        sock.shutdown(socket.SHUT_WR)
        assert wait_closed(sock, 10) == "eof"
        assert time.perf_counter() - start >= 0.5


def test_noop_and_zero_toxicity_toxics_pass_data(api: Server, echo: Upstream) -> None:
    """a toxicity-0 toxic never applies; noop never does anything."""
    listen = api.create("pass0", echo.port)["listen"]
    api.add_toxic("pass0", "noop")
    api.add_toxic("pass0", "latency", stream="upstream", toxicity=0.0, attributes={"latency": 1000})
    api.add_toxic("pass0", "limit_data", toxicity=0.0, attributes={"bytes": 0})
    with connect(listen) as sock:
        assert not_all_at_least([roundtrip(sock) for _ in range(5)], 1.0)


# =======================================================================================
# third-party Python client


def test_toxiproxy_python_client_drives_the_server(api: Server, echo: Upstream) -> None:
    """The PyPI client ``toxiproxy-python`` end to end."""
    toxiproxy = pytest.importorskip("toxiproxy")
    from toxiproxy.api import APIConsumer
    from toxiproxy.exceptions import NotFound, ProxyExists

    saved = (APIConsumer.host, APIConsumer.port)
    client = toxiproxy.Toxiproxy()
    client.update_api_consumer(LOOPBACK, api.api_port)
    try:
        assert client.running()
        assert b"version" in client.version()
        proxy = client.create(
            upstream=f"{LOOPBACK}:{echo.port}", name="pyclient", listen=f"{LOOPBACK}:0"
        )
        assert addr(proxy.listen)[1] != 0
        with pytest.raises(ProxyExists):
            client.create(upstream=f"{LOOPBACK}:{echo.port}", name="pyclient")
        assert set(client.proxies()) == {"pyclient"}
        proxy.add_toxic(type="latency", attributes={"latency": 100})
        assert set(proxy.toxics()) == {"latency_downstream"}
        assert proxy.get_toxic("latency_downstream").attributes == {"latency": 100, "jitter": 0}
        with connect(proxy.listen) as sock:
            assert roundtrip(sock) >= 0.1
            assert proxy.destroy_toxic("latency_downstream")
            assert not_all_at_least([roundtrip(sock) for _ in range(5)], 0.1)
        with pytest.raises(NotFound):
            proxy.destroy_toxic("latency_downstream")
        with proxy.down():
            assert not is_open(proxy.listen)
        with connect(proxy.listen) as sock:
            roundtrip(sock)
        proxy.disable()
        assert client.reset()
        assert client.get_proxy("pyclient").enabled is True
        made = client.populate(
            [{"name": "pop", "upstream": f"{LOOPBACK}:{echo.port}", "listen": f"{LOOPBACK}:0"}]
        )
        assert [p.name for p in made] == ["pop"]
        client.destroy_all()
        assert client.proxies() == {}
    finally:
        APIConsumer.host, APIConsumer.port = saved
