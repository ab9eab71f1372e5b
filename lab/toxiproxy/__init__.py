"""Raftlab's built-in Toxiproxy-compatible server (the HTTP API of Toxiproxy 2.12).

Run it with ``python -m lab.toxiproxy --host 127.0.0.1 --port 8474`` (see `cli`), or in
process::

    async with trio.open_nursery() as nursery:
        server = await nursery.start(ToxiproxyServer("127.0.0.1", 0).run)
        ...  # server.url is the API address

It is meant for any client of upstream Toxiproxy; ``toxiproxy-python`` and
``toxiproxy-node-client`` are tested against it (the Go client and ``toxiproxy-cli`` are
not available here and untested). What it implements and where it deviates from
upstream is ``docs/toxiproxy.md``; ``tests/test_toxiproxy_conformance.py`` holds it to
that. Modules: `_api` (routes, handlers), `_http` (HTTP/1.1 on
trio), `_model` (proxies, toxics, populate/reset), `_link` (the data path and the toxic
pipeline), `_toxics` (what each toxic does), `_addr` (Go-style ``host:port``),
`_jsonio` (Go-style JSON).

Deviations from upstream 2.12.0, all deliberate:

* **Refused with 400** (``bad request body: <type>: ...``) instead of crashing or hanging
  the real server: slicer ``average_size <= 0`` or ``size_variation >= average_size``
  (upstream recurses forever or panics, issue #541), and any negative attribute
  (latency, jitter, rate, delay, timeout, bytes, size_variation; a negative
  bandwidth rate panics upstream).
* **Integral floats** such as ``1000.0`` are accepted for integer attributes (upstream
  refuses every JSON number with a fraction part or exponent).
* **``/populate`` never returns ``"proxies": null``**: an empty or failed-early populate
  gives ``[]`` (the Node client iterates the list). Error bodies of ``/populate`` carry
  ``"proxies"`` as upstream does. For an existing proxy kept unchanged, the response
  shows that proxy as it is (bound address, toxics).
* **Control requests never wait for the data path.** Reconfiguring a link is
  synchronous: removing a toxic hands what it held to the next stage at once, even when
  the destination does not read (upstream waits up to 5 s per write, and used to hang,
  issues #159, #210).
* **reset_peer**: the RST (``SO_LINGER {1, 0}``) is set at the moment of the reset, not
  at accept time. So connections opened before the toxic was added are reset too, and a
  toxicity-0 reset_peer no longer turns every normal close into an RST (issue #603).
  A reset already armed still fires if the toxic is removed, but the API call does not
  block until it does.
* **Restarting a stage** (toxic updated, toxicity redrawn because a neighbour changed)
  re-queues the data the stage held instead of releasing it early: a latency toxic
  restarted mid-wait still releases the chunk at its original deadline.
* **Timing**: trio's timers wake with millisecond granularity, so slicer delays below
  1 ms (``delay`` is in microseconds) are right on average but released in small bursts.
  Latency chunks are up to 64 KiB (upstream reads 32 KiB), which only matters for jitter
  (one draw per chunk).
* Addresses: a proxy ``listen`` of ``0.0.0.0:P`` binds IPv4 only and is reported as
  ``0.0.0.0:P`` (Go binds dual-stack and reports ``[::]:P``); an empty host or ``::``
  binds dual-stack and reports ``[::]:P`` as upstream does.
* HTTP: request heads are limited to 64 KiB and bodies to 16 MiB; request bodies with
  ``Transfer-Encoding`` are refused with 411; a missing ``Host`` header is tolerated.
* The API binds 127.0.0.1 by default (upstream: ``localhost``); ``/version`` reports
  ``2.12.0``; ``-seed`` really seeds the randomness (upstream ignores it); the
  ``"Logger": {}`` member the Go server leaks into proxy JSON is not emitted;
  ``-runtime-metrics`` exposes process metrics, not Go runtime ones.
"""

from ._api import VERSION
from ._server import ToxiproxyServer
from .cli import main

__all__ = ["VERSION", "ToxiproxyServer", "main"]
