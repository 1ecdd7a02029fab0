"""Cold start of the Azure function against a minimal function, in one run, on Azurite.

Cold start = in a fresh Python process: import ``function_app``, index the app as the worker
does (``app.get_functions()``), build the first Service Bus message and handle it, which writes
one blob to Azurite. Timed inside the process, from before the first import to the return of
the function, so the interpreter's own start-up (the same for both) is left out.

- ``adder``: the deployment zip (``adder package azure``), unpacked; its root ``function_app.py``.
- ``minimal`` (baseline): a ``function_app.py`` importing the same SDKs (azure.functions,
  azure.storage.blob) that parses the JSON, adds, and uploads ``{prefix}/{id}.out`` with
  ``BlobServiceClient.from_connection_string`` and ``overwrite=True``: no validation, no exact
  decimals, no error records, no logging.

Both run interleaved, after one discarded warm-up each (bytecode caches written), median of
``--repeat`` runs. Target: adder <= 1.10x the minimal function.

    npm ci --prefix tests/azurite --no-audit --no-fund   # once
    python -m bench.azure_cold_start --repeat 15
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench._common import Timing, verdict

REPO_ROOT = Path(__file__).resolve().parent.parent
AZURITE = REPO_ROOT / "tests" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
CONTAINER = "bench"
TARGET = 1.10

MINIMAL_APP = """
import json, os
import azure.functions as func
from azure.storage.blob import BlobServiceClient

app = func.FunctionApp()
_client = []

@app.service_bus_queue_trigger(
    arg_name="msg", queue_name="%TASK_QUEUE_NAME%", connection="SERVICEBUS_CONNECTION"
)
def handle(msg: func.ServiceBusMessage) -> None:
    task = json.loads(msg.get_body())
    if not _client:
        _client.append(
            BlobServiceClient.from_connection_string(os.environ["RESULTS_BLOB_CONNECTION_STRING"])
        )
    total = task["data"]["num1"] + task["data"]["num2"]
    name = os.environ["RESULTS_PREFIX"] + "/" + task["id"] + ".out"
    _client[0].get_blob_client(os.environ["RESULTS_CONTAINER"], name).upload_blob(
        str(total).encode(), overwrite=True
    )
"""

HARNESS = """
import time
started = time.perf_counter()
import logging, sys
logging.basicConfig(level=logging.INFO)
import function_app
function = function_app.app.get_functions()[0].get_user_function()
from azure.functions.servicebus import ServiceBusMessage
body = ('{"id": "%s", "data": {"num1": 40, "num2": 2}}' % sys.argv[1]).encode()
message = ServiceBusMessage(body=body, message_id="m-" + sys.argv[1], delivery_count=1,
                            application_properties={}, user_properties={})
function(message)
print(time.perf_counter() - started)
"""


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


def start_azurite() -> tuple[subprocess.Popen[bytes], int]:
    """azurite-blob on a free loopback port, answering."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    process = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
         "--inMemoryPersistence", "--skipApiVersionCheck", "--silent"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("Azurite did not start")


def build_roots(work: Path) -> dict[str, Path]:
    """The unpacked deployment zip, and the minimal function's directory."""
    from core.clouds import CLOUDS
    from core.packaging import build_package

    adder = work / "adder"
    with zipfile.ZipFile(build_package(CLOUDS["azure"], work / "azure_function.zip")) as archive:
        archive.extractall(adder)
    minimal = work / "minimal"
    minimal.mkdir()
    (minimal / "function_app.py").write_text(MINIMAL_APP, encoding="utf-8")
    return {"minimal": minimal, "adder": adder}


def cold_start(root: Path, task_id: str, env: dict[str, str]) -> float:
    """Seconds from first import to first message handled, in a fresh interpreter."""
    run = subprocess.run(
        [sys.executable, "-c", HARNESS, task_id],
        cwd=root,
        env={**env, "RESULTS_PREFIX": root.name},
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise SystemExit(f"{root.name} failed:\n{run.stderr}")
    return float(run.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=15, help="runs per variant (default 15)")
    args = parser.parse_args(argv)
    if not AZURITE.exists():
        raise SystemExit("Azurite is missing: npm ci --prefix tests/azurite --no-audit --no-fund")

    from azure.storage.blob import BlobServiceClient

    process, port = start_azurite()
    work = Path(tempfile.mkdtemp(prefix="adder-azure-bench-"))
    try:
        service = BlobServiceClient.from_connection_string(connection_string(port))
        container = service.create_container(CONTAINER)
        roots = build_roots(work)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TASK_QUEUE_NAME": "tasks",
            "RESULTS_BLOB_CONNECTION_STRING": connection_string(port),
            "RESULTS_CONTAINER": CONTAINER,
        }
        for name, root in roots.items():  # warm-up: bytecode caches, Azurite's first request
            cold_start(root, f"warm-{name}", env)
        timings = {name: Timing(name, []) for name in roots}
        for run in range(args.repeat):
            for name, root in roots.items():
                timings[name].seconds.append(cold_start(root, f"task-{run}", env))
        for name in roots:  # every run wrote its result, and it is right
            for run in range(args.repeat):
                blob = container.download_blob(f"{name}/task-{run}.out").readall()
                assert blob == b"42", (name, run, blob)
    finally:
        process.kill()
        process.wait()
        shutil.rmtree(work, ignore_errors=True)

    baseline = timings["minimal"].median
    print(
        f"azure cold start (import + index + first message to Azurite), "
        f"median of {args.repeat}, python {sys.version.split()[0]}, cpus: {os.cpu_count()}"
    )
    print(f"{'variant':<10}{'median':>10}{'vs minimal':>12}  spread")
    for timing in timings.values():
        print(
            f"{timing.name:<10}{timing.median * 1000:>8.1f}ms{timing.median / baseline:>11.3f}x"
            f"  {timing.spread}"
        )
    ratio = timings["adder"].median / baseline
    print("adder vs minimal:", f"{ratio:.3f}x", verdict(ratio, TARGET, at_most=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
