"""Cost of the lossy-disk file system on the path that matters to a WAL: fsynced appends.

Usage::

    .venv/bin/python bench/lossyfs_bench.py [--seconds 3] [--size 4096] [--json OUT]

Needs root, /dev/fuse and pyfuse3 (``pip install -e '.[disk]'``). The script re-runs
itself under ``unshare --mount --propagation private``, so the mount is never seen by the
host and dies with the run. Inside, it starts ``python -m lab.lossyfs`` on a backing
directory and, one after the other, in one thread with plain ``os`` calls, appends
``--size`` bytes then ``fdatasync`` in a loop for ``--seconds`` seconds: first on a plain
directory next to the backing directory (same file system), then through the lossy mount.
It prints appends per second for both, and their ratio.

Read the ratio with the difference in mind: on the plain directory ``fdatasync`` goes to
the device; on the lossy mount it is only recorded (the undo log drops the file's records),
and every write costs a FUSE round trip to a Python daemon plus a read of the bytes it
overwrites. On 2 cores, other load on the machine moves both figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab.lossyfs import namespace  # noqa: E402


def appends(directory: Path, seconds: float, size: int) -> tuple[int, float]:
    """Appends of ``size`` bytes each followed by fdatasync, for ``seconds``: (count,
    elapsed seconds)."""
    block = b"x" * size
    fd = os.open(directory / "wal", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        n = 0
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            os.write(fd, block)
            os.fdatasync(fd)
            n += 1
        return n, time.perf_counter() - start
    finally:
        os.close(fd)


def inside(args: argparse.Namespace) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="lossyfs-bench-"))
    backing, mnt, plain = base / "backing", base / "mnt", base / "plain"
    for d in (backing, mnt, plain):
        d.mkdir()
    daemon = subprocess.Popen(namespace.with_parent([
        sys.executable, "-m", "lab.lossyfs", str(backing), str(mnt),
        "--control", "127.0.0.1:0"]), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        cwd=ROOT)
    try:
        assert daemon.stdout is not None
        json.loads(daemon.stdout.readline())  # ready: mounted
        n_plain, t_plain = appends(plain, args.seconds, args.size)
        n_lossy, t_lossy = appends(mnt, args.seconds, args.size)
    finally:
        daemon.terminate()
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        shutil.rmtree(base, ignore_errors=True)
    return {"plain_per_s": n_plain / t_plain, "lossy_per_s": n_lossy / t_lossy,
            "ratio": (n_lossy / t_lossy) / (n_plain / t_plain)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="per directory (default 3)")
    p.add_argument("--size", type=int, default=4096, help="bytes per append (default 4096)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inside:
        print(json.dumps(inside(args)))
        return 0
    why = namespace.problem()
    if why is not None:
        print(f"lossyfs_bench: {why}", file=sys.stderr)
        return 2
    out = subprocess.run(namespace.private([sys.executable, __file__, "--inside",
                                            "--seconds", str(args.seconds),
                                            "--size", str(args.size)]),
                         stdout=subprocess.PIPE, check=True, cwd=ROOT)
    figures = json.loads(out.stdout)
    print(f"machine: {os.cpu_count()} cores; {args.size}-byte append + fdatasync, "
          f"{args.seconds:g} s each")
    print(f"  plain directory : {figures['plain_per_s']:10.0f} appends/s")
    print(f"  lossy mount     : {figures['lossy_per_s']:10.0f} appends/s")
    print(f"  ratio lossy/plain: {figures['ratio']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
