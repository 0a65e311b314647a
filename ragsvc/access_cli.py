"""`ragsvc keys|users|groups|prices|usage|audit`: administer access on this data dir's access database.

They work whether or not a server runs on the data dir: the database is shared by processes (SQLite, WAL).
Secrets go to stdout once and nowhere else; everything else a command says goes to stderr or is a table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from indexes.errors import RagsvcError
from ragsvc.access import audit
from ragsvc.access.db import ACCESS_DB, AccessDB
from ragsvc.access.keys import create_key, list_keys, parse_duration, revoke_key
from ragsvc.access.limits import Limits, set_limits
from ragsvc.access.prices import Price, list_prices, set_price
from ragsvc.access.principals import (
    add_member,
    create_group,
    create_user,
    delete_user,
    find_user,
    grant,
    list_groups,
    list_users,
    remove_member,
    revoke,
)
from ragsvc.access.usage import usage_report
from ragsvc.cli_errors import UsageError, fail
from ragsvc.settings import Settings

keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
users_app = typer.Typer(help="Users: create, list, delete, grant rights.", no_args_is_help=True)
groups_app = typer.Typer(help="Groups: members, rights, limits and daily budgets.", no_args_is_help=True)
prices_app = typer.Typer(help="Credits per token of each model.", no_args_is_help=True)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ADMIN_USER = "admin"
AsJson = Annotated[bool, typer.Option("--json", help="print JSON for scripts")]
LevelArg = Annotated[Literal["read", "write", "admin"], typer.Argument(help="read, write or admin")]
CollectionArg = Annotated[str, typer.Argument(help="a collection, or '*' for every collection")]


def register(app: typer.Typer) -> None:
    """Add the access commands to the `ragsvc` command."""
    app.add_typer(keys_app, name="keys")
    app.add_typer(users_app, name="users")
    app.add_typer(groups_app, name="groups")
    app.add_typer(prices_app, name="prices")
    app.command("usage")(usage)
    app.command("audit")(audit_log)


@contextmanager
def _access() -> Iterator[AccessDB]:
    db = AccessDB(Path(Settings().data_dir) / ACCESS_DB)
    try:
        yield db
    except RagsvcError as exc:
        fail(exc)
    finally:
        db.close()


def _when(stamp: float | None) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M UTC") if stamp else "-"


@keys_app.command("create")
def keys_create(
    user: Annotated[str | None, typer.Option(help="the user the key acts as")] = None,
    name: Annotated[str | None, typer.Option(help="what the key is for, e.g. 'laptop'")] = None,
    expires: Annotated[str | None, typer.Option(help="lifetime, e.g. 30d, 12h; none: never")] = None,
    admin: Annotated[bool, typer.Option("--admin", help="a key of the admin user (made if missing)")] = False,
    forwards_identity: Annotated[
        bool, typer.Option(help="may speak for the Open WebUI users its signed header names")
    ] = False,
) -> None:
    """Make a key and print it on stdout, once: only its hash is kept."""
    if admin == (user is not None):
        fail(UsageError("give --user USER or --admin"))
    try:
        lifetime = parse_duration(expires) if expires else None
    except ValueError as exc:
        fail(UsageError(f"--expires: {exc}"))
    with _access() as db:
        if admin:
            user = ADMIN_USER
            if find_user(db, ADMIN_USER) is None:
                create_user(db, ADMIN_USER, admin=True)
        made = create_key(
            db,
            user,
            name or ("admin" if admin else "key"),
            expires_in=lifetime,
            forwards_identity=forwards_identity,
        )
        audit.record(db, "cli", "keys.create", f"user:{user}", "ok", f"key {made.key.id}")
    print(made.secret)  # noqa: T201 - the key itself, alone on stdout, for scripts
    if not admin:
        err.print(f"key {made.key.id} for {user}: shown once, keep it now", highlight=False)


@keys_app.command("list")
def keys_list(user: Annotated[str | None, typer.Option()] = None, as_json: AsJson = False) -> None:
    with _access() as db:
        keys = list_keys(db, user)
    if as_json:
        out.print_json(json.dumps([k.model_dump() for k in keys]))
        return
    table = Table("id", "user", "name", "created", "expires", "last used", "revoked")
    for k in keys:
        table.add_row(
            k.id,
            k.user,
            k.name,
            _when(k.created_at),
            _when(k.expires_at),
            _when(k.last_used_at),
            _when(k.revoked_at),
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id (`keys list`)")]) -> None:
    with _access() as db:
        key = revoke_key(db, key_id)
        audit.record(db, "cli", "keys.revoke", f"user:{key.user}", "ok", f"key {key_id}")
    err.print(f"key {key_id} of {key.user} revoked")


@users_app.command("create")
def users_create(
    name: str,
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="a group to join; repeatable")
    ] = None,
    admin: Annotated[bool, typer.Option(help="admin on every collection and on access")] = False,
) -> None:
    with _access() as db:
        create_user(db, name, admin=admin, groups=group or [])
        audit.record(db, "cli", "users.create", f"user:{name}", "ok")
    err.print(f"user {name} created")


@users_app.command("list")
def users_list(as_json: AsJson = False) -> None:
    with _access() as db:
        users = list_users(db)
    if as_json:
        out.print_json(json.dumps([u.model_dump() for u in users]))
        return
    table = Table("user", "groups", "admin", "created")
    for u in users:
        table.add_row(u.name, ", ".join(u.groups), "yes" if u.admin else "", _when(u.created_at))
    out.print(table)


@users_app.command("delete")
def users_delete(name: str) -> None:
    """Delete the user with their keys, grants, usage rows and counters."""
    with _access() as db:
        delete_user(db, name)
        audit.record(db, "cli", "users.delete", f"user:{name}", "ok")
    err.print(f"user {name} deleted")


@users_app.command("grant")
def users_grant(name: str, collection: CollectionArg, level: LevelArg) -> None:
    """Give the user a right on a collection (or '*'), replacing what they had there."""
    with _access() as db:
        grant(db, "user", name, collection, level)
        audit.record(db, "cli", "grants.set", f"user:{name}", "ok", f"{level} on {collection}")


@users_app.command("revoke")
def users_revoke(name: str, collection: CollectionArg) -> None:
    with _access() as db:
        revoke(db, "user", name, collection)
        audit.record(db, "cli", "grants.remove", f"user:{name}", "ok", collection)


@groups_app.command("create")
def groups_create(
    name: str,
    rpm: Annotated[int | None, typer.Option(help="requests per minute, per user")] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens per minute, per user")] = None,
    daily_credits: Annotated[float | None, typer.Option(help="credits per UTC day, per user")] = None,
) -> None:
    with _access() as db:
        create_group(db, name)
        if rpm is not None or tpm is not None or daily_credits is not None:
            set_limits(db, "group", name, Limits(rpm=rpm, tpm=tpm, daily_credits=daily_credits))
        audit.record(db, "cli", "groups.create", f"group:{name}", "ok")
    err.print(f"group {name} created")


@groups_app.command("list")
def groups_list(as_json: AsJson = False) -> None:
    with _access() as db:
        groups = list_groups(db)
    if as_json:
        out.print_json(json.dumps(groups))
        return
    table = Table("group", "members")
    for g in groups:
        table.add_row(g["name"], ", ".join(g["members"]))
    out.print(table)


@groups_app.command("add")
def groups_add(group: str, user: str) -> None:
    with _access() as db:
        add_member(db, group, user)
        audit.record(db, "cli", "groups.add", f"group:{group}", "ok", f"user {user}")


@groups_app.command("remove")
def groups_remove(group: str, user: str) -> None:
    with _access() as db:
        remove_member(db, group, user)
        audit.record(db, "cli", "groups.remove", f"group:{group}", "ok", f"user {user}")


@groups_app.command("grant")
def groups_grant(group: str, collection: CollectionArg, level: LevelArg) -> None:
    with _access() as db:
        grant(db, "group", group, collection, level)
        audit.record(db, "cli", "grants.set", f"group:{group}", "ok", f"{level} on {collection}")


@groups_app.command("limits")
def groups_limits(
    group: str,
    rpm: Annotated[int | None, typer.Option(help="requests per minute, per user; unset: none")] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens per minute, per user; unset: none")] = None,
    daily_credits: Annotated[float | None, typer.Option(help="credits per UTC day, per user")] = None,
) -> None:
    """Set the group's limits per user (each unset one is no limit)."""
    with _access() as db:
        set_limits(db, "group", group, Limits(rpm=rpm, tpm=tpm, daily_credits=daily_credits))
        audit.record(
            db, "cli", "limits.set", f"group:{group}", "ok", f"rpm={rpm} tpm={tpm} credits={daily_credits}"
        )


