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

import errno
import logging
import os
import shutil
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

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
_STRIPPED = os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_ACCMODE | _SYNC_FLAGS


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
        os.makedirs(self._trash_dir, exist_ok=True)
        self._nodes: dict[int, _Node] = {}
        self._by_backing: dict[int, int] = {}
        self._handles: dict[int, _Handle] = {}
        self._next_ino = pyfuse3.ROOT_INODE + 1
        self._next_fh = 1
        self._next_trash = 0
        root = _Node(pyfuse3.ROOT_INODE, os.lstat(self.root).st_ino)
        self._nodes[root.ino] = root
        self._by_backing[root.backing] = root.ino

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
            _remove(os.path.join(self._trash_dir, name))
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

    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> pyfuse3.EntryAttributes:
        if name == b".":
            return await self.getattr(parent_inode, ctx)
        if name == b"..":
            up = pyfuse3.ROOT_INODE
            if parent_inode != pyfuse3.ROOT_INODE:
                up = min(self._nodes[parent_inode].links)[0]
            return await self.getattr(up, ctx)
        if parent_inode == pyfuse3.ROOT_INODE and name == TRASH:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return _call(self._entry, parent_inode, name)

    async def forget(self, inode_list: Iterable[tuple[int, int]]) -> None:
        return None

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None
                      ) -> pyfuse3.EntryAttributes:
        node = self._nodes.get(inode)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(node, _call(os.lstat, self._path(inode)))

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        if fields.update_size:
            self._fail("write")
            fd = _call(os.open, path, os.O_RDWR)
            try:
                old_size = os.fstat(fd).st_size
                cut = os.pread(fd, max(0, old_size - attr.st_size), attr.st_size)
                _call(os.ftruncate, fd, attr.st_size)
            finally:
                os.close(fd)
            self.undo.truncated(inode, attr.st_size, cut, old_size)
        if fields.update_mode:
            _call(os.chmod, path, stat.S_IMODE(attr.st_mode), follow_symlinks=False)
        if fields.update_uid or fields.update_gid:
            _call(os.chown, path, attr.st_uid if fields.update_uid else -1,
                  attr.st_gid if fields.update_gid else -1, follow_symlinks=False)
        if fields.update_atime or fields.update_mtime:
            st = _call(os.lstat, path)
            atime = attr.st_atime_ns if fields.update_atime else st.st_atime_ns
            mtime = attr.st_mtime_ns if fields.update_mtime else st.st_mtime_ns
            _call(os.utime, path, ns=(atime, mtime), follow_symlinks=False)
        return await self.getattr(inode, ctx)

    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return _call(os.readlink, self._path(inode))

    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _call(os.mknod, self._child(parent_inode, name), mode, rdev)
        self.undo.created(parent_inode, name)
        return self._entry(parent_inode, name)

    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _call(os.mkdir, self._child(parent_inode, name), mode)
        self.undo.created(parent_inode, name)
        return self._entry(parent_inode, name)

    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _call(os.symlink, target, self._child(parent_inode, name))
        self.undo.created(parent_inode, name)
        return self._entry(parent_inode, name)

    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        _call(os.link, self._path(inode), self._child(new_parent_inode, new_name))
        self.undo.created(new_parent_inode, new_name)
        return self._entry(new_parent_inode, new_name)

    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                     ) -> None:
        path = self._child(parent_inode, name)
        if stat.S_ISDIR(_call(os.lstat, path).st_mode):
            raise pyfuse3.FUSEError(errno.EISDIR)
        self._remove_entry(parent_inode, name, path)

    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
                    ) -> None:
        path = self._child(parent_inode, name)
        if not stat.S_ISDIR(_call(os.lstat, path).st_mode):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if os.listdir(path):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        self._remove_entry(parent_inode, name, path)

    def _remove_entry(self, parent: int, name: bytes, path: bytes) -> None:
        node = self._unlink(parent, name)
        trash = _call(self._trash, path, node)
        self.undo.removed(parent, name, trash)

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
        try:
            os.rename(src, dst)
        except OSError as e:
            if victim is not None:  # put the victim back: nothing happened
                self._move(_TRASH_INO, victim, parent_inode_new, name_new)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        node = self._unlink(parent_inode_old, name_old)
        if node is not None:
            node.links.add((parent_inode_new, name_new))
        self.undo.renamed(parent_inode_old, name_old, parent_inode_new, name_new, victim)

    def _move(self, parent: int, name: bytes, new_parent: int, new_name: bytes) -> None:
        os.rename(os.path.join(self._path(parent), name),
                  os.path.join(self._path(new_parent), new_name))
        node = self._unlink(parent, name)
        if node is not None:
            node.links.add((new_parent, new_name))

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext
                   ) -> pyfuse3.FileInfo:
        fd = _call(os.open, self._path(inode), (flags & ~_STRIPPED) | os.O_RDWR)
        return pyfuse3.FileInfo(fh=self._new_handle(inode, fd, flags))

    def _new_handle(self, inode: int, fd: int, flags: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = _Handle(inode, fd, bool(flags & _SYNC_FLAGS))
        return fh

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        existed = os.path.lexists(path)
        fd = _call(os.open, path, (flags & ~_STRIPPED & ~os.O_NOFOLLOW) | os.O_RDWR
                   | os.O_CREAT | (flags & os.O_EXCL), mode)
        if not existed:
            self.undo.created(parent_inode, name)
        attr = self._entry(parent_inode, name)
        return pyfuse3.FileInfo(fh=self._new_handle(attr.st_ino, fd, flags)), attr

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return _call(os.pread, self._handles[fh].fd, size, off)

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._fail("write")
        h = self._handles[fh]
        old_size = os.fstat(h.fd).st_size
        old = os.pread(h.fd, len(buf), off) if off < old_size else b""
        n = _call(os.pwrite, h.fd, buf, off)
        self.undo.wrote(h.ino, off, buf[:n], old[:n], old_size, sync=h.sync)
        return n

    async def flush(self, fh: int) -> None:
        return None

    async def release(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if h is not None:
            os.close(h.fd)

    async def fsync(self, fh: int, datasync: bool) -> None:
        self._fail("fsync")
        self.undo.fsync(self._handles[fh].ino)
        await self._slow()

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode not in self._nodes:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return inode

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

    async def releasedir(self, fh: int) -> None:
        return None

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        self._fail("fsync")
        self._free_trash(self.undo.fsync_dir(fh))
        await self._slow()

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

    async def power_off(self) -> int:
        """A power cut: undo what was not durable, then make the kernel forget what it
        cached. Returns how many undo actions were applied."""
        actions = self.undo.power_off()
        touched: set[tuple[int, bytes]] = set()
        for action in actions:
            log.debug("power-off: %s", action)
            try:
                touched |= self._apply(action)
            except (OSError, pyfuse3.FUSEError) as e:
                log.warning("power-off: could not apply %s: %s", action, e)
        inodes = list(self._nodes)
        await trio.to_thread.run_sync(self._invalidate, touched, inodes)
        return len(actions)

    def _apply(self, a: Action) -> set[tuple[int, bytes]]:
        if isinstance(a, RestoreData | TornPrefix):
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
            try:
                pyfuse3.invalidate_entry(parent, name)
            except OSError:
                pass
        for ino in inodes:
            try:
                pyfuse3.invalidate_inode(ino)
            except OSError:
                pass

    def sync_all(self) -> None:
        """As sync(2), or the kernel's periodic writeback: everything becomes durable."""
        self._free_trash(self.undo.clear())

    def shutdown(self) -> None:
        """A clean unmount: everything written is kept; empty the trash."""
        self.sync_all()
        try:
            os.rmdir(self._trash_dir)
        except OSError:
            pass  # something is still in it: leave it


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
