"""Could retrieval alone tell a question the docs do not cover, before the LLM is asked? Reads `ragsvc eval
run` folders (dense and sparse retrieval records, scores kept) and prints, per rule and threshold, how many
uncovered questions it would refuse and how many answerable ones it would wrongly refuse.

Usage: python bench/refusal_evidence.py RUN_DIR:QUESTIONS.jsonl [RUN_DIR:QUESTIONS.jsonl ...]
Rules: the best dense chunk's cosine below a threshold; dense and BM25 sharing no page in their top 5.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, where bench/ingest.py would shadow the `ingest` package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from eval.questions import load_questions  # noqa: E402

THRESHOLDS = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55)


def evidence(run_dir: Path, questions: Path) -> list[tuple[str, bool, float, int]]:
    """(key, answerable, best dense score, pages shared by dense and BM25 top 5) per question."""
    answerable = {q.key: q.answerable for q in load_questions(questions)}
    by_key: dict[str, dict[str, dict]] = {}
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["stage"] == "retrieval":
            by_key.setdefault(record["key"], {})[record["mode"]] = record
    rows = []
    for key, modes in by_key.items():
        if "dense" not in modes or "sparse" not in modes or key not in answerable:
            continue
        best = modes["dense"]["chunks"][0]["score"] if modes["dense"]["chunks"] else 0.0
        shared = len(set(modes["dense"]["pages"][:5]) & set(modes["sparse"]["pages"][:5]))
        rows.append((key, answerable[key], best, shared))
    return rows


def main() -> None:
    for spec in sys.argv[1:]:
        run_dir, questions = spec.split(":")
        rows = evidence(Path(run_dir), Path(questions))
        covered = [r for r in rows if r[1]]
        uncovered = [r for r in rows if not r[1]]
        print(f"{run_dir}: {len(covered)} answerable, {len(uncovered)} not covered")
        for t in THRESHOLDS:
            right = sum(r[2] < t for r in uncovered)
            wrong = sum(r[2] < t for r in covered)
            print(
                f"  dense best < {t:.2f}: refuses {right}/{len(uncovered)} uncovered, {wrong}/{len(covered)} answerable"
            )
        right = sum(r[3] == 0 for r in uncovered)
        wrong = sum(r[3] == 0 for r in covered)
        print(
            f"  dense and BM25 top 5 share no page: refuses {right}/{len(uncovered)} uncovered, {wrong}/{len(covered)} answerable"
        )
        scores = sorted(round(r[2], 3) for r in uncovered)
        print(f"  best dense score of the uncovered questions: {scores}")


if __name__ == "__main__":
    main()
