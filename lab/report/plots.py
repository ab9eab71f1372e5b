"""Inline SVG plots for the run page: latency, throughput, the cluster's leaders and terms,
and the failing window of a non-linearizable key.

Every time plot shares one x axis (seconds since the run started) and draws each fault
as a shaded band labelled above the plot area. Large histories are downsampled without
visible loss: latency points that would land on the same pixel with the same colour and
shape are drawn once, and throughput is binned to at most ``MAX_BINS`` bins.

Each function returns SVG markup (a string of trusted, escaped text).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from lab.rundata import Fault, Operation

W = 960
LEFT, RIGHT = 70, 20
LANE_H = 15  # height of one row of fault labels
CHAR_W = 6.3  # average width of a label character at 11 px
MAX_POINTS = 20_000
MAX_BINS = 90
TYPE_COLOURS = {"ok": "#2a7ab9", "info": "#e69f00", "fail": "#d6336c", "pending": "#8d6e63"}
TYPE_ORDER = ("ok", "info", "pending", "fail")  # drawing order: rare ones on top
ROLE_COLOURS = {"leader": "#1b9e77", "follower": "#cfe8dd", "candidate": "#f4a259",
                "pre-candidate": "#f7c99b", "down": "#5f6368", "unreachable": "#c4c4c4"}
NODE_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
                "#8c564b", "#e377c2", "#7f7f7f")
WINDOW_STEP = 26  # minimum pixels between two events of the failing window
SHAPES = ("circle", "square", "triangle", "diamond", "cross")


@dataclass(frozen=True)
class Scale:
    """Maps a data interval onto a pixel interval, linearly or by log10."""

    d0: float
    d1: float
    r0: float
    r1: float
    log: bool = False

    def __call__(self, v: float) -> float:
        if self.log:
            a, b, v = math.log10(self.d0), math.log10(self.d1), math.log10(max(v, self.d0))
        else:
            a, b = self.d0, self.d1
        if b == a:
            return self.r0
        return self.r0 + (v - a) * (self.r1 - self.r0) / (b - a)


@dataclass(frozen=True)
class Frame:
    """The layout shared by the time plots: x scale, plot area and fault label rows."""

    x: Scale
    top: float  # top of the plot area (below the fault labels)
    bottom: float
    lanes: list[int]  # label row of each fault


def time_frame(faults: Sequence[Fault], t_max_s: float, height: float) -> Frame:
    """A frame for a time plot whose plot area is ``height`` pixels tall."""
    x = Scale(0.0, max(t_max_s, 1.0), LEFT, W - RIGHT)
    lanes = _label_lanes(faults, x)
    top = 14 + (max(lanes, default=-1) + 1) * LANE_H
    return Frame(x, top, top + height, lanes)


def _label_lanes(faults: Sequence[Fault], x: Scale) -> list[int]:
    """Give each fault label the first row where it does not overlap an earlier one."""
    ends: list[float] = []
    lanes = []
    for f in faults:
        x0 = x(f.start / 1e9)
        width = len(f.label) * CHAR_W + 8
        for k, e in enumerate(ends):
            if e <= x0:
                ends[k] = x0 + width
                lanes.append(k)
                break
        else:
            ends.append(x0 + width)
            lanes.append(len(ends) - 1)
    return lanes


def svg_open(height: float, label: str, frame: Frame, kind: str) -> str:
    """The opening ``<svg>`` tag of a time plot, carrying its scale for the page's script."""
    data = (f' data-x0="{frame.x.r0:g}" data-x1="{frame.x.r1:g}" data-t0="{frame.x.d0:g}"'
            f' data-t1="{frame.x.d1:g}" data-top="{frame.top:g}" data-bottom="{frame.bottom:g}"')
    return (f'<svg class="plot {kind}" viewBox="0 0 {W} {height:g}" width="100%" '
            f'role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg"'
            f'{data}>')


# --------------------------------------------------------------------------- axes


