"""``python -m lab.lossyfs BACKING MOUNTPOINT --control HOST:PORT``: mount the lossy file
system and serve its JSON-lines control port (docs/lossyfs.md), until SIGTERM or SIGINT,
which unmount it cleanly.

Once mounted it prints one JSON line on stdout:
``{"event": "ready", "control": [host, port], "mount": MOUNTPOINT, "pid": PID}``.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:  # pyfuse3 is imported only once it is known to be there
    from lab.lossyfs.fs import LossyFS

MAX_LINE = 64 * 1024
log = logging.getLogger("lossyfs")


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if host != "127.0.0.1":
        raise argparse.ArgumentTypeError(f"{text!r}: the control port binds 127.0.0.1 only")
    try:
        number = int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the port is not a number") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: the port is not in 0..65535")
    return host, number


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab.lossyfs",
        description="Mount BACKING at MOUNTPOINT as a file system that loses, on a "
                    "power-off sent to its control port, whatever was not fsynced.")
    p.add_argument("backing", type=Path, help="the directory that holds the files")
    p.add_argument("mountpoint", type=Path, help="an existing empty directory")
    p.add_argument("--control", type=_address, default=("127.0.0.1", 0),
                   help="127.0.0.1:PORT for the control port (0: any free port)")
    p.add_argument("--seed", type=int, default=0, help="for the torn write's length")
    return p


class Control:
    """The control protocol, one JSON object a line each way."""

    errnos = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC}
    fault_on = ("write", "fsync")

    def __init__(self, fs: LossyFS) -> None:
        self.fs = fs

    async def answer(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except (ValueError, RecursionError):
            return self._reject(line, "not JSON")
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            return self._reject(line, 'expected an object with a string "op"')
        op = req["op"]
        try:
            return await self._op(op, req)
        except ValueError as e:
            return self._reject(line, str(e))
        except Exception as e:  # a bug here must not take the file system down
            log.exception("control: %s failed", op)
            return {"ok": False, "error": f"{op}: {e}"}

    def _reject(self, line: bytes, why: str) -> dict[str, Any]:
        log.warning("control: rejected %r: %s", line[:200], why)
        return {"ok": False, "error": why}

    async def _op(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        fs = self.fs
        if op == "status":
            st = fs.status()
            return {"ok": True, "unsynced_bytes": st.unsynced_bytes,
                    "unsynced_files": st.unsynced_files, "namespace_ops": st.namespace_ops,
                    "torn_armed": st.torn_armed, "slow_fsync_ms": fs.faults.slow_fsync_ms,
                    "fail": self._fail_state()}
        if op == "power-off":
            done = await fs.power_off()
            log.info("power-off: %d undo actions applied, %d failed, torn: %s",
                     done.undone, done.failed, done.torn)
            out: dict[str, Any] = {"ok": done.failed == 0, "undone": done.undone,
                                   "failed": done.failed, "torn": done.torn}
            if done.failed:
                out["error"] = (f"power-off: {done.failed} undo actions failed (the log "
                                "says which)")
            return out
        if op == "sync":
            fs.sync_all()
            return {"ok": True}
        if op == "torn-write":
            fs.undo.arm_torn()
            return {"ok": True}
        if op == "slow-fsync":
            ms = req.get("ms")
            if not isinstance(ms, int) or isinstance(ms, bool) or not 0 <= ms <= 600_000:
                raise ValueError('slow-fsync: "ms" must be an integer in 0..600000')
            fs.faults.slow_fsync_ms = ms
            return {"ok": True, "slow_fsync_ms": ms}
        if op == "fail":
            name = req.get("errno")
            if not isinstance(name, str) or name not in self.errnos:
                raise ValueError(f'fail: "errno" must be one of {sorted(self.errnos)}')
            on = req.get("on", list(self.fault_on))
            if (not isinstance(on, list) or not on
                    or any(x not in self.fault_on for x in on)):
                raise ValueError(f'fail: "on" must be a non-empty list of {list(self.fault_on)}')
            fs.faults.fail_errno = self.errnos[name]
            fs.faults.fail_on = frozenset(on)
            return {"ok": True, "fail": self._fail_state()}
        if op == "heal":
            fs.faults.slow_fsync_ms = 0
            fs.faults.fail_errno = None
            fs.faults.fail_on = frozenset()
            return {"ok": True}
        raise ValueError(f"unknown op {op!r} (status, power-off, sync, torn-write, "
                         "slow-fsync, fail, heal)")

    def _fail_state(self) -> dict[str, Any] | None:
        f = self.fs.faults
        if f.fail_errno is None:
            return None
        name = next(k for k, v in self.errnos.items() if v == f.fail_errno)
        return {"errno": name, "on": sorted(f.fail_on)}

    async def serve(self, stream: trio.SocketStream) -> None:
        buf = b""
        try:
            async with stream:
                while True:
                    data = await stream.receive_some(MAX_LINE)
                    if not data:
                        return
                    buf += data
                    while b"\n" in buf:
                        if buf.index(b"\n") > MAX_LINE:
                            break  # too long: rejected below, unread
                        line, buf = buf.split(b"\n", 1)
                        if line.strip():
                            out = await self.answer(line)
                            await stream.send_all(json.dumps(out).encode() + b"\n")
                    if len(buf) > MAX_LINE:
                        out = self._reject(buf, f"line longer than {MAX_LINE} bytes")
                        await stream.send_all(json.dumps(out).encode() + b"\n")
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return


async def _main(args: argparse.Namespace) -> None:
    import pyfuse3

    from lab.lossyfs.fs import LossyFS

    fs = LossyFS(args.backing, seed=args.seed)
    options = set(pyfuse3.default_options) | {"fsname=lossyfs", "subtype=lossyfs"}
    pyfuse3.init(fs, str(args.mountpoint), options)
    control = Control(fs)
    clean = Clean()
    try:
        fs.open_trash()
        async with trio.open_nursery() as nursery:
            serve = functools.partial(trio.serve_tcp, control.serve, args.control[1],
                                      host=args.control[0])
            listeners = await nursery.start(serve)
            host, port = listeners[0].socket.getsockname()[:2]
            await nursery.start(_signals, nursery, clean)  # before "ready": no SIGTERM lost
            print(json.dumps({"event": "ready", "control": [host, port],
                              "mount": str(args.mountpoint), "pid": os.getpid()}),
                  flush=True)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)
        if clean.exit:  # a crash must not make everything durable: keep the trash
            fs.shutdown()
            log.info("unmounted %s", args.mountpoint)
        else:
            log.error("unmounted %s without a clean exit: the trash is left for the next "
                      "mount to empty", args.mountpoint)


class Clean:
    exit = False  # a SIGTERM or SIGINT asked the file system to end


async def _signals(nursery: trio.Nursery, clean: Clean, *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    import pyfuse3

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for sig in signals:
            log.info("signal %d: unmounting", sig)
            clean.exit = True
            pyfuse3.terminate()
            nursery.cancel_scope.cancel()
            return


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s lossyfs %(levelname)s %(message)s")
    if not args.backing.is_dir():
        print(f"lossyfs: {args.backing}: not a directory", file=sys.stderr)
        return 2
    if not args.mountpoint.is_dir():
        print(f"lossyfs: {args.mountpoint}: not a directory", file=sys.stderr)
        return 2
    backing, mountpoint = args.backing.resolve(), args.mountpoint.resolve()
    if (backing == mountpoint or backing.is_relative_to(mountpoint)
            or mountpoint.is_relative_to(backing)):
        print(f"lossyfs: the backing directory {backing} and the mountpoint {mountpoint} "
              "overlap: they must be apart", file=sys.stderr)
        return 2
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        print("lossyfs: pyfuse3 is not installed: pip install -e '.[disk]'", file=sys.stderr)
        return 2
    try:
        trio.run(_main, args)
    except RuntimeError as e:  # pyfuse3.init: the mount itself failed
        print(f"lossyfs: cannot mount {args.mountpoint}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
