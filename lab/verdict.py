"""The verdict of a run, and the facts it rests on: did the history check out, did the
members break a safety rule, did the run say enough, did the faults bite?

Public API:

* :func:`decide` -- check a run directory (its history against the workload's model, the
  members' own logs and status polls against Raft's safety rules), decide ``valid``,
  ``invalid`` or ``unknown`` with a reason, the faults' evidence and notes, and record it
  all in ``results.json``; returns the results;
* :func:`weakness` -- why a run that checked out valid still says little (too few ``ok``
  operations, :data:`MIN_OK`; faults that never bit), recording the evidence;
* :func:`failed_premises` -- the scenario's premises (``initial_leader``) that did not
  hold, one sentence each: a run that would be valid is ``unknown`` then, since the
  scenario did not happen as written;
* :func:`checker_options` -- the checker model and options of a resolved scenario;
* :func:`analyse_faults` -- the bite analysis of a run's data
  (:class:`lab.rundata.RunData`): what each fault did (:class:`Impact`), whether the
  faults bit (:class:`Bite`), and the availability figures (:class:`Facts`). The report
  renders these; it decides nothing.

This module reads runs through :mod:`lab.store` and :mod:`lab.rundata` and checks them
through :mod:`lab.checker`'s public API; it never imports the report, the runner or the
command line.

Definitions (the report's page repeats them where it shows the numbers):

* *Unavailability* of a fault: the longest stretch with no successful (``ok``)
  completion, from the fault's start until the first success after its healing.
* *Time to first ok* from a moment t: from t until the completion of the first ``ok``
  operation invoked at or after t (a fresh request, not one already in flight).
* *Recovery time* of a run: the worst time to first ok from a healing, over its faults.
* A fault *bit* when it hit the leader, split the quorum, moved leadership, left a
  member it touched at least :data:`LAG_S` behind the cluster's commit index, or cut
  throughput to under half (or raised the median latency to over twice) its fault-free
  level.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.checker import (
    check_history,
    commit_safety,
    election_safety,
    harness_exit,
    leader_safety,
    load_history,
    log_check,
    member_crashes,
    member_lags,
    replica_agreement,
    vote_safety,
)
from lab.rundata import Fault, Operation, RunData, load_run
from lab.store import RunDir, StoreError
from lab.systems import DEFAULT_SYSTEM, spec
from lab.systems.types import Digest, SystemSpec, read_polled_digests, run_members

log = logging.getLogger("raftlab")

# --------------------------------------------------------------------------- the verdict

CHECK_TIME_LIMIT = 120.0
MIN_OK = 20  # a run with fewer ok client operations than this is too weak to mean much


def checker_options(scenario: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The checker model and options for a run, from its resolved ``scenario.yaml``."""
    w = scenario["workload"]
    model = w["model"]
    options: dict[str, Any] = {}
    if model == "bank":
        accounts = [f"a{k}" for k in range(w["accounts"])]
        options = {"total": w["total"], "accounts": accounts}
    return model, options


