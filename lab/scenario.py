"""Workload and fault-scenario files: loading and strict validation, in one place.

Both file kinds are YAML. They are validated against the YAML *node* tree (not the
plain Python values), so every error names the file and the line of the offending
value: ``faults/x.yaml:12: unknown action 'partiton' (expected one of: ...)``. Any error
raises :class:`ScenarioError`, whose ``str()`` is that one line; the CLI prints it and
exits 2. :func:`json_schema` describes the same rules for editors.

A workload says what the clients do and which model checks the history; a fault
scenario says what the nemesis does, and when. See README "Writing a fault scenario".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lab.checker import WORKLOAD_MODELS

T = TypeVar("T")


class ScenarioError(Exception):
    """A scenario file is not valid. ``str(e)`` is ``FILE:LINE: what was expected``."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message


# --------------------------------------------------------------------------- vocabulary

#: The models a workload may name -> the operation functions it may mix: the checker's
#: list (:mod:`lab.checker._models`), the one home of the model names.
MODELS = WORKLOAD_MODELS

#: Process faults act on nodes picked by a target. ``crash-at`` arms a named crash point
#: in the target (a system's :attr:`~lab.systems.types.SystemSpec.crash_points`): the
#: member dies when it reaches it, and is started again ``for`` after that.
PROCESS_ACTIONS = ("kill", "restart", "pause", "resume", "stop", "start", "crash-at")
#: Network faults; each lasts until healed (``for`` heals just that fault).
NETWORK_ACTIONS = (
    "isolate",  # cut the target nodes off from all others, both ways
    "partition-halves",  # a fixed minority | majority split
    "partition-random-halves",  # a random minority | majority split
    "majority-ring",  # every node sees a majority, each a different one
    "bridge",  # two halves joined by one node that sees both
    "cut",  # one-way: everything ``target`` sends to ``to`` is lost
    "leader-send-only",  # the target (usually the leader) can send but not receive
    "leader-receive-only",  # the target can receive but not send
    "latency",  # delay on links touching the target, or on ``links`` (``ms``, ``jitter``)
    "datacenters",  # sites with latency between them (``sites``, ``ms``, ``jitter``)
    "isolate-site",  # cut one site (``site``) off from the others
    "bandwidth",  # throttle links to and from the target (``rate`` KB/s)
    "slice",  # slice the target's traffic into small pieces
    "reset-peer",  # reset connections to the target
    "cut-client",  # clients cannot reach the target
    "cut-links",  # exactly these directed links (``links: [[n1, n2], ...]``), e.g. a replay
)
ACTIONS = (*PROCESS_ACTIONS, *NETWORK_ACTIONS, "heal")
TARGETS = ("leader", "follower", "followers", "random", "minority", "majority", "all", "none")
#: Actions whose shape is fixed by the action itself: they take no target.
UNTARGETED = ("partition-halves", "partition-random-halves", "majority-ring", "bridge",
              "datacenters", "isolate-site", "cut-links", "heal")
_NODE_ID = re.compile(r"^n[1-9][0-9]?$")
#: Actions that cannot be made on a smaller cluster, with what they need. Every network
#: action but ``cut-client`` acts on links between members, so it needs two of them.
MIN_MEMBERS: dict[str, tuple[int, str]] = {
    **{a: (2, "it acts on the links between members") for a in NETWORK_ACTIONS
       if a != "cut-client"},
    "majority-ring": (3, "every member must hear a different majority"),
    "bridge": (3, "two sides and one member joining them"),
}

# Parameters an action may carry, besides at/action/target/for, with their kinds.
ACTION_PARAMS: dict[str, dict[str, str]] = {
    "cut": {"to": "target"},
    "latency": {"ms": "int", "jitter": "int", "links": "links"},
    "datacenters": {"sites": "sites", "ms": "int", "jitter": "int"},
    "isolate-site": {"site": "int"},
    "bandwidth": {"rate": "int"},
    "slice": {"average_size": "int", "size_variation": "int", "delay_us": "int"},
    "reset-peer": {"timeout": "int"},
    "cut-links": {"links": "links"},
    "crash-at": {"point": "point", "skip": "int"},
}


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Workload:
    path: str
    name: str
    description: str
    model: str
    keys: int = 8
    clients: int = 10
    rate: float = 100.0  # operations per second over all clients; 0 = as fast as possible
    timeout: float = 1.0  # per operation, seconds
    mix: dict[str, float] = field(default_factory=dict)
    value_min: int = 0
    value_max: int = 9
    txn_min: int = 1  # micro-operations per list-append transaction
    txn_max: int = 4
    accounts: int = 5  # bank
    total: int = 100  # bank: the sum of all balances
    max_transfer: int = 5
    final_reads: bool = True
    settle: float = 5.0  # seconds to let the cluster recover before the final phase
    connections: str = "shared"  # or "per-client": CONNECTIONS
    placement: str = "mixed"  # which member a worker asks first: PLACEMENTS
    readers: int = 1  # read-only workers bound to each member, besides the clients


