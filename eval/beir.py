"""BEIR folders (corpus.jsonl, queries.jsonl, qrels/test.tsv): read them, and lay the corpus out as files.

Each corpus document becomes one Markdown file named after its id, so retrieved sources map back to doc ids.
Ingesting those files is the caller's business.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

from eval.questions import Question
from indexes.errors import InvalidRequest

_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,150}")


class BeirFolderInvalid(InvalidRequest):
    code = "beir_folder_invalid"


def source_for(doc_id: str) -> str:
    """The file name a document is written under: its id when that is a safe file name, else a hash."""
    if _SAFE_ID.fullmatch(doc_id):
        return f"{doc_id}.md"
    return f"doc-{hashlib.sha1(doc_id.encode()).hexdigest()[:16]}.md"


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise BeirFolderInvalid(f"{path} is missing: a BEIR folder has corpus.jsonl, queries.jsonl, qrels/")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    if not path.is_file():
        raise BeirFolderInvalid(f"{path} is missing: BEIR relevance judgements live in qrels/<split>.tsv")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(newline="") as handle:
        for row in csv.reader(handle, delimiter="\t"):
            if not row or row[0] == "query-id":
                continue
            query_id, doc_id, score = row[0], row[1], int(row[2])
            qrels.setdefault(query_id, {})[doc_id] = score
    return qrels


def write_corpus(folder: Path, target: Path) -> int:
    """Write every corpus document as TARGET/<id>.md (title as its heading); returns how many."""
    target.mkdir(parents=True, exist_ok=True)
    documents = _jsonl(folder / "corpus.jsonl")
    for doc in documents:
        title = (doc.get("title") or "").strip()
        body = (doc.get("text") or "").strip()
        text = f"# {title}\n\n{body}\n" if title else f"{body}\n"
        (target / source_for(str(doc["_id"]))).write_text(text)
    return len(documents)


def load_queries(folder: Path, split: str = "test") -> list[Question]:
    """The queries judged in qrels/<split>.tsv, with their relevant documents as graded gold sources."""
    texts = {str(q["_id"]): q["text"] for q in _jsonl(folder / "queries.jsonl")}
    qrels = read_qrels(folder / "qrels" / f"{split}.tsv")
    questions = []
    for query_id, judged in qrels.items():
        if query_id not in texts:
            raise BeirFolderInvalid(f"qrels/{split}.tsv judges query {query_id!r}, absent from queries.jsonl")
        relevant = {source_for(doc): grade for doc, grade in judged.items() if grade > 0}
        questions.append(
            Question(
                id=query_id,
                question=texts[query_id],
                sources=list(relevant),
                relevance=relevant,
                kind="beir",
            )
        )
    return questions
