"""Authentication of every request: the caller's identity from its credential, before any route runs.

With auth off (a single-user setup on loopback) everyone is the local admin. With it on, every route but
the operational ones needs a usable key; the CLI on the data dir's own machine may send the run's owner
token instead. Refusals are written to the audit log (who, which route, outcome; never the key).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ragsvc.access import audit
from ragsvc.access.control import AccessControl
from ragsvc.access.db import AccessDB
from ragsvc.access.identity import Identity, Unauthorized, identify
from ragsvc.access.principals import User, grants_of
from ragsvc.api.errors import error_body, headers_of
from ragsvc.docs_site import SITE_PREFIX
from ragsvc.owner import OWNER_TOKEN_HEADER
from ragsvc.service.access import ALL_COLLECTIONS, Grant, Principal, Right

# Routes that tell nothing about any tenant's data and that probes and scrapers call without a key.
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
LOCAL = Identity(User(name="local", admin=True, created_at=0.0), key=None)
OWNER = Identity(User(name="owner", admin=True, created_at=0.0), key=None)


def access_of(request: Request) -> AccessControl:
    return request.app.state.access


def route_name(request: Request) -> str:
    """'POST /collections/{name}/search': the route's template, never the path a caller filled in."""
    route = request.scope.get("route")
    return f"{request.method} {getattr(route, 'path', 'unmatched')}"


def _on_docs_site(request: Request) -> bool:
    """A page of the docs site, which a browser opens from a citation link without a key (ragsvc.api.site)."""
    path = request.url.path
    return request.app.state.runtime.settings.docs_site_dir is not None and (
        path == SITE_PREFIX or path.startswith(SITE_PREFIX + "/")
    )


async def authenticate(request: Request) -> Identity:
    """The caller (kept on the request for later dependencies), or 401."""
    known = getattr(request.state, "identity", None)
    if known is not None:
        return known
    access = access_of(request)
    if request.url.path in OPEN_PATHS or _on_docs_site(request) or not access.required:
        identity = LOCAL
    elif request.app.state.runtime.lock.is_owner_token(request.headers.get(OWNER_TOKEN_HEADER)):
        identity = OWNER
    else:
        try:
            identity = await run_in_threadpool(
                identify,
                access.db,
                request.headers,
                request.query_params,
                openwebui_secret=access.openwebui_secret,
                openwebui_group=access.openwebui_group,
            )
        except Unauthorized:
            await run_in_threadpool(
                audit.record, access.db, "anonymous", route_name(request), "-", "unauthorized"
            )
            raise
    request.state.identity = identity
    return identity


IdentityDep = Annotated[Identity, Depends(authenticate)]
AccessDep = Annotated[AccessControl, Depends(access_of)]


def principal_of(db: AccessDB, identity: Identity) -> Principal:
    """The scope the service layer's one check reads: the user, their groups, and the highest right they
    hold on each collection (or on every one)."""
    if identity.key is None:  # the local user (auth off) or the data dir's owner: all rights
        return Principal(
            user=identity.user.name, grants=(Grant(collection=ALL_COLLECTIONS, right=Right.admin),)
        )
    held = grants_of(db, identity.user)
    return Principal(
        user=identity.user.name,
        groups=tuple(identity.user.groups),
        grants=tuple(Grant(collection=c, right=Right[level]) for c, level in sorted(held.items())),
        key_id=identity.key.id,
    )


def principal_from_headers(access: AccessControl, runtime_lock, headers) -> Principal:  # noqa: ANN001
    """The caller of a route outside FastAPI's dependencies (MCP's /mcp), found from its headers exactly as
    `authenticate` finds a REST caller: Unauthorized when auth is on and no usable key came."""
    if not access.required:
        identity = LOCAL
    elif runtime_lock.is_owner_token(headers.get(OWNER_TOKEN_HEADER)):
        identity = OWNER
    else:
        try:
            identity = identify(
                access.db,
                headers,
                {},
                openwebui_secret=access.openwebui_secret,
                openwebui_group=access.openwebui_group,
            )
        except Unauthorized:
            audit.record(access.db, "anonymous", "POST /mcp", "-", "unauthorized")
            raise
    return principal_of(access.db, identity)


def mcp_authentication(endpoint: ASGIApp) -> ASGIApp:
    """/mcp's endpoint behind the same authentication as every REST route: a caller without a usable key is
    answered `401` over HTTP, before MCP sees the request (MCP clients then ask their user for a key)."""

    async def authenticated(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            state = scope["app"].state
            headers = Headers(scope=scope)
            try:
                await run_in_threadpool(principal_from_headers, state.access, state.runtime.lock, headers)
            except Unauthorized as exc:
                body = error_body(exc.code, exc.message)
                await JSONResponse(body, status_code=401, headers=headers_of(exc))(scope, receive, send)
                return
        await endpoint(scope, receive, send)

    return authenticated
