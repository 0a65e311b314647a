"""Settings from the environment (prefix RAGSVC_) and an optional .env file, read once at start-up."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ingest.models import Runtime, on_runtime


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGSVC_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")

    # Defaults for new collections; each collection records its own choice and keeps it.
    embedding_provider: Literal["local", "openai"] = "local"
    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    embedding_url: str | None = Field(None, description="OpenAI-compatible embeddings endpoint, .../v1")
    embedding_api_key: str = "not-needed"
    embedding_query_prefix: str | None = None
    embedding_document_prefix: str | None = None
    embedding_input_type: bool = False
    embedding_max_tokens: int = Field(512, description="input limit of the endpoint's model, in tokens")
    embedding_batch_size: int = 64
    embedding_timeout: float = 30.0
    embedding_retries: int = 3
    embedding_runtime: Runtime = Field(
        "onnx-int8",
        description="how the default local model runs: ONNX Runtime in int8 (2.4x torch's rate here, retrieval "
        "within 0.2 points of fp32 over 1,038 queries) or fp32, exported offline on first use into "
        "~/.cache/ragsvc/onnx, or torch; another runtime than torch is part of the model id",
    )
    chunk_tokens: int = Field(0, description="chunk size in model tokens; 0 fills the model's maximum")
    chunk_overlap_tokens: int = 32

    cache_dir: Path = Field(
        Path("~/.cache/ragsvc"),
        description="where llama-server builds and installed models are kept, per machine",
    )
    llama_server: Path | None = Field(
        None, description="a llama-server binary for `ragsvc llm serve` instead of the one bootstrap built"
    )
    local_llm_model: str = Field(
        "smollm2", description="what `ragsvc llm serve` serves: smollm2, qwen2.5-1.5b or a .gguf path"
    )

    llm_base_url: str = "http://127.0.0.1:8081/v1"
    llm_api_key: str = "not-needed"
    llm_model: str = "smollm2"
    llm_context_window: int = 2048
    llm_max_tokens: int = Field(
        256,
        description="longest answer in tokens: a brief cited answer needs 40-150; a loop stops here at worst",
    )
    llm_frequency_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="OpenAI's frequency_penalty, sent with each answer request when not 0. The local "
        "llama-server already penalises repeats (--repeat-penalty 1.1 over the last 64 tokens), and every "
        "answer stops at its first repeated sentence whatever the endpoint",
    )
    llm_presence_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="OpenAI's presence_penalty; as above"
    )
    llm_timeout: float = 60.0
    llm_retries: int = 2

    ingest_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="folders (separated by ':') under which the server may read a folder to ingest; none by "
        "default, so a request cannot make the server read its own files. The CLI run on the data dir's own "
        "machine reads any folder its user can",
    )

    auth: Literal["auto", "on", "off"] = Field(
        "auto",
        description="API keys needed: 'auto' asks for them unless the API listens on loopback only; beyond "
        "loopback they are always needed, whatever this says",
    )
    openwebui_jwt_secret: SecretStr | None = Field(
        None,
        description="Open WebUI's FORWARD_USER_INFO_HEADER_JWT_SECRET: with it, a key made with "
        "--forwards-identity speaks for the Open WebUI user its signed header names",
    )
    openwebui_user_group: str | None = Field(
        None, description="group a signed Open WebUI user unknown to ragsvc is added to; unset: refused"
    )
    rate_window_seconds: int = Field(
        60,
        ge=1,
        description="the window of the RPM and TPM limits; shorter only to see a window end in tests",
    )
    budget_window_seconds: int = Field(
        86_400, ge=1, description="the window of the credit budget (a UTC day); shorter only in tests"
    )

    max_upload_bytes: int = 50 * 1024 * 1024
    max_file_bytes: int = Field(50 * 1024 * 1024, description="files larger than this are skipped at ingest")
    parse_timeout: float = Field(120.0, description="seconds one file may take to parse before it is stopped")
    parse_memory_mb: int = Field(2048, description="address-space limit of the process that parses files")
    ingest_batch_chunks: int = Field(
        1024, ge=1, description="chunks embedded and written together: more pad less, fewer bound memory"
    )

    docs_site_dir: Path | None = Field(
        None,
        description="a folder of Markdown and reStructuredText docs that `ragsvc serve` renders at /site/ for "
        "anyone who can reach it, no key asked: citations of a collection ingested from that folder with "
        "--docs-base-url http://HOST:PORT/site open the cited section (scripts/run.sh does this for docs/)",
    )

    log_level: str = Field("INFO", description="DEBUG also logs questions; other levels never do")

    host: str = "127.0.0.1"
    port: int = 8000
    # The event loop and HTTP parser of `ragsvc serve`. auto: uvloop and httptools (C code) where installed;
    # asyncio and h11 (pure Python) are the slower baseline bench/load.py compares them with.
    server_loop: Literal["auto", "asyncio", "uvloop"] = "auto"
    server_http: Literal["auto", "h11", "httptools"] = "auto"

    top_k: int = 5
    chunks_per_source: int = Field(
        1, description="most chunks one page may place in search results; 0: no limit"
    )
    # An answer needs the chunks that hold the facts, often two sections of one page: with one chunk a page,
    # the sources of 231 questions on three doc sets held 74-77% of the facts a right answer must contain
    # (must_contain); with no limit 88-94%, for the same prompt size.
    answer_chunks_per_source: int = Field(
        0, description="most chunks one page may place in an answer's sources; 0: no limit"
    )
    # Before an answer is written, the LLM is asked whether its sources answer the question (one token, read as
    # P(yes) from its logprobs; its prompt shares the answer's prefix, so a server with a prompt cache reads
    # the sources once); below the threshold ragsvc refuses with the closest pages. 0 turns the check off.
    # A question naming a term that no chunk of the collection holds (a tool or product the docs never
    # mention) is held to the higher bar. Chosen with Qwen2.5-Coder-1.5B on gRPC's and Flux's docs, for the
    # prompt without a refusal rule, and checked on Vite's, Prettier's, docs/ and fastapi-docs (README).
    answer_check_threshold: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="refuse when the LLM's P(yes) that the sources answer the question is below this; 0: off",
    )
    answer_check_unseen_threshold: float = Field(
        0.7,
        ge=0.0,
        le=1.0,
        description="the answer check's threshold for a question with a term no chunk of the collection holds",
    )
    search_mode: Literal["dense", "sparse", "hybrid"] = "hybrid"

    qdrant_url: str | None = None
    qdrant_api_key: str | None = None

    # Jobs: SQLite in the data dir by default; with a Redis URL, records and queue live in Redis, shared by
    # `ragsvc serve` and `ragsvc worker` processes (workers need RAGSVC_QDRANT_URL: Edge is one-process).
    redis_url: str | None = Field(None, examples=["redis://127.0.0.1:6379/0"])
    job_queue: str = Field("ragsvc", description="queue and key namespace in Redis: one per vector store")
    job_lease_seconds: float = Field(
        30.0, gt=0, description="a job whose worker sends no heartbeat for this long is run again"
    )
    test_crash_at: str | None = Field(
        None, description="tests only: 'point:n' SIGKILLs this process at the n-th parse, embed or write"
    )

    @field_validator("ingest_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    @model_validator(mode="after")
    def _runtime_in_model_id(self) -> Settings:
        # New collections record 'all-MiniLM-L6-v2#onnx-int8': vectors of two runtimes never share an index.
        if self.embedding_provider == "local":
            self.embedding_model = on_runtime(self.embedding_model, self.embedding_runtime)
        return self
