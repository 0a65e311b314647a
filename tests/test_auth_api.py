"""Authentication over the API: which keys open it, what a refused request leaves (nothing), self-service keys,
the admin API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ragsvc.access.db import ACCESS_DB, AccessDB
from ragsvc.access.keys import create_key, revoke_key
from ragsvc.access.principals import create_user
from ragsvc.settings import Settings
from tests.byte_scan import find_canary
from tests.conftest import app_client


@pytest.fixture
def keys(data_dir: Path) -> dict[str, str]:
    db = AccessDB(data_dir / ACCESS_DB)
    create_user(db, "root", admin=True)
    create_user(db, "alice")
    made = {
        "admin": create_key(db, "root", "admin").secret,
        "alice": create_key(db, "alice", "laptop").secret,
        "revoked": create_key(db, "alice", "old").secret,
        "expired": create_key(db, "alice", "short", expires_in=0.01).secret,
    }
    revoke_key(db, made["revoked"].split("_")[1])
    db.close()
    time.sleep(0.05)
    return made


@pytest.fixture
def secured(settings: Settings, keys: dict[str, str]) -> Iterator[TestClient]:
    with app_client(settings.model_copy(update={"auth": "on"})) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_missing_malformed_revoked_and_expired_keys_get_401_and_change_nothing(
    secured: TestClient, keys: dict[str, str], data_dir: Path
):
    wrong = keys["alice"][:-3] + ("xyz" if not keys["alice"].endswith("xyz") else "abc")
    for headers in (
        {},
        bearer("not-a-key"),
        {"Authorization": "Basic abc"},
        bearer(keys["revoked"]),
        bearer(keys["expired"]),
        bearer(wrong),
    ):
        refused = secured.post("/collections", json={"name": "made"}, headers=headers)
        assert refused.status_code == 401, (headers, refused.text)
        assert refused.json()["error"]["code"] == "unauthorized"
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert secured.get("/collections", headers=headers).status_code == 401
    in_url = secured.get(f"/collections?api_key={keys['admin']}")
    assert in_url.status_code == 401 and "URL" in in_url.json()["error"]["message"]
    assert secured.get("/collections", headers=bearer(keys["admin"])).json() == []
    assert secured.get("/healthz").status_code == 200
    for secret in keys.values():  # only hashes are kept
        assert find_canary(data_dir, secret.split("_", 2)[2]) == []
    audit = secured.get("/admin/audit", headers=bearer(keys["admin"])).json()
    assert sum(e["outcome"] == "unauthorized" for e in audit) >= 12
    assert all(keys["admin"] not in str(e) for e in audit)


def test_keys_in_every_header_the_clients_use(secured: TestClient, keys: dict[str, str]):
    for headers in (bearer(keys["alice"]), {"X-API-Key": keys["alice"]}, {"api-key": keys["alice"]}):
        assert secured.get("/keys", headers=headers).status_code == 200


def test_a_user_makes_and_revokes_their_own_keys_only(secured: TestClient, keys: dict[str, str]):
    made = secured.post("/keys", json={"name": "ci", "expires_in": 86400}, headers=bearer(keys["alice"]))
    assert made.status_code == 201 and made.json()["secret"].startswith("rsk_")
    new = made.json()["secret"]
    assert [k["name"] for k in secured.get("/keys", headers=bearer(new)).json()] == [
        "laptop",
        "old",
        "short",
        "ci",
    ]
    admins = secured.get("/admin/keys", headers=bearer(keys["admin"])).json()
    root_key = next(k["id"] for k in admins if k["user"] == "root")
    other = secured.delete(f"/keys/{root_key}", headers=bearer(new))
    missing = secured.delete("/keys/0000000000000000", headers=bearer(new))
    assert other.status_code == missing.status_code == 404 and other.json() == {
        "error": {"code": "key_not_found", "message": f"key {root_key!r} does not exist"}
    }
    assert secured.get("/admin/users", headers=bearer(new)).status_code == 403
    assert secured.delete(f"/keys/{made.json()['key']['id']}", headers=bearer(new)).status_code == 204
    assert secured.get("/keys", headers=bearer(new)).status_code == 401


def test_the_admin_api_manages_users_groups_rights_limits_and_prices(
    secured: TestClient, keys: dict[str, str]
):
    h = bearer(keys["admin"])
    assert (
        secured.post("/admin/groups", json={"name": "ap-a", "limits": {"rpm": 2}}, headers=h).status_code
        == 201
    )
    assert (
        secured.post("/admin/users", json={"name": "bob", "groups": ["ap-a"]}, headers=h).status_code == 201
    )
    assert (
        secured.put(
            "/admin/grants/group/ap-a", json={"collection": "*", "level": "read"}, headers=h
        ).status_code
        == 204
    )
    assert (
        secured.put("/admin/prices/smollm2", json={"input": 1e-8, "output": 2e-8}, headers=h).status_code
        == 204
    )
    made = secured.post("/admin/keys", json={"user": "bob", "name": "k", "expires_in": 60}, headers=h).json()
    assert secured.get("/keys", headers=bearer(made["secret"])).json()[0]["user"] == "bob"
    assert secured.get("/admin/grants", headers=h).json() == [
        {"subject_kind": "group", "subject": "ap-a", "collection": "*", "level": "read"}
    ]
    assert secured.delete("/admin/users/bob", headers=h).status_code == 204
    assert secured.get("/keys", headers=bearer(made["secret"])).status_code == 401
    actions = [e["action"] for e in secured.get("/admin/audit", headers=h).json()]
    assert {
        "groups.create",
        "users.create",
        "grants.set",
        "prices.set",
        "keys.create",
        "users.delete",
    } <= set(actions)


def test_on_loopback_with_auth_off_no_key_is_needed(client: TestClient):
    assert client.get("/collections").status_code == 200
    assert client.get("/admin/users").json() == []
