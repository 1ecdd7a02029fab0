"""Cold start of the Google Cloud function against a minimal function, in one run.

A cold start here is a fresh Python process that loads the function module into
functions-framework (``create_app``, as the Cloud Run runtime does), then handles its first
event: a raw Pub/Sub push body, whose task result is written to gcp-storage-emulator.

Baseline ("minimal"): a function module that imports the same SDKs at the top
(``functions_framework``, ``google.cloud.storage``), base64-decodes the message, adds the two
numbers with ``json.loads`` and writes ``{prefix}/{id}.out`` with a new ``storage.Client()``.
No validation, no error records, no logging.

Both run as deployed: ours is the zip ``adder package gcp`` builds, unpacked; and, as the
Functions Framework buildpack does at build time (``python3 -m compileall -f -q .``), both
sources are compiled to bytecode first, like the SDKs in site-packages.

The time is measured inside each process, from before its first import to the response
(interpreter start-up, the same for both, is left out; the process wall time is shown too).
Variants run interleaved, ``--repeat`` times each after one untimed warm-up run.

    python -m bench.gcp_cold_start               # 21 runs each
    python -m bench.gcp_cold_start --repeat 41   # on a busy machine
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench._common import Timing, verdict
from core.clouds import CLOUDS
from core.packaging import build_package
from tools.servers import free_port, running_server

REPO_ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.10
BUCKET = "bench-results"
PREFIX = "bench"

MINIMAL = """
import base64, json, os
import functions_framework
from google.cloud import storage

@functions_framework.cloud_event
def process_task(cloud_event):
    task = json.loads(base64.b64decode(cloud_event.data["message"]["data"]))
    total = task["data"]["num1"] + task["data"]["num2"]
    bucket = storage.Client().bucket(os.environ["RESULTS_BUCKET"])
    name = os.environ["RESULTS_PREFIX"] + "/" + task["id"] + ".out"
    bucket.blob(name).upload_from_string(str(total), content_type="text/plain")
"""

COLD_START = """
import time
started = time.perf_counter()
import json, sys
import functions_framework
app = functions_framework.create_app("process_task", sys.argv[1], "cloudevent")
response = app.test_client().post("/", data=sys.argv[2], content_type="application/json")
elapsed = time.perf_counter() - started
assert response.status_code == 200, response.get_data(as_text=True)
print(json.dumps({"seconds": elapsed}))
"""


def push_body(task_id: str) -> str:
    task = {"id": task_id, "data": {"num1": 40, "num2": 2}}
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(json.dumps(task).encode()).decode(),
                "messageId": "1",
                "publishTime": "2026-11-27T12:00:00Z",
            },
            "subscription": "projects/bench/subscriptions/adder-tasks-push",
            "deliveryAttempt": 1,
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=21, help="runs per variant (default 21)")
    args = parser.parse_args(argv)

    emulator = shutil.which("gcp-storage-emulator") or str(
        Path(sys.executable).with_name("gcp-storage-emulator")
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    work = Path(tempfile.mkdtemp(prefix="adder-bench-gcp-"))
    sources = {"minimal": work / "minimal", "adder": work / "adder"}
    sources["minimal"].mkdir()
    (sources["minimal"] / "main.py").write_text(MINIMAL)
    with zipfile.ZipFile(build_package(CLOUDS["gcp"], work / "gcp_function.zip")) as archive:
        archive.extractall(sources["adder"])
    for directory in sources.values():
        subprocess.run(
            [sys.executable, "-m", "compileall", "-f", "-q", "."], cwd=directory, check=True
        )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(STORAGE_EMULATOR_HOST=url, RESULTS_BUCKET=BUCKET, RESULTS_PREFIX=PREFIX)
    command = [emulator, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory"]
    inside = {name: Timing(name, []) for name in sources}
    wall = {name: Timing(name, []) for name in sources}
    try:
        with running_server(command, f"{url}/storage/v1/b", log=work / "emulator.log"):
            _create_bucket(url)

            def run(name: str) -> tuple[float, float]:
                started = time.perf_counter()
                # cwd first on sys.path: `core` and `gcp_function` are the zip's copies
                out = subprocess.run(
                    [sys.executable, "-c", COLD_START, "main.py", push_body(name)],
                    env=env,
                    cwd=sources[name],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                total = time.perf_counter() - started
                return json.loads(out.strip().splitlines()[-1])["seconds"], total

            for name in sources:  # warm-up: bytecode caches and the page cache, untimed
                run(name)
            for _ in range(args.repeat):
                for name in sources:
                    seconds, total = run(name)
                    inside[name].seconds.append(seconds)
                    wall[name].seconds.append(total)
            written = {name: _read(url, f"{PREFIX}/{name}.out") for name in sources}
            assert written == {"minimal": "42", "adder": "42"}, written
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(
        f"gcp cold start (import + first event written to gcp-storage-emulator), "
        f"median of {args.repeat} fresh processes each (cpus: {os.cpu_count()})"
    )
    print(f"{'variant':<10}{'import+event':>14}{'spread':>16}{'process wall':>15}")
    for name in sources:
        print(
            f"{name:<10}{inside[name].median * 1000:>12.1f}ms{inside[name].spread:>16}"
            f"{statistics.median(wall[name].seconds) * 1000:>13.1f}ms"
        )
    ratio = inside["adder"].median / inside["minimal"].median
    paired = statistics.median(
        a / m for a, m in zip(inside["adder"].seconds, inside["minimal"].seconds, strict=True)
    )
    best = min(inside["adder"].seconds) / min(inside["minimal"].seconds)
    print(f"adder / minimal, median of per-round ratios: {paired:.3f}x; fastest runs: {best:.3f}x")
    print(
        f"adder / minimal, ratio of medians: {ratio:.3f}x  {verdict(ratio, TARGET, at_most=True)}"
    )
    return 0


def _create_bucket(url: str) -> None:
    import urllib.request

    request = urllib.request.Request(
        f"{url}/storage/v1/b?project=bench",
        data=json.dumps({"name": BUCKET}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()


def _read(url: str, name: str) -> str:
    import urllib.parse
    import urllib.request

    quoted = urllib.parse.quote(name, safe="")
    with urllib.request.urlopen(f"{url}/storage/v1/b/{BUCKET}/o/{quoted}?alt=media") as answer:
        text: str = answer.read().decode()
        return text


if __name__ == "__main__":
    sys.exit(main())