def weakness(run_dir: Path, results: dict[str, Any]) -> str | None:
    """Why a run that checked out valid still says little, if it does: too few ``ok``
    operations, or faults that never bit (none hit the leader, split the quorum, moved
    leadership, left a member behind, or dented throughput or latency). Records the
    evidence of every fault in ``results["evidence"]``."""
    facts = analyse_faults(load_run(run_dir))
    results["evidence"] = {
        "faults_bit": facts.bite.bit, "summary": facts.bite.headline,
        "faults": [{"fault": i.fault.label, "leader_before": i.leader_before,
                    "leader_hit": i.leader_hit, "quorum_split": i.quorum_split,
                    "cut_off": i.cut_off, "notes": i.notes, "leadership_moved": i.moved,
                    "fell_behind": i.lagged, "throughput_dipped": i.dipped,
                    "latency_rose": i.slowed, "bit": i.bit,
                    "unavailable_s": i.unavailable_s,
                    "first_ok_after_heal_s": i.first_ok_from_heal_s,
                    "recovered": not i.stuck} for i in facts.impacts],
        "recovered": not facts.unrecovered}
    results.pop("notes", None)
    if facts.unrecovered:
        # Liveness, not safety: the verdict stands, but nobody should miss it.
        first, more = facts.unrecovered[0], len(facts.unrecovered) - 1
        results["notes"] = [
            f"the cluster never recovered: no operation succeeded after {first.fault.label} "
            "healed" + (f" (nor after the {more} later faults)" if more else "")]
    ok = int(results.get("counts", {}).get("ok", 0))
    if ok < MIN_OK:
        return f"too few successful operations to mean anything ({ok} ok, fewer than {MIN_OK})"
    if facts.bite.bit is False:
        return facts.bite.headline
    if facts.bite.bit is None and _plans_faults(run_dir):
        return ("no fault of the scenario was applied within the time limit (a longer "
                "--time-limit lets its first fault start and end)")
    return None


def failed_premises(results: dict[str, Any]) -> list[str]:
    """One sentence per premise of the scenario that did not hold before its schedule
    started (``results.json``'s ``premises``, written by the runner), e.g. "the
    scenario's premise failed: initial_leader n2 was not obtained (n1 led)"."""
    premises = results.get("premises")
    out = []
    for p in premises if isinstance(premises, list) else []:
        if not isinstance(p, dict) or p.get("held") is not False:
            continue
        what = p.get("premise")
        if what == "initial_leader":
            got = p.get("got")
            out.append(f"the scenario's premise failed: initial_leader {p.get('wanted')} was "
                       "not obtained (" + (f"{got} led" if got else "no member led") + ")")
        else:
            out.append(f"the scenario's premise failed: {what}")
    return out


def _plans_faults(run_dir: Path) -> bool:
    """Whether the run's scenario has any fault to apply (timed steps or a nemesis)."""
    faults = RunDir(run_dir).scenario_dict().get("faults")
    return isinstance(faults, dict) and bool(faults.get("schedule") or faults.get("random"))


def run_digests(system: SystemSpec, run: RunDir) -> list[Digest] | None:
    """The digests of a run's members: those their logs hold (``SystemSpec.digests``)
    and those the lab asked them for while it ran (``SystemSpec.digest_poller``, in the
    run's ``digests.jsonl``). None: the system offers neither (or could not be asked)."""
    logged = system.digests(run.nodes_dir)
    if system.digest_poller is None:
        return logged
    polled = read_polled_digests(run.digests_path)
    if logged is None and polled is None:
        return None
    return [*(logged or []), *(polled or [])]


