"""Who a request comes from: its API key (in `Authorization: Bearer`, `X-API-Key` or `api-key`, never in the
URL), and, for a key allowed to forward identities, the chat user Open WebUI signed in a JWT header.

Open WebUI's plain `X-OpenWebUI-User-*` headers are never trusted: anyone can send them. Its signed header
is trusted only with the secret configured here and only on a key marked to forward identities; the user
it names must exist in ragsvc (or is made in the configured group), and that user's rights and budget apply.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

import jwt

from indexes.errors import RagsvcError
from ragsvc.access.db import AccessDB
from ragsvc.access.keys import ApiKey, verify
from ragsvc.access.principals import NameTaken, User, create_user, find_user

KEY_HEADERS = ("x-api-key", "api-key")
OPENWEBUI_JWT_HEADER = "x-openwebui-user-jwt"
OPENWEBUI_ISSUER = "open-webui"
# Query parameters clients put keys in; a key there would end up in access logs, so the request is refused.
KEY_PARAMETERS = frozenset({"api_key", "api-key", "apikey", "key", "token", "access_token"})


class Unauthorized(RagsvcError):
    """No usable credential: missing, malformed, unknown, revoked or expired (one answer for all)."""

    code = "unauthorized"


@dataclass(frozen=True)
class Identity:
    user: User
    key: ApiKey | None  # None: the local user of a setup without auth, or the data dir's owner
    forwarded_by: str | None = None  # the key's own user when a chat UI forwarded `user`

    @property
    def actor(self) -> str:
        via = f" via {self.forwarded_by}" if self.forwarded_by else ""
        return f"user:{self.user.name}{via}"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_required(mode: str, host: str) -> bool:
    """Auth is on when asked, and always when the API listens beyond loopback."""
    return mode == "on" or not is_loopback(host)


def presented_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    for name in KEY_HEADERS:
        if headers.get(name, "").strip():
            return headers[name].strip()
    return None


def identify(
    db: AccessDB,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    *,
    openwebui_secret: str | None = None,
    openwebui_group: str | None = None,
) -> Identity:
    """The caller, or Unauthorized. `headers` keys are lower-case (as Starlette gives them)."""
    if KEY_PARAMETERS & {name.lower() for name in query}:
        raise Unauthorized("keys are not accepted in the URL; send it as 'Authorization: Bearer <key>'")
    presented = presented_key(headers)
    if presented is None:
        raise Unauthorized("an API key is needed: send 'Authorization: Bearer <key>'")
    key = verify(db, presented)
    if key is None:
        raise Unauthorized("the API key is not valid (unknown, revoked or expired)")
    owner = find_user(db, key.user)
    if owner is None:  # deleted meanwhile
        raise Unauthorized("the API key is not valid (unknown, revoked or expired)")
    signed = headers.get(OPENWEBUI_JWT_HEADER)
    if not signed:
        return Identity(owner, key)
    if not key.forwards_identity or not openwebui_secret:
        raise Unauthorized(
            "this key may not speak for other users: an admin creates it with --forwards-identity and sets "
            "RAGSVC_OPENWEBUI_JWT_SECRET"
        )
    user = _forwarded_user(db, signed, openwebui_secret, openwebui_group)
    return Identity(user, key, forwarded_by=owner.name)


def _forwarded_user(db: AccessDB, token: str, secret: str, group: str | None) -> User:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=OPENWEBUI_ISSUER,
            options={"require": ["exp", "iat", "iss", "sub", "email"]},
        )
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"the forwarded user header is not valid: {exc}") from None
    name = str(claims["email"]).strip().lower()
    user = find_user(db, name)
    if user is not None:
        return user
    if group is None:
        raise Unauthorized(f"no ragsvc user {name!r}: an admin creates it (ragsvc users create)")
    try:
        return create_user(db, name, groups=[group])
    except NameTaken:  # made by a concurrent request
        return find_user(db, name) or create_user(db, name, groups=[group])
