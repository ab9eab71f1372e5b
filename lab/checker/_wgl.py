"""Wing-Gong-Lowe linearizability search, resumable in slices, over integer arrays.

Theory of operation (the porcupine variant of WGL, with Jepsen's uncertainty rules):

* Each ``ok`` operation has a call entry (its invoke position) and a return entry (its
  completion position) in one doubly linked list in time order. Operations whose outcome
  is unknown (``info``, or never completed) have no return entry: they may take effect at
  any time after their invoke, or never. ``fail`` operations are dropped by the caller.
* A *node* of the search is a set of linearized operations (a bitset int) and a model
  state (a small int). From a node, every operation whose call precedes the first return
  entry still in the list is a candidate to take effect next. Linearizing one *lifts*
  its entries out of the list and pushes a frame; a node with no working candidate pops
  back (``unlift``: the dancing-links trick, valid because lifts and unlifts nest).
* Memoisation: a (linearized set, state) pair already seen is never explored again.
  The set is kept compact, so long histories do not cost a bitset of the whole history
  per memo entry: ``ok`` ops (ranked by invoke) as a low-water mark ``m`` (every rank
  below is linearized) and a small window of the ranks above it; unknown-outcome ops,
  which change rarely, as a bitset interned to a small id. Both are updated in O(window)
  per step and restored exactly on pop.
* The search succeeds when every ``ok`` operation is linearized: unknown-outcome
  operations still pending are simply left out (they never happened).
* Candidates are tried ``ok`` first, unknown-outcome ones last, so an unknown write is
  only placed when no acknowledged operation can go next. Unknown-outcome operations
  with the same effect are interchangeable (none has a return), so they form a *class*
  and only the earliest-invoked unplaced member of a class is ever tried.
* An unknown-outcome op is never directly followed by a *blind write* (an op whose
  result ignores the state, ``blind[op]``): such an op could simply be left out, so a
  linearization without that pattern exists whenever any does. Without this rule every
  dead end is re-explored once per way of burning unknown writes in front of it. A node
  reached through an unknown-outcome op is *restricted*; it is memoised apart, and a
  restricted node is pruned when the unrestricted node with the same bitset and state
  was seen (that one had every option the restricted one has).

* *Reads go first.* An acknowledged op that cannot change the state (a read;
  ``pure[op]`` is the one state it accepts, -1 for other ops) and is valid in the
  current state is linearized at once, as the node's only
  child: moving such an op earlier, to a point where it may already take effect and
  sees the same state, breaks no real-time or model constraint, so if the node has any
  linearization it has one starting with that op. Without this rule, concurrent reads
  multiply the orders to explore.

States are ints. A model describes an operation either as a table row — ``req[op]`` the
state it needs (-1: any) and ``out[op]`` the state it leaves (-1: unchanged), enough for
registers and fast — or through a ``step(state, op) -> state | -1`` function.

The search runs in slices of ``budget`` loop iterations (:meth:`Search.run`), so a
driver can round-robin several keys and stop at a deadline without threads.
"""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# A frame of the search stack, as a persistent linked list (code, state before, limit
# entry, parent). ``code`` >= 0 is the main-list call entry that was lifted, plus
# ``forced`` (the entry count) when it was a read placed as its node's only child; ``~c``
# is the unknown-outcome class ``c`` whose head was placed. Persistence makes the
# deepest stack free to keep for the explanation.
Frame = tuple[int, int, int, Any]

StepFn = Callable[[int, int], int]

# Phases of the search loop at the current node.
START, OKS, INFOS, FAIL = 0, 1, 2, 3  # forced-read scan, ok candidates, unknown ones, pop


@dataclass(slots=True)
class Failure:
    """Why a search failed: the longest linearizable prefix it found (op ids, in order),
    the state after it, and the acknowledged op that then could not be placed."""

    prefix: list[int]
    state: int
    blocked: int


