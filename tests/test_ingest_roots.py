"""A request can make the server read only folders under its configured ingest roots; links cannot lead out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragsvc.access.db import ACCESS_DB, AccessDB
from ragsvc.access.keys import create_key
from ragsvc.access.principals import create_user, grant
from ragsvc.folders import FolderNotAllowed, allowed_folder
from ragsvc.settings import Settings
from tests.conftest import app_client


def test_etc_is_refused_by_default(settings: Settings, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("RAGSVC_INGEST_ROOTS")
    with app_client(settings.model_copy(update={"ingest_roots": []})) as client:
        refused = client.post("/collections/etcprobe/ingest", json={"path": "/etc", "wait": True})
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "folder_not_allowed"
        assert client.get("/collections/etcprobe").status_code == 404
        assert client.get("/jobs").json() == []


def test_a_folder_outside_the_roots_and_a_link_out_of_one_are_refused(settings: Settings, tmp_path: Path):
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# A\n\nalpha\n")
    os.symlink("/etc", root / "etc-link")
    with app_client(settings.model_copy(update={"ingest_roots": [root]})) as scoped:
        for path in ("/etc", str(root / "etc-link"), str(root / "docs" / ".." / "..")):
            answer = scoped.post("/collections/kb/ingest", json={"path": path, "wait": True})
            assert answer.status_code == 403, (path, answer.text)
        ok = scoped.post("/collections/kb/ingest", json={"path": str(root / "docs"), "wait": True})
        assert ok.status_code == 200 and ok.json()["summary"]["added"] == ["a.md"]


def test_the_root_check_comes_before_any_look_at_the_folder(tmp_path: Path):
    """A caller outside the roots learns nothing about what exists there: absent and present read alike."""
    for path in ("/etc", "/no/such/folder"):
        with pytest.raises(FolderNotAllowed) as refused:
            allowed_folder(path, [tmp_path])
        assert "not under a folder this server ingests from" in refused.value.message
    assert allowed_folder("/etc", [], machine_local=True) == Path("/etc").resolve()


def test_server_side_ingest_needs_an_admin_key_and_a_root(settings: Settings, tmp_path: Path, data_dir: Path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# A\n\nalpha\n")
    db = AccessDB(data_dir / ACCESS_DB)
    create_user(db, "root", admin=True)
    create_user(db, "alice")
    create_user(db, "eve")
    grant(db, "user", "alice", "*", "write")
    admin, alice = create_key(db, "root", "a").secret, create_key(db, "alice", "a").secret
    eve = create_key(db, "eve", "a").secret
    db.close()
    with app_client(settings.model_copy(update={"auth": "on", "ingest_roots": [tmp_path]})) as client:
        body = {"path": str(folder), "wait": True}
        as_alice = client.post(
            "/collections/kb/ingest", json=body, headers={"Authorization": f"Bearer {alice}"}
        )
        assert as_alice.status_code == 403 and as_alice.json()["error"]["code"] == "forbidden"
        # eve may not even read it: it answers as a collection that does not exist
        as_eve = client.post("/collections/kb/ingest", json=body, headers={"Authorization": f"Bearer {eve}"})
        assert as_eve.status_code == 404 and as_eve.json()["error"]["code"] == "collection_not_found"
        etc = client.post(
            "/collections/kb/ingest", json={"path": "/etc"}, headers={"Authorization": f"Bearer {admin}"}
        )
        assert etc.status_code == 403 and etc.json()["error"]["code"] == "folder_not_allowed"
        ok = client.post("/collections/kb/ingest", json=body, headers={"Authorization": f"Bearer {admin}"})
        assert ok.status_code == 200 and ok.json()["summary"]["added"] == ["a.md"]