def decide(run_dir: Path, time_limit: float = CHECK_TIME_LIMIT) -> dict[str, Any]:
    """Decide a run's verdict and record it in ``results.json``; returns the results.

    Checks the history against its workload's model and the members' logs and status
    polls against Raft's safety rules (``checker``: valid, anomalies), compares the
    members' digests of their applied logs and states (``agreement``: a divergence makes
    the run invalid; ``not available`` and ``no evidence`` are recorded, never a pass),
    records how much each log-based check could say (``log_checks``: ``no evidence``
    when no member's log held an event it reads, never a pass, and never a reason to
    call the run invalid),
    then decides
    ``verdict`` (``valid``, ``invalid`` or ``unknown``) and ``verdict_reason``: a valid
    run cut short, one whose scenario's premise failed (:func:`failed_premises`), or one
    that says little (:func:`weakness`), is ``unknown``; any other verdict keeps its word
    and notes the failed premise. Records the faults' ``evidence`` (with the run's
    ``premises``) and ``notes`` (a cluster that never recovered, a failed premise). Works
    on partial runs too. A run file
    that cannot be read as what it should be raises :class:`lab.store.StoreError`
    (``FILE:LINE: ...``; the history's own problems as its subclass
    :class:`lab.checker.HistoryError`)."""
    run = RunDir(run_dir)
    scenario = run.scenario_dict(strict=True)
    stored = run.read_results(strict=True)
    results: dict[str, Any] = (dict(stored.data) if stored is not None
                               else {"partial": True, "exit_reason": "no results.json"})
    try:
        model, options = checker_options(scenario)
    except (KeyError, TypeError, ValueError) as e:
        raise StoreError(run.scenario_path, None, "cannot tell the checker's model from "
                         f"its workload (missing or bad: {e})") from None
    t0 = time.monotonic()
    outcome = check_history(load_history(run.history_path), model,
                            time_limit=time_limit, options=options)
    system = spec(str(scenario.get("system", DEFAULT_SYSTEM)))
    members = run_members(run.nodes_dir)
    evidence = system.log_evidence(run.nodes_dir) or {}
    claims = system.leader_claims(run.nodes_dir)
    split = leader_safety(claims or [])
    logged_split = len(split)
    if system.status_term_is_current:
        logged = {a["term"] for a in split}
        split += [a for a in election_safety(run.read_cluster().objects)
                  if a["term"] not in logged]
    votes = system.votes(run.nodes_dir)
    double = vote_safety(votes or [])
    conflicts = system.commit_conflicts(run.nodes_dir)
    lost = commit_safety(conflicts or [])
    results["log_checks"] = {
        name: {"check": what, "reads": reads,
               **log_check(records, evidence.get(name), members, found)}
        for name, what, reads, records, found in (
            ("leader_claims", "election safety: at most one leader per term",
             "the leaderships the members logged (their role changes)", claims,
             split[:logged_split]),
            ("votes", "one vote per member and term", "the votes the members logged",
             votes, double),
            ("commit_conflicts", "no committed entry contradicted by a leader",
             "the committed-entry conflicts the members logged", conflicts, lost))}
    agreement, diverged = replica_agreement(run_digests(system, run), members)
    results["agreement"] = agreement
    crashed = member_crashes(results.get("member_exits") or [])
    behind = member_lags(results.get("convergence"))
    found = []
    if split:
        terms = ", ".join(str(a["term"]) for a in split)
        found.append(f"two leaders in one term (term {terms}), by the members' logs or "
                     "status polls")
    if double:
        found.append("a member voted twice in one term (" + ", ".join(
            f"{a['member']} in term {a['term']}" for a in double) + "), by its own log")
    if lost:
        found.append("a leader's log contradicts a committed entry (" + ", ".join(
            f"{a['member']}" + (f" at index {a['index']}" if a["index"] is not None else "")
            for a in lost) + "), by the members' logs")
    for a in diverged:
        what = ("applied logs diverge" if a["type"] == "replica-divergence"
                else "states differ")
        found.append(f"members' {what} at index {a['index']} "
                     f"({a['members'][0]} vs {a['members'][1]}), by their digests")
    if crashed:
        found.append("a member crashed (" + ", ".join(
            f"{a['member']}, code {a['code']}" for a in crashed) + "), by its exit")
    if behind:
        found.append("a member never caught up (" + ", ".join(
            f"{a['member']}: " + (f"applied {a['applied']} of {a['target']}"
                                  if a["applied"] is not None else "no status")
            for a in behind) + "), by its status once every fault was healed")
    if found:
        what = "; ".join(found)
        outcome.reason = what if outcome.valid is not False else f"{outcome.reason}; {what}"
        outcome.valid = False
        outcome.anomalies = [*split, *double, *lost, *diverged, *crashed, *behind,
                             *outcome.anomalies]
    results["checker"] = {**outcome.to_json(), "seconds": round(time.monotonic() - t0, 3)}
    verdict, reason = outcome.verdict, outcome.reason
    try:
        weak = weakness(run_dir, results)
    except Exception as e:  # the evidence is ours to get right; never lose the verdict
        log.exception("gathering the faults' evidence failed")
        weak = f"could not tell whether the faults bit ({type(e).__name__}: {e})"
    failed = failed_premises(results)
    premises = results.get("premises")
    if isinstance(premises, list) and premises:
        results.setdefault("evidence", {})["premises"] = premises
    if verdict == "valid" and results.get("partial"):
        # A cut-short run proves nothing good, though it can prove bad.
        verdict, reason = "unknown", f"the run ended early ({results.get('exit_reason')})"
    elif verdict == "valid" and any(harness_exit(e) for e in results.get("member_exits") or []):
        # A member could not restart because the machine took its port: the run did not
        # test what it should have.
        verdict, reason = "unknown", ("a member could not restart: its port was taken while "
                                      "it was down (the machine's doing, not the system's)")
    elif verdict == "valid" and failed:
        # The scenario did not happen as written: its clean history is not the one asked for.
        verdict, reason = "unknown", "; ".join(failed)
    elif verdict == "valid" and weak:
        verdict, reason = "unknown", weak
    if failed and reason != "; ".join(failed):
        # An invalid run stays invalid (what it found is real), but says the scenario's
        # premise failed, as does any other verdict not already about it.
        reason = f"{reason} (note: {'; '.join(failed)})"
        kept = [n for n in results.get("notes") or [] if n not in failed]
        results["notes"] = [*kept, *failed]
    results["verdict_reason"] = reason
    results["verdict"] = verdict
    run.write_results(results)
    return results