class Search:
    """The WGL search over one partition (one key), resumable in slices.

    ``calls[i]``/``rets[i]`` are op ``i``'s invoke and completion positions (``rets[i]``
    is ``None`` for an unknown outcome); ``info_class[i]`` groups unknown-outcome ops of
    equal effect (ignored for ``ok`` ops). ``result`` is ``None`` until the search ends,
    then ``True`` (linearizable) or ``False`` (``failure`` says why).
    """

    def __init__(self, calls: Sequence[int], rets: Sequence[int | None],
                 info_class: Sequence[int], init: int, *,
                 req: Sequence[int] | None = None, out: Sequence[int] | None = None,
                 step: StepFn | None = None, blind: Sequence[bool] | None = None,
                 pure: Sequence[int] | None = None) -> None:
        if (req is None or out is None) and step is None:
            raise ValueError("give either req and out, or step")
        n = len(calls)
        self.n = n
        self.req = None if req is None else list(req)
        self.out = None if out is None else list(out)
        self.step = step
        self.blind = [False] * n if blind is None else list(blind)
        self.pure = [-1] * n if pure is None else list(pure)
        self.result: bool | None = None
        self.failure: Failure | None = None
        self.steps = 0
        self.memo = 0  # memo entries, the bulk of the memory: ~110 bytes each
        head, tail = 2 * n, 2 * n + 1
        self.head = head
        self.forced = 2 * n + 2
        # Main list: call and return entries of ok ops, in time order.
        entries: list[tuple[int, int]] = []
        for i in range(n):
            r = rets[i]
            if r is not None:
                entries.append((calls[i], 2 * i))
                entries.append((r, 2 * i + 1))
        entries.sort()
        nxt = [tail] * (2 * n + 2)
        prv = [head] * (2 * n + 2)
        epos = [0] * (2 * n + 2)
        last = head
        for p, e in entries:
            nxt[last] = e
            prv[e] = last
            epos[e] = p
            last = e
        nxt[last] = tail
        prv[tail] = last
        self.nxt, self.prv, self.epos = nxt, prv, epos
        self.remaining = len(entries) // 2
        # Unknown-outcome classes, ordered by their first member's invoke position.
        members: dict[int, list[int]] = defaultdict(list)
        for i in range(n):
            if rets[i] is None:
                members[info_class[i]].append(i)
        groups = sorted((sorted(m, key=lambda i: calls[i]) for m in members.values()),
                        key=lambda m: calls[m[0]])
        nc = len(groups)
        self.members = groups
        self.cptr = [0] * nc
        self.clen = [len(g) for g in groups]
        self.cfirst = [calls[g[0]] for g in groups]
        self.cblind = [self.blind[g[0]] for g in groups]
        self.calls = list(calls)
        chead = nc
        self.chead = chead
        # Active classes (some member unplaced) as a linked list; ``chead`` is its head.
        self.cnxt = [c + 1 for c in range(nc)] + [0]
        self.cprv = [c - 1 for c in range(nc)] + [-1]
        self.cnxt[nc - 1] = -1  # the last class (or, with none, the head) ends the list
        if nc:
            self.cprv[0] = chead
        # Ranks by invoke order: ok ops for the window, unknown-outcome ops for their bitset.
        ok_ops = sorted((i for i in range(n) if rets[i] is not None), key=lambda i: calls[i])
        info_ops = sorted((i for i in range(n) if rets[i] is None), key=lambda i: calls[i])
        self.rank = [0] * n
        for r, i in enumerate(ok_ops):
            self.rank[i] = r
        for r, i in enumerate(info_ops):
            self.rank[i] = r
        self.wshift = len(ok_ops).bit_length() + 1
        # Resumable registers.
        self.state = init
        self.m = 0
        self.win = 0
        self.ibits = 0
        self.isig = 0
        self.isigs: dict[int, int] = {0: 0}
        self.top: Frame | None = None
        self.depth = 0
        self.best: tuple[int, Frame | None, int, int] = (-1, None, init, -1)
        # memo: isig << 32 | 2 * state (+1 when restricted) -> ok-window keys seen
        self.cache: defaultdict[int, set[int]] = defaultdict(set)
        self.e = nxt[head]
        self.phase = START
        self.c = -1
        self.le = -1  # the limit entry: first return entry of the current node
        if self.remaining == 0:
            self.result = True

    def run(self, budget: int) -> bool | None:
        """Advance by at most ``budget`` iterations; return ``result`` (None: not done)."""
        if self.result is not None:
            return self.result
        nxt, prv, epos = self.nxt, self.prv, self.epos
        req, out, step = self.req, self.out, self.step
        members, cptr, clen, cfirst = self.members, self.cptr, self.clen, self.cfirst
        blind, cblind, pure, rank = self.blind, self.cblind, self.pure, self.rank
        cnxt, cprv, calls = self.cnxt, self.cprv, self.calls
        cache, isigs, wshift = self.cache, self.isigs, self.wshift
        head, chead, forced = self.head, self.chead, self.forced
        s, top, depth = self.state, self.top, self.depth
        m, win, ibits, isig = self.m, self.win, self.ibits, self.isig
        ib = isig << 32
        e, phase, c, le = self.e, self.phase, self.c, self.le
        remaining = self.remaining
        memo = self.memo
        best_depth = self.best[0]
        lim = epos[le] if le >= 0 else 0
        restricted = top is not None and top[0] < 0
        it = 0
        result: bool | None = None
        while it < budget:
            it += 1
            if phase < INFOS:  # START or OKS
                if e & 1:
                    if phase == START:
                        # no read can go now: try the other ok candidates from the start
                        e = nxt[head]
                        phase = OKS
                        continue
                    # First return entry: its op must be placed before this point, so only
                    # unknown-outcome ops invoked earlier remain as candidates.
                    le = e
                    lim = epos[e]
                    phase = INFOS
                    c = cnxt[chead]
                    continue
                op = e >> 1
                if phase == START:
                    # Is there a read valid right now? Then it is this node's only child.
                    if pure[op] != s:
                        e = nxt[e]
                        continue
                    ns = s
                elif pure[op] >= 0 or (restricted and blind[op]):
                    e = nxt[e]  # reads were settled by the START scan
                    continue
                elif req is not None:
                    r = req[op]
                    if r < 0 or r == s:
                        ns = out[op]  # type: ignore[index]
                        if ns < 0:
                            ns = s
                    else:
                        e = nxt[e]
                        continue
                else:
                    ns = step(s, op)  # type: ignore[misc]
                    if ns < 0:
                        e = nxt[e]
                        continue
                # the ok-window after linearizing op
                d = rank[op] - m
                if d:
                    nw = win | (1 << d)
                    nm = m
                else:
                    nw = win | 1
                    t = (~nw & (nw + 1)).bit_length() - 1
                    nw >>= t
                    nm = m + t
                key = (nw << wshift) | nm
                cs = cache[ib | (ns << 1)]
                if key in cs:
                    if phase == START:
                        phase = FAIL  # the read was explored and failed: so does this node
                        continue
                    e = nxt[e]
                    continue
                cs.add(key)
                memo += 1
                restricted = False
                top = ((e + forced) if phase == START else e, s, le, top)
                depth += 1
                # lift the call entry e and its return entry e + 1
                a, b = prv[e], nxt[e]
                nxt[a] = b
                prv[b] = a
                f = e + 1
                a, b = prv[f], nxt[f]
                nxt[a] = b
                prv[b] = a
                s = ns
                m = nm
                win = nw
                remaining -= 1
                if remaining == 0:
                    result = True
                    break
                e = nxt[head]
                phase = START
                continue
            if phase == INFOS:
                # unknown-outcome classes whose head was invoked before the limit
                if c >= 0 and cfirst[c] < lim:
                    k = cptr[c]
                    op = members[c][k]
                    if calls[op] < lim and not (restricted and cblind[c]):
                        if req is not None:
                            r = req[op]
                            if r < 0 or r == s:
                                ns = out[op]  # type: ignore[index]
                                if ns < 0:
                                    ns = s
                            else:
                                ns = -1
                        else:
                            ns = step(s, op)  # type: ignore[misc]
                        if ns >= 0:
                            nb = ibits | (1 << rank[op])
                            nsig = isigs.get(nb)
                            if nsig is None:
                                nsig = isigs[nb] = len(isigs)
                            nib = nsig << 32
                            key = (win << wshift) | m
                            cs = cache[nib | (ns << 1) | 1]
                            if key not in cs and key not in cache[nib | (ns << 1)]:
                                cs.add(key)
                                memo += 1
                                restricted = True
                                top = (~c, s, le, top)
                                depth += 1
                                k += 1
                                cptr[c] = k
                                if k == clen[c]:
                                    a, b = cprv[c], cnxt[c]
                                    cnxt[a] = b
                                    if b >= 0:
                                        cprv[b] = a
                                s = ns
                                ibits = nb
                                isig = nsig
                                ib = nib
                                e = nxt[head]
                                phase = START
                                continue
                    c = cnxt[c]
                    continue
                # No candidate works: this node fails.
                if depth > best_depth:
                    best_depth = depth
                    self.best = (depth, top, s, le >> 1)
                phase = FAIL
            # FAIL: pop back to the parent node and resume its candidates.
            if top is None:
                result = False
                break
            code, s, le, top = top
            depth -= 1
            restricted = top is not None and top[0] < 0
            if code >= 0:
                if code >= forced:
                    code -= forced
                    phase = FAIL  # a forced read was the parent's only option
                else:
                    phase = OKS
                f = code + 1
                a, b = prv[f], nxt[f]
                nxt[a] = f
                prv[b] = f
                a, b = prv[code], nxt[code]
                nxt[a] = code
                prv[b] = code
                q = rank[code >> 1]
                if q >= m:
                    win ^= 1 << (q - m)
                else:
                    t = m - q
                    win = ((win << t) | ((1 << t) - 1)) & ~1
                    m = q
                remaining += 1
                e = nxt[code]
            else:
                c = ~code
                k = cptr[c]
                if k == clen[c]:
                    a, b = cprv[c], cnxt[c]
                    cnxt[a] = c
                    if b >= 0:
                        cprv[b] = c
                k -= 1
                cptr[c] = k
                ibits ^= 1 << rank[members[c][k]]
                isig = isigs[ibits]
                ib = isig << 32
                lim = epos[le]
                c = cnxt[c]
                phase = INFOS
        self.state, self.top, self.depth = s, top, depth
        self.m, self.win, self.ibits, self.isig = m, win, ibits, isig
        self.e, self.phase, self.c, self.le = e, phase, c, le
        self.remaining = remaining
        self.memo = memo
        self.steps += it
        if result is not None:
            self.result = result
            if result is False:
                self.failure = self._failure()
            self.release()
        return result

    def release(self) -> None:
        """Free the memo (after the search ended, or was abandoned)."""
        self.cache = defaultdict(set)
        self.isigs = {}

    def _failure(self) -> Failure:
        _, frame, state, blocked = self.best
        prefix: list[int] = []
        # Replay the deepest stack from the bottom to recover which op each frame placed.
        frames: list[int] = []
        while frame is not None:
            frames.append(frame[0])
            frame = frame[3]
        cptr = [0] * len(self.members)
        for code in reversed(frames):
            if code >= 0:
                prefix.append((code % self.forced) >> 1)
            else:
                c = ~code
                prefix.append(self.members[c][cptr[c]])
                cptr[c] += 1
        return Failure(prefix, state, blocked)


