"""Operations: liveness, readiness of every part a request needs, and Prometheus metrics."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

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
    @app.middleware("http")
    async def count_requests(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        # The route template, not the raw path, so that collection names do not explode the label set.
        label = getattr(route, "path", "unmatched")
        REQUESTS.labels(request.method, label, str(response.status_code)).inc()
        REQUEST_SECONDS.labels(request.method, label).observe(time.perf_counter() - started)
        return response
