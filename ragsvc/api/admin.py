"""Routes for access: each caller's own keys and usage (/keys, /usage), and the admin API (/admin/...) over
users, groups, rights, limits, prices, every key, usage and the audit log. Admin routes need an admin."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from indexes.wire import integer
from ragsvc.access import audit
from ragsvc.access.audit import AuditEntry
from ragsvc.access.identity import Identity
from ragsvc.access.keys import ApiKey, KeyNotFound, NewKey, create_key, get_key, list_keys, revoke_key
from ragsvc.access.limits import Limits, ScopeKind, set_limits
from ragsvc.access.prices import Price, list_prices, set_price
from ragsvc.access.principals import (
    NAME,
    AdminOnly,
    DeletingSelf,
    Grant,
    Level,
    User,
    add_member,
    create_group,
    create_user,
    delete_group,
    delete_user,
    grant,
    list_grants,
    list_groups,
    list_users,
    remove_member,
    revoke,
)
from ragsvc.access.usage import USAGE_DIMENSIONS, UsageRow, usage_report
from ragsvc.api.auth import AccessDep, IdentityDep, route_name
from ragsvc.api.errors import AUTH_ERRORS, errors

MAX_KEY_LIFETIME_S = 10 * 365 * 86400
# What the usage tables can hold: counts and credits in pico-credits (PICO) are summed as 64-bit integers.
MAX_COUNT = 10**15
MAX_CREDITS = 9_000_000
MAX_PRICE = 1.0  # credits per token: a day of a busy key's tokens stays within 64 bits of pico-credits
PRINCIPAL_NAME = f"^{NAME.pattern}$"
_DIMENSION = f"(?:{'|'.join(USAGE_DIMENSIONS)})"
USAGE_BY = f"^(?:{_DIMENSION}(?:,{_DIMENSION})*)?$"
PRINCIPAL_RULE = "1-128 letters, digits, '_', '.', '@', '+', '-', starting with a letter or digit"


class LimitsRequest(Limits):
    model_config = ConfigDict(strict=True)
    rpm: integer(ge=0, le=MAX_COUNT) | None = Field(None, description="requests a minute; none: no limit")
    tpm: integer(ge=0, le=MAX_COUNT) | None = Field(None, description="tokens a minute; none: no limit")
    daily_credits: float | None = Field(
        None, ge=0, le=MAX_CREDITS, description="credits a day; none: no limit"
    )


class PriceRequest(Price):
    model_config = ConfigDict(strict=True)
    input: float = Field(0.0, ge=0, le=MAX_PRICE, description="credits per token read")
    output: float = Field(0.0, ge=0, le=MAX_PRICE, description="credits per token written")
    embedding: float = Field(0.0, ge=0, le=MAX_PRICE, description="credits per token embedded")


class KeyRequest(BaseModel):
    # strict: a JSON true is not a 1, nor "5" a 5; what the schema calls invalid is refused.
    model_config = ConfigDict(strict=True)
    name: str = Field(min_length=1, max_length=100)
    expires_in: float | None = Field(None, gt=0, le=MAX_KEY_LIFETIME_S, description="seconds; none: never")


class UserKeyRequest(KeyRequest):
    user: str = Field(pattern=PRINCIPAL_NAME, description=PRINCIPAL_RULE)
    forwards_identity: bool = False


class UserRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    name: str = Field(pattern=PRINCIPAL_NAME, description=PRINCIPAL_RULE)
    admin: bool = False
    groups: list[Annotated[str, Field(pattern=PRINCIPAL_NAME)]] = []


class GroupRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    name: str = Field(pattern=PRINCIPAL_NAME, description=PRINCIPAL_RULE)
    limits: LimitsRequest | None = None


class GrantRequest(BaseModel):
    model_config = ConfigDict(strict=True)
    collection: str = Field(description="a collection, or '*' for every collection")
    level: Level


def require_admin(identity: IdentityDep, access: AccessDep, request: Request) -> Identity:
    if not identity.user.admin:
        audit.record(access.db, identity.actor, route_name(request), "-", "denied")
        raise AdminOnly("this needs an admin key")
    return identity


AdminDep = Annotated[Identity, Depends(require_admin)]

mine = APIRouter(tags=["access"], responses=errors(*AUTH_ERRORS, 422))
admin = APIRouter(prefix="/admin", tags=["admin"], responses=errors(*AUTH_ERRORS, 404, 409, 422))


@mine.get("/keys")
def my_keys(identity: IdentityDep, access: AccessDep) -> list[ApiKey]:
    return list_keys(access.db, identity.user.name)


@mine.post("/keys", status_code=201)
def my_new_key(body: KeyRequest, identity: IdentityDep, access: AccessDep) -> NewKey:
    """A new key of yours, shown once in `secret`; it shares your rights and budget."""
    made = create_key(access.db, identity.user.name, body.name, expires_in=body.expires_in)
    audit.record(
        access.db, identity.actor, "keys.create", f"user:{identity.user.name}", "ok", f"key {made.key.id}"
    )
    return made


@mine.delete("/keys/{key_id}", status_code=204, responses=errors(404))
def my_key_revoked(key_id: str, identity: IdentityDep, access: AccessDep) -> None:
    """Revoke one of your keys; a key of someone else's answers as one that does not exist."""
    try:
        key = get_key(access.db, key_id)
    except KeyNotFound:
        key = None
    if key is None or key.user != identity.user.name:
        raise KeyNotFound(f"key {key_id!r} does not exist")
    revoke_key(access.db, key_id)
    audit.record(
        access.db, identity.actor, "keys.revoke", f"user:{identity.user.name}", "ok", f"key {key_id}"
    )


