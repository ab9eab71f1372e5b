"""HTML reports: ``RUN_DIR/index.html`` for one run, and its summary row for the index.

Public surface:

* :func:`render_run` — render a run directory's page; returns the path of ``index.html``;
* :func:`summarize_run` — the facts of a run as one JSON-ready row (started, system,
  workload, faults, seed, verdict, operations, anomalies, recovery time, throughput);
* :func:`is_run_dir` — whether a directory holds a run;
* :func:`render_index` — render ``ROOT/index.html``, the runs index of a reports folder.

The report renders; it decides nothing. A run's data is read by :mod:`lab.rundata`, and
availability per fault and whether the faults bit come from the verdict
(:func:`lab.verdict.analyse_faults`).

Modules: ``plots`` (inline SVG), ``anomalies`` (checker results
and failing windows), ``table`` (the history table's data), ``run_page`` (the page),
``index_page`` (the runs index), ``serve`` (``raftlab serve``: the folder over HTTP).
"""

from lab.report.index_page import render_index
from lab.report.run_page import render_run, summarize_run
from lab.rundata import is_run_dir

__all__ = ["is_run_dir", "render_index", "render_run", "summarize_run"]