# --------------------------------------------------------------------------- did the faults bite?

NS = 1_000_000_000
DIP_RATIO = 0.5  # throughput below this share of the fault-free rate is a dip
SLOW_RATIO = 2.0  # a median latency above this multiple of the fault-free one is a rise
LAG_S = 1.0  # a member this long from reaching the cluster's commit index fell behind


@dataclass
class Timeline:
    """Sorted views of the history that the questions below need."""

    ops: list[Operation]
    starts: list[int]  # invoke times, in order (the history is in real-time order)
    ok_ends: list[int]  # completion times of ok operations, sorted
    t_end: int

    @classmethod
    def of(cls, run: RunData) -> Timeline:
        ok_ends = sorted(op.end for op in run.ops if op.type == "ok" and op.end is not None)
        return cls(run.ops, [op.start for op in run.ops], ok_ends, run.t_end)

    def first_ok_after(self, t: int) -> int | None:
        """Completion time of the first ok operation invoked at or after ``t``."""
        best: int | None = None
        for k in range(bisect.bisect_left(self.starts, t), len(self.ops)):
            op = self.ops[k]
            if best is not None and op.start >= best:
                break
            if op.type == "ok" and op.end is not None and (best is None or op.end < best):
                best = op.end
        return best

    def invoked_after(self, t: int) -> bool:
        """Whether any operation was invoked at or after ``t``."""
        return bisect.bisect_left(self.starts, t) < len(self.ops)

    def longest_gap(self, lo: int, hi: int) -> int:
        """The longest stretch within [lo, hi] with no ok completion (ns)."""
        i, j = bisect.bisect_left(self.ok_ends, lo), bisect.bisect_right(self.ok_ends, hi)
        marks = [lo, *self.ok_ends[i:j], hi]
        return max(b - a for a, b in itertools.pairwise(marks))

    def ok_rate(self, spans: Sequence[tuple[int, int]]) -> float | None:
        """Ok completions per second over the given time spans (``None``: no time)."""
        total = sum(b - a for a, b in spans)
        if total <= 0:
            return None
        n = sum(bisect.bisect_right(self.ok_ends, b) - bisect.bisect_left(self.ok_ends, a)
                for a, b in spans)
        return n / (total / NS)

    def median_latency(self, spans: Sequence[tuple[int, int]]) -> float | None:
        """Median latency (ms) of ok operations invoked within the spans."""
        lat = []
        for a, b in spans:
            for k in range(bisect.bisect_left(self.starts, a), bisect.bisect_left(self.starts, b)):
                op = self.ops[k]
                if op.type == "ok" and op.end is not None:
                    lat.append((op.end - op.start) / 1e6)
        return statistics.median(lat) if lat else None


