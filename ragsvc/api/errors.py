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
from ragsvc.docs_site import PageNotFound
from ragsvc.folders import FolderNotAllowed
from ragsvc.jobs.records import JobNotFound
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
    PageNotFound: 404,
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


# The `type` of OpenAI's error body, by status, for errors on the /v1 surface (its clients read it).
OPENAI_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def body_of(exc: RagsvcError, status: int, path: str) -> dict[str, dict[str, object]]:
    """The error body: code and message, what the error adds (a 429's retry_after and remaining_credits),
    and on /v1 the rest of OpenAI's error shape (type, param)."""
    body: dict[str, dict[str, object]] = error_body(exc.code, exc.message)  # type: ignore[assignment]
    details = getattr(exc, "details", None)
    if callable(details):
        body["error"].update(details())
    if path.startswith("/v1/"):
        if exc.code == "budget_exhausted":
            kind = "insufficient_quota"
        else:
            kind = OPENAI_ERROR_TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            )
        body["error"].update({"type": kind, "param": None})
    return body


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagsvcError)
    async def ragsvc_error(request: Request, exc: RagsvcError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("request failed: %s: %s", exc.code, exc.message)
        body = body_of(exc, status, request.url.path)
        return JSONResponse(body, status_code=status, headers=headers_of(exc))

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
