"""Prometheus metrics: requests per route, retrieval and LLM time, tokens. Served at /metrics."""

from prometheus_client import Counter, Histogram

REQUESTS = Counter("ragsvc_http_requests_total", "HTTP requests", ["method", "route", "status"])
REQUEST_SECONDS = Histogram("ragsvc_http_request_seconds", "HTTP request latency", ["method", "route"])
RETRIEVAL_SECONDS = Histogram(
    "ragsvc_retrieval_seconds",
    "Query embedding plus index search",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
PRE_LLM_SECONDS = Histogram(
    "ragsvc_pre_llm_seconds",
    "ragsvc's own time before the answer's LLM call: condensing, retrieval, prompt assembly",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 1),
)
LLM_SECONDS = Histogram(
    "ragsvc_llm_seconds", "LLM call time, whole reply", buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
)
LLM_FIRST_TOKEN_SECONDS = Histogram(
    "ragsvc_llm_first_token_seconds",
    "Streamed LLM call: from the call to its first non-empty text",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LLM_TOKENS = Counter("ragsvc_llm_tokens_total", "Tokens the LLM read and wrote", ["kind"])
OPENWEBUI_TASKS = Counter(
    "ragsvc_openwebui_tasks_total",
    "Open WebUI's own calls (title, tags, follow-ups...) answered by the LLM without retrieval",
    ["task"],
)