@dataclass
class ClusterView:
    """Leaders and commit indices over time, from ``cluster.jsonl``."""

    times: list[int]  # poll rounds, sorted
    leaders: list[tuple[str | None, int]]  # per round: (leader, its term)
    commits: dict[str, list[tuple[int, int]]]  # node -> (time, commit index)

    @classmethod
    def of(cls, polls: list[dict[str, Any]]) -> ClusterView:
        rounds: dict[int, list[dict[str, Any]]] = {}
        commits: dict[str, list[tuple[int, int]]] = {}
        for p in polls:
            rounds.setdefault(int(p["time"]), []).append(p)
            if isinstance(p.get("commit"), int):
                commits.setdefault(p["node"], []).append((int(p["time"]), p["commit"]))
        times = sorted(rounds)
        return cls(times, [_leader_of(rounds[t]) for t in times], commits)

    def leader_at(self, t: int) -> tuple[str | None, int]:
        """The leader (and term) of the last poll at or before ``t``; else the first."""
        if not self.times:
            return None, 0
        k = max(0, bisect.bisect_right(self.times, t) - 1)
        return self.leaders[k]

    def leaders_between(self, lo: int, hi: int) -> list[tuple[str | None, int]]:
        i, j = bisect.bisect_left(self.times, lo), bisect.bisect_right(self.times, hi)
        return self.leaders[i:j]

    def max_lag(self, node: str, lo: int, hi: int) -> float | None:
        """The longest ``node`` took (s) to reach the highest commit index any member
        reported in a poll within [lo, hi]; ``None`` without polls of it."""
        mine = self.commits.get(node, [])
        if not mine:
            return None
        best: dict[int, int] = {}
        for series in self.commits.values():
            for t, c in series:
                if lo <= t <= hi and c > best.get(t, -1):
                    best[t] = c
        lag = 0.0
        times, values = [t for t, _ in mine], [c for _, c in mine]
        for t, c in best.items():
            k = bisect.bisect_left(times, t)
            while k < len(values) and values[k] < c:
                k += 1
            reached = times[k] if k < len(times) else max(times[-1], hi)
            lag = max(lag, (reached - t) / NS)
        return lag

    def commit_progress(self, node: str, lo: int, hi: int) -> tuple[int, int] | None:
        """(first, last) commit index the node reported within [lo, hi]."""
        seen = [c for t, c in self.commits.get(node, []) if lo <= t <= hi]
        return (seen[0], seen[-1]) if len(seen) >= 2 else None


def _leader_of(round_: list[dict[str, Any]]) -> tuple[str | None, int]:
    best: tuple[str | None, int] = (None, max((p.get("term") or 0 for p in round_), default=0))
    for p in round_:
        if p.get("role") == "leader" and (p.get("term") or 0) >= best[1]:
            best = (p["node"], p.get("term") or 0)
    return best


@dataclass
class Impact:
    """What one fault did."""

    fault: Fault
    end: int  # when it was undone (or the end of the data)
    unavailable_s: float | None = None
    first_ok_from_start_s: float | None = None
    first_ok_from_heal_s: float | None = None
    # Operations were tried after the fault healed and none succeeded: the cluster never
    # recovered from it (a liveness failure; the verdict is about safety only).
    stuck: bool = False
    ok_rate: float | None = None
    median_ms: float | None = None
    leader_before: str | None = None
    leader_hit: bool = False
    leaders_during: list[str] = field(default_factory=list)
    cut_off: list[str] = field(default_factory=list)  # nodes without a quorum
    quorum_split: bool = False
    notes: list[str] = field(default_factory=list)
    moved: bool = False  # leadership changed hands during it (or within a second after)
    lagged: list[str] = field(default_factory=list)  # members it left LAG_S behind
    dipped: bool = False
    slowed: bool = False
    bit: bool = False