@prices_app.command("set")
def prices_set(
    model: str,
    input: Annotated[float, typer.Option("--input", help="credits per input token")] = 0.0,
    output: Annotated[float, typer.Option(help="credits per output token")] = 0.0,
    embedding: Annotated[float, typer.Option(help="credits per embedded token")] = 0.0,
) -> None:
    with _access() as db:
        set_price(db, model, Price(input=input, output=output, embedding=embedding))
        audit.record(db, "cli", "prices.set", f"model:{model}", "ok")


@prices_app.command("list")
def prices_list(as_json: AsJson = False) -> None:
    with _access() as db:
        prices = list_prices(db)
    if as_json:
        out.print_json(json.dumps({m: p.model_dump() for m, p in prices.items()}))
        return
    table = Table("model", "input", "output", "embedding")
    for model, p in prices.items():
        table.add_row(model, f"{p.input:g}", f"{p.output:g}", f"{p.embedding:g}")
    out.print(table)


def usage(
    by: Annotated[
        str, typer.Option(help="comma-separated: day, user, group, key, collection, model")
    ] = "day,user",
    user: Annotated[str | None, typer.Option()] = None,
    since: Annotated[str | None, typer.Option(help="first day, YYYY-MM-DD (UTC)")] = None,
    until: Annotated[str | None, typer.Option(help="last day, YYYY-MM-DD (UTC)")] = None,
    as_json: AsJson = False,
) -> None:
    """Requests, tokens and credits used, summed per the dimensions in --by."""
    dimensions = [d.strip() for d in by.split(",") if d.strip()]
    with _access() as db:
        rows = usage_report(db, dimensions, user=user, since=since, until=until)
    if as_json:
        out.print_json(json.dumps([r.model_dump(exclude_none=True) for r in rows]))
        return
    table = Table(*dimensions, "requests", "input", "output", "embedding", "credits")
    for r in rows:
        named = [str(getattr(r, d)) for d in dimensions]
        table.add_row(
            *named,
            str(r.requests),
            str(r.input_tokens),
            str(r.output_tokens),
            str(r.embedding_tokens),
            f"{r.credits:.6g}",
        )
    out.print(table)


def audit_log(
    limit: Annotated[int, typer.Option(help="newest entries shown")] = 50, as_json: AsJson = False
) -> None:
    """Admin actions and refused requests, newest first."""
    with _access() as db:
        found = audit.entries(db, limit=limit)
    if as_json:
        out.print_json(json.dumps([e.model_dump() for e in found]))
        return
    table = Table("when", "actor", "action", "target", "outcome", "detail")
    for e in found:
        table.add_row(_when(e.at), e.actor, e.action, e.target, e.outcome, e.detail)
    out.print(table)
