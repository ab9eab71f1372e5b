"""Toxic types: their attributes, validation, and what each does to a stream of chunks.

A toxic *kind* (``latency``, ``bandwidth``, ...) is stateless behaviour. The link engine
(`_link.py`) runs one *stage* per toxic per connection direction and hands the kind's
``run`` coroutine a `StageIO`, the only way a toxic touches data:

* ``get()`` takes the next chunk from the stage's input (an EOF marker is a chunk whose
  ``data`` is ``None``). The taken chunk becomes the stage's *holding*: the bytes this
  stage owns and has not handed on.
* ``put(chunk, rest)`` hands ``chunk`` to the next stage and makes ``rest`` the new
  holding (``None`` once everything taken has been handed on or dropped).
* ``drop()`` forgets the holding (data a toxic discards on purpose).

The engine may stop a run at any await point (the toxic was updated, removed, or a
neighbour changed). Whatever is still in the holding is then either re-queued in front of
the stage's input (restart) or handed on (removal), so a toxic that keeps its holding
accurate can never lose or reorder bytes. Rules for ``run`` implementations: never await
between taking data and recording it (``get``/``put`` do both atomically), and keep
per-connection state that must survive restarts in ``io.state``.

Times in attributes are milliseconds except slicer ``delay`` (microseconds); bandwidth
``rate`` is KB/s with 1 KB = 1000 bytes. Every attribute is an integer defaulting to 0.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from random import Random
from typing import Protocol

import trio

from ._jsonio import Float32

__all__ = [
    "KINDS",
    "Chunk",
    "StageIO",
    "ToxicKind",
    "slice_bounds",
]


class Chunk:
    """One read from a socket (or a piece of one), stamped with when it entered a stage.

    ``data is None`` marks end of stream. ``ts`` is on trio's clock; latency toxics move
    it forward by the delay they applied so that chained latency toxics add up.
    """

    __slots__ = ("data", "ts")

    def __init__(self, data: bytes | None, ts: float) -> None:
        self.data = data
        self.ts = ts

    def __repr__(self) -> str:
        size = "EOF" if self.data is None else f"{len(self.data)}B"
        return f"Chunk({size}, ts={self.ts:.6f})"


class StageIO(Protocol):
    """What a toxic's ``run`` may do on one link; implemented by the link engine."""

    @property
    def state(self) -> dict[str, float]:
        """Per-connection, per-toxic scratch state that survives restarts of the stage."""
        ...

    @property
    def rng(self) -> Random: ...

    async def get(self, deadline: float = math.inf) -> Chunk | None:
        """Take the next chunk (it becomes the holding); ``None`` once ``deadline`` passes."""
        ...

    async def put(self, chunk: Chunk, rest: Chunk | None = None) -> None:
        """Hand ``chunk`` on (waiting for room downstream); the holding becomes ``rest``."""
        ...

    def drop(self) -> None:
        """Discard the holding."""
        ...

    def finish(self) -> None:
        """Close the link gracefully here: EOF goes on, nothing more is taken."""
        ...

    def schedule_reset(self, when: float) -> None:
        """Abort the whole connection with TCP RST at trio time ``when``."""
        ...


RunFn = Callable[[StageIO, Mapping[str, int]], Awaitable[None]]
ValidateFn = Callable[[Mapping[str, int]], "str | None"]


@dataclass(frozen=True)
class ToxicKind:
    """A registered toxic type.

    ``attributes`` lists the integer attributes in the order the JSON shows them.
    ``queue_chunks``/``queue_bytes`` bound the stage's input queue (latency buffers a lot
    so that it pipelines; everything else holds about one chunk, like upstream's
    unbuffered channels, so back-pressure reaches the sender). ``passthrough`` kinds never
    get a stage task. ``closes_on_remove``: removing the toxic closes the links it sits on
    (timeout: the bytes it dropped would otherwise corrupt the stream).
    """

    name: str
    attributes: tuple[str, ...]
    run: RunFn | None
    validate: ValidateFn
    queue_chunks: int = 1
    queue_bytes: int = 1 << 20
    passthrough: bool = False
    closes_on_remove: bool = False


def _non_negative(*names: str) -> ValidateFn:
    def validate(attrs: Mapping[str, int]) -> str | None:
        for name in names:
            if attrs[name] < 0:
                return f"{name} must not be negative (got {attrs[name]})"
        return None

    return validate


def _ms(value: int) -> float:
    return value / 1000.0


# ---------------------------------------------------------------------------------------
# latency