@dataclass
class Bite:
    """The answer to "did the faults bite?": one sentence, then one line per question."""

    headline: str
    bit: bool | None  # None: no faults were injected
    answers: list[tuple[str, str, str]]  # (question, yes/no/n.a., detail)


@dataclass
class Facts:
    impacts: list[Impact]
    bite: Bite
    baseline_rate: float | None
    baseline_median_ms: float | None
    throughput: float | None  # ok operations per second over the run
    recovery_s: float | None  # the slowest recovery, None if one never happened
    unrecovered: list[Impact] = field(default_factory=list)  # faults never recovered from


def analyse_faults(run: RunData) -> Facts:
    """What the faults did, one :class:`Impact` each, whether they bit (:class:`Bite`), and
    the availability figures around them: everything the verdict's evidence and the
    report's page say about the faults."""
    tl = Timeline.of(run)
    cv = ClusterView.of(run.polls)
    members = _members(run)
    faults = [f for f in run.faults if f.skipped is None and (f.end is None or f.end > f.start)]
    active = [(f.start, f.end if f.end is not None else run.t_end) for f in faults]
    lo, hi = _client_span(run.ops)
    quiet = _complement(active, lo, hi)
    base_rate, base_ms = tl.ok_rate(quiet), tl.median_latency(quiet)
    impacts = [_impact(f, tl, cv, members, base_rate, base_ms) for f in faults]
    heal_times = [i.first_ok_from_heal_s for i in impacts if i.first_ok_from_heal_s is not None]
    rate = tl.ok_rate([(lo, hi)]) if hi > lo else None
    bite = _bite(impacts, cv, base_rate, base_ms)
    skipped = [f for f in run.faults if f.skipped is not None]
    if not impacts and skipped:  # a scenario with faults, none of which ever started
        bite = Bite(f"The faults never bit: all {len(skipped)} fault steps were skipped "
                    f"({skipped[0].skipped}).", False, [])
    stuck = [i for i in impacts if i.stuck]
    return Facts(impacts, bite, base_rate, base_ms, rate,
                 max(heal_times) if heal_times and not stuck else None, stuck)


