"""Throughput of one GCP function instance at request concurrency 1, 8, 32 and 80.

One instance is the real functions-framework server (gunicorn, 1 worker, ``THREADS`` equal to
the concurrency, as Google recommends for Python and as infra/gcp sets it) serving the
deployment zip's ``main.py`` and writing to gcp-storage-emulator. A load generator keeps N
Pub/Sub push requests in flight (N keep-alive connections, each posting its next push as soon
as the last one is answered) for ``--seconds``; the rate is the answered-200 pushes per
second. Baseline: concurrency 1, the stack's former ``max_instance_request_concurrency``.

Both layouts run: one object per task (default) and packed (``RESULTS_LAYOUT=packed``: the
instance's group commit writes the requests it holds at once as one pack), with the writes
each made per 1,000 tasks, counted from the objects in the bucket (every task is checked to be
there, in its object or its pack).

The emulator is not GCS. It answers one request at a time (a single-threaded ``HTTPServer``),
rewrites the metadata of every object it holds on each write (so it is emptied before each
measurement), and costs CPU on the same 2 cores as the function and the load generator, while
a real GCS write costs the function no CPU but tens of milliseconds of waiting. So two runs:

* raw: the stock emulator;
* modelled (``--latency-ms 20``): each emulator request first waits that long without CPU (a
  threaded emulator whose storage work stays one request at a time, without the rewrite of
  every object's metadata), the shape of a real GCS write, so concurrency buys what it buys
  on GCS: requests that wait, overlapped.

The CPU each process used per task is printed too (function, emulator, load generator): the
function's CPU per task bounds what one 1-vCPU instance can do, whatever the concurrency.

    python -m bench.gcp_concurrency                    # raw
    python -m bench.gcp_concurrency --latency-ms 20    # modelled GCS latency
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.clouds import CLOUDS
from core.group_commit import DEFAULT_MAX_WAIT_MS
from core.packaging import build_package
from core.packing import PACKED_DIR, unpack
from tools.servers import free_port, running_server

CONCURRENCY = (1, 8, 32, 80)
LAYOUTS = ("per_task", "packed")
PREFIX = "bench"
PROJECT = "bench"

LATENCY_EMULATOR = """
import sys, threading, time
from http.server import ThreadingHTTPServer
from gcp_storage_emulator import server as emulator
from gcp_storage_emulator.storage import Storage

seconds = float(sys.argv[1]) / 1000
# in memory, the metadata file is read at start only: GCS does not rewrite it on every write
Storage._write_config_to_file = lambda self: None
storage_lock = threading.Lock()
handle = emulator.Router.handle

def delayed(self, method):
    time.sleep(seconds)  # the round trip, no CPU; then the storage work, one at a time
    with storage_lock:
        handle(self, method)

class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops connections under load

emulator.Router.handle = delayed
emulator.server.HTTPServer = Server
from gcp_storage_emulator.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


@dataclass
class Variant:
    """One function server: a layout at a concurrency, and what its rounds measured."""

    layout: str
    concurrency: int
    bucket: str
    url: str = ""
    pgid: int = 0
    rates: list[float] = field(default_factory=list)
    tasks: int = 0
    seconds: float = 0.0
    failed: int = 0
    function_cpu: float = 0.0
    emulator_cpu: float = 0.0
    client_cpu: float = 0.0
    writes: int = 0

    @property
    def name(self) -> str:
        return f"{self.layout} x{self.concurrency}"

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


def push_body(task_id: str, number: int) -> bytes:
    task = {"id": task_id, "data": {"num1": number, "num2": 1}}
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(json.dumps(task).encode()).decode(),
                "messageId": task_id,
                "publishTime": "2026-12-01T12:00:00Z",
            },
            "subscription": f"projects/{PROJECT}/subscriptions/adder-tasks-push",
            "deliveryAttempt": 1,
        }
    ).encode()


