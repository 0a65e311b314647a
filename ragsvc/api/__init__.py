"""The FastAPI app: `create_app(settings)` builds it; its lifespan owns the data dir while it serves."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from ragsvc import __version__
from ragsvc.api.admin import admin as admin_router
from ragsvc.api.admin import mine as access_router
from ragsvc.api.auth import OPEN_PATHS, authenticate, mcp_authentication, principal_from_headers
from ragsvc.api.collections import router as collections_router
from ragsvc.api.documents import router as documents_router
from ragsvc.api.errors import complete_spec, install_error_handlers
from ragsvc.api.limits import install_rate_limit_headers
from ragsvc.api.openai import router as openai_router
from ragsvc.api.operations import install_request_metrics
from ragsvc.api.operations import router as operations_router
from ragsvc.api.site import router as site_router
from ragsvc.docs_site import DocsSite
from ragsvc.mcp_server import build_mcp
from ragsvc.owner import DataDirLock
from ragsvc.service import documents
from ragsvc.service.factory import open_runtime
from ragsvc.settings import Settings

log = logging.getLogger("ragsvc.api")


def create_app(settings: Settings, *, lock: DataDirLock | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = open_runtime(settings, lock)
        app.state.access = runtime.access
        log.warning(runtime.access.describe())
        runtime.jobs.start()
        try:
            documents.recover_uploads(runtime)
        except Exception:  # the server serves on; the uploads wait for their collection's next ingest
            log.exception("could not recover the uploads a crash interrupted")
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        runtime.lock.publish(f"http://{host}:{settings.port}")
        app.state.runtime = runtime
        try:
            async with mcp.session_manager.run():
                yield
        finally:
            runtime.close()

    app = FastAPI(
        title="ragsvc",
        version=__version__,
        lifespan=lifespan,
        description="Documentation knowledge bases with grounded, cited answers; OpenAI-compatible at /v1.",
        # Every route authenticates its caller first (ragsvc.api.auth); a route added later is covered too.
        dependencies=[Depends(authenticate)],
    )
    # MCP's streamable HTTP transport at /mcp: stateless (any replica answers any call), JSON replies.
    # Callers of /mcp are found from their headers as REST callers are (ragsvc.api.auth.authenticate).
    mcp = build_mcp(
        lambda: app.state.runtime,
        lambda headers: principal_from_headers(app.state.access, app.state.runtime.lock, headers),
    )
    mcp_app = mcp.streamable_http_app(
        streamable_http_path="/mcp", stateless_http=True, json_response=True, host=settings.host
    )
    for route in mcp_app.routes:
        route.app = mcp_authentication(route.app)
    app.router.routes.extend(mcp_app.routes)
    install_error_handlers(app)
    complete_spec(app, OPEN_PATHS)
    install_request_metrics(app)
    install_rate_limit_headers(app)
    app.include_router(operations_router)
    app.include_router(collections_router)
    app.include_router(documents_router)
    app.include_router(openai_router)
    app.include_router(access_router)
    app.include_router(admin_router)
    if settings.docs_site_dir is not None:
        app.state.docs_site = DocsSite(settings.docs_site_dir.expanduser())
        app.include_router(site_router)
    return app
