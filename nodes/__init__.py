"""raftkv: a Raft-replicated key-value store, the first system the lab tests.

Layout: ``types`` (data crossing a boundary, one decoder), ``raft`` (the sans-IO
consensus core), ``kv`` (the replicated state machine), ``wal`` (durable storage),
``server`` (the trio driver: transport, client protocol, main loop), ``cli``.
"""
