"""Settings from the environment (prefix RAGSVC_) and an optional .env file, read once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGSVC_", env_file=".env", extra="ignore")

    data_dir: Path = Path("./data")

    embedding_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    chunk_tokens: int = Field(0, description="chunk size in model tokens; 0 fills the model's maximum")
    chunk_overlap_tokens: int = 32

    llm_base_url: str = "http://127.0.0.1:8081/v1"
    llm_api_key: str = "not-needed"
    llm_model: str = "smollm2"
    llm_context_window: int = 2048
    llm_max_tokens: int = 256
    llm_timeout: float = 60.0
    llm_retries: int = 2

    max_upload_bytes: int = 50 * 1024 * 1024

    log_level: str = Field("INFO", description="DEBUG also logs questions; other levels never do")

    host: str = "127.0.0.1"
    port: int = 8000

    top_k: int = 5
    chunks_per_source: int = Field(
        1, description="most chunks one page may place in the results; 0: no limit"
    )
    search_mode: Literal["dense", "sparse", "hybrid"] = "hybrid"

    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
