"""Readiness: whether every part a request needs answers (index engine, embedding model, LLM), with reasons."""

from __future__ import annotations

from pydantic import BaseModel

from ragsvc.service.runtime import Runtime


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]  # part -> "ok", or what is wrong with it


def readiness(runtime: Runtime) -> Readiness:
    checks: dict[str, str] = {}
    try:
        for record in runtime.registry.list():
            runtime.engine.count(record.live_index)
        checks["index"] = "ok"
    except Exception as exc:  # readiness reports any failure as not ready, with its reason
        checks["index"] = f"failed: {exc}"
    checks["embedding_model"] = "ok" if runtime.embedder.dimensions > 0 else "not loaded"
    checks["llm"] = "ok" if runtime.llm.ping() else f"unreachable at {runtime.llm.base_url}"
    return Readiness(ready=all(v == "ok" for v in checks.values()), checks=checks)
