"""The admin CLI: keys shown once on stdout, users, groups with limits and rights, usage."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ragsvc.access.db import ACCESS_DB, AccessDB
from ragsvc.access.keys import verify
from tests.byte_scan import find_canary
from tests.conftest import run_cli

KEY = re.compile(r"rsk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


def test_an_admin_key_is_the_only_thing_on_stdout(data_dir: Path):
    made = run_cli("keys", "create", "--admin")
    assert made.returncode == 0, made.stderr
    assert KEY.fullmatch(made.stdout.strip()) and made.stdout.count("\n") == 1
    db = AccessDB(data_dir / ACCESS_DB)
    try:
        key = verify(db, made.stdout.strip())
        assert key is not None and key.user == "admin"
    finally:
        db.close()
    assert find_canary(data_dir, made.stdout.strip().split("_", 2)[2]) == []


def test_users_groups_and_keys_from_the_cli(data_dir: Path):
    assert (
        run_cli(
            "groups", "create", "ap-u", "--rpm", "20", "--tpm", "20000", "--daily-credits", "1"
        ).returncode
        == 0
    )
    assert run_cli("users", "create", "alice", "--group", "ap-u").returncode == 0
    assert run_cli("groups", "grant", "ap-u", "*", "read").returncode == 0
    made = run_cli("keys", "create", "--user", "alice", "--name", "laptop", "--expires", "30d")
    assert made.returncode == 0 and KEY.fullmatch(made.stdout.strip())
    listed = json.loads(run_cli("keys", "list", "--json").stdout)
    assert [(k["user"], k["name"]) for k in listed] == [("alice", "laptop")]
    assert 29.9 * 86400 < listed[0]["expires_at"] - listed[0]["created_at"] <= 30 * 86400
    users = json.loads(run_cli("users", "list", "--json").stdout)
    assert [(u["name"], u["groups"]) for u in users] == [("alice", ["ap-u"])]

    bad = run_cli("keys", "create", "--user", "nobody", "--name", "x")
    assert bad.returncode == 1 and "does not exist" in bad.stderr and bad.stdout == ""
    assert run_cli("keys", "create", "--user", "alice", "--expires", "soon").returncode == 2
    assert run_cli("keys", "revoke", listed[0]["id"]).returncode == 0
    assert json.loads(run_cli("keys", "list", "--json").stdout)[0]["revoked_at"] is not None
    assert json.loads(run_cli("usage", "--json").stdout) == []
    actions = [e["action"] for e in json.loads(run_cli("audit", "--json").stdout)]
    assert actions[0] == "keys.revoke" and "groups.create" in actions
