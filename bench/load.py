"""ragsvc under concurrent load, over HTTP: /search, streamed /query and streamed /v1/chat/completions.

Usage: python bench/load.py [--levels 1,8,32] [--seconds 15] [--docs docs] [--configs baseline,improved]
                            [--profile]

The answers come from bench/instant_llm.py, a stand-in LLM that streams a fixed reply at once, so that the
figures are ragsvc's own limits. One data dir is ingested once (the repo's docs/ by default); then, for each
server configuration, `ragsvc serve` is started on a copy of it, and each route is driven by N concurrent clients (one
keep-alive connection each, a new request as soon as the last one ended) for --seconds per level, the configs taking turns at each level. Printed per
config, route and level: requests/s, p50/p95/p99 of the whole request (the last byte of a stream) and of
the first streamed token, errors, and the server's CPU per request (from /proc: its user+system time over
the requests it answered); then the level where latency turns (throughput grows less than 10% from the level
before while p50 grows), and the ratios of the improved config to the baseline at each level. With
--profile, py-spy samples the server for 10 s under the top level of /search and the hottest functions are
printed (self time and including callees).

Configs: improved = ragsvc as it is (uvloop and httptools, RAGSVC_SERVER_LOOP / RAGSVC_SERVER_HTTP: auto);
baseline = ragsvc as it was before this benchmark's findings, restored in the server process by
`serve_baseline` below: the asyncio event loop and h11 HTTP parser (pure Python), request metrics through
Starlette's BaseHTTPMiddleware, and document keys read through one shared SQLite connection under a lock.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RAGSVC = Path(sys.executable).with_name("ragsvc")
CONFIGS = {
    "baseline": {"RAGSVC_SERVER_LOOP": "asyncio", "RAGSVC_SERVER_HTTP": "h11"},
    "improved": {"RAGSVC_SERVER_LOOP": "auto", "RAGSVC_SERVER_HTTP": "auto"},
}


def serve_baseline(port: int) -> None:
    """`ragsvc serve` with the code paths the improved config replaced, as they were."""
    import ragsvc.api
    from indexes.keys import SqliteDocumentKeys
    from ragsvc.cli import app
    from ragsvc.metrics import REQUEST_SECONDS, REQUESTS

    def locked_get(self: SqliteDocumentKeys, index: str, key_ids) -> dict[str, bytes]:  # noqa: ANN001
        with self._lock:
            return self._select(index, sorted(set(key_ids)))

    def base_http_middleware(fastapi_app) -> None:  # noqa: ANN001
        @fastapi_app.middleware("http")
        async def count_requests(request, call_next):  # noqa: ANN001, ANN202
            started = time.perf_counter()
            response = await call_next(request)
            label = getattr(request.scope.get("route"), "path", "unmatched")
            REQUESTS.labels(request.method, label, str(response.status_code)).inc()
            REQUEST_SECONDS.labels(request.method, label).observe(time.perf_counter() - started)
            return response

    SqliteDocumentKeys.get = locked_get
    ragsvc.api.install_request_metrics = base_http_middleware
    app(["serve", "--port", str(port)])


ROUTES = ("search", "query-stream", "chat-stream")
COLLECTION = "bench"
KNEE_GAIN = 1.10  # throughput must grow by this much from one level to the next, or latency has turned
# Where a thread waits for something to do; py-spy counts such waits as samples of the thread.
IDLE_FRAMES = {"Condition.wait", "_worker", "EpollSelector.select", "Queue.get", "Event.wait"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")


def questions(limit: int = 64) -> list[str]:
    lines = (ROOT / "eval/sets/ragsvc-docs.jsonl").read_text().splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()][:limit]


def request_of(route: str, question: str) -> tuple[str, dict]:
    if route == "search":
        return f"/collections/{COLLECTION}/search", {"question": question, "top_k": 5}
    if route == "query-stream":
        return f"/collections/{COLLECTION}/query", {"question": question, "stream": True}
    messages = [{"role": "user", "content": question}]
    return "/v1/chat/completions", {"model": COLLECTION, "messages": messages, "stream": True}


async def one_client(
    url: str, route: str, asked: list[str], offset: int, stop_at: float, out: dict[str, list]
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        n = offset
        while time.perf_counter() < stop_at:
            path, body = request_of(route, asked[n % len(asked)])
            n += 1
            started = time.perf_counter()
            first = None
            try:
                async with client.stream("POST", path, json=body) as response:
                    async for chunk in response.aiter_bytes():
                        if first is None and chunk:
                            first = time.perf_counter() - started
                    ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            seconds = time.perf_counter() - started
            if not ok:
                out["errors"].append(seconds)
                continue
            out["latency"].append(seconds)
            out["first"].append(first or seconds)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def drive(url: str, route: str, clients: int, seconds: float, pid: int, asked: list[str]) -> dict:
    out: dict[str, list] = {"latency": [], "first": [], "errors": []}

    async def run() -> None:
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(one_client(url, route, asked, i * 7, stop_at, out) for i in range(clients)))

    cpu_before, started = cpu_seconds(pid), time.perf_counter()
    asyncio.run(run())
    wall, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_before
    done = len(out["latency"])
    result = {"route": route, "clients": clients, "done": done, "errors": len(out["errors"])}
    result["per_s"] = done / wall
    result["cpu_ms_per_request"] = cpu / done * 1000 if done else float("nan")
    result["server_cores"] = cpu / wall
    for key in ("latency", "first"):
        if len(out[key]) >= 2:
            cuts = statistics.quantiles(out[key], n=100, method="inclusive")
            result[key] = {"p50": cuts[49] * 1000, "p95": cuts[94] * 1000, "p99": cuts[98] * 1000}
    return result


def profile(pid: int, url: str, clients: int, asked: list[str], seconds: float = 10) -> list[str]:
    """py-spy on the server while `clients` search; the hottest functions, by self and inclusive time."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = Path(tempfile.mkstemp(suffix=".txt")[1])
    spy = subprocess.Popen(
        [py_spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "97", "-f", "raw", "-o", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    drive(url, "search", clients, seconds + 1, pid, asked)
    spy.wait()
    own: collections.Counter[str] = collections.Counter()
    within: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] for f in stack.split(";")
        ]
        n = int(count)
        if frames and frames[-1].split(" (")[0] in IDLE_FRAMES:
            idle += n  # a pool thread waiting for work, the event loop waiting on its sockets
            continue
        total += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            within[frame] += n
    raw.unlink()
    lines = [f"py-spy, {clients} /search clients: {total} busy samples (shares below), {idle} idle left out"]
    lines += ["  self: " + f"{n / total:6.1%} {f})" for f, n in own.most_common(12)]
    lines += ["  incl: " + f"{n / total:6.1%} {f})" for f, n in within.most_common(25)]
    return lines