@mine.get("/usage")
def my_usage(
    identity: IdentityDep,
    access: AccessDep,
    by: Annotated[
        str, Query(pattern=USAGE_BY, description="comma-separated: day, key, collection, model")
    ] = "day,model",
    since: str | None = None,
    until: str | None = None,
) -> list[UsageRow]:
    dimensions = [d for d in by.split(",") if d]
    return usage_report(access.db, dimensions, user=identity.user.name, since=since, until=until)


def _done(identity: Identity, access: AccessDep, action: str, target: str, detail: str = "") -> None:
    audit.record(access.db, identity.actor, action, target, "ok", detail)


@admin.get("/users")
def users(_: AdminDep, access: AccessDep) -> list[User]:
    return list_users(access.db)


@admin.post("/users", status_code=201)
def new_user(body: UserRequest, identity: AdminDep, access: AccessDep) -> User:
    made = create_user(access.db, body.name, admin=body.admin, groups=body.groups)
    _done(identity, access, "users.create", f"user:{body.name}")
    return made


@admin.delete("/users/{name}", status_code=204)
async def user_deleted(name: str, identity: AdminDep, access: AccessDep) -> None:
    """The user with their keys, grants, usage rows and counters; never the caller's own user (an admin
    who deleted themselves could lock everyone out)."""
    if name == identity.user.name:
        raise DeletingSelf(f"user {name!r} is you; another admin may delete it")
    await run_in_threadpool(delete_user, access.db, name)
    _done(identity, access, "users.delete", f"user:{name}")


@admin.get("/groups")
def groups(_: AdminDep, access: AccessDep) -> list[dict]:
    return list_groups(access.db)


@admin.post("/groups", status_code=201)
def new_group(body: GroupRequest, identity: AdminDep, access: AccessDep) -> dict:
    create_group(access.db, body.name)
    if body.limits is not None:
        set_limits(access.db, "group", body.name, body.limits)
    _done(identity, access, "groups.create", f"group:{body.name}")
    return {"name": body.name, "members": []}


@admin.delete("/groups/{name}", status_code=204)
def group_deleted(name: str, identity: AdminDep, access: AccessDep) -> None:
    delete_group(access.db, name)
    _done(identity, access, "groups.delete", f"group:{name}")


