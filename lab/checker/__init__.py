"""History checkers: is a recorded history consistent with a model?

Public surface (implementation lives in the private modules):

* :func:`check_history` — check decoded events against a model -> :class:`CheckResult`;
* :func:`load_history` — read and validate a JSON-lines history file into a
  :class:`DecodedHistory` (operations with invoke and completion merged);
* :class:`HistoryError` — bad input, printed as ``FILE:LINE: what was wrong``;
* :data:`MODELS` — the model names; ``lab.checker.cli.main`` is ``raftlab check``.

Modules: ``_events`` (decoding), ``_wgl`` (linearizability search), ``_register``
(cas-register, kv-put-append), ``_counter``, ``_set``, ``_bank``, ``_elle``
(list-append), ``_stats`` (statistics and the too-weak rule), ``_result``, ``_api``,
``_peer`` (where the peer histories used by tests and benchmarks live), ``_cluster``
(election safety from the members' own status reports, ``cluster.jsonl``).
"""

from lab.checker._api import MODELS, UnknownModelError, check_history
from lab.checker._events import DecodedHistory, HistoryError, Op, history_from_events, load_history
from lab.checker._result import CheckResult

__all__ = [
    "MODELS",
    "CheckResult",
    "DecodedHistory",
    "HistoryError",
    "Op",
    "UnknownModelError",
    "check_history",
    "history_from_events",
    "load_history",
]
