"""``raftlab serve``: the reports folder over HTTP, on loopback, read-only.

Each test starts the real command (``raftlab serve --port 0``) as a process of its own
session, talks to it with raw sockets (so that paths reach the server exactly as written,
``..`` and ``%2e%2e`` included), and stops it with a signal, checking it exits cleanly.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_report_index import add_run, add_running

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


def raftlab() -> list[str]:
    script = Path(sys.executable).with_name("raftlab")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lab.cli"]


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    url: str
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


@contextmanager
def served(root: Path, stderr: Path) -> Iterator[Server]:
    """``raftlab serve --port 0 --dir root``: yields once it printed its URL; stops it
    (SIGTERM, then SIGKILL of its whole session) however the test ends."""
    with open(stderr, "w") as err:
        proc = subprocess.Popen([*raftlab(), "serve", "--port", "0", "--dir", str(root)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True)
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline() if sel.select(timeout=20) else ""
        sel.close()
        assert line.startswith("serving "), f"no URL printed: {line!r} {stderr.read_text()}"
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/")
        yield Server(proc, int(url.rsplit(":", 1)[1].strip("/")), url, stderr)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def request(port: int, raw: bytes, host: str = "127.0.0.1") -> Response:
    """Send ``raw`` as is and read the whole response (the server closes after each)."""
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), data[:200]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Response(int(lines[0].split()[1]), headers, body)


def get(port: int, path: str, method: str = "GET") -> Response:
    return request(port, f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "reports"
    r.mkdir()
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    return r


def run_path(d: Path, root: Path) -> str:
    return "/" + d.relative_to(root).as_posix()


# --------------------------------------------------------------------------- tests


def test_serves_the_index_run_pages_and_files_with_their_types(root: Path,
                                                               tmp_path: Path) -> None:
    d = add_run(root, "register", "mixed", 1)
    with served(root, tmp_path / "serve.err") as srv:
        index = get(srv.port, "/")
        assert index.status == 200 and index.headers["content-type"].startswith("text/html")
        assert b"register" in index.body and b'raftlab runs index' in index.body
        assert (root / "index.html").exists()  # regenerated on disk too
        base = run_path(d, root)
        moved = get(srv.port, base)
        assert moved.status == 301 and moved.headers["location"] == base + "/"
        page = get(srv.port, base + "/")
        assert page.status == 200 and b"verdict-valid" in page.body
        assert page.body == (d / "index.html").read_bytes()
        for name, ctype in [("index.html", "text/html"), ("results.json", "application/json"),
                            ("history.jsonl", "text/plain"), ("lab.log", "text/plain"),
                            ("nodes/n1/node.log", "text/plain"), ("scenario.yaml", "text/plain")]:
            r = get(srv.port, f"{base}/{name}")
            assert r.status == 200 and r.headers["content-type"].startswith(ctype), name
            assert r.body == (d / name).read_bytes(), name
        head = get(srv.port, f"{base}/history.jsonl", "HEAD")
        assert head.status == 200 and head.body == b""
        assert int(head.headers["content-length"]) == (d / "history.jsonl").stat().st_size
        assert get(srv.port, "/nope/").status == 404
        assert get(srv.port, "/favicon.ico").status == 200  # no console error in browsers
    log = srv.log()
    assert "Traceback" not in log
    requests_logged = [line for line in log.splitlines() if '"GET ' in line or '"HEAD ' in line]
    assert len(requests_logged) == 12  # one line per request


def test_nothing_outside_the_root_is_reachable(root: Path, tmp_path: Path) -> None:
    d = add_run(root, "register", "mixed", 1)
    (root / "escape").symlink_to(tmp_path)
    base = run_path(d, root)
    attempts = ["/../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E/secret.txt",
                "/register-mixed/..%2f..%2fsecret.txt", f"{base}/../../../secret.txt",
                "/..%2fsecret.txt", "/%2e%2e%2fsecret.txt", "/escape/secret.txt",
                "/escape/", "//../secret.txt", "http://127.0.0.1/../secret.txt",
                "/%252e%252e/secret.txt", "/x%00y", "/%ff%fe/"]
    with served(root, tmp_path / "serve.err") as srv:
        for path in attempts:
            r = get(srv.port, path)
            assert r.status in (400, 403, 404), (path, r.status)
            assert b"SECRET" not in r.body, path
        redirect = get(srv.port, "//evil.example/register-mixed")
        assert redirect.status == 404
        moved = get(srv.port, "//register-mixed")
        assert moved.status == 301 and moved.headers["location"] == "/register-mixed/"
    assert "Traceback" not in srv.log()


def test_read_only_and_malformed_requests_get_clean_errors(root: Path,
                                                          tmp_path: Path) -> None:
    with served(root, tmp_path / "serve.err") as srv:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            r = get(srv.port, "/index.html", method)
            assert r.status == 405 and r.headers["allow"] == "GET, HEAD", method
        assert not (root / "index.html").exists()  # nothing was written by those
        for raw in (b"GARBAGE\r\n\r\n", b"GET / HTTP/9.9 extra\r\n\r\n",
                    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                    b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
                    b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n"):
            r = request(srv.port, raw)
            assert 400 <= r.status < 500, raw[:30]
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"GET / HT")  # and hang up mid-request
        assert get(srv.port, "/").status == 200  # still serving
    log = srv.log()
    assert "Traceback" not in log
    assert all(line.isprintable() for line in log.splitlines())


def test_binds_to_loopback_only_and_port_0_picks_a_free_port(root: Path,
                                                            tmp_path: Path) -> None:
    with served(root, tmp_path / "a.err") as a, served(root, tmp_path / "b.err") as b:
        assert a.port != b.port and a.port > 0
        assert get(a.port, "/").status == 200
        with pytest.raises(OSError):  # 127.0.0.2 is loopback too, but not bound
            socket.create_connection(("127.0.0.2", a.port), timeout=3).close()
        busy = subprocess.run([*raftlab(), "serve", "--port", str(a.port), "--dir",
                               str(root)], cwd=ROOT, capture_output=True, text=True,
                              timeout=30)
        assert busy.returncode == 2 and busy.stderr.count("\n") == 1
        assert f"cannot listen on 127.0.0.1:{a.port}" in busy.stderr
    missing = subprocess.run([*raftlab(), "serve", "--port", "0", "--dir",
                              str(tmp_path / "nope")], cwd=ROOT, capture_output=True,
                             text=True, timeout=30)
    assert missing.returncode == 2 and "not a directory" in missing.stderr


def test_new_runs_appear_on_the_index_as_they_land(root: Path, tmp_path: Path) -> None:
    add_run(root, "register", "mixed", 1)
    with served(root, tmp_path / "serve.err") as srv:
        first = get(srv.port, "/").body
        assert first.count(b'<tr class="s-') == 1
        rendered = (root / "index.html").stat().st_mtime_ns
        assert get(srv.port, "/").body == first  # nothing changed: not rendered again
        assert (root / "index.html").stat().st_mtime_ns == rendered
        live = add_running(root, "bank", "kill-leader", 2)
        page = get(srv.port, "/").body
        assert page.count(b'<tr class="s-') == 2 and b'<tr class="s-running">' in page
        listing = get(srv.port, run_path(live, root) + "/")
        assert listing.status == 200 and b"history.jsonl" in listing.body
        shutil.rmtree(live)
        add_run(root, "bank", "kill-leader", 2, invalid=True)
        page = get(srv.port, "/").body
        assert page.count(b'<tr class="s-') == 2 and b'<tr class="s-invalid">' in page
        assert b'<tr class="s-running">' not in page


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stops_cleanly_on_ctrl_c_and_sigterm(root: Path, tmp_path: Path,
                                             sig: signal.Signals) -> None:
    with served(root, tmp_path / "serve.err") as srv:
        assert get(srv.port, "/").status == 200
        idle = socket.create_connection(("127.0.0.1", srv.port))  # a client that idles
        srv.proc.send_signal(sig)
        assert srv.proc.wait(timeout=30) == 0  # the idle client does not hold it up
        idle.close()
    log = srv.log()
    assert "Traceback" not in log and "stopped" in log
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()


def test_another_page_named_index_html_is_served_around_not_over(root: Path,
                                                                 tmp_path: Path) -> None:
    add_run(root, "register", "mixed", 1)
    (root / "index.html").write_text("<p>someone else's page</p>")
    with served(root, tmp_path / "serve.err") as srv:
        r = get(srv.port, "/")
        assert r.status == 200 and b'<tr class="s-valid">' in r.body
    assert (root / "index.html").read_text() == "<p>someone else's page</p>"
