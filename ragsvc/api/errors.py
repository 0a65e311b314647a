"""The one place where ragsvc errors become HTTP responses: {"error": {"code", "message"}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexes.errors import (
    CollectionNotFound,
    EmbeddingMismatch,
    EngineUnavailable,
    IndexExists,
    IndexNotFound,
    InvalidCollectionName,
    InvalidRequest,
    RagsvcError,
    StoreBusy,
)
from indexes.keys import KeyStoreBusy
from ingest.document import UnsupportedFile
from ingest.embed import EmbeddingSizeMismatch, EmbeddingUnavailable, ModelNotServed, ModelUnavailable
from ragsvc.access.budgets import OverLimit
from ragsvc.access.identity import Unauthorized
from ragsvc.access.keys import KeyNotFound
from ragsvc.access.principals import GroupNotFound, NameTaken, UserNotFound
from ragsvc.answer import PromptTooLong
from ragsvc.folders import FolderNotAllowed
from ragsvc.jobs.records import JobNotFound, JobStoreUnavailable
from ragsvc.llm import LLMFailed, LLMTimeout, LLMUnavailable
from ragsvc.llm_server import LocalLLMMissing
from ragsvc.service.access import AccessDenied
from ragsvc.service.collections import CollectionExists
from ragsvc.service.documents import DocumentNotFound, UploadTooLarge
from ragsvc.service.reindex import ChunksTooLong

log = logging.getLogger("ragsvc.api")

STATUS: dict[type[RagsvcError], int] = {
    CollectionNotFound: 404,
    AccessDenied: 403,
    DocumentNotFound: 404,
    JobNotFound: 404,
    JobStoreUnavailable: 503,
    CollectionExists: 409,
    IndexNotFound: 404,
    IndexExists: 409,
    EngineUnavailable: 503,
    KeyStoreBusy: 503,
    FolderNotAllowed: 403,
    Unauthorized: 401,
    OverLimit: 429,
    KeyNotFound: 404,
    UserNotFound: 404,
    GroupNotFound: 404,
    NameTaken: 409,
    UploadTooLarge: 413,
    InvalidCollectionName: 422,
    InvalidRequest: 422,
    EmbeddingMismatch: 409,
    StoreBusy: 409,
    UnsupportedFile: 415,
    ModelUnavailable: 422,
    ModelNotServed: 404,
    EmbeddingUnavailable: 503,
    EmbeddingSizeMismatch: 409,
    ChunksTooLong: 422,
    LLMUnavailable: 503,
    LocalLLMMissing: 503,
    LLMTimeout: 504,
    PromptTooLong: 422,
    LLMFailed: 502,
}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def status_of(exc: RagsvcError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def headers_of(exc: RagsvcError) -> dict[str, str] | None:
    """What a client needs to act on the error: how to authenticate, when to retry."""
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    return getattr(exc, "headers", None)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagsvcError)
    async def ragsvc_error(_: Request, exc: RagsvcError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("request failed: %s: %s", exc.code, exc.message)
        return JSONResponse(error_body(exc.code, exc.message), status_code=status, headers=headers_of(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse(error_body("invalid_request", problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)