@dataclass(frozen=True)
class Step:
    line: int
    at: float
    action: str
    target: tuple[str, ...] = ()  # node ids and/or symbolic targets; () = action default
    duration: float | None = None  # ``for``: undo after this many seconds
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RandomNemesis:
    line: int
    interval: tuple[float, float]  # pause between faults, drawn uniformly
    duration: tuple[float, float]  # how long each fault lasts
    actions: tuple[str, ...]
    targets: tuple[str, ...] = ("random",)
    start: float = 0.0
    stop: float | None = None  # None = until the end of the run
    action_lines: tuple[int, ...] = ()  # the line of each of ``actions`` in the file
    # Composed mode: faults overlap (up to ``max_active``), drawn from fine-grained shapes
    # (:mod:`lab.compose`), each undone after its own duration.
    compose: bool = False
    max_active: int = 1
    # What ``start``, ``stop``, ``interval`` and ``duration`` count: seconds, or election
    # timeouts or heartbeats of the run (:data:`RANDOM_UNITS`; :meth:`in_seconds`).
    unit: str = "seconds"
    unsafe: float = 0.1  # composed: the chance a draw may leave no working majority

    def in_seconds(self, election: float, heartbeat: float) -> RandomNemesis:
        """This nemesis with its numbers in seconds, for a run whose election timeout and
        heartbeat are ``election`` and ``heartbeat`` seconds."""
        k = {"seconds": 1.0, "election": election, "heartbeat": heartbeat}[self.unit]
        return replace(self, unit="seconds", start=self.start * k,
                       stop=None if self.stop is None else self.stop * k,
                       interval=(self.interval[0] * k, self.interval[1] * k),
                       duration=(self.duration[0] * k, self.duration[1] * k))


@dataclass(frozen=True)
class FaultScenario:
    path: str
    name: str
    description: str
    time_limit: float | None = None
    schedule: tuple[Step, ...] = ()
    random: RandomNemesis | None = None
    # Make this member the leader before the clients start (replays and shrunk scenarios
    # pin the leader the recorded run had, so faults on node ids hit the same roles).
    initial_leader: str | None = None
    initial_leader_line: int = 0
    # Election timeout and heartbeat for the members (seconds; None: the system's lab
    # default), e.g. shorter for faster experiments: ``timing: {election: 300ms, ...}``.
    election_timeout: float | None = None
    heartbeat: float | None = None
    timing_line: int = 0
    # Settings of one system under test, by system name, applied only when that system
    # runs (``system_options: {raftkv: {max_append_entries: 1}}``; see
    # :func:`lab.systems.system_options`).
    system_options: dict[str, dict[str, int]] = field(default_factory=dict)


# --------------------------------------------------------------------------- node tree


