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
  change to one of those directories is durable too. fsync of a file never makes its name
  durable. A rename between two directories is undone whole until both have been
  fsynced. (The second condition keeps the undo sound: an unlink in ``b`` of a name that
  a rename from ``a`` put there cannot become durable while that rename can still be
  undone, or the rename's undo would find nothing to move back.)
- A removed entry (unlink, rmdir, the victim of a rename over an existing name) must be
  restorable, so the file system moves it into a hidden trash area and the log records
  only its trash name; once the removal is durable the trash entry is handed back for
  deletion (:meth:`UndoLog.fsync_dir` returns it).

Data undo actions come first in :meth:`power_off`'s list (the file is found by its id,
wherever its names are), then the namespace actions in reverse chronological order, so
each one finds the names exactly as the change it undoes left them.

A torn write (:meth:`UndoLog.arm_torn`): at the next power cut, the last data write that
was not yet durable is kept in part, a seeded random prefix of at least one byte and less
than all of it, over the durable content, as a disk that lost power mid-write would.

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
    """After the data undo: write ``data`` (a prefix of the last write) at ``offset``,
    extending the file if it ends beyond it."""

    file: FileId
    offset: int
    data: bytes


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


@dataclass
class _Namespace:
    action: NamespaceAction
    dirs: frozenset[DirId]  # the directories it changed
    pending: set[DirId] = field(default_factory=set)  # those not fsynced since


class UndoLog:
    """The undo log. Call the recording methods after the change was made in the backing
    store (with what it overwrote), the sync methods when an fsync succeeded."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._data: dict[FileId, list[_Write]] = {}
        self._names: list[_Namespace] = []
        self._last: tuple[FileId, int, bytes] | None = None  # the last unsynced write
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
        self._data.setdefault(file, []).append(_Write(offset, old, old_size, len(data)))
        self._last = (file, offset, data)

    def truncated(self, file: FileId, new_size: int, cut: bytes, old_size: int) -> None:
        """The file's size went from ``old_size`` to ``new_size``; ``cut`` is the bytes a
        shrink removed (empty for a growth)."""
        if new_size == old_size:
            return
        self._data.setdefault(file, []).append(
            _Write(min(new_size, old_size), cut, old_size, abs(new_size - old_size)))

    def fsync(self, file: FileId) -> None:
        """The file's data and size are durable."""
        self._data.pop(file, None)
        if self._last is not None and self._last[0] == file:
            self._last = None

    def forget(self, file: FileId) -> None:
        """The file is gone for good (its last name was deleted): drop its records."""
        self.fsync(file)

    # Namespace.

    def created(self, dir: DirId, name: bytes) -> None:
        self._add(RemoveEntry(dir, name), dir)

    def removed(self, dir: DirId, name: bytes, trash: bytes) -> None:
        self._add(RestoreEntry(dir, name, trash), dir)

    def renamed(self, src_dir: DirId, src_name: bytes, dst_dir: DirId, dst_name: bytes,
                victim: bytes | None) -> None:
        self._add(MoveBack(src_dir, src_name, dst_dir, dst_name, victim), src_dir, dst_dir)

    def _add(self, action: NamespaceAction, *dirs: DirId) -> None:
        self._names.append(_Namespace(action, frozenset(dirs), set(dirs)))

    def fsync_dir(self, dir: DirId) -> list[bytes]:
        """The directory's entries are durable. Returns the trash entries whose removal is
        now durable: the caller deletes them."""
        freed: list[bytes] = []
        kept: list[_Namespace] = []
        blocked: set[DirId] = set()  # directories with an earlier change still undoable
        for rec in self._names:
            rec.pending.discard(dir)
            if rec.pending or rec.dirs & blocked:
                kept.append(rec)
                blocked |= rec.dirs
            else:
                freed.extend(_trash_of(rec.action))
        self._names = kept
        return freed

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
        """The undo actions of a power cut, in the order to apply them, and an empty log."""
        actions: list[Action] = []
        for file, writes in self._data.items():
            actions.extend(RestoreData(file, w.offset, w.old, w.old_size)
                           for w in reversed(writes))
        if self._torn and self._last is not None and len(self._last[2]) > 1:
            file, offset, data = self._last
            keep = 1 + self._rng.randrange(len(data) - 1)
            actions.append(TornPrefix(file, offset, data[:keep]))
        actions.extend(rec.action for rec in reversed(self._names))
        self._data.clear()
        self._names.clear()
        self._last = None
        self._torn = False
        return actions

    def clear(self) -> list[bytes]:
        """A clean shutdown: everything is durable. Returns every trash entry to delete."""
        freed = [t for rec in self._names for t in _trash_of(rec.action)]
        self._data.clear()
        self._names.clear()
        self._last = None
        return freed


def _trash_of(action: NamespaceAction) -> list[bytes]:
    if isinstance(action, RestoreEntry):
        return [action.trash]
    if isinstance(action, MoveBack) and action.victim is not None:
        return [action.victim]
    return []
