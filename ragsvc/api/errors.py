"""The one place where ragsvc errors become HTTP responses, {"error": {"code", "message"}}, and where the
typed client turns such a body back into the ragsvc error it was."""

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
from ingest.embed import EmbeddingSizeMismatch, EmbeddingUnavailable, ModelNotServed, ModelUnavailable
from ingest.parse import UnsupportedFile
from ragsvc.answer import PromptTooLong
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
    CollectionExists: 409,
    IndexNotFound: 404,
    IndexExists: 409,
    EngineUnavailable: 503,
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


class RemoteError(RagsvcError):
    """An error body whose code this ragsvc does not know (a newer server's, or a proxy's)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _known(classes: list[type[RagsvcError]]) -> dict[str, type[RagsvcError]]:
    found: dict[str, type[RagsvcError]] = {}
    for cls in classes:
        found.setdefault(cls.code, cls)
        found |= {k: v for k, v in _known(cls.__subclasses__()).items() if k not in found}
    return found


def error_from(code: str, message: str) -> RagsvcError:
    """The ragsvc error an error body names, of its own class when its code is one of this table's errors
    (or their subclasses'), made without its constructor so that the message is the body's."""
    cls = _known(list(STATUS)).get(code)
    if cls is None:
        return RemoteError(code, message)
    error = cls.__new__(cls)
    RagsvcError.__init__(error, message)
    return error


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RagsvcError)
    async def ragsvc_error(_: Request, exc: RagsvcError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("request failed: %s: %s", exc.code, exc.message)
        return JSONResponse(error_body(exc.code, exc.message), status_code=status)

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