def _impact(f: Fault, tl: Timeline, cv: ClusterView, members: list[str],
            base_rate: float | None, base_ms: float | None) -> Impact:
    end = f.end if f.end is not None else tl.t_end
    imp = Impact(f, end)
    ok_start, ok_heal = tl.first_ok_after(f.start), tl.first_ok_after(end)
    imp.first_ok_from_start_s = None if ok_start is None else (ok_start - f.start) / NS
    imp.first_ok_from_heal_s = None if ok_heal is None else (ok_heal - end) / NS
    imp.stuck = ok_heal is None and tl.invoked_after(end)
    imp.unavailable_s = tl.longest_gap(f.start, ok_heal if ok_heal is not None else end) / NS
    imp.ok_rate = tl.ok_rate([(f.start, end)])
    imp.median_ms = tl.median_latency([(f.start, end)])
    imp.leader_before = cv.leader_at(f.start)[0]
    imp.leaders_during = _distinct(n for n, _ in cv.leaders_between(f.start, end + NS))
    imp.cut_off = _without_quorum(f, members)
    # The fault's targets; a shape given only as links (random halves, a ring, ...) hits
    # the members it cut off from a majority.
    touched = set(_process_targets(f)) if f.nodes else set(imp.cut_off)
    imp.leader_hit = imp.leader_before is not None and imp.leader_before in touched
    imp.notes = _commit_notes(imp, cv, members)
    # A split shows when the cut-off side stops committing (or cannot even be polled).
    imp.quorum_split = bool(imp.cut_off) and any(
        (p := cv.commit_progress(n, f.start + NS // 2, end)) is None or p[1] == p[0]
        for n in imp.cut_off)
    imp.moved = any(n is not None and n != imp.leader_before for n in imp.leaders_during)
    imp.dipped = (base_rate is not None and imp.ok_rate is not None
                  and imp.ok_rate < DIP_RATIO * base_rate)
    imp.slowed = (base_ms is not None and imp.median_ms is not None
                  and imp.median_ms > SLOW_RATIO * base_ms)
    reached = set(f.nodes) | {n for link in f.links for n in link}  # any link it touched
    imp.lagged = [n for n in sorted(reached) if (lag := cv.max_lag(n, f.start, end)) is not None
                  and lag >= LAG_S]
    # Evidence, not intent: a killed or paused leader is down for sure; any other fault
    # bit only if the cluster showed it (a split, a new leader, a member behind, a dent).
    imp.bit = ((imp.leader_hit and f.kind == "process") or imp.quorum_split or imp.moved
               or imp.dipped or imp.slowed or bool(imp.lagged))
    return imp


def _process_targets(f: Fault) -> list[str]:
    """The members a fault hit: a ``crash-at``'s are those that died at its point (its
    end record's ``fired``), not every member it armed."""
    if f.action == "crash-at" and isinstance(f.params.get("fired"), list):
        return [str(n) for n in f.params["fired"]]
    return list(f.nodes)


def _without_quorum(f: Fault, members: list[str]) -> list[str]:
    """The members that cannot reach a majority (themselves included) both ways."""
    if not members:
        return []
    majority = len(members) // 2 + 1
    if f.kind == "process" and f.action in ("kill", "stop", "pause", "crash-at"):
        down = [n for n in _process_targets(f) if n in members]
        return sorted(members) if len(down) >= majority else []
    if not f.links or f.kind != "network":
        return []
    cut = set(f.links)
    comp = {n: {n} for n in members}
    for a in members:
        for b in members:
            if a < b and (a, b) not in cut and (b, a) not in cut:
                merged = comp[a] | comp[b]
                for n in merged:
                    comp[n] = merged
    return sorted(n for n in members if len(comp[n]) < majority)


def _commit_notes(imp: Impact, cv: ClusterView, members: list[str]) -> list[str]:
    """Plain sentences on who kept committing while the fault lasted."""
    if not imp.cut_off:
        return []
    f, notes = imp.fault, []
    lo, hi = f.start + NS // 2, imp.end
    cut = [n for n in imp.cut_off if n not in f.nodes or f.kind != "process"]
    stopped: list[str] = []
    moving: list[str] = []
    for n in cut:
        prog = cv.commit_progress(n, lo, hi)
        if prog is not None:
            (moving if prog[1] > prog[0] else stopped).append(n)
    if stopped:
        notes.append(f"{', '.join(stopped)} (cut off from a majority) stopped committing")
    if moving:
        notes.append(f"{', '.join(moving)} kept committing although cut off from a majority")
    rest = [n for n in members if n not in imp.cut_off]
    grew = [n for n in rest if (p := cv.commit_progress(n, lo, hi)) and p[1] > p[0]]
    if rest:
        notes.append(f"the majority side ({', '.join(rest)}) "
                     + ("kept committing" if grew else "did not commit"))
    return notes


def _bite(impacts: list[Impact], cv: ClusterView, base_rate: float | None,
          base_ms: float | None) -> Bite:
    if not impacts:
        return Bite("No faults were injected: this run shows the system without a nemesis.",
                    None, [])
    hit = [i for i in impacts if i.leader_hit]
    split = [i for i in impacts if i.quorum_split]
    moved = [i for i in impacts if i.moved]
    dipped = [i for i in impacts if i.dipped]
    slowed = [i for i in impacts if i.slowed]
    lagged = [i for i in impacts if i.lagged]
    reigns = _distinct(f"{n} (term {t})" for n, t in cv.leaders if n is not None)
    answers = [
        ("Was the leader hit?", _yes(hit),
         _list(hit, lambda i: f"{i.fault.label} (leader {i.leader_before})")
         or "no fault targeted the leader of the moment"),
        ("Did a fault split the quorum?", _yes(split),
         _list(split, lambda i: f"{i.fault.label}: " + ("; ".join(i.notes) or
                                                         f"{', '.join(i.cut_off)} cut off"))
         or "every member could reach a majority throughout"),
        ("Did leadership move?", _yes(moved),
         " \u2192 ".join(reigns) if reigns else "no cluster polls recorded"),
        ("Did a member fall behind?", _yes(lagged),
         _list(lagged, lambda i: f"{i.fault.label}: {', '.join(i.lagged)} "
                                 f"{LAG_S:g} s or more behind the commit index")
         or "every member it touched kept up with the commit index"),
        ("Did throughput dip?", _yes(dipped), _rate_detail(impacts, dipped, base_rate)),
        ("Did latency rise?", _yes(slowed),
         _list(slowed, lambda i: f"{i.fault.label}: median {i.median_ms:.1f} ms")
         + (f" (fault-free median {base_ms:.1f} ms)" if slowed and base_ms else "")
         or "the median latency stayed under twice its fault-free level"),
    ]
    effects = [what for what, items in (("the leader was hit", hit),
                                        ("the quorum was split", split),
                                        ("leadership moved", moved),
                                        ("a member fell behind", lagged),
                                        ("throughput dipped", dipped),
                                        ("latency rose", slowed)) if items]
    bitten = [i for i in impacts if i.bit]
    if bitten:
        head = (f"The faults bit: {', '.join(effects)} "
                f"({len(bitten)} of {len(impacts)} faults had a visible effect).")
    else:
        head = (f"The faults never bit: none of the {len(impacts)} faults hit the leader, split "
                "the quorum, moved leadership, left a member behind or slowed the cluster "
                "down, so this run says little about how the system copes with them.")
    return Bite(head, bool(bitten), answers)


def _rate_detail(impacts: list[Impact], dipped: list[Impact], base: float | None) -> str:
    if base is None or not base:
        return "no fault-free stretch to compare with"
    if dipped:
        return _list(dipped, lambda i: f"{i.fault.label}: {i.ok_rate:.0f} ok/s") + \
            f" (fault-free {base:.0f} ok/s)"
    rates = [i for i in impacts if i.ok_rate is not None]
    if not rates:
        return "no fault lasted long enough to measure"
    low = min(rates, key=lambda i: i.ok_rate or 0.0)
    assert low.ok_rate is not None
    return (f"lowest during a fault: {low.ok_rate:.0f} ok/s ({low.fault.label}), "
            f"{100 * low.ok_rate / base:.0f}% of the fault-free {base:.0f} ok/s")


def _yes(items: list[Impact]) -> str:
    return "yes" if items else "no"


def _list(items: list[Impact], say: Any) -> str:
    return "; ".join(say(i) for i in items[:6]) + (" …" if len(items) > 6 else "")


def _distinct(items: Any) -> list[Any]:
    out: list[Any] = []
    for x in items:
        if x is not None and (not out or out[-1] != x):
            out.append(x)
    return out


def _members(run: RunData) -> list[str]:
    nodes = {p["node"] for p in run.polls}
    if not nodes:
        n = run.setting("nodes")
        nodes = {f"n{k + 1}" for k in range(n)} if isinstance(n, int) else set()
    return sorted(nodes)


def _client_span(ops: list[Operation]) -> tuple[int, int]:
    """From the first invoke to the last completion of the client operations."""
    if not ops:
        return 0, 0
    return ops[0].start, max((op.end for op in ops if op.end is not None), default=ops[0].start)


def _complement(spans: list[tuple[int, int]], lo: int, hi: int) -> list[tuple[int, int]]:
    """The parts of [lo, hi] not covered by any span."""
    out, t = [], lo
    for a, b in sorted(spans):
        if a > t:
            out.append((t, min(a, hi)))
        t = max(t, b)
    if t < hi:
        out.append((t, hi))
    return [(a, b) for a, b in out if b > a]