def nice_ticks(lo: float, hi: float, count: int = 8) -> list[float]:
    """Round tick values covering [lo, hi]: steps of 1, 2 or 5 times a power of ten."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    ticks, v = [], first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks


def fmt_ms(ms: float) -> str:
    """A latency for an axis: ``100 µs``, ``5 ms``, ``2 s``."""
    if ms >= 1000:
        return f"{ms / 1000:g} s"
    if ms < 1:
        return f"{ms * 1000:g} µs"
    return f"{ms:g} ms"


def x_axis(f: Frame, title: str = "time since the run started (s)") -> str:
    """Vertical grid lines, tick labels and the axis title under the plot area."""
    out = []
    for t in nice_ticks(f.x.d0, f.x.d1, 12):
        px = f.x(t)
        out.append(f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{f.top:g}" '
                   f'y2="{f.bottom:g}"/><text class="tick" x="{px:.1f}" y="{f.bottom + 14:g}" '
                   f'text-anchor="middle">{t:g}</text>')
    out.append(f'<text class="axis-title" x="{(f.x.r0 + f.x.r1) / 2:g}" y="{f.bottom + 30:g}" '
               f'text-anchor="middle">{escape(title)}</text>')
    out.append(f'<line class="axis" x1="{f.x.r0:g}" x2="{f.x.r1:g}" y1="{f.bottom:g}" '
               f'y2="{f.bottom:g}"/>')
    return "".join(out)


def y_axis(f: Frame, y: Scale, ticks: Iterable[float], fmt: Callable[[float], str],
           title: str) -> str:
    """Horizontal grid lines, tick labels and the rotated axis title left of the plot."""
    out = []
    for v in ticks:
        py = y(v)
        out.append(f'<line class="grid" x1="{f.x.r0:g}" x2="{f.x.r1:g}" y1="{py:.1f}" '
                   f'y2="{py:.1f}"/><text class="tick" x="{f.x.r0 - 6:g}" y="{py + 4:.1f}" '
                   f'text-anchor="end">{escape(fmt(v))}</text>')
    mid = (f.top + f.bottom) / 2
    out.append(f'<text class="axis-title" transform="translate(14 {mid:g}) rotate(-90)" '
               f'text-anchor="middle">{escape(title)}</text>')
    out.append(f'<line class="axis" x1="{f.x.r0:g}" x2="{f.x.r0:g}" y1="{f.top:g}" '
               f'y2="{f.bottom:g}"/>')
    return "".join(out)


def fault_bands(faults: Sequence[Fault], f: Frame, t_end_ns: int) -> str:
    """Each fault as a shaded band over the plot area, labelled in the rows above it."""
    out = ['<g class="faults">']
    for fault, lane in zip(faults, f.lanes, strict=True):
        x0 = f.x(fault.start / 1e9)
        end = fault.end if fault.end is not None else t_end_ns
        x1 = f.x(end / 1e9)
        ly = f.top - (lane + 1) * LANE_H + 11
        title = escape(describe_fault(fault))
        cls = f"band band-{fault.kind}" + (" skipped" if fault.skipped else "")
        out.append(f'<g class="fault" data-start="{fault.start / 1e9:.3f}" '
                   f'data-end="{end / 1e9:.3f}"><title>{title}</title>')
        if x1 - x0 >= 1.5:
            out.append(f'<rect class="{cls}" x="{x0:.1f}" y="{ly - 11:g}" '
                       f'width="{x1 - x0:.1f}" height="{f.bottom - ly + 11:g}"/>')
        else:
            out.append(f'<line class="{cls} instant" x1="{x0:.1f}" x2="{x0:.1f}" '
                       f'y1="{ly - 11:g}" y2="{f.bottom:g}"/>')
        out.append(f'<text class="band-label" x="{x0 + 3:.1f}" y="{ly:g}">'
                   f'{escape(fault.label)}</text></g>')
    out.append("</g>")
    return "".join(out)


def describe_fault(f: Fault) -> str:
    """A fault in one line, for tooltips: what, when, whom."""
    when = f"{f.start / 1e9:.2f} s"
    if f.skipped:
        return f"{f.label}: skipped at {when} ({f.skipped})"
    when += f" to {f.end / 1e9:.2f} s" if f.end is not None else " until the end"
    links = ", ".join(f"{a}→{b}" for a, b in f.links[:12])
    more = " …" if len(f.links) > 12 else ""
    params = ", ".join(f"{k}={v}" for k, v in f.params.items() if k != "sites")
    parts = [f"{f.label}: {when}", f"links {links}{more}" if links else "", params]
    return "; ".join(p for p in parts if p)


def legend(items: Sequence[tuple[str, str]], x: float, y: float) -> str:
    """A row of (swatch markup at 0,0, label) legend entries starting at (x, y)."""
    out = [f'<g class="legend" transform="translate({x:g} {y:g})">']
    cx = 0.0
    for swatch, label in items:
        out.append(f'<g transform="translate({cx:g} 0)">{swatch}'
                   f'<text x="10" y="4">{escape(label)}</text></g>')
        cx += 22 + len(label) * CHAR_W
    out.append("</g>")
    return "".join(out)


def _line_swatch(colour: str) -> str:
    return f'<line x1="-6" x2="6" y1="0" y2="0" stroke="{colour}" stroke-width="2.5"/>'


def _box_swatch(colour: str, cls: str = "") -> str:
    return (f'<rect x="-6" y="-5" width="12" height="10" fill="{colour}" '
            f'class="legend-swatch {cls}"/>')


def _band_legend(faults: Sequence[Fault]) -> list[tuple[str, str]]:
    """Legend entries for the kinds of fault present."""
    kinds = {f.kind for f in faults}
    return [(f'<rect x="-6" y="-5" width="12" height="10" class="band band-{k}"/>', label)
            for k, label in (("process", "process fault"), ("network", "network fault"),
                             ("slow", "slow links"), ("other", "other fault")) if k in kinds]


# --------------------------------------------------------------------------- latency


def _marker(shape: str, x: int, y: int) -> str:
    """Path data for one marker centred at (x, y)."""
    if shape in ("circle", "square"):
        return f"M{x} {y}h0"
    if shape == "triangle":
        return f"M{x} {y - 3}l3 5h-6z"
    if shape == "diamond":
        return f"M{x} {y - 3}l3 3-3 3-3-3z"
    return f"M{x - 3} {y}h6M{x} {y - 3}v6"


def _series_path(shape: str, colour: str, d: str) -> str:
    if shape == "circle":
        style = f'fill="none" stroke="{colour}" stroke-width="4.5" stroke-linecap="round"'
    elif shape == "square":
        style = f'fill="none" stroke="{colour}" stroke-width="4" stroke-linecap="square"'
    elif shape == "cross":
        style = f'fill="none" stroke="{colour}" stroke-width="1.6"'
    else:
        style = f'fill="{colour}" stroke="none"'
    return f'<path class="pts" {style} d="{d}"/>'


def latency_plot(ops: Sequence[Operation], faults: Sequence[Fault], t_end_ns: int) -> str:
    """Latency of every completed operation against its invoke time, log scale, coloured
    by outcome and shaped by function (Jepsen's latency-raw)."""
    done = [op for op in ops if op.end is not None]
    f = time_frame(faults, t_end_ns / 1e9, 260)
    lats = [max(op.end - op.start, 1) / 1e6 for op in done if op.end is not None]
    lo = 10 ** math.floor(math.log10(max(min(lats, default=1.0), 0.001)))
    hi = 10 ** math.ceil(math.log10(max(max(lats, default=10.0), lo * 10)))
    y = Scale(lo, hi, f.bottom, f.top, log=True)
    fs = _functions(done)
    shape_of = {fn: SHAPES[k % len(SHAPES)] for k, fn in enumerate(fs)}
    height = f.bottom + 62
    out = [svg_open(height, "latency of every operation over time", f, "latency"),
           fault_bands(faults, f, t_end_ns), x_axis(f),
           y_axis(f, y, _decades(lo, hi), fmt_ms, "latency (log scale)")]
    out.append(_latency_points(done, f, y, shape_of))
    if not done:
        out.append(_empty_note(f, "no completed operations"))
    items = [(_series_path("circle", TYPE_COLOURS[t], "M0 0h0"), t) for t in TYPE_ORDER
             if t != "pending"]
    items += [(_series_path(shape_of[fn], "#555", _marker(shape_of[fn], 0, 0)), fn)
              for fn in fs]
    out.append(legend(items + _band_legend(faults), LEFT, f.bottom + 50))
    out.append("</svg>")
    return "".join(out)


def _latency_points(done: Sequence[Operation], f: Frame, y: Scale,
                    shape_of: dict[str, str]) -> str:
    """One path per (outcome, function), with at most one marker per grid cell."""
    # The scales inlined: this loop runs once per operation.
    xa, xb = f.x.r0, (f.x.r1 - f.x.r0) / ((f.x.d1 - f.x.d0) * 1e9)
    ylo = math.log10(y.d0)
    yb = (y.r1 - y.r0) / (math.log10(y.d1) - ylo)
    ya, log10 = y.r0 - ylo * yb - 6 * yb, math.log10  # latency in ns: log10(ms) = log10(ns) - 6
    points = [(op.type, op.f, xa + op.start * xb, ya + log10(max(op.end - op.start, 1)) * yb)
              for op in done if op.end is not None]
    cell = 1
    while True:
        series: dict[tuple[str, str], dict[tuple[int, int], None]] = defaultdict(dict)
        for typ, fn, px, py in points:
            series[(typ, fn)][(int(px / cell) * cell, int(py / cell) * cell)] = None
        if sum(map(len, series.values())) <= MAX_POINTS or cell >= 4:
            break
        cell += 1
    out = ['<g class="points">']
    for t in TYPE_ORDER:
        for fn, shape in shape_of.items():
            cells = series.get((t, fn))
            if cells:
                d = "".join(_marker(shape, px, py) for px, py in cells)
                out.append(_series_path(shape, TYPE_COLOURS[t], d))
    out.append("</g>")
    return "".join(out)


def _functions(ops: Iterable[Operation]) -> list[str]:
    """Operation functions, most frequent first."""
    count: dict[str, int] = defaultdict(int)
    for op in ops:
        count[op.f] += 1
    return sorted(count, key=lambda fn: (-count[fn], fn))


def _decades(lo: float, hi: float) -> list[float]:
    out, v = [], lo
    while v <= hi * 1.0001:
        out.append(v)
        v *= 10
    return out


def _empty_note(f: Frame, text: str) -> str:
    return (f'<text class="empty" x="{(f.x.r0 + f.x.r1) / 2:g}" y="{(f.top + f.bottom) / 2:g}" '
            f'text-anchor="middle">{escape(text)}</text>')


# --------------------------------------------------------------------------- throughput


def bin_width(t_max_s: float) -> float:
    """A round bin width giving at most ``MAX_BINS`` bins over the run."""
    for w in (0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600):
        if t_max_s / w <= MAX_BINS:
            return w
    return t_max_s / MAX_BINS


def throughput_plot(ops: Sequence[Operation], faults: Sequence[Fault], t_end_ns: int) -> str:
    """Completions per second over time, one line per outcome (Jepsen's rate graph)."""
    t_max = max(t_end_ns / 1e9, 1.0)
    w = bin_width(t_max)
    n = math.ceil(t_max / w) + 1
    counts: dict[str, list[int]] = {t: [0] * n for t in TYPE_COLOURS}
    for op in ops:
        if op.end is not None:
            counts[op.type][min(int(op.end / 1e9 / w), n - 1)] += 1
    peak = max((c / w for series in counts.values() for c in series), default=0.0)
    f = time_frame(faults, t_max, 170)
    top = max(nice_ticks(0, max(peak, 1.0), 5)[-1], max(peak, 1.0))
    y = Scale(0, top, f.bottom, f.top)
    out = [svg_open(f.bottom + 62, "throughput over time", f, "throughput"),
           fault_bands(faults, f, t_end_ns), x_axis(f),
           y_axis(f, y, nice_ticks(0, top, 5), lambda v: f"{v:g}",
                  f"completions / s ({w:g} s bins)")]
    items = []
    for t in ("ok", "fail", "info"):
        if any(counts[t]):
            pts = " ".join(f"{f.x((k + 0.5) * w):.1f},{y(c / w):.1f}"
                           for k, c in enumerate(counts[t]))
            out.append(f'<polyline class="rate" fill="none" stroke="{TYPE_COLOURS[t]}" '
                       f'stroke-width="1.8" points="{pts}"/>')
            items.append((_line_swatch(TYPE_COLOURS[t]), t))
    if not items:
        out.append(_empty_note(f, "no completed operations"))
    out.append(legend(items + _band_legend(faults), LEFT, f.bottom + 50))
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------- cluster


def _role(p: dict[str, Any]) -> str:
    if p.get("alive") is False:
        return "down"
    role = p.get("role")
    if p.get("reachable") is False or not isinstance(role, str):
        return "unreachable"
    return role if role in ROLE_COLOURS else "follower"


def _runs(samples: Sequence[tuple[float, Any]], t_end: float) -> list[tuple[float, float, Any]]:
    """Consecutive samples with the same value merged into (start, end, value) runs."""
    out: list[tuple[float, float, Any]] = []
    for k, (t, v) in enumerate(samples):
        nxt = samples[k + 1][0] if k + 1 < len(samples) else t_end
        if out and out[-1][2] == v:
            out[-1] = (out[-1][0], nxt, v)
        else:
            out.append((t, nxt, v))
    return out


def cluster_plot(polls: Sequence[dict[str, Any]], faults: Sequence[Fault],
                 t_end_ns: int) -> str:
    """Each member's role (a lane per node) and term (a step line per node) over time."""
    by_node: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for p in polls:
        by_node[p["node"]].append(p)
    nodes = sorted(by_node)
    lane_h, gap, term_h = 20, 4, 110
    f = time_frame(faults, t_end_ns / 1e9, len(nodes) * (lane_h + gap) + 16 + term_h)
    t_end = max(t_end_ns / 1e9, 1.0)
    terms = [int(p.get("term") or 0) for p in polls if isinstance(p.get("term"), int)]
    term_lo, term_hi = min(terms, default=0), max(terms, default=1)
    y = Scale(term_lo, max(term_hi, term_lo + 1), f.bottom, f.bottom - term_h + 8)
    out = [svg_open(f.bottom + 62, "role and term of every member over time", f, "cluster"),
           fault_bands(faults, f, t_end_ns), x_axis(f)]
    for k, node in enumerate(nodes):
        top = f.top + 4 + k * (lane_h + gap)
        out.append(_role_lane(node, by_node[node], f, top, lane_h, t_end))
        nudge = (k - (len(nodes) - 1) / 2) * 2.5  # keep equal terms apart
        out.append(_term_line(by_node[node], f, y, NODE_COLOURS[k % len(NODE_COLOURS)],
                              t_end, nudge))
    ticks = nice_ticks(term_lo, max(term_hi, term_lo + 1), 4)
    ticks = [t for t in ticks if t == int(t)]
    out.append(y_axis(Frame(f.x, f.bottom - term_h + 8, f.bottom, f.lanes), y, ticks,
                      lambda v: f"{v:g}", "term"))
    if not nodes:
        out.append(_empty_note(f, "no cluster polls recorded (cluster.jsonl)"))
    items = [(_box_swatch(c), r) for r, c in ROLE_COLOURS.items()]
    items += [(_line_swatch(NODE_COLOURS[k % len(NODE_COLOURS)]), f"term of {n}")
              for k, n in enumerate(nodes)]
    out.append(legend(items, LEFT - 50, f.bottom + 50))
    out.append("</svg>")
    return "".join(out)


def _role_lane(node: str, polls: list[dict[str, Any]], f: Frame, top: float, h: float,
               t_end: float) -> str:
    out = [f'<text class="lane-label" x="{LEFT - 6}" y="{top + h / 2 + 4:g}" '
           f'text-anchor="end">{escape(node)}</text>']
    samples = [(p["time"] / 1e9, (_role(p), p.get("term"))) for p in polls]
    for t0, t1, (role, term) in _runs(samples, t_end):
        x0, x1 = f.x(t0), f.x(t1)
        tip = f"{node}: {role}" + (f", term {term}" if term is not None else "")
        tip += f", {t0:.2f} to {t1:.2f} s"
        out.append(f'<rect class="role role-{role}" x="{x0:.1f}" y="{top:g}" '
                   f'width="{max(x1 - x0, 0.5):.1f}" height="{h:g}" '
                   f'fill="{ROLE_COLOURS[role]}"><title>{escape(tip)}</title></rect>')
        if role == "leader" and x1 - x0 > 34:
            out.append(f'<text class="in-lane" x="{x0 + 4:.1f}" y="{top + h / 2 + 4:g}">'
                       f'leader t{term}</text>')
    return "".join(out)


def _term_line(polls: list[dict[str, Any]], f: Frame, y: Scale, colour: str,
               t_end: float, nudge: float) -> str:
    samples = [(p["time"] / 1e9, p["term"]) for p in polls if isinstance(p.get("term"), int)]
    if not samples:
        return ""
    pts = []
    for t0, t1, term in _runs(samples, t_end):
        py = y(term) + nudge
        pts.append(f"{f.x(t0):.1f},{py:.1f} {f.x(t1):.1f},{py:.1f}")
    return (f'<polyline class="term" fill="none" stroke="{colour}" stroke-width="2" '
            f'points="{" ".join(pts)}"/>')


# --------------------------------------------------------------------------- failing window


@dataclass
class WindowOp:
    """One bar of the failing-window picture."""

    op: Operation
    role: str  # "blocked", "involved", "linearized", "other"
    order: int | None = None  # position in the longest linearizable prefix


def op_text(op: Operation) -> str:
    """An operation in a few characters: ``w 3``, ``r 1``, ``cas 1→2``."""
    v = op.value
    if op.f == "cas" and isinstance(v, list) and len(v) == 2:
        return f"cas {_short(v[0])}→{_short(v[1])}"
    if op.f == "read":
        return "r " + (_short(v) if op.type == "ok" else "?")
    if op.f == "write":
        return f"w {_short(v)}"
    return f"{op.f} {_short(v)}"


def _short(v: Any) -> str:
    s = "nil" if v is None else str(v)
    return s if len(s) <= 12 else s[:11] + "…"


def window_plot(bars: Sequence[WindowOp], key: Any) -> str:
    """Porcupine-style picture: the operations on ``key`` around the one that cannot be
    placed, as bars per process, each labelled with its value.

    Like Porcupine, the x axis is the order of the invocations and completions rather
    than raw time: that order is all linearizability depends on, and it keeps a 2 ms
    operation as readable as a 2 s one. Ticks give the real time of some events."""
    if not bars:
        return ""
    t0 = min(b.op.start for b in bars)
    moments = sorted({b.op.start for b in bars} | {e for b in bars
                                                    if (e := _known_end(b.op)) is not None})
    rank = {t: k for k, t in enumerate(moments)}
    procs = sorted({b.op.process for b in bars}, key=lambda p: (str(type(p)), p))
    step = max(WINDOW_STEP, (W - 110 - RIGHT) / (len(moments) + 1))
    width = 110 + step * (len(moments) + 1) + RIGHT
    row_h, top = 26, 12
    bottom = top + len(procs) * row_h
    out = [f'<svg class="plot window" viewBox="0 0 {width:.0f} {bottom + 64}" '
           f'width="{width:.0f}" role="img" aria-label="operations on key {escape(str(key))} '
           f'around the failure" xmlns="http://www.w3.org/2000/svg">']
    out.append(_window_axis(moments, t0, step, top, bottom))
    for k, p in enumerate(procs):
        out.append(f'<text class="lane-label" x="104" y="{top + k * row_h + 17}" '
                   f'text-anchor="end">process {escape(str(p))}</text>')
    for b in bars:
        x0 = 110 + step * (rank[b.op.start] + 0.5)
        end = _known_end(b.op)
        x1 = 110 + step * (rank[end] + 0.5 if end is not None else len(moments) + 0.9)
        out.append(_window_bar(b, x0, x1, top + procs.index(b.op.process) * row_h, t0))
    items = [(_box_swatch("#d6336c", "bar bar-blocked"), "cannot be placed"),
             (_box_swatch("#f6c177", "bar bar-involved"), "named in the explanation"),
             (_box_swatch("#9ec5e8", "bar bar-linearized"), "linearized (order shown)"),
             (_box_swatch("#e4e4e4", "bar bar-other"), "concurrent, not involved"),
             (_box_swatch("#ffffff", "bar bar-unknown"), "outcome unknown")]
    out.append(legend(items, 110, bottom + 52))
    out.append("</svg>")
    return "".join(out)


def _known_end(op: Operation) -> int | None:
    """When the operation is known to have taken effect by (``None``: unknown outcome)."""
    return op.end if op.end is not None and op.type != "info" else None


def _window_axis(moments: Sequence[int], t0: int, step: float, top: float,
                 bottom: float) -> str:
    """Ticks at every few events, labelled with their real time in ms."""
    out = [f'<line class="axis" x1="110" x2="{110 + step * (len(moments) + 1):.1f}" '
           f'y1="{bottom:g}" y2="{bottom:g}"/>']
    every = max(1, math.ceil(70 / step))
    for k in range(0, len(moments), every):
        x = 110 + step * (k + 0.5)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top:g}" '
                   f'y2="{bottom:g}"/><text class="tick" x="{x:.1f}" y="{bottom + 14:g}" '
                   f'text-anchor="middle">{(moments[k] - t0) / 1e6:.1f}</text>')
    out.append(f'<text class="axis-title" x="110" y="{bottom + 32:g}">invocations and '
               f'completions in real-time order (ticks: ms after {t0 / 1e9:.3f} s into the '
               f'run)</text>')
    return "".join(out)


def _window_bar(b: WindowOp, x0: float, x1: float, y: float, t0: int) -> str:
    op = b.op
    end = _known_end(op)
    cls = f"bar bar-{b.role}" + ("" if op.type == "ok" else " bar-unknown")
    label = (f"{b.order}. " if b.order is not None else "") + op_text(op)
    when = f"{(end - t0) / 1e6:.3f} ms" if end is not None else "? (outcome unknown)"
    tip = (f"index {op.index}: {op.f} {json.dumps(op.value, default=str)} by process "
           f"{op.process}, {op.type}, {(op.start - t0) / 1e6:.3f} to {when}")
    return (f'<g><title>{escape(tip)}</title><rect class="{cls}" x="{x0:.1f}" y="{y + 3:g}" '
            f'width="{max(x1 - x0, 3.0):.1f}" height="18" rx="3"/><text class="bar-text" '
            f'x="{x0 + 4:.1f}" y="{y + 16:g}">{escape(label)}</text></g>')
