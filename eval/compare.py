"""Read reports back: the deltas between two runs, and --fail-under gates on one run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eval.summary import flatten, lower_is_better
from indexes.errors import RagsvcError


class InvalidGate(RagsvcError):
    code = "invalid_gate"


@dataclass
class Delta:
    metric: str
    before: float | None
    after: float | None

    @property
    def change(self) -> float | None:
        if self.before is None or self.after is None:
            return None
        return self.after - self.before

    @property
    def verdict(self) -> str:
        """better, worse or same, reading latencies and wrong refusals as lower-is-better."""
        change = self.change
        if change is None or abs(change) < 1e-9:
            return "same"
        improved = change < 0 if lower_is_better(self.metric) else change > 0
        return "better" if improved else "worse"


@dataclass
class Failure:
    metric: str
    value: float
    threshold: float


def load_report(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / "report.json"
    return json.loads(path.read_text())


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[Delta]:
    a, b = flatten(before), flatten(after)
    names = list(dict.fromkeys([*a, *b]))
    return [Delta(name, a.get(name), b.get(name)) for name in names]


def question_changes(
    before: dict[str, Any], after: dict[str, Any], metric: str = "ndcg@10"
) -> dict[str, Any]:
    """Per mode, the questions whose `metric` rose or fell between the runs (matched by question key)."""

    def scores(report: dict[str, Any]) -> dict[tuple[str, str], float]:
        out = {}
        for row in report["per_question"]:
            for mode, r in row["retrieval"].items():
                if r.get("metrics"):
                    out[(mode, row["key"])] = r["metrics"][metric]
        return out

    a, b = scores(before), scores(after)
    questions = {row["key"]: row["question"] for row in after["per_question"]}
    changes: dict[str, Any] = {}
    for (mode, key), value in b.items():
        if (mode, key) not in a or abs(value - a[(mode, key)]) < 1e-9:
            continue
        side = "improved" if value > a[(mode, key)] else "worsened"
        changes.setdefault(mode, {"improved": [], "worsened": []})[side].append(
            {"question": questions[key], "before": a[(mode, key)], "after": value}
        )
    return changes


def parse_gate(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError(text)
        return name.strip(), float(value)
    except ValueError:
        raise InvalidGate(
            f"--fail-under takes METRIC=VALUE, such as hybrid.ndcg@10=0.8; got {text!r}"
        ) from None


def check_gates(report: dict[str, Any], gates: list[str]) -> list[Failure]:
    """The gates a report falls below. A bare metric (ndcg@10) applies to every mode that was run."""
    flat = flatten(report)
    failures = []
    for gate in gates:
        name, threshold = parse_gate(gate)
        matched = [key for key in flat if key == name or key.endswith("." + name)]
        if not matched:
            known = ", ".join(sorted(flat))
            raise InvalidGate(
                f"--fail-under names {name!r}, which this run has no value for; it has: {known}"
            )
        failures += [Failure(key, flat[key], threshold) for key in matched if flat[key] < threshold]
    return failures
