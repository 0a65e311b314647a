"""The faithfulness judge: verdicts read from first-token logprobs, the text fallback, and how well the
bundled SmolLM2 separates supported from unsupported claims (it does not: see the last test)."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer

import pytest

from eval.judge import OpenAIJudge, Verdict, Verdicts, claims, p_yes
from tests.faulty_llm import JSONHandler

# Chunks of the ragsvc-docs collection (docs/ ingested with the default chunking), copied verbatim on
# 2026-11-30 so that the claims below keep their labels when the docs change.
CHUNKS = {
    "language-model": (
        "RAGSVC_LLM_BASE_URL\n   Base URL of the OpenAI-compatible API. Default:\n   http://127.0.0.1:8081/v1, "
        "where ragsvc llm serve listens.\nRAGSVC_LLM_API_KEY\n   API key sent to the LLM server. Not needed for "
        "the local llama-server;\n   set it for hosted APIs.\nRAGSVC_LLM_MODEL\n   Model name sent with each "
        "request. Set it when the server hosts several\n   models and needs to know which one to use.\n"
        "RAGSVC_LLM_CONTEXT_WINDOW\n   Context window of the model in tokens, used to decide how much retrieved\n"
        "   text fits in the prompt. Default: 2048.\nRAGSVC_LLM_MAX_TOKENS\n   Maximum length of a generated "
        "answer in tokens. Default: 256.\nRAGSVC_LLM_TIMEOUT\n   Seconds to wait for the LLM before giving up. "
        "Default: 60."
    ),
    "api-server": (
        "RAGSVC_HOST\n   Interface ragsvc serve binds to. Default: 127.0.0.1 (local\n   connections only).\n"
        "RAGSVC_PORT\n   Port of the REST API. Default: 8000."
    ),
    "data-directory": (
        "Everything ragsvc persists lives in one folder, RAGSVCDATADIR (default ./data):\n\n- one shard folder "
        "per index, holding the vectors and chunk payloads;\n- the records of each collection, including its "
        "embedding model identity and file hashes;\n- the lock taken by the process that currently owns the "
        "store;\n- server.json, written by a running server, containing the address it listens on."
    ),
    "serve": (
        "ragsvc serve [--host H] [--port P]\n\nStarts the REST API. --host defaults to RAGSVC_HOST\n(127.0.0.1) "
        "and --port to RAGSVC_PORT (8000).\n\nOn start-up the server takes a lock on the data directory and "
        "writes its\naddress to server.json in that directory, which is how other\nragsvc commands find it. "
        "Only one server can run per data directory.\n\n   ragsvc serve --host 0.0.0.0 --port 9000\n\n   "
        "Binding to 0.0.0.0 exposes the API to your network.\n   ragsvc has no built-in authentication, so "
        "only do this behind a\n   firewall or a reverse proxy that handles access control."
    ),
    "delete": (
        "ragsvc collections delete NAME\n\nDeletes collection NAME and its index. The source documents are "
        "not\naffected."
    ),
    "ingestion-limits": (
        "RAGSVC_MAX_FILE_BYTES\n   Files larger than this are skipped at ingest, with the reason in the\n   "
        "summary. Default: 52428800 (50 MiB).\n\nRAGSVC_PARSE_TIMEOUT\n   Seconds one file may take to parse "
        "before its parser is stopped and the\n   file reported as failed. Default: 120.\n\n"
        "RAGSVC_PARSE_MEMORY_MB\n   Memory (address space) of the worker process that parses files; a file\n"
        "   that needs more fails alone. Default: 2048. See\n   ingesting documents."
    ),
    "deployment": (
        "A typical single-machine deployment is three things: the ragsvc serve process, the llama-server "
        "process, and the data directory on local disk. Scaling beyond one machine is not supported today; the "
        "RAGSVCQDRANTURL setting is reserved for a future mode that stores vectors in a separate Qdrant server."
    ),
    "collection-holds": (
        "- the chunks of every ingested file, each with its dense vector and its BM25 sparse vector;\n- the "
        "content hash of every file, used to skip unchanged files on the next ingest;\n- the identity of the "
        "embedding model that produced the vectors.\n\nAll collections live in the data directory "
        "(RAGSVCDATADIR, ./data by default). Two ragsvc installations pointing at different data directories "
        "have completely separate sets of collections."
    ),
    "failed-files": (
        "A non-zero failed count means some files could not be read or parsed and were left out. Run the "
        "ingest with --json to capture the summary, then check those files for encoding problems or broken "
        "markup. Fix them and run the same ingest again; the files that were already indexed are reported as "
        "unchanged."
    ),
    "reserved": (
        "RAGSVC_QDRANT_URL and RAGSVC_QDRANT_API_KEY\n   Reserved for running against a separate Qdrant server "
        "instead of the\n   embedded engine. This deployment mode is not implemented yet; today\n   ragsvc "
        "always uses the embedded Qdrant Edge store in\n   RAGSVC_DATA_DIR."
    ),
}
# (chunk, claim, supported by that chunk), labelled by hand. The unsupported ones contradict the chunk or
# are absent from it; two are SmolLM2's own hallucinations on unanswerable questions of ragsvc-docs.jsonl.
SUPPORTED_AND_NOT = [
    ("language-model", "The default context window of the model is 2048 tokens.", True),
    ("language-model", "An answer is limited to 256 tokens by default.", True),
    ("language-model", "The local llama-server requires an API key.", False),
    ("api-server", "The REST API listens on port 8000 by default.", True),
    ("api-server", "By default ragsvc serve binds to 0.0.0.0 so that other machines can connect.", False),
    ("data-directory", "A running server writes the address it listens on to server.json.", True),
    ("data-directory", "The data directory is stored in a PostgreSQL database.", False),
    ("serve", "ragsvc has no built-in authentication.", True),
    ("serve", "Several servers can run on the same data directory at once.", False),
    ("delete", "Deleting a collection does not delete the source documents.", True),
    ("delete", "Deleting a collection also removes the source documents from disk.", False),
    ("ingestion-limits", "Files larger than 50 MiB are skipped at ingest by default.", True),
    ("ingestion-limits", "A file may take at most 10 seconds to parse by default.", False),
    ("deployment", "Scaling ragsvc beyond one machine is not supported today.", True),
    ("deployment", "ragsvc runs as a cluster of machines with Kubernetes.", False),
    ("collection-holds", "Each chunk has a dense vector and a BM25 sparse vector.", True),
    ("collection-holds", "The hosted ragsvc cloud subscription costs $1.00 per month.", False),
    (
        "failed-files",
        "Files that were already indexed are reported as unchanged when the ingest is run again.",
        True,
    ),
    ("failed-files", "Failed files are translated into English and ingested again automatically.", False),
    ("reserved", "The maximum number of collections a server can hold is 1.", False),
]


def test_p_yes_sums_every_spelling_of_yes_and_no():
    # The first token's alternatives as llama-server sends them (token, logprob; bytes and ids left out).
    alternatives = [
        {"token": "No", "logprob": math.log(0.4)},
        {"token": "The", "logprob": math.log(0.2)},
        {"token": "Yes", "logprob": math.log(0.1)},
        {"token": " yes", "logprob": math.log(0.1)},
        {"token": "no", "logprob": math.log(0.05)},
        {"token": "ĠNO", "logprob": math.log(0.05)},
        {"token": "Yesterday", "logprob": math.log(0.05)},
    ]
    assert p_yes(alternatives) == pytest.approx(0.2 / 0.7)
    assert p_yes([{"token": "The", "logprob": -0.1}]) is None


def test_verdicts_count_distinct_claims_and_keep_the_probabilities():
    verdicts = Verdicts(0, 0, 0)
    for verdict in (Verdict(0.8, "Yes"), Verdict(0.3, "Yes"), Verdict(None, "no"), Verdict(None, "Maybe")):
        verdicts.add(verdict)
    # the logprob decides over the text: 0.3 is unsupported even though the sampled word was "Yes"
    assert (verdicts.supported, verdicts.judged, verdicts.unclear) == (1, 3, 1)
    assert verdicts.score == pytest.approx(1 / 3)
    assert verdicts.mean_p_yes == pytest.approx(0.55)


class NoLogprobsLLM:
    """A stand-in OpenAI-compatible endpoint without logprobs support, which the real llama-server cannot be
    made into: 'reject' answers 400 to a request that asks for logprobs (as endpoints that validate their
    fields do), 'ignore' answers without them. It replies "Yes." to everything. 'too_long' answers 400 to
    every request, as llama-server does to a prompt longer than its window."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.bodies: list[dict] = []
        stand_in = self

        class Handler(JSONHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                stand_in.bodies.append(body)
                if mode == "too_long" or (mode == "reject" and "logprobs" in body):
                    self._json(400, {"error": {"message": "logprobs is not supported", "type": "invalid"}})
                    return
                message = {"role": "assistant", "content": "Yes."}
                self._json(200, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(params=["reject", "ignore"])
def no_logprobs_llm(request: pytest.FixtureRequest) -> Iterator[NoLogprobsLLM]:
    stand_in = NoLogprobsLLM(request.param)
    yield stand_in
    stand_in.close()


def test_judge_reads_the_reply_text_where_the_endpoint_gives_no_logprobs(no_logprobs_llm: NoLogprobsLLM):
    # A rambling small model says the same sentence twice: it is one claim, judged once.
    answer = (
        "The REST API listens on port 8000 [1]. The REST API listens on port 8000 [1]. It binds to 127.0.0.1."
    )
    assert len(claims(answer)) == 3
    judge = OpenAIJudge(no_logprobs_llm.url, "any-model")
    try:
        verdicts = judge.faithfulness(answer, [CHUNKS["api-server"]])
    finally:
        judge.close()
    assert (verdicts.supported, verdicts.judged, verdicts.unclear) == (2, 2, 0)
    assert verdicts.mean_p_yes is None  # no probabilities to report
    asked_logprobs = ["logprobs" in body for body in no_logprobs_llm.bodies]
    if no_logprobs_llm.mode == "reject":  # refused once, then both claims asked for the text alone
        assert asked_logprobs == [True, False, False]
    else:  # no logprobs came back: the text decided, one call a claim
        assert asked_logprobs == [True, True]
    first = no_logprobs_llm.bodies[0]
    assert first["max_tokens"] == 1 and first["top_logprobs"] == 20


@pytest.mark.slow
def test_smollm2_judge_gives_a_verdict_on_every_claim(running_llm: str):
    """Every hand-labelled claim gets a verdict from logprobs (none is 'unclear'). How well SmolLM2-135M
    separates them is printed, not asserted: on 2026-11-30 it was at chance (10 of 20; ROC AUC 0.50, 0.56)."""
    judge = OpenAIJudge(running_llm, "smollm2")
    try:
        scored = [(judge.verdict(claim, CHUNKS[chunk]), label) for chunk, claim, label in SUPPORTED_AND_NOT]
    finally:
        judge.close()
    probabilities = [verdict.p_yes for verdict, _ in scored]
    assert all(p is not None and 0 <= p <= 1 for p in probabilities)
    right = sum(verdict.supported == label for verdict, label in scored)
    supported = [v.p_yes for v, label in scored if label]
    unsupported = [v.p_yes for v, label in scored if not label]
    auc = sum((a > b) + 0.5 * (a == b) for a in supported for b in unsupported) / (
        len(supported) * len(unsupported)
    )
    print(f"SmolLM2 judge: {right} of {len(scored)} claims right, ROC AUC {auc:.2f}")


def test_a_request_the_judge_refuses_leaves_its_claim_unclear_and_logprobs_on():
    stand_in = NoLogprobsLLM("too_long")
    judge = OpenAIJudge(stand_in.url, "any-model")
    try:
        verdicts = judge.faithfulness("The REST API listens on port 8000 [1].", [CHUNKS["api-server"]])
    finally:
        judge.close()
        stand_in.close()
    assert (verdicts.supported, verdicts.judged, verdicts.unclear) == (0, 0, 1)
    assert judge.logprobs  # the plain request was refused too: logprobs were not the problem