def run_round_robin(searches: Sequence[Search], time_limit: float | None,
                    slice_steps: int = 4000, stop_on_fail: bool = True,
                    max_memo: int | None = None) -> str | None:
    """Advance every search in turn by ``slice_steps`` until all are done, or one fails
    (with ``stop_on_fail``; porcupine does the same: one non-linearizable key settles
    the verdict). One hard key cannot starve the others. Returns why it stopped early
    — the time limit (seconds, from now) passed, or the memo entries of the searches
    still running exceeded ``max_memo`` — or ``None``. Undecided searches keep
    ``result is None``.

    The cyclic garbage collector is paused meanwhile: the search allocates many small
    tuples and sets that hold no cycles, and collections over a large memo cost ~40%.
    """
    deadline = None if time_limit is None else time.monotonic() + time_limit
    pending = [s for s in searches if s.result is None]
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        while pending:
            for srch in pending:
                if srch.run(slice_steps) is False and stop_on_fail:
                    return None
                if deadline is not None and time.monotonic() >= deadline:
                    break
            pending = [s for s in pending if s.result is None]
            if pending and deadline is not None and time.monotonic() >= deadline:
                return f"time limit of {time_limit} s reached"
            if pending and max_memo is not None and sum(s.memo for s in pending) > max_memo:
                return (f"the search gave up after {max_memo} memo entries "
                        "(option max_memo bounds its memory)")
        return None
    finally:
        for srch in pending:
            if srch.result is None:
                srch.release()
        if was_enabled:
            gc.enable()
