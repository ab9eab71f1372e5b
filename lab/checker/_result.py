"""What a checker returns: a verdict, one sentence of reason, anomalies, statistics.

``valid`` is ``True`` (valid), ``False`` (an anomaly was found) or ``None`` (unknown:
the checker ran out of time, or the history is too weak to mean anything). An unknown
verdict is never a guess in disguise: a checker that cannot decide says so.

Each anomaly is a JSON-ready dict with at least ``type``, ``ops`` (the operations
involved, each with its history ``index``) and ``explanation`` (prose a person can
follow). Models add their own fields (a cycle's ``steps``, a read's ``bounds``...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from lab.checker._events import Op
from lab.exitcode import ExitCode


@dataclass
class CheckResult:
    """The outcome of checking one history against one model."""

    valid: bool | None
    model: str
    reason: str
    anomalies: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    per_key: dict[str, str] | None = None
    elapsed: float = 0.0

    @property
    def verdict(self) -> str:
        """``valid``, ``invalid`` or ``unknown``."""
        return {True: "valid", False: "invalid", None: "unknown"}[self.valid]

    @property
    def exit_code(self) -> ExitCode:
        """0 valid, 1 invalid, 3 unknown (:meth:`ExitCode.for_verdict`)."""
        return ExitCode.for_verdict(self.verdict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (``json.dumps`` works on it) for results.json and the report."""
        out: dict[str, Any] = {
            "verdict": self.verdict,
            "valid": self.valid,
            "model": self.model,
            "reason": self.reason,
            "anomalies": self.anomalies,
            "stats": self.stats,
            "elapsed_s": round(self.elapsed, 6),
        }
        if self.per_key is not None:
            out["per_key"] = self.per_key
        return out

    def explain(self, max_anomalies: int = 10) -> str:
        """Human-readable text: the verdict, the reason, then each anomaly explained."""
        lines = [f"{self.verdict.upper()} ({self.model}): {self.reason}"]
        for a in self.anomalies[:max_anomalies]:
            lines.append(f"- {a['type']}: " + a["explanation"].replace("\n", "\n    "))
        if len(self.anomalies) > max_anomalies:
            lines.append(f"- ... and {len(self.anomalies) - max_anomalies} more anomalies")
        return "\n".join(lines)


def fmt(value: Any) -> str:
    """A value as it would appear in the history (JSON), for explanations."""
    return json.dumps(value, sort_keys=True, default=str)


def op_span(op: Op) -> str:
    """Where an operation sits in the history, e.g. ``process 3, index 14..17``."""
    if op.pending:
        end = "never completed"
    elif op.type == "info":
        end = f"{op.complete_index} info"
    else:
        end = str(op.complete_index)
    return f"process {op.process}, index {op.invoke_index}..{end}"


def anomaly(typ: str, ops: list[Op], explanation: str, **extra: Any) -> dict[str, Any]:
    """Build an anomaly dict in the shape every model uses."""
    a: dict[str, Any] = {"type": typ, "ops": [o.to_json() for o in ops],
                         "explanation": explanation}
    a.update(extra)
    return a
