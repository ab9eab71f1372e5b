"""The Toxiproxy 2.12 HTTP API: routing, request decoding, handlers, responses.

Router rules copied from upstream (gorilla/mux): no trailing-slash redirects; an unknown
path is ``404`` with the plain text ``404 page not found``; a known path with the wrong
method is ``405`` with an empty body. Only matched routes get the request id header, the
browser guard (``User-Agent: Mozilla/...`` → 403) and the 25 s handler timeout (503).

Handlers run one at a time under a lock: every state change is then a single step as
seen by other clients, and none of them waits on the data path (see `_link.py`).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Awaitable, Callable

import trio

from ._errors import (
    ApiError,
    bad_request_body,
    missing_field,
    toxic_already_exists,
    toxic_not_found,
)
from ._http import Request, Response
from ._jsonio import Fields, JsonError, decode, encode, json_kind
from ._model import (
    DIRECTIONS,
    Metrics,
    PopulateEntry,
    PopulateFailed,
    Proxy,
    ProxyCollection,
)
from ._toxics import KINDS, Toxic

__all__ = ["VERSION", "Api", "populate_entries"]

VERSION = "2.12.0"
"""The upstream release whose API this server implements (what ``/version`` reports)."""

HANDLER_TIMEOUT = 25.0

_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_NOSNIFF = ("X-Content-Type-Options", "nosniff")  # Go's http.Error sets it

RouteHandler = Callable[[Request, list[str]], Awaitable[Response]]


def _request_id() -> str:
    # 20 characters of base32hex, the shape of the xid ids upstream uses.
    return base64.b32hexencode(secrets.token_bytes(12)).decode().rstrip("=").lower()


def _json(status: int, value: object) -> Response:
    return Response(status, encode(value), _JSON)


def _error(exc: ApiError) -> Response:
    # Upstream writes the JSON error through Go's http.Error, hence text/plain + nosniff.
    return Response(
        exc.status,
        encode(exc.to_json()) + b"\n",
        _TEXT,
        [_NOSNIFF],
    )


def _body(request: Request) -> object:
    try:
        return decode(request.body)
    except JsonError as exc:
        raise bad_request_body(str(exc)) from None


def _fields(value: object, struct_name: str, go_type: str) -> Fields:
    try:
        return Fields(value, struct_name, go_type=go_type)
    except JsonError as exc:
        raise bad_request_body(str(exc)) from None


def populate_entries(body: object) -> list[PopulateEntry]:
    """Decode and validate a populate body (a JSON array of proxies); raises `ApiError`.

    Validation covers every element before anything is changed: each needs a name and an
    upstream (``missing required field: name at proxy 2``).
    """
    if body is None:
        body = []
    if not isinstance(body, list):
        raise bad_request_body(
            f"json: cannot unmarshal {json_kind(body)} into Go value of type []toxiproxy.Proxy"
        )
    entries: list[PopulateEntry] = []
    try:
        for item in body:
            fields = Fields(item, "Proxy", go_type="toxiproxy.Proxy")
            entries.append(
                PopulateEntry(
                    fields.string("name", ""),
                    fields.string("listen", ""),
                    fields.string("upstream", ""),
                    fields.boolean("enabled", True),
                )
            )
    except JsonError as exc:
        raise bad_request_body(str(exc)) from None
    for index, entry in enumerate(entries, start=1):
        if not entry.name:
            raise missing_field(f"name at proxy {index}")
        if not entry.upstream:
            raise missing_field(f"upstream at proxy {index}")
    return entries


class Api:
    """Turns `Request` into `Response` against a `ProxyCollection`."""

    def __init__(self, collection: ProxyCollection, metrics: Metrics) -> None:
        self.collection = collection
        self.metrics = metrics
        self._lock = trio.Lock()
        # (pattern segments, {method: handler}); "{}" matches one non-empty segment.
        self._routes: list[tuple[tuple[str, ...], dict[str, RouteHandler]]] = [
            (("reset",), {"POST": self.reset}),
            (("proxies",), {"GET": self.proxy_index, "POST": self.proxy_create}),
            (("populate",), {"POST": self.populate}),
            (
                ("proxies", "{}"),
                {
                    "GET": self.proxy_show,
                    "POST": self.proxy_update,
                    "PATCH": self.proxy_update,
                    "DELETE": self.proxy_delete,
                },
            ),
            (("proxies", "{}", "toxics"), {"GET": self.toxic_index, "POST": self.toxic_create}),
            (
                ("proxies", "{}", "toxics", "{}"),
                {
                    "GET": self.toxic_show,
                    "POST": self.toxic_update,
                    "PATCH": self.toxic_update,
                    "DELETE": self.toxic_delete,
                },
            ),
            (("version",), {"GET": self.version}),
        ]

    def _match(self, path: str) -> tuple[dict[str, RouteHandler], list[str]] | None:
        if not path.startswith("/"):
            return None
        segments = path[1:].split("/")
        if self.metrics.enabled and segments == ["metrics"]:
            return {"*": self.metrics_handler}, []
        for pattern, methods in self._routes:
            if len(pattern) != len(segments):
                continue
            params: list[str] = []
            for want, got in zip(pattern, segments, strict=True):
                if want == "{}":
                    if not got:
                        break
                    params.append(got)
                elif want != got:
                    break
            else:
                return methods, params
        return None

    async def handle(self, request: Request) -> Response:
        """Answer one request (never raises for anything a client can send)."""
        matched = self._match(request.path)
        if matched is None:
            return Response(404, b"404 page not found\n", _TEXT, [_NOSNIFF])
        methods, params = matched
        handler = methods.get(request.method) or methods.get("*")
        if handler is None:
            return Response(405)
        request_id = _request_id()
        if request.header("user-agent").startswith("Mozilla/"):
            response = Response(403, b"User agent not allowed\n", _TEXT, [_NOSNIFF])
        else:
            response = Response(503)
            with trio.move_on_after(HANDLER_TIMEOUT):
                async with self._lock:
                    try:
                        response = await handler(request, params)
                    except ApiError as exc:
                        response = _error(exc)
        response.headers.append(("X-Toxiproxy-Request-Id", request_id))
        return response

    # -- proxies --------------------------------------------------------------------------------

    async def proxy_index(self, request: Request, params: list[str]) -> Response:
        proxies = self.collection.proxies
        # Go marshals a map with its keys sorted.
        return _json(200, {name: proxies[name].to_json() for name in sorted(proxies)})

    async def proxy_create(self, request: Request, params: list[str]) -> Response:
        fields = _fields(_body(request), "Proxy", "toxiproxy.Proxy")
        try:
            name = fields.string("name", "")
            listen = fields.string("listen", "")
            upstream = fields.string("upstream", "")
            enabled = fields.boolean("enabled", True)
        except JsonError as exc:
            raise bad_request_body(str(exc)) from None
        if not name:
            raise missing_field("name")
        if not upstream:
            raise missing_field("upstream")
        proxy = self.collection.new(name, listen, upstream)
        await self.collection.add(proxy, enabled)
        return _json(201, proxy.to_json())

    async def populate(self, request: Request, params: list[str]) -> Response:
        try:
            entries = populate_entries(_body(request))
            proxies = await self.collection.populate(entries)
        except ApiError as exc:
            return _json(exc.status, {**exc.to_json(), "proxies": []})
        except PopulateFailed as failed:
            body = {**failed.error.to_json(), "proxies": [p.to_json() for p in failed.done]}
            return _json(failed.error.status, body)
        return _json(201, {"proxies": [p.to_json() for p in proxies]})

    async def proxy_show(self, request: Request, params: list[str]) -> Response:
        return _json(200, self.collection.get(params[0]).to_json())

    async def proxy_update(self, request: Request, params: list[str]) -> Response:
        proxy = self.collection.get(params[0])
        fields = _fields(_body(request), "Proxy", "toxiproxy.Proxy")
        try:
            listen = fields.string("listen", proxy.listen)
            upstream = fields.string("upstream", proxy.upstream)
            enabled = fields.boolean("enabled", proxy.enabled)
        except JsonError as exc:
            raise bad_request_body(str(exc)) from None
        await proxy.update(listen, upstream, enabled)
        return _json(200, proxy.to_json())

    async def proxy_delete(self, request: Request, params: list[str]) -> Response:
        self.collection.remove(params[0])
        return Response(204)

    async def reset(self, request: Request, params: list[str]) -> Response:
        await self.collection.reset()
        return Response(204)

    async def version(self, request: Request, params: list[str]) -> Response:
        body = f'{{"version": "{VERSION}"}}\n'.encode()
        return Response(200, body, "application/json;charset=utf-8")

    async def metrics_handler(self, request: Request, params: list[str]) -> Response:
        body = self.metrics.render().encode()
        return Response(200, body, "text/plain; version=0.0.4; charset=utf-8")

    # -- toxics ---------------------------------------------------------------------------------

    async def toxic_index(self, request: Request, params: list[str]) -> Response:
        proxy = self.collection.get(params[0])
        return _json(200, [t.to_json() for t in proxy.toxics()])

    async def toxic_create(self, request: Request, params: list[str]) -> Response:
        proxy = self.collection.get(params[0])
        fields = _fields(_body(request), "ToxicWrapper", "toxics.ToxicWrapper")
        try:
            name = fields.string("name", "")
            type_name = fields.string("type", "")
            stream = fields.string("stream", "downstream")
            toxicity = fields.float32("toxicity", 1.0)
            attributes = fields.sub("attributes", "ToxicWrapper.attributes", "toxics.Toxic")
        except JsonError as exc:
            raise bad_request_body(str(exc)) from None
        direction = stream.lower()
        if direction not in DIRECTIONS:
            raise ApiError("stream was invalid, can be either upstream or downstream", 400)
        if not name:
            name = f"{type_name}_{stream}"
        kind = KINDS.get(type_name)
        if kind is None:
            raise ApiError("invalid toxic type", 400)
        if proxy.find_toxic(name) is not None:
            raise toxic_already_exists()
        attrs = {key: 0 for key in kind.attributes}
        if attributes is not None:
            try:
                for key in kind.attributes:
                    attrs[key] = attributes.int64(key, 0)
            except JsonError as exc:
                raise bad_request_body(str(exc)) from None
        problem = kind.validate(attrs)
        if problem:
            raise bad_request_body(f"{kind.name}: {problem}")
        toxic = Toxic(name, kind, stream, direction, toxicity, attrs)
        proxy.add_toxic(toxic)
        return _json(200, toxic.to_json())

    def _toxic(self, params: list[str]) -> tuple[Proxy, Toxic]:
        proxy = self.collection.get(params[0])
        toxic = proxy.find_toxic(params[1])
        if toxic is None:
            raise toxic_not_found()
        return proxy, toxic

    async def toxic_show(self, request: Request, params: list[str]) -> Response:
        _, toxic = self._toxic(params)
        return _json(200, toxic.to_json())

    async def toxic_update(self, request: Request, params: list[str]) -> Response:
        proxy, toxic = self._toxic(params)
        fields = _fields(_body(request), "ToxicWrapper", "toxics.ToxicWrapper")
        attrs = dict(toxic.attrs)
        try:
            toxicity = fields.float32("toxicity", toxic.toxicity)
            attributes = fields.sub("attributes", "ToxicWrapper.attributes", "toxics.Toxic")
            if attributes is not None:
                for key in toxic.kind.attributes:
                    attrs[key] = attributes.int64(key, attrs[key])
        except JsonError as exc:
            raise bad_request_body(str(exc)) from None
        problem = toxic.kind.validate(attrs)
        if problem:
            raise bad_request_body(f"{toxic.kind.name}: {problem}")
        proxy.update_toxic(toxic, attrs, toxicity)
        return _json(200, toxic.to_json())

    async def toxic_delete(self, request: Request, params: list[str]) -> Response:
        proxy, toxic = self._toxic(params)
        proxy.remove_toxic(toxic)
        return Response(204)
