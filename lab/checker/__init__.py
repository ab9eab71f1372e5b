"""History checkers: is a recorded history consistent with a model?

Public surface (implementation lives in the private modules):

* :func:`check_history` — check decoded events against a model -> :class:`CheckResult`;
* :func:`load_history` — read and validate a JSON-lines history file into a
  :class:`DecodedHistory` (operations with invoke and completion merged);
* :class:`HistoryError` — bad input, printed as ``FILE:LINE: what was wrong``;
* :func:`election_safety`, :func:`leader_safety`, :func:`vote_safety`,
  :func:`commit_safety` — Raft's safety rules checked against what the members said about
  themselves (status polls, their own logs), for the verdict (:mod:`lab.verdict`), and
  :func:`log_check`, how much each log-based check could say (``no evidence``);
* :func:`replica_agreement` — the members' digests of their applied logs and states
  compared at every index two of them logged (``_agreement``);
* :data:`MODELS` — the model names (and :data:`WORKLOAD_MODELS`, the ones a lab workload
  generates, with their operations): the one list, in ``_models``, that scenario files,
  their JSON Schema and ``raftlab check`` all use; ``lab.checker.cli`` is ``raftlab check``.

Modules: ``_events`` (decoding), ``_wgl`` (linearizability search), ``_register``
(cas-register, kv-put-append), ``_counter``, ``_set``, ``_bank``, ``_elle``
(list-append), ``_stats`` (statistics and the too-weak rule), ``_result``, ``_api``,
``_models`` (the model names and the operations a workload of each may mix),
``_peer`` (where the peer histories used by tests and benchmarks live), ``_cluster``
(the safety checks over the members' own status reports and logs), ``_agreement`` (the
replica agreement check over the members' logged digests).
"""

from lab.checker._agreement import replica_agreement
from lab.checker._api import UnknownModelError, check_history
from lab.checker._cluster import (
    commit_safety,
    election_safety,
    harness_exit,
    leader_safety,
    log_check,
    member_crashes,
    member_lags,
    vote_safety,
)
from lab.checker._events import DecodedHistory, HistoryError, Op, history_from_events, load_history
from lab.checker._models import MODELS, WORKLOAD_MODELS, unknown_model
from lab.checker._result import CheckResult

__all__ = [
    "MODELS",
    "WORKLOAD_MODELS",
    "CheckResult",
    "DecodedHistory",
    "HistoryError",
    "Op",
    "UnknownModelError",
    "check_history",
    "commit_safety",
    "election_safety",
    "harness_exit",
    "history_from_events",
    "leader_safety",
    "load_history",
    "log_check",
    "member_crashes",
    "member_lags",
    "replica_agreement",
    "unknown_model",
    "vote_safety",
]
