"""The crash soak (bench/soak.py) as a test: a short run of SIGKILLs at random points while `ragsvc serve`
ingests, edits, deletes, reindexes and answers; every acknowledged write must survive each restart, with no
duplicated or orphaned chunk, no half-replaced document in any answer and no job stuck. The long run (500
kills) is the soak's own command, reported in the README."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def soak(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bench.soak", "--workdir", str(tmp_path / "soak"), *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)


def test_twenty_kills_lose_nothing(tmp_path: Path):
    run = soak(tmp_path, "--kills", "20", "--seed", "23", "--max-round", "3")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    last = run.stdout.strip().splitlines()[-1]
    for kind in ("lost", "duplicated", "orphaned", "stuck", "half-replaced", "deleted-found"):
        assert f" {kind}=0" in f" {last}", last
    assert "kills=20" in last


def test_twenty_kills_with_jobs_in_redis_lose_nothing(tmp_path: Path, redis_server: str):
    # redis_server only makes sure redis-server is installed; the soak starts (and kills) its own, with AOF
    run = soak(tmp_path, "--kills", "20", "--seed", "24", "--max-round", "3", "--redis")
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    last = run.stdout.strip().splitlines()[-1]
    assert " lost=0 " in f" {last}" and " stuck=0 " in f" {last}" and "kills=20" in last, last