def load(url: str, concurrency: int, seconds: float, tag: str) -> tuple[int, int, float]:
    """Keep ``concurrency`` pushes in flight for ``seconds``: (answered 200, other, elapsed)."""
    host, port = url.removeprefix("http://").split(":")
    counts = [[0, 0] for _ in range(concurrency)]
    start = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        start.wait()
        number = 0
        while time.perf_counter() < deadline[0]:
            number += 1
            body = push_body(f"{tag}-{index}-{number}", number)
            connection.request("POST", "/", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            counts[index][0 if response.status == 200 else 1] += 1
        connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline[0] = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return sum(c[0] for c in counts), sum(c[1] for c in counts), elapsed


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process of the process group (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # after the name: state ppid pgrp session ... utime(12th) stime(13th)
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def storage_client(url: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[import-untyped]

    return storage.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": url},
    )


def count_writes(client: Any, variant: Variant) -> tuple[int, int]:
    """(objects written, task results found in them) in the variant's bucket."""
    writes = results = 0
    for blob in client.list_blobs(variant.bucket):
        writes += 1
        if variant.layout == "per_task":
            results += blob.name.endswith(".out")
        else:
            assert f"/{PACKED_DIR}/" in blob.name, f"not a pack: {blob.name}"
            results += sum(r.suffix == ".out" for r in unpack(blob.download_as_bytes()))
    return writes, results


def _wipe(emulator_url: str) -> None:
    """Empty every bucket: the emulator rewrites the metadata of every object it holds on
    each write, so a write gets slower with every object stored (GCS does not)."""
    urllib.request.urlopen(f"{emulator_url}/wipe?keep-buckets=true", timeout=60).close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=4.0, help="per round (default 4)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added per GCS request")
    parser.add_argument(
        "--concurrency", default=",".join(map(str, CONCURRENCY)), help="default 1,8,32,80"
    )
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help="per_task,packed")
    parser.add_argument(
        "--pack-wait-ms", type=int, default=DEFAULT_MAX_WAIT_MS, help="PACK_MAX_WAIT_MS"
    )
    args = parser.parse_args(argv)
    levels = [int(value) for value in args.concurrency.split(",")]
    layouts = [value for value in args.layouts.split(",") if value]
    variants = [
        Variant(layout, level, f"bench-{layout.replace('_', '-')}-{level}")
        for level in levels
        for layout in layouts
    ]

    work = Path(tempfile.mkdtemp(prefix="adder-bench-gcp-concurrency-"))
    try:
        source = _unpacked_zip(work)
        port = free_port()
        emulator_url = f"http://127.0.0.1:{port}"
        with contextlib.ExitStack() as stack:
            emulator = stack.enter_context(
                running_server(
                    _emulator_command(port, args.latency_ms),
                    f"{emulator_url}/storage/v1/b",
                    log=work / "emulator.log",
                )
            )
            client = storage_client(emulator_url)
            for variant in variants:
                client.create_bucket(variant.bucket)
                _start_function(
                    stack, variant, source, emulator_url, work=work, pack_wait_ms=args.pack_wait_ms
                )
            for variant in variants:  # warm-up, untimed: the storage client, the page cache
                load(variant.url, variant.concurrency, 0.5, "warm")
            for round_number in range(args.rounds):
                for variant in variants:
                    _wipe(emulator_url)
                    tasks = _measure(variant, args.seconds, f"r{round_number}", emulator.pid)
                    # every acknowledged task is in the bucket: in its object or in a pack
                    writes, found = count_writes(client, variant)
                    assert found == tasks, (variant.name, found, tasks)
                    variant.writes += writes
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _report(variants, levels, layouts, args)
    return 0


def _unpacked_zip(work: Path) -> Path:
    """The deployment zip, unpacked and compiled as the buildpack does."""
    source = work / "source"
    with zipfile.ZipFile(build_package(CLOUDS["gcp"], work / "gcp_function.zip")) as archive:
        archive.extractall(source)
    subprocess.run([sys.executable, "-m", "compileall", "-f", "-q", "."], cwd=source, check=True)
    return source


