"""The lossy file system: a pyfuse3 passthrough to a backing directory that feeds the undo
log (:mod:`lab.lossyfs.undo`), and the fault knobs the control port turns.

The backing directory is the page cache's view: every operation is done there at once,
reads pass straight through, and nothing is ever fsynced on the backing store (the
durability being modelled is the undo log's, not the host's). Removed entries go to the
hidden trash directory :data:`TRASH` at the backing root until their removal is durable.

Inodes: the FUSE inode of a backing file is allocated on first sight and keyed by the
backing inode number, which a rename keeps; each knows its names as (parent inode, name)
pairs, so a path is found by walking up, and a renamed directory needs no rewriting below
it. Inodes are never forgotten (``forget`` is a no-op): a lab run sees few files.

Kernel caching stays as FUSE's default (no ``direct_io``), so mmap works; a power cut
invalidates the kernel's cached attributes, pages and entries of what it touched.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import shutil
import stat
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from lab.lossyfs.undo import (
    Action,
    RemoveEntry,
    RestoreData,
    RestoreEntry,
    Status,
    TornPrefix,
    UndoLog,
)

log = logging.getLogger("lossyfs")
P = ParamSpec("P")
R = TypeVar("R")

TRASH = b".lossyfs-trash"
_TRASH_INO = 0  # the trash directory's parent id in the inode table (never seen by FUSE)
_TIMEOUT = 1.0  # seconds the kernel may cache entries and attributes
_SYNC_FLAGS = os.O_SYNC | os.O_DSYNC
# Never passed to the backing file: O_TRUNC is done (and recorded) by open itself, and
# O_DIRECT would make the unaligned reads and writes of a passthrough fail with EINVAL.
_STRIPPED = (os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_ACCMODE | _SYNC_FLAGS
             | os.O_DIRECT)
_CHUNK = 1 << 20  # bytes read at a time to save what a truncate cuts


def _handler(fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Every FUSE operation: pyfuse3 passes a FUSEError on to the kernel but ends the whole
    file system on any other exception, so an OSError becomes the FUSEError of its errno
    and anything else (a bug) is logged and answered EIO."""

    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return guarded


@dataclass(frozen=True)
class PowerOff:
    """What a power cut did: undo actions applied and failed, and the torn write (None if
    none was armed or there was no write to tear): ``{"file": path from the mount root or
    None, "kept": bytes kept, "of": the write's length}``."""

    undone: int
    failed: int
    torn: dict[str, Any] | None


@dataclass
class _Node:
    ino: int
    backing: int  # the backing store's inode number
    links: set[tuple[int, bytes]] = field(default_factory=set)  # (parent inode, name)


@dataclass
class _Handle:
    ino: int
    fd: int
    sync: bool  # opened O_SYNC/O_DSYNC: each write is durable at once


@dataclass
class Faults:
    slow_fsync_ms: int = 0
    fail_errno: int | None = None
    fail_on: frozenset[str] = frozenset()