async def _latency(io: StageIO, attrs: Mapping[str, int]) -> None:
    # Each chunk is released `latency ± jitter` after it was read, not after the previous
    # chunk left: chunks queue up in front of this stage (a large queue), so a stream
    # pipelines through and throughput is not capped by the delay. Order is kept because
    # one task releases them one after the other.
    latency, jitter = attrs["latency"], attrs["jitter"]
    rng = io.rng
    while True:
        chunk = await io.get()
        assert chunk is not None
        if chunk.data is None:
            await io.put(chunk)
            return
        delay = latency
        if jitter > 0:
            delay += rng.randrange(-jitter, jitter)
        release = chunk.ts + _ms(max(delay, 0))
        await trio.sleep_until(release)
        await io.put(Chunk(chunk.data, release))


# ---------------------------------------------------------------------------------------
# bandwidth


async def _bandwidth(io: StageIO, attrs: Mapping[str, int]) -> None:
    # Pace bytes at `rate` KB/s (1 KB = 1000 B) on a virtual transmit clock: each piece of
    # at most 100 ms worth of bytes is released when the clock says it has been "sent".
    # The clock only restarts from `now` after the link went idle, so timer overshoot
    # does not accumulate into a lower rate. Rate 0 holds the first chunk forever (the
    # stream pauses; the engine hands the held chunk on when the toxic is removed).
    rate = attrs["rate"]
    if rate == 0:
        chunk = await io.get()
        assert chunk is not None
        if chunk.data is None:
            await io.put(chunk)
            return
        await trio.sleep_forever()
    bytes_per_second = rate * 1000.0
    piece_max = rate * 100
    free_at = -math.inf
    while True:
        chunk = await io.get()
        assert chunk is not None
        data = chunk.data
        if data is None:
            await io.put(chunk)
            return
        now = trio.current_time()
        if free_at < now:
            free_at = now
        while data:
            piece, data = data[:piece_max], data[piece_max:]
            free_at += len(piece) / bytes_per_second
            await trio.sleep_until(free_at)
            await io.put(Chunk(piece, chunk.ts), Chunk(data, chunk.ts) if data else None)


# ---------------------------------------------------------------------------------------
# slow_close


async def _slow_close(io: StageIO, attrs: Mapping[str, int]) -> None:
    # Data passes; the EOF is held for `delay` ms, counted from when it first arrived (a
    # restart of the stage does not start the wait again).
    while True:
        chunk = await io.get()
        assert chunk is not None
        if chunk.data is None:
            seen = io.state.setdefault("eof_seen", trio.current_time())
            await trio.sleep_until(seen + _ms(attrs["delay"]))
            await io.put(chunk)
            return
        await io.put(chunk)


# ---------------------------------------------------------------------------------------
# timeout


async def _timeout(io: StageIO, attrs: Mapping[str, int]) -> None:
    # Every chunk is dropped from the moment the toxic is active. With timeout > 0 the
    # link closes after that many ms without incoming data (each dropped chunk restarts
    # the timer); timeout 0 is a black hole until the toxic is removed. EOF closes at once.
    timeout = attrs["timeout"]
    while True:
        deadline = trio.current_time() + _ms(timeout) if timeout > 0 else math.inf
        chunk = await io.get(deadline)
        if chunk is None or chunk.data is None:
            io.drop()
            io.finish()
            return
        io.drop()


# ---------------------------------------------------------------------------------------
# reset_peer


async def _reset_peer(io: StageIO, attrs: Mapping[str, int]) -> None:
    # The first chunk (or EOF) arms a reset `timeout` ms later; that chunk and everything
    # after it are dropped. The reset is owned by the connection, so it still fires if
    # the toxic is updated or removed meanwhile (upstream blocks the API call for that
    # long instead).
    chunk = await io.get()
    assert chunk is not None
    io.drop()
    if "armed" not in io.state:
        io.state["armed"] = trio.current_time()
        io.schedule_reset(io.state["armed"] + _ms(attrs["timeout"]))
    while True:
        await io.get()
        io.drop()


# ---------------------------------------------------------------------------------------
# slicer


def slice_bounds(size: int, average: int, variation: int, rng: Random) -> list[int]:
    """Cut points ``[0, ..., size]`` splitting ``size`` bytes into pieces.

    A span longer than ``average + variation`` is halved, the cut moved by a uniform
    offset in ``[-variation, variation)``, and both halves are split again; a span within
    ``average + variation`` is a piece. Requires ``0 <= variation < average`` (which the
    API enforces), which guarantees every cut lies strictly inside its span.
    """
    bounds = [0]
    spans = [(0, size)]
    while spans:
        start, end = spans.pop()
        if (end - start) - average <= variation:
            bounds.append(end)
            continue
        mid = start + (end - start) // 2
        if variation > 0:
            mid += rng.randrange(-variation, variation)
        spans.append((mid, end))
        spans.append((start, mid))
    return bounds


