"""What a power cut would lose: the undo log of everything not yet made durable.

Theory of operation. The lossy file system keeps its backing directory equal to what a
kernel's page cache would show: every write, create, rename and unlink happens there at
once, and reads pass straight through. Durability is modelled beside it, here, as an undo
log: for each change that no fsync has yet made durable, what it would take to put the
durable state back. A power cut (:meth:`UndoLog.power_off`) returns those undo actions
and clears the log; the file system applies them to the backing directory.

The rules, which are what POSIX promises and no more:

- A data change to a file (a write, or a truncate that changes its size) is durable once
  that file is fsynced (or fdatasynced), or at once when written through a descriptor
  opened with ``O_SYNC``/``O_DSYNC``. Its undo record holds the bytes it overwrote and the
  file's size before it.
- A namespace change (create, mknod, mkdir, symlink, link, unlink, rmdir, rename) is
  durable once every directory it changed has been fsynced after it, and every earlier
  change to one of the same names (a directory and a name in it) is durable too. fsync of
  a file never makes its name durable. A rename between two directories is undone whole
  until both have been fsynced. (The second condition keeps the undo sound: an unlink in
  ``b`` of a name that a rename from ``a`` put there cannot become durable while that
  rename can still be undone, or the rename's undo would find nothing to move back. A
  change to another name in ``b`` does not wait for it.)
- The removal of a directory (rmdir, or a rename over an empty directory) that becomes
  durable takes with it the earlier changes still pending inside that directory: they are
  durable too (the directory is gone from the durable state), and their trash is freed.
  If one of them also changed a directory elsewhere that is not yet fsynced (a rename
  into the removed directory), the removal waits for it.
- A removed entry (unlink, rmdir, the victim of a rename over an existing name) must be
  restorable, so the file system moves it into a hidden trash area and the log records
  only its trash name; once the removal is durable the trash entry is handed back for
  deletion (:meth:`UndoLog.fsync_dir` returns it).

Data undo actions come first in :meth:`power_off`'s list (the file is found by its id,
wherever its names are), then the namespace actions in reverse chronological order, so
each one finds the names exactly as the change it undoes left them.

A torn write (:meth:`UndoLog.arm_torn`): at the next power cut, the newest write still
not durable (whatever was fsynced after it elsewhere) is kept in part, a seeded random
prefix of at least one byte and less than all of it, over the durable content, as a disk
that lost power mid-write would.

This module does no I/O: files and directories are opaque ids chosen by the caller.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FileId = int
DirId = int


@dataclass(frozen=True)
class RestoreData:
    """Undo a write or truncate: write ``data`` at ``offset``, then set the size to
    ``size``."""

    file: FileId
    offset: int
    data: bytes
    size: int


@dataclass(frozen=True)
class TornPrefix:
    """After the data undo: write ``data`` (a prefix of the newest unsynced write, which
    was ``of`` bytes long) at ``offset``, extending the file if it ends beyond it."""

    file: FileId
    offset: int
    data: bytes
    of: int


@dataclass(frozen=True)
class RemoveEntry:
    """Undo a create, mknod, mkdir, symlink or link: remove ``name`` from ``dir``
    (a directory with whatever it holds)."""

    dir: DirId
    name: bytes


@dataclass(frozen=True)
class RestoreEntry:
    """Undo an unlink or rmdir: move trash entry ``trash`` back to ``name`` in ``dir``."""

    dir: DirId
    name: bytes
    trash: bytes


@dataclass(frozen=True)
class MoveBack:
    """Undo a rename: move ``dst_name`` in ``dst_dir`` back to ``src_name`` in
    ``src_dir``; then, if the rename replaced an entry, move trash entry ``victim`` back
    to ``dst_name``."""

    src_dir: DirId
    src_name: bytes
    dst_dir: DirId
    dst_name: bytes
    victim: bytes | None


Action = RestoreData | TornPrefix | RemoveEntry | RestoreEntry | MoveBack
NamespaceAction = RemoveEntry | RestoreEntry | MoveBack


@dataclass(frozen=True)
class Status:
    unsynced_bytes: int  # bytes written or truncated since the files' last fsync
    unsynced_files: int  # files with data not yet durable
    namespace_ops: int  # namespace changes not yet durable
    torn_armed: bool


@dataclass
class _Write:
    offset: int
    old: bytes
    old_size: int
    written: int
    seq: int  # when, among all data records
    data: bytes | None = None  # what a write wrote (None: a truncate)


@dataclass
class _Namespace:
    action: NamespaceAction
    dirs: frozenset[DirId]  # the directories it changed
    keys: frozenset[tuple[DirId, bytes]]  # the names it changed
    gone: DirId | None  # the directory it removed, if it removed one
    pending: set[DirId] = field(default_factory=set)  # those not fsynced since


class UndoLog:
    """The undo log. Call the recording methods after the change was made in the backing
    store (with what it overwrote), the sync methods when an fsync succeeded."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._data: dict[FileId, list[_Write]] = {}
        self._names: list[_Namespace] = []
        self._seq = 0
        self._torn = False

    # Data.

    def wrote(self, file: FileId, offset: int, data: bytes, old: bytes, old_size: int,
              *, sync: bool = False) -> None:
        """``data`` was written at ``offset``; ``old`` is what it overwrote (the file's
        bytes from ``offset`` up to the old end or the write's end, whichever is first) and
        ``old_size`` the size before. ``sync``: written through ``O_SYNC``/``O_DSYNC``."""
        if sync:
            self.fsync(file)
            return
        if not data:
            return
        self._seq += 1
        self._data.setdefault(file, []).append(
            _Write(offset, old, old_size, len(data), self._seq, bytes(data)))

    def truncated(self, file: FileId, new_size: int, cut: bytes, old_size: int) -> None:
        """The file's size went from ``old_size`` to ``new_size``; ``cut`` is the bytes a
        shrink removed (empty for a growth)."""
        if new_size == old_size:
            return
        self._seq += 1
        self._data.setdefault(file, []).append(
            _Write(min(new_size, old_size), cut, old_size, abs(new_size - old_size),
                   self._seq))

    def fsync(self, file: FileId) -> None:
        """The file's data and size are durable."""
        self._data.pop(file, None)

    def forget(self, file: FileId) -> None:
        """The file is gone for good (its last name was deleted): drop its records."""
        self.fsync(file)

    # Namespace.

    def created(self, dir: DirId, name: bytes) -> None:
        self._add(RemoveEntry(dir, name), None, (dir, name))

    def removed(self, dir: DirId, name: bytes, trash: bytes, *,
                gone: DirId | None = None) -> None:
        """``name`` went from ``dir`` to trash entry ``trash``; ``gone``: the directory it
        was, if it was one."""
        self._add(RestoreEntry(dir, name, trash), gone, (dir, name))

    def renamed(self, src_dir: DirId, src_name: bytes, dst_dir: DirId, dst_name: bytes,
                victim: bytes | None, *, gone: DirId | None = None) -> None:
        """``gone``: the directory the rename replaced, if it replaced one."""
        self._add(MoveBack(src_dir, src_name, dst_dir, dst_name, victim), gone,
                  (src_dir, src_name), (dst_dir, dst_name))

    def _add(self, action: NamespaceAction, gone: DirId | None,
             *keys: tuple[DirId, bytes]) -> None:
        dirs = frozenset(d for d, _ in keys)
        self._names.append(_Namespace(action, dirs, frozenset(keys), gone, set(dirs)))

    def fsync_dir(self, dir: DirId) -> list[bytes]:
        """The directory's entries are durable. Returns the trash entries whose removal is
        now durable: the caller deletes them."""
        for rec in self._names:
            rec.pending.discard(dir)
        durable: set[int] = set()  # indexes of the records found durable
        grew = True
        while grew:  # a removal found durable can unblock a later change
            grew = False
            for i, rec in enumerate(self._names):
                if i in durable or rec.pending or self._blocked(i, durable):
                    continue
                inside = self._inside(i, durable)
                if inside is not None:
                    durable |= inside | {i}
                    grew = True
        freed = [t for i in sorted(durable) for t in _trash_of(self._names[i].action)]
        self._names = [rec for i, rec in enumerate(self._names) if i not in durable]
        return freed

    def _blocked(self, i: int, durable: set[int]) -> bool:
        """Whether an earlier change to one of record ``i``'s names is still undoable."""
        keys = self._names[i].keys
        return any(self._names[j].keys & keys for j in range(i) if j not in durable)

    def _inside(self, i: int, durable: set[int]) -> set[int] | None:
        """The earlier pending records inside the directory record ``i`` removes (and
        inside those they remove in turn), which become durable with it; None if one of
        them still waits on something outside (then ``i`` waits too)."""
        gone_dir = self._names[i].gone
        if gone_dir is None:
            return set()
        gone = {gone_dir}
        earlier = [j for j in range(i) if j not in durable]
        inside: set[int] = set()
        grew = True
        while grew:
            grew = False
            for j in earlier:
                rec = self._names[j]
                if j in inside or not rec.dirs & gone:
                    continue
                if rec.pending - gone:
                    return None
                inside.add(j)
                if rec.gone is not None:
                    gone.add(rec.gone)
                grew = True
        for j in inside:  # and nothing outside still undoable changed the same names
            if any(self._names[k].keys & self._names[j].keys for k in earlier
                   if k < j and k not in inside):
                return None
        return inside

    # Faults.

    def arm_torn(self) -> None:
        self._torn = True

    def status(self) -> Status:
        return Status(
            unsynced_bytes=sum(w.written for ws in self._data.values() for w in ws),
            unsynced_files=len(self._data),
            namespace_ops=len(self._names),
            torn_armed=self._torn,
        )

    def power_off(self) -> list[Action]:
        """The undo actions of a power cut, in the order to apply them, and an empty log.
        An armed torn write is the :class:`TornPrefix` among them (none if the newest
        unsynced write is one byte long, or there is none)."""
        actions: list[Action] = []
        for file, writes in self._data.items():
            actions.extend(RestoreData(file, w.offset, w.old, w.old_size)
                           for w in reversed(writes))
        newest = max(((w.seq, file, w) for file, ws in self._data.items() for w in ws
                      if w.data is not None), default=None, key=lambda t: t[0])
        if self._torn and newest is not None:
            _, file, w = newest
            assert w.data is not None
            if len(w.data) > 1:
                keep = 1 + self._rng.randrange(len(w.data) - 1)
                actions.append(TornPrefix(file, w.offset, w.data[:keep], len(w.data)))
        actions.extend(rec.action for rec in reversed(self._names))
        self._data.clear()
        self._names.clear()
        self._torn = False
        return actions

    def clear(self) -> list[bytes]:
        """A clean shutdown: everything is durable. Returns every trash entry to delete."""
        freed = [t for rec in self._names for t in _trash_of(rec.action)]
        self._data.clear()
        self._names.clear()
        return freed


def _trash_of(action: NamespaceAction) -> list[bytes]:
    if isinstance(action, RestoreEntry):
        return [action.trash]
    if isinstance(action, MoveBack) and action.victim is not None:
        return [action.victim]
    return []