def _emulator_command(port: int, latency_ms: float) -> list[str]:
    arguments = ["start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    if latency_ms > 0:
        return [sys.executable, "-c", LATENCY_EMULATOR, str(latency_ms), *arguments]
    emulator = shutil.which("gcp-storage-emulator") or str(
        Path(sys.executable).with_name("gcp-storage-emulator")
    )
    return [emulator, *arguments]


def _start_function(
    stack: contextlib.ExitStack,
    variant: Variant,
    source: Path,
    emulator_url: str,
    *,
    work: Path,
    pack_wait_ms: int,
) -> None:
    port = free_port()
    variant.url = f"http://127.0.0.1:{port}"
    command = [
        *(sys.executable, "-m", "functions_framework", "--source", "main.py"),
        *("--target", "process_task", "--host", "127.0.0.1", "--port", str(port)),
    ]
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(
        STORAGE_EMULATOR_HOST=emulator_url,
        RESULTS_BUCKET=variant.bucket,
        RESULTS_PREFIX=PREFIX,
        RESULTS_LAYOUT=variant.layout,
        PACK_MAX_WAIT_MS=str(pack_wait_ms),
        WORKERS="1",
        THREADS=str(variant.concurrency),
        PYTHONUNBUFFERED="1",
    )
    log = work / f"{variant.bucket}.log"
    process = stack.enter_context(
        running_server(command, variant.url, env=env, cwd=source, log=log)
    )
    variant.pgid = process.pid


def _measure(variant: Variant, seconds: float, tag: str, emulator_pgid: int) -> int:
    function_before = group_cpu_seconds(variant.pgid)
    emulator_before = group_cpu_seconds(emulator_pgid)
    client_before = time.process_time()
    ok, failed, elapsed = load(variant.url, variant.concurrency, seconds, tag)
    variant.client_cpu += time.process_time() - client_before
    variant.function_cpu += group_cpu_seconds(variant.pgid) - function_before
    variant.emulator_cpu += group_cpu_seconds(emulator_pgid) - emulator_before
    variant.rates.append(ok / elapsed)
    variant.tasks += ok
    variant.failed += failed
    variant.seconds += elapsed
    assert failed == 0, f"{variant.name}: {failed} pushes not acknowledged"
    return ok


def _report(
    variants: list[Variant], levels: list[int], layouts: list[str], args: argparse.Namespace
) -> None:
    found = {(v.layout, v.concurrency): v for v in variants}
    model = f"{args.latency_ms:g} ms added per GCS request" if args.latency_ms else "raw"
    print(
        f"gcp function, one instance (functions-framework, 1 worker, THREADS = concurrency) "
        f"writing to gcp-storage-emulator ({model}); median of {args.rounds} rounds of "
        f"{args.seconds:g} s; cpus: {os.cpu_count()}; packed: PACK_MAX_WAIT_MS "
        f"{args.pack_wait_ms}, PACK_MAX_BATCH = THREADS"
    )
    print(
        f"{'layout':<9}{'conc.':>6}{'tasks/s':>9}{'vs 1':>7}{'writes/1k':>11}"
        f"{'fn cpu ms/task':>16}{'emulator cpu':>14}{'client cpu':>12}"
    )
    for layout in layouts:
        baseline = found.get((layout, 1))
        for level in levels:
            v = found[(layout, level)]
            ratio = f"{v.rate / baseline.rate:6.2f}x" if baseline else "      -"
            print(
                f"{layout:<9}{level:>6}{v.rate:>9.1f} {ratio}{v.writes / v.tasks * 1000:>11.1f}"
                f"{v.function_cpu / v.tasks * 1000:>16.2f}"
                f"{v.emulator_cpu / v.seconds * 100:>13.0f}%"
                f"{v.client_cpu / v.seconds * 100:>11.0f}%"
            )
    print(
        f"(emulator, client cpu: % of one core while the variant ran, {os.cpu_count()} cores in "
        'all; baseline "vs 1": concurrency 1, the stack\'s former setting)'
    )
    for layout in layouts:
        baseline = found.get((layout, 1))
        best = max((found[(layout, level)] for level in levels), key=lambda v: v.rate)
        cpu_ms = best.function_cpu / best.tasks * 1000
        ratio = f" = {best.rate / baseline.rate:.2f}x concurrency 1" if baseline else ""
        print(
            f"{layout}: most tasks/s at concurrency {best.concurrency}: {best.rate:.0f}{ratio}; "
            f"its function CPU {cpu_ms:.2f} ms/task bounds one vCPU at ~{1000 / cpu_ms:.0f}/s"
        )
    if "per_task" in layouts and "packed" in layouts:
        for level in levels:
            per_task, packed = found[("per_task", level)], found[("packed", level)]
            fewer = (per_task.writes / per_task.tasks) / (packed.writes / packed.tasks)
            print(
                f"concurrency {level}: packed {packed.writes / packed.tasks * 1000:.1f} writes "
                f"per 1,000 tasks (per_task "
                f"{per_task.writes / per_task.tasks * 1000:.0f}) = {fewer:.1f}x fewer; "
                f"tasks/s packed / per_task {packed.rate / per_task.rate:.2f}x"
            )


if __name__ == "__main__":
    sys.exit(main())