class LossyFS(pyfuse3.Operations):
    """The file system. :meth:`power_off`, :meth:`status` and the fault fields are what the
    control port uses."""

    enable_writeback_cache = False

    def __init__(self, backing: Path, seed: int = 0) -> None:
        super().__init__()
        self.root = os.fsencode(os.path.realpath(backing))
        self.undo = UndoLog(seed)
        self.faults = Faults()
        self._trash_dir = os.path.join(self.root, TRASH)
        self._nodes: dict[int, _Node] = {}
        self._by_backing: dict[int, int] = {}
        self._handles: dict[int, _Handle] = {}
        self._next_ino = pyfuse3.ROOT_INODE + 1
        self._next_fh = 1
        self._next_trash = 0
        root = _Node(pyfuse3.ROOT_INODE, os.lstat(self.root).st_ino)
        self._nodes[root.ino] = root
        self._by_backing[root.backing] = root.ino

    def open_trash(self) -> None:
        """Once mounted: an empty trash. One left by a daemon that crashed is emptied (its
        removals count as durable: the undo log that could restore them died with it)."""
        if os.path.lexists(self._trash_dir):
            _remove(self._trash_dir)
        os.mkdir(self._trash_dir, 0o700)

    # The inode table.

    def _path(self, ino: int) -> bytes:
        if ino == pyfuse3.ROOT_INODE:
            return self.root
        if ino == _TRASH_INO:
            return self._trash_dir
        node = self._nodes.get(ino)
        if node is None or not node.links:
            raise pyfuse3.FUSEError(errno.ENOENT)
        parent, name = min(node.links)
        return os.path.join(self._path(parent), name)

    def _child(self, parent: int, name: bytes) -> bytes:
        if parent == pyfuse3.ROOT_INODE and name == TRASH:
            raise pyfuse3.FUSEError(errno.EPERM)
        return os.path.join(self._path(parent), name)

    def _node_for(self, st: os.stat_result) -> _Node:
        ino = self._by_backing.get(st.st_ino)
        if ino is None:
            ino = self._next_ino
            self._next_ino += 1
            self._nodes[ino] = _Node(ino, st.st_ino)
            self._by_backing[st.st_ino] = ino
        return self._nodes[ino]

    def _link(self, parent: int, name: bytes) -> _Node:
        st = os.lstat(self._child(parent, name))
        node = self._node_for(st)
        node.links.add((parent, name))
        return node

    def _unlink(self, parent: int, name: bytes) -> _Node | None:
        """Forget the name (parent, name); returns its node if it had one."""
        for node in self._nodes.values():
            if (parent, name) in node.links:
                node.links.discard((parent, name))
                return node
        return None

    def _drop(self, node: _Node) -> None:
        """The node has no name left anywhere: forget it, and its undo records."""
        if not node.links and node.ino != pyfuse3.ROOT_INODE:
            self._by_backing.pop(node.backing, None)
            self.undo.forget(node.ino)

    def _attr(self, node: _Node, st: os.stat_result) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = node.ino
        a.generation = 0
        a.entry_timeout = _TIMEOUT
        a.attr_timeout = _TIMEOUT
        a.st_mode = st.st_mode
        a.st_nlink = st.st_nlink
        a.st_uid = st.st_uid
        a.st_gid = st.st_gid
        a.st_rdev = st.st_rdev
        a.st_size = st.st_size
        a.st_blksize = st.st_blksize
        a.st_blocks = st.st_blocks
        a.st_atime_ns = st.st_atime_ns
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        return a

    def _entry(self, parent: int, name: bytes) -> pyfuse3.EntryAttributes:
        node = self._link(parent, name)
        return self._attr(node, os.lstat(self._child(parent, name)))

    def _trash(self, path: bytes, node: _Node | None) -> bytes:
        """Move ``path`` into the trash; its trash name."""
        self._next_trash += 1
        name = b"%d" % self._next_trash
        os.rename(path, os.path.join(self._trash_dir, name))
        if node is not None:
            node.links.add((_TRASH_INO, name))
        return name

    def _free_trash(self, names: Iterable[bytes]) -> None:
        for name in names:
            node = self._unlink(_TRASH_INO, name)
            try:
                _remove(os.path.join(self._trash_dir, name))
            except OSError as e:  # the removal is durable all the same: go on
                log.warning("could not delete trash entry %r: %s", name, e)
            if node is not None:
                self._drop(node)
            self._forget_below(node)

    # Faults.

    def _fail(self, on: str) -> None:
        if self.faults.fail_errno is not None and on in self.faults.fail_on:
            raise pyfuse3.FUSEError(self.faults.fail_errno)

    async def _slow(self) -> None:
        # After the sync is recorded: what it covers may be durable before it returns,
        # but a write made while it waits is not covered.
        if self.faults.slow_fsync_ms > 0:
            await trio.sleep(self.faults.slow_fsync_ms / 1000)

    # FUSE operations.

    @_handler
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> pyfuse3.EntryAttributes:
        if name == b".":
            return await self.getattr(parent_inode, ctx)
        if name == b"..":
            up = pyfuse3.ROOT_INODE
            if parent_inode != pyfuse3.ROOT_INODE:
                node = self._nodes.get(parent_inode)
                if node is None or not node.links:
                    raise pyfuse3.FUSEError(errno.ENOENT)
                up = min(node.links)[0]
            return await self.getattr(up, ctx)
        if parent_inode == pyfuse3.ROOT_INODE and name == TRASH:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return _call(self._entry, parent_inode, name)

    @_handler
    async def forget(self, inode_list: Iterable[tuple[int, int]]) -> None:
        return None

    @_handler
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None
                      ) -> pyfuse3.EntryAttributes:
        node = self._nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(node, _call(os.lstat, self._path(inode)))

    @_handler
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        h = self._handles.get(fh) if fh is not None else None
        if h is not None:  # an open file: its name may be gone, its descriptor is not
            return self._setattr(inode, attr, fields, h.fd)
        return self._setattr(inode, attr, fields, self._path(inode))

    def _setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                 fields: pyfuse3.SetattrFields, target: bytes | int
                 ) -> pyfuse3.EntryAttributes:
        """On ``target``, a path (not followed if a symlink) or an open descriptor."""
        path_kw: dict[str, Any] = {} if isinstance(target, int) else {"follow_symlinks": False}
        if fields.update_size:
            self._fail("write")
            if isinstance(target, int):
                self._truncate(inode, target, attr.st_size)
            else:
                fd = os.open(target, os.O_RDWR)
                try:
                    self._truncate(inode, fd, attr.st_size)
                finally:
                    os.close(fd)
        if fields.update_mode:
            os.chmod(target, stat.S_IMODE(attr.st_mode), **path_kw)
        if fields.update_uid or fields.update_gid:
            os.chown(target, attr.st_uid if fields.update_uid else -1,
                     attr.st_gid if fields.update_gid else -1, **path_kw)
        if fields.update_atime or fields.update_mtime:
            st = os.stat(target, **path_kw)
            atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
            mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
            os.utime(target, ns=(atime, mtime), **path_kw)
        node = self._nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(node, os.stat(target, **path_kw))

    def _truncate(self, inode: int, fd: int, size: int) -> None:
        """Truncate the open file to ``size`` and record what was cut."""
        old_size = os.fstat(fd).st_size
        cut = bytearray()
        while size + len(cut) < old_size:
            chunk = os.pread(fd, min(_CHUNK, old_size - size - len(cut)), size + len(cut))
            if not chunk:
                break
            cut += chunk
        os.ftruncate(fd, size)
        self.undo.truncated(inode, size, bytes(cut), old_size)

    @_handler
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return _call(os.readlink, self._path(inode))

    @_handler
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _call(os.mknod, self._child(parent_inode, name), mode, rdev)
        self.undo.created(parent_inode, name)
        return self._entry(parent_inode, name)

    @_handler
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _call(os.mkdir, self._child(parent_inode, name), mode)
        self.undo.created(parent_inode, name)
        return self._entry(parent_inode, name)

    @_handler
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _call(os.symlink, target, self._child(parent_inode, name))
        self.undo.created(parent_inode, name)
        return self._entry(parent_inode, name)

    @_handler
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _call(os.link, self._path(inode), self._child(new_parent_inode, new_name))
        self.undo.created(new_parent_inode, new_name)
        return self._entry(new_parent_inode, new_name)

    @_handler
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> None:
        path = self._child(parent_inode, name)
        if stat.S_ISDIR(_call(os.lstat, path).st_mode):
            raise pyfuse3.FUSEError(errno.EISDIR)
        self._remove_entry(parent_inode, name, path)

    @_handler
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                    ) -> None:
        path = self._child(parent_inode, name)
        if not stat.S_ISDIR(_call(os.lstat, path).st_mode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if os.listdir(path):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self._remove_entry(parent_inode, name, path, is_dir=True)

    def _remove_entry(self, parent: int, name: bytes, path: bytes, *,
                      is_dir: bool = False) -> None:
        node = self._unlink(parent, name)
        trash = _call(self._trash, path, node)
        gone = node.ino if is_dir and node is not None else None
        self.undo.removed(parent, name, trash, gone=gone)

    @_handler
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        src = self._child(parent_inode_old, name_old)
        dst = self._child(parent_inode_new, name_new)
        st = _call(os.lstat, src)
        try:
            victim_st: os.stat_result | None = os.lstat(dst)
        except FileNotFoundError:
            victim_st = None
        victim: bytes | None = None
        gone: int | None = None
        if victim_st is not None:
            if flags & pyfuse3.RENAME_NOREPLACE:
                raise pyfuse3.FUSEError(errno.EEXIST)
            if victim_st.st_ino == st.st_ino:
                return  # two names of one file: rename does nothing
            if stat.S_ISDIR(st.st_mode) and not stat.S_ISDIR(victim_st.st_mode):
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            if not stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(victim_st.st_mode):
                raise pyfuse3.FUSEError(errno.EISDIR)
            if stat.S_ISDIR(victim_st.st_mode) and os.listdir(dst):
                raise pyfuse3.FUSEError(errno.ENOTEMPTY)
            victim_node = self._unlink(parent_inode_new, name_new)
            victim = _call(self._trash, dst, victim_node)
            if stat.S_ISDIR(victim_st.st_mode) and victim_node is not None:
                gone = victim_node.ino
        try:
            os.rename(src, dst)
        except OSError as e:
            if victim is not None:  # put the victim back: nothing happened
                self._move(_TRASH_INO, victim, parent_inode_new, name_new)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        node = self._unlink(parent_inode_old, name_old)
        if node is not None:
            node.links.add((parent_inode_new, name_new))
        self.undo.renamed(parent_inode_old, name_old, parent_inode_new, name_new, victim,
                          gone=gone)

    def _move(self, parent: int, name: bytes, new_parent: int, new_name: bytes) -> None:
        os.rename(os.path.join(self._path(parent), name),
                  os.path.join(self._path(new_parent), new_name))
        node = self._unlink(parent, name)
        if node is not None:
            node.links.add((new_parent, new_name))

    @_handler
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext
                   ) -> pyfuse3.FileInfo:
        if flags & os.O_TRUNC:  # FUSE_CAP_ATOMIC_O_TRUNC: no setattr follows
            self._fail("write")
        fd = _call(os.open, self._path(inode), (flags & ~_STRIPPED) | os.O_RDWR)
        try:
            if flags & os.O_TRUNC:
                self._truncate(inode, fd, 0)
        except BaseException:
            os.close(fd)
            raise
        return pyfuse3.FileInfo(fh=self._new_handle(inode, fd, flags))

    def _new_handle(self, inode: int, fd: int, flags: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(inode, fd, bool(flags & _SYNC_FLAGS))
        return fh

    @_handler
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        existed = os.path.lexists(path)
        if existed and flags & os.O_TRUNC:
            self._fail("write")
        fd = _call(os.open, path, (flags & ~_STRIPPED & ~os.O_NOFOLLOW) | os.O_RDWR
                   | os.O_CREAT | (flags & os.O_EXCL), mode)
        try:
            if not existed:
                self.undo.created(parent_inode, name)
            attr = self._entry(parent_inode, name)
            if existed and flags & os.O_TRUNC:
                self._truncate(attr.st_ino, fd, 0)
                attr = self._attr(self._nodes[attr.st_ino], os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return pyfuse3.FileInfo(fh=self._new_handle(attr.st_ino, fd, flags)), attr

    @_handler
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return _call(os.pread, self._handles[fh].fd, size, off)

    @_handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._fail("write")
        h = self._handles[fh]
        old_size = os.fstat(h.fd).st_size
        old = os.pread(h.fd, len(buf), off) if off < old_size else b""
        n = _call(os.pwrite, h.fd, buf, off)
        self.undo.wrote(h.ino, off, buf[:n], old[:n], old_size, sync=h.sync)
        return n

    @_handler
    async def flush(self, fh: int) -> None:
        return None

    @_handler
    async def release(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if h is not None:
            os.close(h.fd)

    @_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        self._fail("fsync")
        self.undo.fsync(self._handles[fh].ino)
        await self._slow()

    @_handler
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode not in self._nodes:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return inode

    @_handler
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        path = self._path(fh)
        names = sorted(_call(os.listdir, path))
        if fh == pyfuse3.ROOT_INODE:
            names = [n for n in names if n != TRASH]
        for i, name in enumerate(names[start_id:], start_id + 1):
            try:
                attr = self._entry(fh, name)
            except (OSError, pyfuse3.FUSEError):
                continue  # gone since the listing
            if not pyfuse3.readdir_reply(token, name, attr, i):
                break

    @_handler
    async def releasedir(self, fh: int) -> None:
        return None

    @_handler
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self._fail("fsync")
        self._free_trash(self.undo.fsync_dir(fh))
        await self._slow()

    @_handler
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        sv = os.statvfs(self.root)
        out = pyfuse3.StatvfsData()
        for attr in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                     "f_ffree", "f_favail", "f_namemax"):
            setattr(out, attr, getattr(sv, attr))
        return out

    # The control port's operations.

    def status(self) -> Status:
        return self.undo.status()

    async def power_off(self) -> PowerOff:
        """A power cut: undo what was not durable, then make the kernel forget what it
        cached.

        The kernel's pages are dropped first too: dirty pages of a writable shared mmap
        are written back then (as writes, into the undo log) rather than after the undo,
        over it. A page dirtied while the power-off runs is not covered."""
        await trio.to_thread.run_sync(self._invalidate, set(), list(self._nodes))
        actions = self.undo.power_off()
        touched: set[tuple[int, bytes]] = set()
        failed = 0
        torn: TornPrefix | None = None
        for action in actions:
            log.debug("power-off: %s", action)
            try:
                touched |= self._apply(action)
            except (OSError, pyfuse3.FUSEError) as e:
                failed += 1
                log.warning("power-off: could not apply %s: %s", action, e)
            if isinstance(action, TornPrefix):
                torn = action
        inodes = list(self._nodes)
        await trio.to_thread.run_sync(self._invalidate, touched, inodes)
        return PowerOff(len(actions) - failed, failed, self._torn_report(torn))

    def _torn_report(self, torn: TornPrefix | None) -> dict[str, Any] | None:
        if torn is None:
            return None
        try:
            path: str | None = os.fsdecode(os.path.relpath(self._path(torn.file), self.root))
        except pyfuse3.FUSEError:
            path = None
        if path is not None and path.startswith(os.fsdecode(TRASH)):
            path = None  # its name is not durable (or it was removed)
        return {"file": path, "kept": len(torn.data), "of": torn.of}

    def _apply(self, a: Action) -> set[tuple[int, bytes]]:
        if isinstance(a, RestoreData | TornPrefix):
            node = self._nodes.get(a.file)
            if node is None or not node.links:
                return set()  # removed for good since (written while open): nothing to undo
            fd = os.open(self._path(a.file), os.O_RDWR)
            try:
                os.pwrite(fd, a.data, a.offset)
                if isinstance(a, RestoreData):
                    os.ftruncate(fd, a.size)
            finally:
                os.close(fd)
            return set()
        if isinstance(a, RemoveEntry):
            node = self._unlink(a.dir, a.name)
            _remove(os.path.join(self._path(a.dir), a.name))
            if node is not None:
                self._drop(node)
            self._forget_below(node)
            return {(a.dir, a.name)}
        if isinstance(a, RestoreEntry):
            self._move(_TRASH_INO, a.trash, a.dir, a.name)
            return {(a.dir, a.name)}
        self._move(a.dst_dir, a.dst_name, a.src_dir, a.src_name)
        if a.victim is not None:
            self._move(_TRASH_INO, a.victim, a.dst_dir, a.dst_name)
        return {(a.src_dir, a.src_name), (a.dst_dir, a.dst_name)}

    def _forget_below(self, node: _Node | None) -> None:
        """A removed directory's contents went with it: forget their names."""
        if node is None:
            return
        below = [n for n in self._nodes.values()
                 if any(parent == node.ino for parent, _ in n.links)]
        for child in below:
            child.links = {(p, nm) for p, nm in child.links if p != node.ino}
            self._drop(child)
            self._forget_below(child)

    @staticmethod
    def _invalidate(touched: set[tuple[int, bytes]], inodes: list[int]) -> None:
        """In a thread (the kernel may wait on a request the loop must answer): its cached
        entries, attributes and pages may all be stale now. (An error says the kernel had
        nothing cached.)"""
        for parent, name in touched:
            with contextlib.suppress(OSError):
                pyfuse3.invalidate_entry(parent, name)
        for ino in inodes:
            with contextlib.suppress(OSError):
                pyfuse3.invalidate_inode(ino)

    def sync_all(self) -> None:
        """As sync(2), or the kernel's periodic writeback: everything becomes durable."""
        self._free_trash(self.undo.clear())

    def shutdown(self) -> None:
        """A clean unmount: everything written is kept; empty the trash."""
        self.sync_all()
        with contextlib.suppress(OSError):  # something is still in it: leave it
            os.rmdir(self._trash_dir)


def _call(fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Call ``fn``; an OSError becomes the FUSEError the kernel passes on."""
    try:
        return fn(*args, **kwargs)
    except OSError as e:
        raise pyfuse3.FUSEError(e.errno or errno.EIO) from None


def _remove(path: bytes) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)
