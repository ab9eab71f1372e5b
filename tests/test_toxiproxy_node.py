"""The npm client ``toxiproxy-node-client`` against the built-in Toxiproxy server.

``tests/toxiproxy_node/check.js`` creates a proxy, populates two more, adds, reads,
updates and removes a latency toxic (checking its effect on a real connection), tries
the client's non-existent ``down`` type, disables, resets and deletes, printing one JSON
line per step. Needs Node.js >= 18 and the package installed with
``npm ci --prefix tests/toxiproxy_node``; skipped with that instruction otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from needs import missing

REPO = Path(__file__).resolve().parents[1]
NODE_DIR = Path(__file__).resolve().parent / "toxiproxy_node"
CLIENT = NODE_DIR / "node_modules" / "toxiproxy-node-client" / "package.json"

pytestmark = pytest.mark.timeout(90)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def builtin_url(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "toxiproxy.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "lab.toxiproxy", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(url + "/version", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "built-in toxiproxy did not start: " + (tmp_path / "toxiproxy.log").read_text()
                )
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@pytest.fixture
def echo_port() -> Iterator[int]:
    listener = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield int(listener.getsockname()[1])
    listener.close()


def test_node_client_create_populate_and_toxics(builtin_url: str, echo_port: int) -> None:
    node = shutil.which("node")
    absent = ("node is not installed (Node.js >= 18 is needed for toxiproxy-node-client)"
               if node is None else
               "toxiproxy-node-client is not installed: run npm ci --prefix tests/toxiproxy_node"
               if not CLIENT.exists() else None)
    if absent:
        missing("node", absent)
    assert node is not None
    result = subprocess.run(
        [node, "check.js", builtin_url, f"127.0.0.1:{echo_port}"],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    steps: dict[str, dict[str, Any]] = {}
    for line in result.stdout.splitlines():
        record = json.loads(line)
        steps[record.pop("step")] = record

    assert steps["version"]["version"]
    create = steps["create"]
    assert create["name"] == "node_create"
    assert create["enabled"] is True
    assert not create["listen"].endswith(":0")
    assert steps["populate"] == {"names": ["node_pop_a", "node_pop_b"], "enabled": [True, False]}
    assert steps["getAll"]["names"] == ["node_create", "node_pop_a", "node_pop_b"]
    assert steps["get"] == {"listen": create["listen"], "upstream": f"127.0.0.1:{echo_port}"}
    toxic = {
        "attributes": {"latency": 100, "jitter": 0},
        "name": "lat",
        "stream": "downstream",
        "toxicity": 1,
        "type": "latency",
    }
    assert steps["addToxic"] == toxic
    assert steps["latencyApplied"]["ms"] >= 100
    assert steps["getToxic"] == toxic
    assert steps["updateToxic"] == {
        **toxic,
        "attributes": {"latency": 200, "jitter": 0},
        "toxicity": 0.5,
    }
    assert steps["removeToxic"]["remaining"] == []
    assert steps["removeToxic"]["ms"] < 100
    assert steps["invalidType"]["message"] == "Request failed with status code 400"
    assert steps["disable"]["enabled"] is False
    assert steps["reset"]["enabled"] == [True, True, True]
    assert steps["removeAll"]["names"] == []
    assert "done" in steps
