"""The packaged MiniLM on ONNX Runtime (fp32 and int8): exported offline on first use, the same vectors as
torch within the measured bar, and a vector space of its own in the collection's identity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ingest.embed import MINILM, LocalEmbedder, local_embedder
from ingest.onnx_embed import OnnxEmbedder, onnx_embedder, split_runtime, with_runtime
from ragsvc.service import collections, ingestion, retrieval
from ragsvc.service.access import LOCAL
from ragsvc.service.factory import open_runtime
from ragsvc.settings import Settings

pytestmark = pytest.mark.slow

DOC_SENTENCES = [
    "Request a GPU with --gpus=1 and put memory and compute capability in one --gres option.",
    "Array jobs run the same script many times; $SLURM_ARRAY_TASK_ID tells each task which input to use.",
    "Your home directory has a 10 GB quota; put large data sets in your work directory instead.",
    "Conda environments keep each project's Python packages apart; create one with mamba env create.",
    "Connect to the cluster with ssh through the bastion host when you are outside the university network.",
    "Jupyter notebooks run on the cluster through the OnDemand web interface.",
]


@pytest.fixture(scope="module")
def torch_model() -> LocalEmbedder:
    return local_embedder(MINILM)


@pytest.fixture(scope="module")
def int8_model() -> OnnxEmbedder:
    return onnx_embedder(MINILM, "onnx-int8")


def cosines(a: list[list[float]], b: list[list[float]]) -> np.ndarray:
    return (np.asarray(a) * np.asarray(b)).sum(axis=1)


def test_int8_vectors_are_unit_length_and_model_sized(int8_model: OnnxEmbedder) -> None:
    vectors = np.asarray(int8_model.embed_documents(DOC_SENTENCES))
    assert vectors.shape == (len(DOC_SENTENCES), 384)
    assert int8_model.dimensions == 384
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert len(int8_model.embed_query("How do I get a GPU?")) == 384


def test_a_question_lands_where_the_same_text_as_a_document_does(int8_model: OnnxEmbedder) -> None:
    # Questions run alone on the calling thread; chunks in batches of one length on the embedder's threads.
    question = "How do I get a GPU for my job?"
    as_query = np.asarray(int8_model.embed_query(question))
    as_document = np.asarray(int8_model.embed_documents([question, *DOC_SENTENCES])[0])
    assert float(as_query @ as_document) >= 0.9999


def test_int8_vectors_do_not_depend_on_the_batch(int8_model: OnnxEmbedder) -> None:
    # int8 activations are scaled per token: with one scale per batch, the same chunk embedded alone and in a
    # batch of 32 other chunks moved by up to 0.027 cosine, and its scores between an ingest and a reindex.
    text = DOC_SENTENCES[1]
    long_text = " ".join(DOC_SENTENCES * 4)
    batch = [long_text, "GPU?", text, *DOC_SENTENCES[2:], long_text[:300]]
    alone = np.asarray(int8_model.embed_documents([text])[0])
    in_batch = np.asarray(int8_model.embed_documents(batch))
    assert float(alone @ in_batch[2]) >= 0.9999
    assert float(in_batch[0] @ np.asarray(int8_model.embed_documents([long_text])[0])) >= 0.9999


def test_int8_vectors_stay_close_to_torch_fp32(int8_model: OnnxEmbedder, torch_model: LocalEmbedder) -> None:
    # The bar: mean cosine 0.995, none under 0.99 (on 600 Aalto chunks: mean 0.998, 1st percentile 0.995,
    # min 0.991; activations scaled per batch gave 0.995 / 0.989 / 0.976).
    close = cosines(int8_model.embed_documents(DOC_SENTENCES), torch_model.embed_documents(DOC_SENTENCES))
    assert close.mean() >= 0.995 and close.min() >= 0.99, close


def test_fp32_onnx_computes_the_torch_function(torch_model: LocalEmbedder) -> None:
    fp32 = onnx_embedder(MINILM, "onnx")
    close = cosines(fp32.embed_documents(DOC_SENTENCES), torch_model.embed_documents(DOC_SENTENCES))
    assert close.min() >= 0.9999, close


def test_int8_search_ranks_the_right_doc_first(int8_model: OnnxEmbedder) -> None:
    docs = np.asarray(int8_model.embed_documents(DOC_SENTENCES))
    asked = {
        "How do I ask Slurm for a GPU with enough memory?": 0,
        "How can one script process many input files as separate tasks?": 1,
        "I ran out of disk space in my home folder": 2,
        "How do I log in from home?": 4,
    }
    for question, expected in asked.items():
        scores = docs @ np.asarray(int8_model.embed_query(question))
        assert int(np.argmax(scores)) == expected, (question, scores)


def test_runtimes_have_their_own_identity_and_the_same_tokens(
    int8_model: OnnxEmbedder, torch_model: LocalEmbedder
) -> None:
    fp32 = onnx_embedder(MINILM, "onnx")
    identities = {m.identity("sections-2/256/32") for m in (torch_model, fp32, int8_model)}
    assert len({i.key() for i in identities}) == 3
    assert int8_model.model == f"{MINILM}#onnx-int8" and fp32.model == f"{MINILM}#onnx"
    assert int8_model.max_tokens == torch_model.max_tokens == 256
    assert int8_model.count_tokens(DOC_SENTENCES) == torch_model.count_tokens(DOC_SENTENCES)
    assert split_runtime(int8_model.model) == (MINILM, "onnx-int8")
    assert with_runtime("all-MiniLM-L6-v2", "torch") == MINILM


@pytest.mark.parametrize("runtime", ["torch", "onnx-int8"])
def test_tokens_are_counted_on_one_thread_while_another_embeds(runtime: str) -> None:
    # Ingestion chunks the next batch of files (counting tokens) while it embeds this one, and the server
    # embeds questions while a job chunks. Counting used to switch the shared tokenizer's truncation off,
    # and an embedding call at that moment failed with "Already borrowed".
    model = local_embedder(MINILM if runtime == "torch" else f"{MINILM}#{runtime}")
    sections = [" ".join(DOC_SENTENCES * n) for n in range(1, 12)]  # longer than the model reads, mostly
    expected = model.count_tokens(sections)
    failures: list[BaseException] = []
    counted: list[list[int]] = []

    def keep_going(work: Callable[[], object]) -> None:
        try:
            for _ in range(60):
                work()
        except BaseException as exc:  # noqa: BLE001 - what the other thread saw is the result
            failures.append(exc)

    threads = [
        threading.Thread(target=keep_going, args=(lambda: counted.append(model.count_tokens(sections)),)),
        threading.Thread(target=keep_going, args=(lambda: model.embed_documents(DOC_SENTENCES[:2]),)),
        threading.Thread(target=keep_going, args=(lambda: model.embed_query("How do I get a GPU?"),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(counted) == 60 and all(counts == expected for counts in counted)
    assert max(expected) > model.max_tokens  # counted before truncation


def test_runtime_setting_makes_int8_collections_and_keeps_torch_ones(data_dir: Path) -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "concepts"
    torch_services = open_runtime(Settings(data_dir=data_dir, embedding_runtime="torch"))
    try:
        ingestion.ingest_folder(torch_services, LOCAL, "made-on-torch", docs)
    finally:
        torch_services.close()
    runtime = open_runtime(Settings(data_dir=data_dir, embedding_runtime="onnx-int8"))
    try:
        ingestion.ingest_folder(runtime, LOCAL, "made-on-int8", docs)
        old, new = (
            collections.describe(runtime, LOCAL, "made-on-torch"),
            collections.describe(runtime, LOCAL, "made-on-int8"),
        )
        assert old.embedding.model == MINILM and new.embedding.model == f"{MINILM}#onnx-int8"
        assert old.live_index != new.live_index and old.chunks == new.chunks
        question = "Which embedding model does ragsvc use by default?"
        for name in ("made-on-torch", "made-on-int8"):
            # Each collection is searched with its own runtime, whatever the server's default is now.
            assert (
                retrieval.search(runtime, LOCAL, name, question, mode="dense")[0].source
                == "embedding-models.md"
            )
    finally:
        runtime.close()


def test_two_processes_export_once_offline(tmp_path: Path) -> None:
    """A fresh cache, no hub cache, every HTTP request sent to a closed port: both processes start at once,
    one exports under the lock, the other waits for it; both embed, and only the finished files remain."""
    cache = tmp_path / "onnx-cache"
    script = textwrap.dedent(
        f"""
        import json
        from pathlib import Path
        from ingest.onnx_embed import OnnxEmbedder
        model = OnnxEmbedder(quantized=True, cache_dir=Path({str(cache)!r}))
        print(json.dumps({{"dimensions": len(model.embed_query("How do I get a GPU?"))}}))
        """
    )
    dead = "http://127.0.0.1:9"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
    }
    processes = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    assert [json.loads(out.strip().splitlines()[-1]) for out in outputs] == [{"dimensions": 384}] * 2
    (folder,) = cache.iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["export.lock", "model-int8.onnx", "model.onnx"]