@admin.put("/groups/{name}/members/{user}", status_code=204)
def member_added(name: str, user: str, identity: AdminDep, access: AccessDep) -> None:
    add_member(access.db, name, user)
    _done(identity, access, "groups.add", f"group:{name}", f"user {user}")


@admin.delete("/groups/{name}/members/{user}", status_code=204)
def member_removed(name: str, user: str, identity: AdminDep, access: AccessDep) -> None:
    remove_member(access.db, name, user)
    _done(identity, access, "groups.remove", f"group:{name}", f"user {user}")


@admin.get("/grants")
def grants(_: AdminDep, access: AccessDep) -> list[Grant]:
    return list_grants(access.db)


@admin.put("/grants/{subject_kind}/{subject}", status_code=204)
def granted(
    subject_kind: Literal["user", "group"],
    subject: str,
    body: GrantRequest,
    identity: AdminDep,
    access: AccessDep,
) -> None:
    grant(access.db, subject_kind, subject, body.collection, body.level)
    _done(identity, access, "grants.set", f"{subject_kind}:{subject}", f"{body.level} on {body.collection}")


@admin.delete("/grants/{subject_kind}/{subject}/{collection}", status_code=204)
def revoked(
    subject_kind: Literal["user", "group"],
    subject: str,
    collection: str,
    identity: AdminDep,
    access: AccessDep,
) -> None:
    revoke(access.db, subject_kind, subject, collection)
    _done(identity, access, "grants.remove", f"{subject_kind}:{subject}", collection)


@admin.put("/limits/{scope_kind}/{scope}", status_code=204)
def limits_set(
    scope_kind: ScopeKind, scope: str, body: LimitsRequest, identity: AdminDep, access: AccessDep
) -> None:
    """Per-user limits of a group, or limits of one key, or per user in one collection."""
    set_limits(access.db, scope_kind, scope, body)
    _done(identity, access, "limits.set", f"{scope_kind}:{scope}", body.model_dump_json())


@admin.get("/prices")
def prices(_: AdminDep, access: AccessDep) -> dict[str, Price]:
    return list_prices(access.db)


@admin.put("/prices/{model:path}", status_code=204)
def price_set(model: str, body: PriceRequest, identity: AdminDep, access: AccessDep) -> None:
    set_price(access.db, model, body)
    _done(identity, access, "prices.set", f"model:{model}")


@admin.get("/keys")
def every_key(_: AdminDep, access: AccessDep, user: str | None = None) -> list[ApiKey]:
    return list_keys(access.db, user)


@admin.post("/keys", status_code=201)
def key_for_user(body: UserKeyRequest, identity: AdminDep, access: AccessDep) -> NewKey:
    made = create_key(
        access.db, body.user, body.name, expires_in=body.expires_in, forwards_identity=body.forwards_identity
    )
    _done(identity, access, "keys.create", f"user:{body.user}", f"key {made.key.id}")
    return made


@admin.delete("/keys/{key_id}", status_code=204)
def key_revoked(key_id: str, identity: AdminDep, access: AccessDep) -> None:
    key = revoke_key(access.db, key_id)
    _done(identity, access, "keys.revoke", f"user:{key.user}", f"key {key_id}")


@admin.get("/usage")
def usage(
    _: AdminDep,
    access: AccessDep,
    by: Annotated[
        str, Query(pattern=USAGE_BY, description="comma-separated: day, user, group, key, collection, model")
    ] = "day,user",
    user: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> list[UsageRow]:
    return usage_report(access.db, [d for d in by.split(",") if d], user=user, since=since, until=until)


@admin.get("/audit")
def audit_entries(
    _: AdminDep, access: AccessDep, limit: Annotated[int, Query(ge=1, le=10_000)] = 200
) -> list[AuditEntry]:
    return audit.entries(access.db, limit=limit)