class YamlDoc:
    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, node: yaml.Node | None, message: str) -> ScenarioError:
        line = node.start_mark.line + 1 if node is not None else 1
        return ScenarioError(self.path, line, message)

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping of keys to values")
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode) or k.tag != "tag:yaml.org,2002:str":
                raise self.fail(k, f"{what}: keys must be plain words")
            if k.value in out:
                raise self.fail(k, f"{what}: key '{k.value}' appears twice")
            out[k.value] = (k, v)
        return out

    def check_keys(self, m: dict[str, tuple[yaml.Node, yaml.Node]], allowed: tuple[str, ...],
                   required: tuple[str, ...], what: str, node: yaml.Node) -> None:
        for key, (knode, _) in m.items():
            if key not in allowed:
                raise self.fail(knode, f"unknown key '{key}' in {what} "
                                       f"(expected one of: {', '.join(allowed)})")
        for key in required:
            if key not in m:
                raise self.fail(node, f"{what} needs the key '{key}'")

    def scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value, not a "
                                  f"{'list' if isinstance(node, yaml.SequenceNode) else 'mapping'}")
        if node.tag == "tag:yaml.org,2002:str":
            return node.value
        try:
            return yaml.SafeLoader("").construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError):
            raise self.fail(node, f"{what}: cannot read {node.value!r} as {node.tag}") from None

    def string(self, node: yaml.Node, what: str) -> str:
        v = self.scalar(node, what)
        if not isinstance(v, str) or not v.strip():
            raise self.fail(node, f"{what} must be a non-empty string, got {v!r}")
        return v

    def integer(self, node: yaml.Node, what: str, lo: int = 0, hi: int | None = None) -> int:
        v = self.scalar(node, what)
        if type(v) is not int:
            raise self.fail(node, f"{what} must be a whole number, got {v!r}")
        if v < lo or (hi is not None and v > hi):
            bound = f"from {lo} to {hi}" if hi is not None else f"at least {lo}"
            raise self.fail(node, f"{what} must be {bound}, got {v}")
        return v

    def number(self, node: yaml.Node, what: str, lo: float = 0.0) -> float:
        v = self.scalar(node, what)
        if type(v) not in (int, float) or not math.isfinite(v) or v < lo:
            raise self.fail(node, f"{what} must be a number of at least {lo:g}, got {v!r}")
        return float(v)

    def boolean(self, node: yaml.Node, what: str) -> bool:
        v = self.scalar(node, what)
        if not isinstance(v, bool):
            raise self.fail(node, f"{what} must be true or false, got {v!r}")
        return v

    def duration(self, node: yaml.Node, what: str) -> float:
        v = self.scalar(node, what)
        seconds = parse_duration(v)
        if seconds is None:
            raise self.fail(node, f"{what}: cannot parse duration {v!r} "
                                  "(expected e.g. 500ms, 10s, 2m, 1m30s, or a number of seconds)")
        return seconds

    def seq(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        return list(node.value)

    def one_of(self, node: yaml.Node, choices: tuple[str, ...], what: str) -> str:
        v = self.scalar(node, what)
        if v not in choices:
            raise self.fail(node, f"unknown {what} {v!r} (expected one of: {', '.join(choices)})")
        return str(v)

    def pair(self, node: yaml.Node, what: str, conv: Callable[[yaml.Node, str], T]
             ) -> tuple[T, T]:
        items = self.seq(node, what)
        if len(items) != 2:
            raise self.fail(node, f"{what} must be a list of two values [low, high]")
        lo, hi = conv(items[0], what), conv(items[1], what)
        if hi < lo:  # type: ignore[operator]
            raise self.fail(node, f"{what}: high {hi} is below low {lo}")
        return lo, hi


_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_DURATION_PART = re.compile(rf"({_NUMBER})(ms|s|m|h)")
#: A duration written as a string: a number of seconds (``10``, ``2.5``) or numbers with
#: units (``500ms``, ``1m30s``), maybe with spaces or tabs around. One pattern for the
#: loader (:func:`parse_duration`) and the JSON Schema (:func:`json_schema`): it means
#: the same in Python's and in JSON Schema's (ECMA-262) regular expressions.
DURATION_TEXT = rf"[ \t]*(?:{_NUMBER}|(?:{_NUMBER}(?:ms|s|m|h))+)[ \t]*"


def parse_duration(v: Any) -> float | None:
    """Seconds from ``10``, ``2.5``, ``500ms``, ``10s``, ``2m``, ``1m30s``; None if invalid."""
    if type(v) in (int, float):
        return float(v) if math.isfinite(v) and v >= 0 else None
    if not isinstance(v, str) or not re.fullmatch(DURATION_TEXT, v):
        return None
    text = v.strip(" \t")
    if re.fullmatch(_NUMBER, text):
        return float(text)
    return sum(float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
               for m in _DURATION_PART.finditer(text))


def compose_yaml(path: Path) -> tuple[YamlDoc, yaml.Node]:
    shown = str(path)
    doc = YamlDoc(shown)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(shown, 1, "no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScenarioError(shown, 1, f"cannot read the file: {e}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise ScenarioError(shown, line, f"not valid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ScenarioError(shown, 1, f"not valid YAML: {e}") from None
    if node is None:
        raise ScenarioError(shown, 1, "the file is empty")
    return doc, node


# --------------------------------------------------------------------------- workloads

#: The top-level keys of a workload file, in the documented order.
WORKLOAD_KEYS = ("name", "description", "model", "keys", "clients", "rate", "timeout", "mix",
                 "values", "txn", "accounts", "total", "max_transfer", "final", "connections",
                 "placement", "readers")
#: How client workers reach the members: ``shared`` connections for all workers of a run
#: (requests of one scheduling round leave together), or a connection ``per-client``
#: worker of its own (as raftkv's own load generator does).
CONNECTIONS = ("shared", "per-client")
#: Which member a client worker sends each operation to first (it follows the system's
#: redirects from there): ``leader``, the leader as last learned (raftkv; on etcd, one
#: member drawn at random); ``members``, each worker bound to one member, round robin (as
#: Jepsen binds its clients to nodes); ``mixed``, every third worker bound to a member,
#: the rest as ``leader``. Bound workers keep talking to a member that was cut off or
#: deposed while others have moved on: that is how a stale leader's answers meet the new
#: leader's.
PLACEMENTS = ("mixed", "leader", "members")
#: In ``mixed`` placement, worker ``i`` is bound to a member when ``i % BOUND_EVERY`` is
#: ``BOUND_EVERY - 1``.
BOUND_EVERY = 3


def home_member(placement: str, worker: int, members: list[str]) -> str | None:
    """The member client worker ``worker`` is bound to under ``placement`` (None: it
    follows the leader)."""
    if not members or placement == "leader":
        return None
    if placement == "members":
        return members[worker % len(members)]
    if worker % BOUND_EVERY != BOUND_EVERY - 1:
        return None
    return members[(worker // BOUND_EVERY) % len(members)]


def load_workload(path: Path) -> Workload:
    doc, root = compose_yaml(path)
    m = doc.mapping(root, "a workload")
    doc.check_keys(m, WORKLOAD_KEYS, ("name", "description", "model"), "a workload", root)

    def get(key: str) -> yaml.Node:
        return m[key][1]

    model = doc.one_of(get("model"), tuple(MODELS), "model")
    kw: dict[str, Any] = {
        "path": str(path),
        "name": doc.string(get("name"), "name"),
        "description": doc.string(get("description"), "description"),
        "model": model,
    }
    if "keys" in m:
        kw["keys"] = doc.integer(get("keys"), "keys", 1, 10_000)
    if "clients" in m:
        kw["clients"] = doc.integer(get("clients"), "clients", 1, 1_000)
    if "rate" in m:
        kw["rate"] = doc.number(get("rate"), "rate")
    if "timeout" in m:
        kw["timeout"] = doc.duration(get("timeout"), "timeout")
        if kw["timeout"] <= 0:
            raise doc.fail(get("timeout"), "timeout must be more than zero")
    if "connections" in m:
        kw["connections"] = doc.one_of(get("connections"), CONNECTIONS, "connections")
    if "placement" in m:
        kw["placement"] = doc.one_of(get("placement"), PLACEMENTS, "placement")
    if "readers" in m:
        kw["readers"] = doc.integer(get("readers"), "readers", 0, 10)
    allowed_fs = MODELS[model]
    if "mix" in m:
        mix_map = doc.mapping(get("mix"), "mix")
        mix: dict[str, float] = {}
        for f, (knode, vnode) in mix_map.items():
            if f not in allowed_fs:
                raise doc.fail(knode, f"operation '{f}' is not part of the {model} model "
                                      f"(expected one of: {', '.join(allowed_fs)})")
            mix[f] = doc.number(vnode, f"mix weight of {f}")
        if not any(mix.values()):
            raise doc.fail(get("mix"), "mix needs at least one operation with a weight above 0")
        kw["mix"] = mix
    else:
        kw["mix"] = {f: 1.0 for f in allowed_fs}
    if "values" in m:
        vm = doc.mapping(get("values"), "values")
        doc.check_keys(vm, ("min", "max"), ("min", "max"), "values", get("values"))
        kw["value_min"] = doc.integer(vm["min"][1], "values.min", -(2**31))
        kw["value_max"] = doc.integer(vm["max"][1], "values.max", -(2**31))
        if kw["value_max"] < kw["value_min"]:
            raise doc.fail(vm["max"][1], "values.max is below values.min")
    elif model == "counter":
        kw["value_min"] = 1  # increments of 1 to 9 (registers: values 0 to 9)
    if "txn" in m:
        tm = doc.mapping(get("txn"), "txn")
        doc.check_keys(tm, ("min_ops", "max_ops"), (), "txn", get("txn"))
        if "min_ops" in tm:
            kw["txn_min"] = doc.integer(tm["min_ops"][1], "txn.min_ops", 1, 100)
        if "max_ops" in tm:
            kw["txn_max"] = doc.integer(tm["max_ops"][1], "txn.max_ops", 1, 100)
        if kw.get("txn_max", 4) < kw.get("txn_min", 1):
            raise doc.fail(get("txn"), "txn.max_ops is below txn.min_ops")
    for key, lo in (("accounts", 2), ("total", 0), ("max_transfer", 1)):
        if key in m:
            kw[key] = doc.integer(get(key), key, lo)
    if "final" in m:
        fm = doc.mapping(get("final"), "final")
        doc.check_keys(fm, ("reads", "settle"), (), "final", get("final"))
        if "reads" in fm:
            kw["final_reads"] = doc.boolean(fm["reads"][1], "final.reads")
            if model == "set" and not kw["final_reads"]:
                raise doc.fail(fm["reads"][1], "final.reads: false cannot go with the set "
                                               "model: the set checker needs the final read "
                                               "(the only read of a set run), so the verdict "
                                               "would always be unknown")
        if "settle" in fm:
            kw["settle"] = doc.duration(fm["settle"][1], "final.settle")
    return Workload(**kw)


# --------------------------------------------------------------------------- fault scenarios

#: The top-level keys of a fault-scenario file, in the documented order.
FAULT_KEYS = ("name", "description", "time_limit", "schedule", "random", "initial_leader",
              "system_options", "timing")
_STEP_KEYS = ("at", "action", "target", "for")
#: Every key a schedule step may have, in a fixed order (the step's own keys, then the
#: actions' parameters as :data:`ACTION_PARAMS` lists them), so that an unknown key's
#: error lists them the same way every run.
_STEP_AND_PARAM_KEYS = (*_STEP_KEYS,
                        *dict.fromkeys(k for p in ACTION_PARAMS.values() for k in p))
_RANDOM_KEYS = ("interval", "duration", "actions", "targets", "start", "stop", "compose",
                "max_active", "unit", "unsafe")
#: What a random nemesis's numbers count (``unit``): seconds, or the run's election
#: timeouts or heartbeats (its ``timing``, else the system's default).
RANDOM_UNITS = ("seconds", "election", "heartbeat")
#: The actions of a composed random nemesis (``compose: true``): the fine-grained steps
#: the crafted scenarios use, each drawn with explicit nodes, links and parameters.
COMPOSE_ACTIONS = ("kill", "stop", "pause", "isolate", "leader-send-only",
                   "leader-receive-only", "cut-links", "latency")
#: The targets of a composed random nemesis (besides node ids): each picks one member.
COMPOSE_TARGETS = ("leader", "follower", "random")


def _target(doc: YamlDoc, node: yaml.Node, what: str) -> tuple[str, ...]:
    items = doc.seq(node, what) if isinstance(node, yaml.SequenceNode) else [node]
    out = []
    for item in items:
        v = doc.scalar(item, what)
        if not isinstance(v, str) or not (v in TARGETS or _NODE_ID.match(v)):
            raise doc.fail(item, f"unknown {what} {v!r} (expected a node id like n1, or one of: "
                                 f"{', '.join(TARGETS)})")
        out.append(v)
    if not out:
        raise doc.fail(node, f"{what} names no node")
    return tuple(out)


def _sites(doc: YamlDoc, node: yaml.Node) -> list[list[str]]:
    """``[[n1, n2], [n3]]``: at least two non-empty sites that share no member (a member
    in two sites would need two latencies on one link)."""
    sites: list[list[str]] = []
    seen: dict[str, int] = {}  # node id -> the index of the site that lists it
    for s in doc.seq(node, "sites"):
        ids = [doc.string(x, "a site's node") for x in doc.seq(s, "a site")]
        for x, xn in zip(ids, s.value, strict=True):
            if not _NODE_ID.match(x):
                raise doc.fail(xn, f"a site lists node ids like n1, got {x!r}")
            if x in seen:
                where = ("twice in one site" if seen[x] == len(sites)
                         else f"in site {seen[x]} and site {len(sites)}")
                raise doc.fail(xn, f"sites must not share a member: {x} is listed {where}")
            seen[x] = len(sites)
        if not ids:
            raise doc.fail(s, "a site needs at least one node")
        sites.append(ids)
    if len(sites) < 2:
        raise doc.fail(node, "sites needs at least two sites")
    return sites


def _links(doc: YamlDoc, node: yaml.Node) -> list[list[str]]:
    """``[[n1, n2], ...]``: directed links (what the first sends the second is lost)."""
    links: list[list[str]] = []
    for item in doc.seq(node, "links"):
        pair = doc.seq(item, "a link")
        if len(pair) != 2:
            raise doc.fail(item, "a link must be a pair [from, to] of node ids")
        ids = [doc.string(x, "a link's node") for x in pair]
        for x, xn in zip(ids, pair, strict=True):
            if not _NODE_ID.match(x):
                raise doc.fail(xn, f"a link names node ids like n1, got {x!r}")
        if ids[0] == ids[1]:
            raise doc.fail(item, f"a link joins two different nodes, got [{ids[0]}, {ids[1]}]")
        if ids in links:
            raise doc.fail(item, f"link [{ids[0]}, {ids[1]}] is listed twice")
        links.append(ids)
    if not links:
        raise doc.fail(node, "links names no link")
    return links


def _params(doc: YamlDoc, action: str, m: dict[str, tuple[yaml.Node, yaml.Node]]
            ) -> dict[str, Any]:
    spec = ACTION_PARAMS.get(action, {})
    out: dict[str, Any] = {}
    for key, (knode, vnode) in m.items():
        if key in _STEP_KEYS:
            continue
        kind = spec.get(key)
        if kind is None:
            allowed = (*_STEP_KEYS, *spec)
            raise doc.fail(knode, f"unknown key '{key}' for action '{action}' "
                                  f"(expected one of: {', '.join(allowed)})")
        if kind == "int":
            out[key] = doc.integer(vnode, f"{action}.{key}")
        elif kind == "target":
            out[key] = _target(doc, vnode, f"{action}.{key}")
        elif kind == "links":
            out[key] = _links(doc, vnode)
        elif kind == "point":
            out[key] = doc.one_of(vnode, crash_points(), "crash point")
        else:
            out[key] = _sites(doc, vnode)
    if action == "cut" and "to" not in out:
        raise doc.fail(None if not m else next(iter(m.values()))[0],
                       "action 'cut' needs 'to' (whose incoming traffic from the target is lost)")
    if action == "slice":
        avg, var = out.get("average_size", 64), out.get("size_variation", 32)
        if avg < 1 or var >= avg:
            raise doc.fail(m["action"][1], "slice needs average_size >= 1 and "
                                           "size_variation < average_size")
    if action == "latency" and "links" in out and "target" in m:
        raise doc.fail(m["target"][0], "latency takes a target (every link touching it) or "
                                       "links (exactly those directed links), not both")
    if action == "cut-links" and "links" not in out:
        raise doc.fail(m["action"][1], "action 'cut-links' needs 'links' (a list of "
                                       "[from, to] node pairs whose traffic is lost)")
    if action == "crash-at" and "point" not in out:
        raise doc.fail(m["action"][1], "action 'crash-at' needs 'point' (the crash point "
                                       f"to arm, one of: {', '.join(crash_points())})")
    if action == "isolate-site" and "site" not in out:
        raise doc.fail(m["action"][1], "action 'isolate-site' needs 'site' (a 0-based index)")
    return out


#: A run's time limit (seconds) when neither ``--time-limit`` nor the fault file sets one.
DEFAULT_TIME_LIMIT = 60.0


def load_faults(path: Path, time_limit: float | None = None) -> FaultScenario:
    """Load a fault scenario. ``time_limit`` (the run's) overrides the file's own, which
    overrides :data:`DEFAULT_TIME_LIMIT`, and every step must fit inside whichever
    applies."""
    doc, root = compose_yaml(path)
    m = doc.mapping(root, "a fault scenario")
    doc.check_keys(m, FAULT_KEYS, ("name", "description"), "a fault scenario", root)
    own_limit = doc.duration(m["time_limit"][1], "time_limit") if "time_limit" in m else None
    if own_limit is not None and own_limit <= 0:
        raise doc.fail(m["time_limit"][1], "time_limit must be more than zero")
    limit = (time_limit if time_limit is not None else
             own_limit if own_limit is not None else DEFAULT_TIME_LIMIT)
    steps: list[Step] = []
    if "schedule" in m:
        for item in doc.seq(m["schedule"][1], "schedule"):
            sm = doc.mapping(item, "a schedule step")
            doc.check_keys(sm, _STEP_AND_PARAM_KEYS, ("at", "action"), "a schedule step", item)
            action = doc.one_of(sm["action"][1], ACTIONS, "action")
            at = doc.duration(sm["at"][1], "at")
            dur = doc.duration(sm["for"][1], "for") if "for" in sm else None
            if dur is not None and action in ("heal", "resume", "start", "restart"):
                raise doc.fail(sm["for"][0], f"action '{action}' cannot be undone, so it takes "
                                             "no 'for'")
            end = at + (dur or 0.0)
            if limit is not None and end > limit:
                when = "starts" if dur is None else "ends"  # a step without 'for' has no end
                raise doc.fail(sm["at"][1], f"step {when} at {end:g}s, past the time limit "
                                            f"of {limit:g}s")
            if "target" in sm and action in UNTARGETED:
                raise doc.fail(sm["target"][0], f"action '{action}' takes no target")
            target = _target(doc, sm["target"][1], "target") if "target" in sm else ()
            steps.append(Step(item.start_mark.line + 1, at, action, target, dur,
                              _params(doc, action, sm)))
    election, heartbeat = _timing(doc, m["timing"][1]) if "timing" in m else (None, None)
    rnd = _random(doc, m["random"][1], limit, election, heartbeat) if "random" in m else None
    if not steps and rnd is None and "schedule" in m:
        raise doc.fail(m["schedule"][1], "schedule is empty: add a step, or remove the "
                                         "'schedule' key for a scenario without faults "
                                         "('schedule: []' is allowed only with 'random')")
    leader, leader_line = None, 0
    if "initial_leader" in m:
        lnode = m["initial_leader"][1]
        leader, leader_line = doc.string(lnode, "initial_leader"), lnode.start_mark.line + 1
        if not _NODE_ID.match(leader):
            raise doc.fail(lnode, f"initial_leader must be a node id like n1, got {leader!r}")
    _check_sites(doc, steps)
    options = parse_system_options(doc, m["system_options"][1]) if "system_options" in m else {}
    return FaultScenario(str(path), doc.string(m["name"][1], "name"),
                         doc.string(m["description"][1], "description"), own_limit,
                         tuple(steps), rnd, leader, leader_line, election, heartbeat,
                         m["timing"][1].start_mark.line + 1 if "timing" in m else 0,
                         options)


def _random(doc: YamlDoc, rnode: yaml.Node, limit: float | None, election: float | None,
            heartbeat: float | None) -> RandomNemesis:
    """The ``random`` key: one fault at a time, or composed faults (``compose: true``)."""
    rm = doc.mapping(rnode, "random")
    doc.check_keys(rm, _RANDOM_KEYS, ("interval", "duration", "actions"), "random", rnode)
    compose = doc.boolean(rm["compose"][1], "random.compose") if "compose" in rm else False
    if not compose:
        for key in ("max_active", "unsafe"):
            if key in rm:
                raise doc.fail(rm[key][0], f"random.{key} applies only to composed faults: "
                                           "add 'compose: true' or remove it")
    unit = doc.one_of(rm["unit"][1], RANDOM_UNITS, "random.unit") if "unit" in rm \
        else "seconds"

    def amount(node: yaml.Node, what: str) -> float:
        if unit == "seconds":
            return doc.duration(node, what)
        v = doc.scalar(node, what)
        if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
            raise doc.fail(node, f"{what} counts {unit} units (unit: {unit}): write a plain "
                                 f"number of at least 0, got {v!r}")
        return float(v)

    actions = tuple(doc.one_of(a, (*PROCESS_ACTIONS, *NETWORK_ACTIONS), "action")
                    for a in doc.seq(rm["actions"][1], "random.actions"))
    if not actions:
        raise doc.fail(rm["actions"][1], "random.actions lists no action")
    for a, anode in zip(actions, rm["actions"][1].value, strict=True):
        if compose and a not in COMPOSE_ACTIONS:
            raise doc.fail(anode, f"action '{a}' is not one of composed faults' actions "
                                  f"(expected one of: {', '.join(COMPOSE_ACTIONS)})")
        if not compose and a in ACTION_PARAMS and a not in ("latency", "bandwidth", "slice",
                                                            "reset-peer", "crash-at"):
            raise doc.fail(anode, f"action '{a}' needs parameters: use it in 'schedule'"
                                  + (" (or in composed faults, 'compose: true', which draw "
                                     "its links)" if a == "cut-links" else ""))
    targets = _target(doc, rm["targets"][1], "random.targets") if "targets" in rm \
        else ("random",)
    if compose:
        tnode = rm["targets"][1] if "targets" in rm else rnode
        for t in targets:
            if t not in COMPOSE_TARGETS and not _NODE_ID.match(t):
                raise doc.fail(tnode, f"random.targets: composed faults pick one member, so "
                                      f"'{t}' is not allowed (expected a node id like n1, or "
                                      f"one of: {', '.join(COMPOSE_TARGETS)})")
    start = amount(rm["start"][1], "random.start") if "start" in rm else 0.0
    stop = amount(rm["stop"][1], "random.stop") if "stop" in rm else None
    max_active = 2 if compose else 1
    if "max_active" in rm:
        max_active = doc.integer(rm["max_active"][1], "random.max_active", 1, 100)
    unsafe = 0.1
    if "unsafe" in rm:
        v = doc.scalar(rm["unsafe"][1], "random.unsafe")
        if type(v) not in (int, float) or not 0 <= v <= 1:
            raise doc.fail(rm["unsafe"][1], f"random.unsafe is a chance: a number from 0 to "
                                            f"1, got {v!r}")
        unsafe = float(v)
    rnd = RandomNemesis(
        line=rnode.start_mark.line + 1,
        interval=doc.pair(rm["interval"][1], "random.interval", amount),
        duration=doc.pair(rm["duration"][1], "random.duration", amount),
        actions=actions,
        action_lines=tuple(a.start_mark.line + 1 for a in rm["actions"][1].value),
        targets=targets, start=start, stop=stop, compose=compose, max_active=max_active,
        unit=unit, unsafe=unsafe,
    )
    if rnd.interval[1] <= 0:
        raise doc.fail(rm["interval"][1], "random.interval must allow a pause above zero")
    # In units of the run's timing, the numbers are checked against the time limit only
    # when the scenario gives that timing (else the nemesis stops at the time limit).
    known = {"seconds": 1.0, "election": election, "heartbeat": heartbeat}[unit]
    if limit is not None and known is not None:
        secs = rnd.in_seconds(election or 0.0, heartbeat or 0.0)
        if secs.start >= limit or (secs.stop is not None and secs.stop > limit):
            raise doc.fail(rnode, f"random nemesis runs past the time limit of {limit:g}s")
    return rnd


def _check_sites(doc: YamlDoc, steps: list[Step]) -> None:
    """``isolate-site`` cuts off a site of the schedule's first ``datacenters`` step, which
    must exist and have that site."""
    dc = next((s for s in steps if s.action == "datacenters"), None)
    for step in steps:
        if step.action != "isolate-site":
            continue
        site = step.params["site"]
        if dc is None:
            raise ScenarioError(doc.path, step.line, f"isolate-site: site {site} does not "
                                "exist: there is no datacenters step to define sites (add "
                                "one to the schedule)")
        n_sites = len(dc.params["sites"])
        if site >= n_sites:
            raise ScenarioError(doc.path, step.line, f"isolate-site: site {site} does not "
                                f"exist (the datacenters step at line {dc.line} defines "
                                f"{n_sites}: 0 to {n_sites - 1})")


def crash_points() -> tuple[str, ...]:
    """Every crash point of any system (:func:`check_system` checks a run's own)."""
    from lab.systems import all_crash_points

    return all_crash_points()


def parse_system_options(doc: YamlDoc, node: yaml.Node) -> dict[str, dict[str, int]]:
    """``system_options: {raftkv: {max_append_entries: 1}}``: per system, the settings
    :func:`lab.systems.system_options` knows, each an integer in its range."""
    from lab.systems import system_options

    known_options = system_options()
    m = doc.mapping(node, "system_options")
    out: dict[str, dict[str, int]] = {}
    for _, (knode, vnode) in m.items():
        name = doc.one_of(knode, tuple(known_options), "system in system_options")
        known = known_options[name]
        om = doc.mapping(vnode, f"system_options.{name}")
        got: dict[str, int] = {}
        for key, (onode, value) in om.items():
            if not known:
                raise doc.fail(onode, f"unknown option '{key}': {name} takes no "
                                      "system_options")
            if key not in known:
                raise doc.fail(onode, f"unknown option '{key}' for {name} "
                                      f"(expected one of: {', '.join(known)})")
            lo, hi, _ = known[key]
            got[key] = doc.integer(value, f"system_options.{name}.{key}", lo, hi)
        out[name] = got
    return out


def _timing(doc: YamlDoc, node: yaml.Node) -> tuple[float | None, float | None]:
    """``timing: {election: 300ms, heartbeat: 50ms}``: both optional, each from 10 ms to
    50 s (etcd's limit), in whole milliseconds; when both are given, they must keep
    :func:`lab.systems.types.timing_rule`."""
    from lab.systems import timing_rule

    m = doc.mapping(node, "timing")
    doc.check_keys(m, ("election", "heartbeat"), (), "timing", node)
    got: dict[str, float] = {}
    for key, (_, v) in m.items():
        seconds = round(doc.duration(v, f"timing.{key}"), 3)
        if not 0.01 <= seconds <= 50:
            raise doc.fail(v, f"timing.{key} must be from 10ms to 50s, got {seconds:g}s")
        got[key] = seconds
    e, h = got.get("election"), got.get("heartbeat")
    bad = None if e is None or h is None else timing_rule(round(e * 1000), round(h * 1000))
    if bad:
        raise doc.fail(node, f"timing: {bad}")
    return e, h


def check_members(f: FaultScenario, nodes: int) -> None:
    """Every node id a scenario names must exist in a cluster of ``nodes`` members, and
    every action (of the schedule and of ``random``) must be possible with that many
    (:data:`MIN_MEMBERS`)."""
    members = {f"n{k}" for k in range(1, nodes + 1)}

    def enough(action: str, line: int, where: str) -> None:
        need, why = MIN_MEMBERS.get(action, (1, ""))
        if nodes < need:
            raise ScenarioError(f.path, line, f"{where}'{action}' needs at least {need} "
                                              f"members ({why}), but the cluster has only "
                                              f"{nodes} (run with --nodes {need} or more)")

    def check(ids: Any, line: int, what: str) -> None:
        for x in ids:
            if isinstance(x, str) and _NODE_ID.match(x) and x not in members:
                raise ScenarioError(f.path, line, f"{what} names {x}, but the cluster has only "
                                                  f"{nodes} members (n1..n{nodes})")

    for step in f.schedule:
        enough(step.action, step.line, "action ")
        check(step.target, step.line, "target")
        check(step.params.get("to", ()), step.line, "cut.to")
        for link in step.params.get("links", []):
            check(link, step.line, "a link")
        for site in step.params.get("sites", []):
            check(site, step.line, "a site")
    if f.random is not None:
        r = f.random
        lines = r.action_lines if len(r.action_lines) == len(r.actions) else \
            (r.line,) * len(r.actions)
        for action, line in zip(r.actions, lines, strict=True):
            enough(action, line, "random action ")
        check(r.targets, r.line, "random.targets")
    if f.initial_leader is not None:
        check([f.initial_leader], f.initial_leader_line, "initial_leader")


def check_system(f: FaultScenario, system: str) -> None:
    """Every ``crash-at`` of a scenario (in its schedule or its ``random.actions``) must
    name a crash point that ``system`` has: ScenarioError at the first that does not."""
    from lab.systems import REGISTRY

    s = REGISTRY.get(system)
    if s is None:
        return  # an unknown system is the pre-run checks' to report
    uses = [(step.line, step.params.get("point")) for step in f.schedule
            if step.action == "crash-at"]
    if f.random is not None:
        lines = f.random.action_lines if len(f.random.action_lines) == len(f.random.actions) \
            else (f.random.line,) * len(f.random.actions)
        uses += [(line, None) for a, line in zip(f.random.actions, lines, strict=True)
                 if a == "crash-at"]
    for line, point in uses:
        if not s.crash_points:
            having = [name for name, other in REGISTRY.items() if other.crash_points]
            raise ScenarioError(f.path, line, f"action 'crash-at' needs a system with crash "
                                              f"points, and {system} has none (they exist in "
                                              f"{' and '.join(having) or 'no system'})")
        if point is not None and point not in s.crash_points:
            raise ScenarioError(f.path, line, f"{system} has no crash point {point!r} (it "
                                              f"has: {', '.join(s.crash_points)})")


# --------------------------------------------------------------------------- JSON Schema


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of both file kinds, for editors."""
    duration = {"oneOf": [{"type": "number", "minimum": 0},
                          {"type": "string", "pattern": f"^{DURATION_TEXT}$"}]}
    target: dict[str, Any] = {"oneOf": [
        {"type": "string", "pattern": _NODE_ID.pattern},
        {"enum": list(TARGETS)},
        {"type": "array", "minItems": 1,
         "items": {"anyOf": [{"type": "string", "pattern": _NODE_ID.pattern},
                             {"enum": list(TARGETS)}]}}]}
    param_props: dict[str, Any] = {}
    for spec in ACTION_PARAMS.values():
        for k, kind in spec.items():
            node_id = {"type": "string", "pattern": _NODE_ID.pattern}
            param_props[k] = ({"type": "integer", "minimum": 0} if kind == "int" else target
                              if kind == "target" else
                              {"type": "array", "minItems": 1,
                               "items": {"type": "array", "items": node_id, "minItems": 2,
                                         "maxItems": 2}}
                              if kind == "links" else
                              {"enum": list(crash_points())} if kind == "point" else
                              {"type": "array", "items": {"type": "array",
                                                          "items": {"type": "string"}}})
    step = {"type": "object", "additionalProperties": False, "required": ["at", "action"],
            "properties": {"at": duration, "action": {"enum": list(ACTIONS)}, "target": target,
                           "for": duration, **param_props},
            "if": {"properties": {"action": {"const": "crash-at"}}},
            "then": {"required": ["point"]}}
    workload = {
        "$id": "raftlab-workload", "type": "object", "additionalProperties": False,
        "required": ["name", "description", "model"],
        "properties": {
            "name": {"type": "string"}, "description": {"type": "string"},
            "model": {"enum": list(MODELS)},
            "keys": {"type": "integer", "minimum": 1}, "clients": {"type": "integer",
                                                                  "minimum": 1},
            "rate": {"type": "number", "minimum": 0}, "timeout": duration,
            "connections": {"enum": list(CONNECTIONS)},
            "placement": {"enum": list(PLACEMENTS)},
            "readers": {"type": "integer", "minimum": 0, "maximum": 10},
            "mix": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0},
                    "propertyNames": {"enum": sorted({f for fs in MODELS.values()
                                                      for f in fs})}},
            "values": {"type": "object", "additionalProperties": False,
                       "required": ["min", "max"],
                       "properties": {"min": {"type": "integer"}, "max": {"type": "integer"}}},
            "txn": {"type": "object", "additionalProperties": False,
                    "properties": {"min_ops": {"type": "integer", "minimum": 1},
                                   "max_ops": {"type": "integer", "minimum": 1}}},
            "accounts": {"type": "integer", "minimum": 2},
            "total": {"type": "integer", "minimum": 0},
            "max_transfer": {"type": "integer", "minimum": 1},
            "final": {"type": "object", "additionalProperties": False,
                      "properties": {"reads": {"type": "boolean"}, "settle": duration}},
        },
    }
    from lab.systems import system_options as known_options

    system_options = {
        "type": "object", "additionalProperties": False,
        "properties": {
            name: {"type": "object", "additionalProperties": False,
                   "properties": {key: {"type": "integer", "minimum": lo, "maximum": hi,
                                        "description": what}
                                  for key, (lo, hi, what) in known.items()}}
            for name, known in known_options().items()},
    }
    faults = {
        "$id": "raftlab-faults", "type": "object", "additionalProperties": False,
        "required": ["name", "description"],
        "properties": {
            "name": {"type": "string"}, "description": {"type": "string"},
            "time_limit": duration,
            "initial_leader": {"type": "string", "pattern": _NODE_ID.pattern},
            "timing": {"type": "object", "additionalProperties": False,
                       "properties": {"election": duration, "heartbeat": duration}},
            "system_options": system_options,
            "schedule": {"type": "array", "items": step},
            "random": {"type": "object", "additionalProperties": False,
                       "required": ["interval", "duration", "actions"],
                       "properties": {
                           "interval": {"type": "array", "items": duration, "minItems": 2,
                                        "maxItems": 2},
                           "duration": {"type": "array", "items": duration, "minItems": 2,
                                        "maxItems": 2},
                           "actions": {"type": "array", "minItems": 1,
                                       "items": {"enum": [*PROCESS_ACTIONS,
                                                          *NETWORK_ACTIONS]}},
                           "targets": target, "start": duration, "stop": duration,
                           "compose": {"type": "boolean"},
                           "max_active": {"type": "integer", "minimum": 1, "maximum": 100},
                           "unit": {"enum": list(RANDOM_UNITS)},
                           "unsafe": {"type": "number", "minimum": 0, "maximum": 1}}},
        },
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "raftlab scenario files",
            "$defs": {"workload": workload, "faults": faults},
            "oneOf": [{"$ref": "#/$defs/workload"}, {"$ref": "#/$defs/faults"}]}
