"""etcd's replica digests: the maintenance API's ``HashKV`` at a revision every member
asked has reached, polled while the run runs (:attr:`lab.systems.types.SystemSpec.digest_poller`).

``HashKV(R)`` is a hash of every key revision a member's store holds after its last
compaction up to revision R. Revisions are immutable once applied, so members that
applied the same history have the same hash at R whenever they have the same compaction
revision (the answer's ``compact_revision``, recorded as the digest's ``scope``).

One round (:meth:`HashPoller.round`): ask every running member its status (straight to
its client port, not through a proxy: ``header.revision`` is the revision it has
applied); R is the lowest revision among those that answered, so every member asked has
reached it; skip R if it is not above the last compaction seen, or if every member that
answered was already asked at R; then ask each for ``HashKV`` at R. A member that is
down, paused, slow or answers garbage is skipped for the round with a record saying why;
nothing a member says raises.

etcd 3.4's JSON gateway does not serve ``HashKV`` (``/v3/maintenance/hash`` is the
whole-backend ``Hash``, which ignores the revision), so ``HashKV`` goes over gRPC through
``etcdctl endpoint hashkv --rev R``; without ``etcdctl`` the poller is not available.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger("raftlab")

#: How long to wait for one member's status and for its HashKV.
STATUS_TIMEOUT = 0.5
HASHKV_TIMEOUT = 2.0

Ask = Callable[[str], Awaitable[Any]]
AskHash = Callable[[str, int], Awaitable[Any]]


def revision_of(answer: Any) -> int | None:
    """The applied revision in an etcd status answer (``header.revision``), or None."""
    if not isinstance(answer, dict) or "error" in answer:
        return None
    header = answer.get("header")
    rev = header.get("revision") if isinstance(header, dict) else None
    if isinstance(rev, bool) or not isinstance(rev, int | str):
        return None
    try:
        n = int(rev)
    except ValueError:
        return None
    return n if n > 0 else None


def hash_of(answer: Any, revision: int) -> tuple[int, int] | str:
    """``(hash, compact_revision)`` from ``etcdctl -w json endpoint hashkv`` output (a
    list of one ``{"Endpoint": ..., "HashKV": {"header", "hash", "compact_revision"}}``;
    zero fields are left out; ``compact_revision`` is -1 on a store never compacted), or
    why it is not one."""
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        return str(answer["error"])[:200]
    if not isinstance(answer, list) or len(answer) != 1 or not isinstance(answer[0], dict):
        return "not one HashKV answer"
    hk = answer[0].get("HashKV")
    if not isinstance(hk, dict):
        return "no HashKV in the answer"
    h, compact = hk.get("hash", 0), hk.get("compact_revision", 0)
    if type(h) is not int or type(compact) is not int or h < 0 or compact < -1:
        return "hash or compact_revision is not a whole number (-1: never compacted)"
    if compact >= revision:
        return f"revision {revision} is compacted (compact revision {compact})"
    return h, compact


class HashPoller:
    """Rounds of HashKV over a running :class:`~lab.systems.etcd.cluster.EtcdCluster`.
    ``status`` and ``hashkv`` (tests) stand in for the two requests: a member's decoded
    status answer (None: no answer) and its decoded ``etcdctl`` output."""

    def __init__(self, cluster: Any, etcdctl: str | None = None, *,
                 status: Ask | None = None, hashkv: AskHash | None = None) -> None:
        self.cluster = cluster
        self.etcdctl = etcdctl
        self._status = status or self._ask_status
        self._hashkv = hashkv or self._ask_hashkv
        self.asked: dict[int, set[str]] = {}  # revision -> members asked at it
        self.compacted = 0  # the highest compaction revision an answer showed

    async def round(self) -> list[dict[str, Any]]:
        members = list(self.cluster.members)
        answers: dict[str, Any] = {}

        async def ask(mid: str, fn: Callable[[], Awaitable[Any]], timeout: float) -> None:
            answers[mid] = None
            with trio.move_on_after(timeout):
                try:
                    answers[mid] = await fn()
                except Exception as e:  # a member's trouble is a skipped member
                    answers[mid] = {"error": f"{type(e).__name__}: {e}"[:200]}

        out: list[dict[str, Any]] = []
        running = [m for m in members if self.cluster.alive(m)]
        out += [_skip(m, "not running") for m in members if m not in running]
        async with trio.open_nursery() as n:
            for mid in running:
                n.start_soon(ask, mid, lambda mid=mid: self._status(mid), STATUS_TIMEOUT)
        revisions: dict[str, int] = {}
        for mid in running:
            rev = revision_of(answers.get(mid))
            if rev is None:
                out.append(_skip(mid, "no status" if answers.get(mid) is None
                                 else "bad status answer"))
            else:
                revisions[mid] = rev
        if not revisions:
            return out
        r = min(revisions.values())
        if r <= self.compacted:
            return [*out, {"event": "round-skipped", "revision": r,
                           "reason": f"not above the compaction revision {self.compacted}"}]
        todo = sorted(m for m in revisions if m not in self.asked.get(r, set()))
        if not todo:
            return out
        answers.clear()
        async with trio.open_nursery() as n:
            for mid in todo:
                n.start_soon(ask, mid, lambda mid=mid: self._hashkv(mid, r),
                             HASHKV_TIMEOUT + 0.5)
        for mid in todo:
            got = hash_of(answers.get(mid), r) if answers.get(mid) is not None \
                else "no HashKV answer in time"
            if isinstance(got, str):
                out.append(_skip(mid, got, r))
                continue
            h, compact = got
            self.asked.setdefault(r, set()).add(mid)
            self.compacted = max(self.compacted, compact)
            out.append({"event": "digest", "member": mid, "index": r, "term": None,
                        "log": None, "state": str(h), "scope": compact,
                        "member_revision": revisions[mid]})
        return out

    async def _ask_status(self, mid: str) -> Any:
        return await self.cluster.request(mid, "/v3/maintenance/status", {}, STATUS_TIMEOUT)

    async def _ask_hashkv(self, mid: str, revision: int) -> Any:
        host, port = self.cluster.members[mid].client
        assert self.etcdctl is not None
        argv = [self.etcdctl, f"--endpoints=http://{host}:{port}", "--dial-timeout=1s",
                f"--command-timeout={HASHKV_TIMEOUT:g}s", "-w", "json", "endpoint",
                "hashkv", f"--rev={revision}"]
        proc = await trio.run_process(argv, capture_stdout=True, capture_stderr=True,
                                      check=False, env={**os.environ, "ETCDCTL_API": "3"})
        if proc.returncode != 0:
            said = proc.stderr.decode(errors="replace").strip().splitlines()
            return {"error": (said[-1] if said else f"etcdctl exit {proc.returncode}")}
        try:
            return json.loads(proc.stdout)
        except ValueError:
            return {"error": "etcdctl printed no JSON"}


def _skip(mid: str, reason: str, revision: int | None = None) -> dict[str, Any]:
    rec: dict[str, Any] = {"event": "skipped", "member": mid, "reason": reason}
    if revision is not None:
        rec["revision"] = revision
    return rec


def find_etcdctl(binary: str = "etcd") -> str | None:
    """``etcdctl`` next to the etcd binary, else on PATH; None if there is none."""
    found = shutil.which(binary)
    if found is not None:
        sibling = Path(found).with_name("etcdctl")
        if sibling.is_file() and os.access(sibling, os.X_OK):
            return str(sibling)
    return shutil.which("etcdctl")


def poller(cluster: Any) -> HashPoller | None:
    """The run's HashKV poller over ``cluster``; None when ``etcdctl`` is not found."""
    etcdctl = find_etcdctl(getattr(cluster, "opts", {}).get("binary", "etcd"))
    if etcdctl is None:
        log.warning("etcdctl not found: no HashKV digests for replica agreement")
        return None
    return HashPoller(cluster, etcdctl)
