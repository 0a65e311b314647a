"""The one place where ragsvc errors become HTTP responses: {"error": {"code", "message"}}, and the one place
that documents them: `errors(...)` gives a route the `responses=` entries for the statuses it can answer."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

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
from ragsvc.access.admission import OverLimit
from ragsvc.access.identity import Unauthorized
from ragsvc.access.keys import KeyNotFound
from ragsvc.access.principals import DeletingSelf, GroupNotFound, NameTaken, UserNotFound
from ragsvc.answer import PromptTooLong
from ragsvc.api.schemas import NAME_RULE
from ragsvc.docs_site import PageNotFound
from ragsvc.folders import FolderNotAllowed
from ragsvc.jobs.records import JobNotFound, JobStoreUnavailable
from ragsvc.llm import LLMFailed, LLMTimeout, LLMUnavailable
from ragsvc.llm_server import LocalLLMMissing
from ragsvc.service.access import AccessDenied
from ragsvc.service.collections import CollectionExists
from ragsvc.service.documents import DocumentNotFound, UploadTooLarge
from ragsvc.service.reindex import AlreadyEmbedded, ChunksTooLong

log = logging.getLogger("ragsvc.api")

STATUS: dict[type[RagsvcError], int] = {
    CollectionNotFound: 404,
    AccessDenied: 403,
    DocumentNotFound: 404,
    JobNotFound: 404,
    PageNotFound: 404,
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
    DeletingSelf: 409,
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
    AlreadyEmbedded: 409,
    LLMUnavailable: 503,
    LocalLLMMissing: 503,
    LLMTimeout: 504,
    PromptTooLong: 422,
    LLMFailed: 502,
}


class ErrorDetail(BaseModel):
    code: str = Field(description="stable, machine-readable", examples=["collection_not_found"])
    message: str = Field(description="what went wrong, for a person", examples=["no collection 'x'"])


class ErrorBody(BaseModel):
    """Every error ragsvc answers, whatever its status."""

    error: ErrorDetail


# What each status means on this API, as the spec says it (the codes in `STATUS` above map onto them).
MEANING = {
    400: "the request could not be read (a malformed multipart body)",
    401: "no usable API key (missing, unknown, revoked or expired); answered with WWW-Authenticate",
    403: "the key may see this but not do this (or the folder is outside the ingest roots)",
    404: "no such resource, or one the key may not see (the same answer)",
    405: "the path does not take this method; the Allow header lists those it takes",
    409: "conflicts with what exists (a name taken, an index already built with this embedding: "
    "already_embedded, a store busy with another writer)",
    413: "the upload is larger than the server accepts",
    415: "a file type ragsvc cannot parse",
    422: "the body or a parameter breaks a constraint the schema states, or one only the server can check",
    429: "over a request or token budget; Retry-After says when to try again",
    502: "the LLM answered with an error",
    503: "a part this needs is unavailable (index engine, embedding endpoint, LLM)",
    504: "the LLM did not answer in time",
}

# Every route that needs a key can answer these (ragsvc.api.auth and the budgets).
AUTH_ERRORS = (401, 403, 429)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries that document a route's error statuses with the error body model."""
    return {status: {"model": ErrorBody, "description": MEANING[status]} for status in statuses}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return ErrorBody(error=ErrorDetail(code=code, message=message)).model_dump()


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
        # A collection name in the path that breaks its pattern keeps the code the registry gives it.
        named = [e for e in exc.errors() if tuple(e["loc"]) == ("path", "name")]
        if named:
            message = f"invalid collection name {named[0]['input']!r}: use {NAME_RULE}"
            return JSONResponse(error_body("invalid_collection_name", message), status_code=422)
        return JSONResponse(error_body("invalid_request", problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            400: "bad_request",
            404: "not_found",
            405: "method_not_allowed",
        }.get(exc.status_code, "http_error")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(error_body("internal_error", "internal server error"), status_code=500)


def complete_spec(app: FastAPI, open_paths: frozenset[str]) -> None:
    """What the framework, not a route, answers, stated in the spec for every route (those added later too):
    the API key every route but the open ones needs (401 without it), and 400 on every route with a body
    when the body cannot be read at all (bytes that are not UTF-8, a broken multipart stream)."""
    plain = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = plain()
            schemes = spec.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["apiKey"] = {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key (`ragsvc keys create`), needed unless auth is off",
            }
            for path, operations in spec["paths"].items():
                for operation in operations.values():
                    if "requestBody" in operation:
                        operation["responses"].setdefault("400", _documented(400))
                    if path not in open_paths:
                        operation["security"] = [{"apiKey": []}]
        return app.openapi_schema

    app.openapi = openapi


def _documented(status: int) -> dict[str, Any]:
    body = {"$ref": "#/components/schemas/ErrorBody"}
    return {"description": MEANING[status], "content": {"application/json": {"schema": body}}}


def allowed_methods(request: Request) -> list[str]:
    """Every method some route takes on this path: Starlette names only the first route's, and a path such
    as /collections/{name} is served by several routes (GET, DELETE)."""
    return [
        method
        for method in HTTP_METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]


HTTP_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