async def _slicer(io: StageIO, attrs: Mapping[str, int]) -> None:
    # Each chunk is cut into pieces of about `average_size` bytes, `delay` microseconds
    # apart. The gap is kept on a deadline clock, so sub-millisecond delays are right on
    # average even though trio's timers wake with millisecond granularity.
    average, variation = attrs["average_size"], attrs["size_variation"]
    gap = attrs["delay"] / 1_000_000.0
    rng = io.rng
    next_at = -math.inf
    while True:
        chunk = await io.get()
        assert chunk is not None
        data = chunk.data
        if data is None:
            await io.put(chunk)
            return
        bounds = slice_bounds(len(data), average, variation, rng)
        for start, end in itertools.pairwise(bounds):
            rest = Chunk(data[end:], chunk.ts) if end < len(data) else None
            await io.put(Chunk(data[start:end], chunk.ts), rest)
            if gap > 0:
                now = trio.current_time()
                if next_at < now - 0.005:  # idle for a while: do not burst to catch up
                    next_at = now
                next_at += gap
                await trio.sleep_until(next_at)


def _validate_slicer(attrs: Mapping[str, int]) -> str | None:
    problem = _non_negative("size_variation", "delay")(attrs)
    if problem:
        return problem
    if attrs["average_size"] <= 0:
        return f"average_size must be greater than 0 (got {attrs['average_size']})"
    if attrs["size_variation"] >= attrs["average_size"]:
        return (
            f"size_variation must be smaller than average_size "
            f"(got {attrs['size_variation']} >= {attrs['average_size']})"
        )
    return None


# ---------------------------------------------------------------------------------------
# limit_data


async def _limit_data(io: StageIO, attrs: Mapping[str, int]) -> None:
    # Forward at most `bytes` bytes per connection (the counter lives in io.state, so it
    # survives restarts), truncating the chunk that crosses the limit, then close.
    limit = attrs["bytes"]
    state = io.state
    while True:
        chunk = await io.get()
        assert chunk is not None
        if chunk.data is None:
            await io.put(chunk)
            return
        remaining = max(limit - int(state.get("sent", 0)), 0)
        data = chunk.data[:remaining]
        if data:
            await io.put(Chunk(data, chunk.ts))
            state["sent"] = state.get("sent", 0) + len(data)
        else:
            io.drop()
        if limit - int(state.get("sent", 0)) <= 0:
            io.drop()
            io.finish()
            return


def _no_attributes(attrs: Mapping[str, int]) -> str | None:
    return None


KINDS: dict[str, ToxicKind] = {
    kind.name: kind
    for kind in (
        ToxicKind(
            "latency",
            ("latency", "jitter"),
            _latency,
            _non_negative("latency", "jitter"),
            queue_chunks=1024,
            queue_bytes=32 << 20,
        ),
        ToxicKind("bandwidth", ("rate",), _bandwidth, _non_negative("rate")),
        ToxicKind("slow_close", ("delay",), _slow_close, _non_negative("delay")),
        ToxicKind(
            "timeout", ("timeout",), _timeout, _non_negative("timeout"), closes_on_remove=True
        ),
        ToxicKind("reset_peer", ("timeout",), _reset_peer, _non_negative("timeout")),
        ToxicKind("slicer", ("average_size", "size_variation", "delay"), _slicer, _validate_slicer),
        ToxicKind("limit_data", ("bytes",), _limit_data, _non_negative("bytes")),
        ToxicKind("noop", (), None, _no_attributes, passthrough=True),
    )
}
"""Every toxic type this server knows, by its API name."""


class Toxic:
    """A toxic as the API sees it. Live connections run it through `Link` stages.

    ``stream`` is kept exactly as the client sent it (it is parsed case-insensitively
    into ``direction``), ``toxicity`` is a float32 like upstream's.
    """

    __slots__ = ("attrs", "direction", "kind", "name", "stream", "toxicity")

    def __init__(
        self,
        name: str,
        kind: ToxicKind,
        stream: str,
        direction: str,
        toxicity: float,
        attrs: dict[str, int],
    ) -> None:
        self.name = name
        self.kind = kind
        self.stream = stream
        self.direction = direction
        self.toxicity = toxicity
        self.attrs = attrs

    def to_json(self) -> dict[str, object]:
        return {
            "attributes": {key: self.attrs[key] for key in self.kind.attributes},
            "name": self.name,
            "type": self.kind.name,
            "stream": self.stream,
            "toxicity": Float32(self.toxicity),
        }
