"""What authentication costs a request: GET /collections in process (FastAPI's TestClient), auth off against
auth on with an API key (SQLite look-up, SHA-256, constant-time compare), and a budget admit+settle.

    python -m bench.auth --requests 2000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient

from ragsvc.access.admission import admit, settle
from ragsvc.access.counters import SqliteCounters
from ragsvc.access.db import ACCESS_DB, AccessDB
from ragsvc.access.keys import create_key
from ragsvc.access.limits import Limits, set_limits
from ragsvc.access.principals import create_group, create_user
from ragsvc.access.usage import Payer
from ragsvc.api import create_app
from ragsvc.settings import Settings


def per_request_us(client: TestClient, headers: dict[str, str], n: int) -> float:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        assert client.get("/collections", headers=headers).status_code == 200
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ragsvc-bench-auth-") as tmp:
        data = Path(tmp)
        db = AccessDB(data / ACCESS_DB)
        create_group(db, "g")
        create_user(db, "u", groups=["g"])
        set_limits(db, "group", "g", Limits(rpm=10**9, tpm=10**12, daily_credits=10**6))
        secret = create_key(db, "u", "bench").secret
        results = {}
        for mode, headers in (("off", {}), ("on", {"Authorization": f"Bearer {secret}"})):
            with TestClient(create_app(Settings(data_dir=data, auth=mode))) as client:
                per_request_us(client, headers, 50)  # warm up
                results[mode] = per_request_us(client, headers, args.requests)
        counters, payer = SqliteCounters(db), Payer("u", ("g",))
        samples = []
        for _ in range(args.requests):
            started = time.perf_counter()
            admission = admit(
                db, counters, payer, collection="kb", model="m", input_tokens=500, output_tokens=256
            )
            settle(db, counters, admission, input_tokens=480, output_tokens=120)
            samples.append(time.perf_counter() - started)
        db.close()
    off, on = results["off"], results["on"]
    print(f"GET /collections median: auth off {off:.0f} us, auth on {on:.0f} us, overhead {on - off:.0f} us")
    print(
        f"budget admit + settle (SQLite counters, 9 counters): median {statistics.median(samples) * 1e6:.0f} us"
    )


if __name__ == "__main__":
    main()
