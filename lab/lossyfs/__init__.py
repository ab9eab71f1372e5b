"""The lossy-disk file system: a FUSE mount that, told to power off, forgets whatever was
not made durable (docs/lossyfs.md). ``undo`` is the pure model of what is durable, ``fs``
the pyfuse3 file system, ``__main__`` the daemon and its control port, ``namespace`` the
private mount namespace it runs in. Nothing here imports pyfuse3 but ``fs``."""
