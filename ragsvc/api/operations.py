"""Operations: liveness, readiness of every part a request needs, and Prometheus metrics."""

from __future__ import annotations

import time

from fastapi import APIRouter, FastAPI, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ragsvc.api.deps import RuntimeDep
from ragsvc.metrics import REQUEST_SECONDS, REQUESTS
from ragsvc.service.health import readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


class Readiness(BaseModel):
    status: str = Field(examples=["ready", "not ready"])
    checks: dict[str, str] = Field(description='each part: "ok", or what is wrong with it')


@router.get(
    "/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "not ready"}}
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """Ready when the index engine answers, the embedding model is loaded and the LLM is reachable."""
    state = await run_in_threadpool(readiness, runtime)
    body = {"status": "ready" if state.ready else "not ready", "checks": state.checks}
    return JSONResponse(body, status_code=200 if state.ready else 503)


@router.get("/metrics", include_in_schema=False)
def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def install_request_metrics(app: FastAPI) -> None:
    app.add_middleware(RequestMetrics)


class RequestMetrics:
    """Counts each request and times it to its last byte, by route template (not the raw path, so that
    collection names do not explode the label set). A plain ASGI middleware: Starlette's BaseHTTPMiddleware
    (`@app.middleware`) runs every request through an extra task and memory stream, which bench/load.py
    found among the top costs of a /search."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            label = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], label, str(status)).inc()
            REQUEST_SECONDS.labels(scope["method"], label).observe(time.perf_counter() - started)