def serve(data_dir: Path, llm_url: str, config: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "RAGSVC_DATA_DIR": str(data_dir),
        "RAGSVC_LLM_BASE_URL": llm_url,
        "RAGSVC_AUTH": "off",
        "RAGSVC_LOG_LEVEL": "WARNING",
        **config,
    }
    log = open(data_dir.parent / f"serve-{port}.log", "wb")  # noqa: SIM115
    command = [str(RAGSVC), "serve", "--port", str(port)]
    if config == CONFIGS["baseline"]:
        command = [sys.executable, __file__, "--serve-baseline", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_up(f"{url}/healthz", process)
    return process, url


def knee(rows: list[dict]) -> str:
    for before, after in zip(rows, rows[1:], strict=False):
        if (
            after["per_s"] < before["per_s"] * KNEE_GAIN
            and after["latency"]["p50"] > before["latency"]["p50"]
        ):
            return (
                f"turns after {before['clients']} clients: {after['clients']} give "
                f"{after['per_s'] / before['per_s']:.2f}x the throughput at "
                f"{after['latency']['p50'] / before['latency']['p50']:.1f}x the p50"
            )
    return "did not turn within these levels"


def print_rows(config: str, rows: list[dict]) -> None:
    print(f"\n[{config}]")
    print(
        f"{'route':>13} {'clients':>7} {'req/s':>7} {'p50 ms':>8} {'p95':>8} {'p99':>8} "
        f"{'first p50':>9} {'first p95':>9} {'errors':>6} {'CPU ms/req':>10} {'cores':>5}"
    )
    for r in rows:
        lat, first = r.get("latency", {}), r.get("first", {})
        streamed = r["route"] != "search"
        print(
            f"{r['route']:>13} {r['clients']:>7} {r['per_s']:>7.1f} {lat.get('p50', float('nan')):>8.1f} "
            f"{lat.get('p95', float('nan')):>8.1f} {lat.get('p99', float('nan')):>8.1f} "
            f"{first.get('p50', float('nan')) if streamed else float('nan'):>9.1f} "
            f"{first.get('p95', float('nan')) if streamed else float('nan'):>9.1f} "
            f"{r['errors']:>6} {r['cpu_ms_per_request']:>10.2f} {r['server_cores']:>5.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", default="1,8,32", help="concurrent clients, comma-separated")
    parser.add_argument("--seconds", type=float, default=15, help="per route and level")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="folder ingested as the collection")
    parser.add_argument("--configs", default="baseline,improved")
    parser.add_argument("--routes", default=",".join(ROUTES))
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the server under the top /search level"
    )
    parser.add_argument(
        "--serve-baseline", type=int, help=argparse.SUPPRESS
    )  # the baseline server, on a port
    args = parser.parse_args()
    if args.serve_baseline:
        sys.path.insert(0, str(ROOT))
        serve_baseline(args.serve_baseline)
        return
    levels = [int(n) for n in args.levels.split(",")]
    routes = args.routes.split(",")
    asked = questions()

    with tempfile.TemporaryDirectory(prefix="ragsvc-load-") as tmp:
        data_dir = Path(tmp) / "data"
        env = {**os.environ, "RAGSVC_DATA_DIR": str(data_dir)}
        ingest = [str(RAGSVC), "ingest", str(args.docs), "--collection", COLLECTION]
        subprocess.run(ingest, env=env, check=True, capture_output=True)
        llm_port = free_port()
        llm = subprocess.Popen([sys.executable, str(ROOT / "bench/instant_llm.py"), "--port", str(llm_port)])
        llm_url = f"http://127.0.0.1:{llm_port}/v1"
        configs = args.configs.split(",")
        results: dict[str, list[dict]] = {config: [] for config in configs}
        servers: dict[str, tuple[subprocess.Popen, str]] = {}
        try:
            wait_up(f"{llm_url}/models", llm)
            for config in configs:  # each on a copy of the data dir (one process owns a data dir)
                copy = Path(tmp) / config / "data"
                shutil.copytree(data_dir, copy)
                servers[config] = serve(copy, llm_url, CONFIGS[config])
            for server, url in servers.values():
                for route in routes:  # warm up: the first requests load what is loaded lazily
                    drive(url, route, 2, 2, server.pid, asked)
            # The configs take turns at each route and level, so that a change in the machine's other load
            # falls on both alike.
            for route in routes:
                for clients in levels:
                    for config, (server, url) in servers.items():
                        results[config].append(drive(url, route, clients, args.seconds, server.pid, asked))
            for config in configs:
                print_rows(config, results[config])
            if args.profile:
                for config, (server, url) in servers.items():
                    print(f"\n[{config}]")
                    print("\n".join(profile(server.pid, url, levels[-1], asked)))
        finally:
            for server, _ in servers.values():
                server.terminate()
                server.wait(timeout=60)
            llm.terminate()
            llm.wait(timeout=30)

    print("\nwhere latency turns")
    for config, rows in results.items():
        for route in routes:
            print(f"  {config:>9} {route:>13}: {knee([r for r in rows if r['route'] == route])}")
    names = list(results)
    if len(names) == 2:
        base, better = names
        print(f"\n{better} against {base}, same run (throughput ratio; p95 {base} -> {better})")
        for old, new in zip(results[base], results[better], strict=True):
            print(
                f"  {old['route']:>13} {old['clients']:>3} clients: {new['per_s'] / old['per_s']:.2f}x "
                f"({old['per_s']:.1f} -> {new['per_s']:.1f} req/s), p95 {old['latency']['p95']:.0f} -> "
                f"{new['latency']['p95']:.0f} ms"
            )
    print("\n" + json.dumps({"levels": levels, "seconds": args.seconds, "results": results}))


if __name__ == "__main__":
    main()
