"""The server object: API listener, proxy collection and data path in one trio task tree."""

from __future__ import annotations

import logging
from pathlib import Path
from random import Random

import trio

from ._api import Api, populate_entries
from ._errors import ApiError
from ._http import serve_connection
from ._jsonio import JsonError, decode
from ._link import FastPath
from ._model import Metrics, PopulateFailed, ProxyCollection, Runtime

__all__ = ["ToxiproxyServer"]

log = logging.getLogger("lab.toxiproxy")


class ToxiproxyServer:
    """A Toxiproxy-compatible server; run it with ``await nursery.start(server.run)``.

    ``host``/``port`` is where the HTTP API listens (port 0 picks a free port; the real
    one is in ``port`` once started). ``config`` is a JSON file applied like
    ``POST /populate`` before the API listens; its errors are only logged, as upstream.
    ``seed`` makes toxicity draws, jitter and slicer cuts reproducible.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8474,
        *,
        config: str | Path | None = None,
        seed: int | None = None,
        proxy_metrics: bool = False,
        runtime_metrics: bool = False,
    ) -> None:
        self.host = host
        self.port = port
        self.config = config
        self.seed = seed
        self.metrics = Metrics(proxy_metrics=proxy_metrics, runtime_metrics=runtime_metrics)
        self._collection: ProxyCollection | None = None

    @property
    def collection(self) -> ProxyCollection:
        assert self._collection is not None, "server not started"
        return self._collection

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def run(
        self, *, task_status: trio.TaskStatus[ToxiproxyServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled; on exit every proxy is stopped (sockets closed)."""
        async with trio.open_nursery() as nursery:
            fast = FastPath()
            nursery.start_soon(fast.run)
            runtime = Runtime(nursery, Random(self.seed), self.metrics, fast)
            collection = ProxyCollection(runtime)
            self._collection = collection
            try:
                if self.config is not None:
                    await self._apply_config(collection, Path(self.config))
                listeners = await trio.open_tcp_listeners(self.port, host=self.host)
                self.port = listeners[0].socket.getsockname()[1]
                api = Api(collection, self.metrics)

                async def serve(stream: trio.SocketStream) -> None:
                    try:
                        await serve_connection(stream, api.handle)
                    except Exception:  # never let one API connection take the server down
                        log.exception("API connection failed")

                log.info("Starting Toxiproxy HTTP server on %s", self.url)
                await nursery.start(trio.serve_listeners, serve, listeners)
                task_status.started(self)
                await trio.sleep_forever()
            finally:
                collection.stop_all()
                nursery.cancel_scope.cancel()

    async def _apply_config(self, collection: ProxyCollection, path: Path) -> None:
        try:
            entries = populate_entries(decode(path.read_bytes()))
            proxies = await collection.populate(entries)
        except OSError as exc:
            log.error("Error reading config file %s: %s", path, exc)
        except JsonError as exc:
            log.error("Failed to populate proxies from file: bad request body: %s", exc)
        except ApiError as exc:
            log.error("Failed to populate proxies from file: %s", exc.message)
        except PopulateFailed as exc:
            log.error("Failed to populate proxies from file: %s", exc.error.message)
        else:
            log.info("Populated %d proxies from file %s", len(proxies), path)
