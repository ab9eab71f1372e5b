"""The consistency models, in one place.

Every model a history can be checked against (``raftlab check --model``, a workload's
``model``, the JSON Schema of workload files) comes from :data:`MODEL_OPERATIONS`.
"""

from __future__ import annotations

#: Every model the checker knows -> the operation functions a lab workload of that model
#: may mix (``mix``). ``()``: checked, but no workload generates it (``kv-put-append`` is
#: for histories from elsewhere; ``stats`` only counts operations and checks nothing).
MODEL_OPERATIONS: dict[str, tuple[str, ...]] = {
    "cas-register": ("read", "write", "cas"),
    "register": ("read", "write"),
    "kv-put-append": (),
    "counter": ("add", "read"),
    "set": ("add",),
    "bank": ("transfer", "read"),
    "list-append": ("txn",),
    "stats": (),
}

#: The model names ``check_history`` and ``raftlab check --model`` accept.
MODELS: tuple[str, ...] = tuple(MODEL_OPERATIONS)

#: The models a workload file may name -> the operation functions its ``mix`` may use.
WORKLOAD_MODELS: dict[str, tuple[str, ...]] = {
    model: fs for model, fs in MODEL_OPERATIONS.items() if fs}


def unknown_model(name: str) -> str:
    """The one-line complaint about a model name that is not one of :data:`MODELS`."""
    return f"unknown model {name!r} (choose from {', '.join(MODELS)})"
