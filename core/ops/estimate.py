"""``adder estimate CLOUD``: what a job costs, line by line, at the list prices of
:mod:`core.ops.prices`.

A job of N tasks costs, on every cloud, the sum of: queue requests (submit's sends, the
trigger's receives and deletes), invocations, compute (memory * seconds, and vCPU * seconds
on Google Cloud), object writes (one per task, or one per delivered batch in the packed
layout), ``adder fetch`` (listings, reads, internet egress) and log ingestion (one line per
task, plus the platform's per invocation). The stack's settings (batch size, memory,
concurrency, layout) come from the flags or the stack's ``terraform output``, like every
other command's; durations come from measurements on this project's code (``task_ms``,
``write_cpu_ms``) and from assumptions marked as such below, the main one being the wall time
of an object write (``--write-ms``).

Compute time of one invocation of B tasks writing W objects (W = B, or 1 when packed)::

    busy = overhead + (B * task_ms + W * write_cpu_ms) / vCPU + waves * write_ms

where ``waves`` is how many rounds of writes the invocation waits for: ceil(W / threads),
threads being the writes one invocation makes at once (the AWS handler's pool: 32; the GCP
and Azure functions: 1); packed, every invocation waits for its pack's one write (on GCP the
requests an instance holds at once share a pack). Lambda bills ``busy`` per invocation.
Cloud Run and Flex Consumption bill an instance while it serves at least one request, so
with C requests served at once an instance is billed ``max(Σ busy / C, Σ CPU / vCPU)``: C
overlapping waits, but never faster than its CPU. Free tiers are not subtracted.
"""

from __future__ import annotations

import argparse
import json
import math
import textwrap
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from core.errors import ConfigError
from core.ops.prices import PRICES, PRICES_DATE, REGIONS, Price
from core.ops.target import Setting, add_target_arguments, resolve_target

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from core.ops.target import Target

PER_TASK = "per_task"
PACKED = "packed"
LAYOUTS = (PER_TASK, PACKED)

SQS_CHUNK_BYTES = 64 * 1024
"""SQS bills each 64 KB of a request's payload as one request; Service Bus likewise counts
each 64 KB of a message as one operation."""
SUBMIT_BATCH = {"aws": 10, "gcp": 1000, "azure": 500}
"""Tasks per send request of ``adder submit``: SQS SendMessageBatch (10), the Pub/Sub
publisher's batches (1,000), Service Bus batches (500; each backend's ``max_batch_messages``,
checked by the tests)."""
SQS_RECEIVE_MAX = 10
"""Messages per SQS ReceiveMessage and DeleteMessageBatch."""
LIST_PAGE = {"aws": 1000, "gcp": 1000, "azure": 5000}
"""Names per listing request (S3 ListObjectsV2, GCS objects.list, Blob List Blobs)."""
WRITE_THREADS = {"aws": 32, "gcp": 1, "azure": 1}
"""Object writes one invocation makes at once (the AWS handler's pool, ADDER_MAX_CONCURRENCY)."""
PUBSUB_MINIMUM_BYTES = 1000
"""Pub/Sub bills at least 1,000 bytes per publish, push or pull request."""
PUBSUB_MESSAGE_EXTRA_BYTES = 20 + 17
"""What a Pub/Sub message counts beyond its data: 20 bytes of timestamp and its message_id
(17 digits); the stack sets no attributes."""
SERVICE_BUS_MESSAGE_EXTRA_BYTES = 60
"""AMQP framing and message id around each task in a Service Bus batch (about 60 bytes, as
azure_function/job_backend.py measured for its batches)."""

DEFAULT_TASK_BYTES = 56
"""``{"id": "task-0000001", "data": {"num1": 42, "num2": 58}}``; ``--tasks-file`` measures."""
RESULT_BYTES = 3
"""A result object's body (``100``)."""
PACKED_LINE_BYTES = 40
"""One line of a packed object: ``{"id": "task-0000001", "result": "100"}`` and a newline."""
GET_OVERHEAD_BYTES = 400
"""Response headers sent with each object read (assumed)."""
INVOCATION_MS = 2.0
"""Platform and handler time per invocation beyond its tasks (assumed)."""
TASK_MS = 0.1
"""CPU per task at one vCPU, apart from its write: decode, validate, add, log. Measured on
this project's AWS handler with an in-memory store (2026-12-01, 2-core machine): 0.06-0.08 ms
per task in batches of 10 to 1,000; rounded up."""
WRITE_CPU_MS = 1.0
"""Client CPU per object write at one vCPU. Measured for boto3 PutObject with the network
stubbed (2026-12-01): 0.57 ms; rounded up for TLS."""
WRITE_MS = 30.0
"""Wall time of one small object write in the same region (assumed: typical S3, GCS and
Blob latencies are 20-50 ms); give ``--write-ms`` to change it."""

LAMBDA_MB_PER_VCPU = 1769
"""Lambda gives one vCPU at 1,769 MB, in proportion below (AWS documentation)."""
FLEX_MB_PER_VCPU = 2048
"""Flex Consumption: one vCPU per 2,048 MB of instance memory (assumed)."""
CLOUD_RUN_VCPU_BY_MEMORY = ((128, 0.083), (256, 0.167), (512, 0.333), (1024, 0.583), (2048, 1.0))
"""Cloud Run functions' default CPU for a memory size (MiB, vCPU); 2 vCPU above 2 GiB."""


@dataclass(frozen=True)
class LogSizes:
    """Bytes ingested per task and per invocation."""

    per_task: int
    per_invocation: int
    what: str


LOG_SIZES = {
    "aws": LogSizes(
        353,
        600,
        "the handler's JSON line (measured: 327 bytes) + 26 bytes per CloudWatch event; the"
        " platform's start and report lines per invocation (assumed: 600 bytes)",
    ),
    "gcp": LogSizes(
        700,
        1000,
        "the function's JSON line as a LogEntry (assumed: 700 bytes); Cloud Run's request"
        " log entry per request (assumed: 1,000 bytes)",
    ),
    "azure": LogSizes(
        600,
        800,
        "the function's trace row (assumed: 600 bytes); the host's request row per execution"
        " (assumed: 800 bytes); host.json samples neither",
    ),
}


@dataclass(frozen=True)
class Workload:
    """What is estimated: the job's tasks and the stack's settings."""

    tasks: int
    layout: str = PER_TASK
    batch_size: int = 1
    """Messages per invocation (Lambda batch, push request, Service Bus trigger batch)."""
    pack_size: int = 0
    """Tasks per packed object; 0: one invocation's batch (Cloud Run packs the requests an
    instance serves at once instead)."""
    memory_mb: float = 256
    vcpu: float = 1.0
    concurrency: int = 1
    """Invocations one instance serves at once (Cloud Run, Flex Consumption)."""
    task_bytes: float = DEFAULT_TASK_BYTES
    task_ms: float = TASK_MS
    write_ms: float = WRITE_MS
    write_cpu_ms: float = WRITE_CPU_MS
    invocation_ms: float = INVOCATION_MS

    @property
    def packed(self) -> bool:
        """True in the packed layout: one object per delivered batch."""
        return self.layout == PACKED

    @property
    def invocations(self) -> int:
        """Invocations (executions, requests): one per batch."""
        return math.ceil(self.tasks / self.batch_size)

    @property
    def writes(self) -> int:
        """Objects written: one per task, or one per pack when packed."""
        if not self.packed:
            return self.tasks
        return math.ceil(self.tasks / (self.pack_size or self.batch_size))

    def write_waves(self, threads: int) -> int:
        """Rounds of writes all invocations wait for, ``threads`` writes at a time (packed:
        each invocation waits for the one write of its pack)."""
        if self.packed:
            return self.invocations
        full, rest = divmod(self.tasks, self.batch_size)
        return full * math.ceil(self.batch_size / threads) + math.ceil(rest / threads)

    def cpu_seconds(self) -> float:
        """CPU time of every invocation, at ``vcpu``."""
        return (self.tasks * self.task_ms + self.writes * self.write_cpu_ms) / self.vcpu / 1000

    def busy_seconds(self, threads: int) -> float:
        """Wall time of every invocation added up."""
        waits = self.invocations * self.invocation_ms + self.write_waves(threads) * self.write_ms
        return waits / 1000 + self.cpu_seconds()

    def fetch_bytes(self) -> float:
        """Bytes ``adder fetch`` downloads: bodies and response headers."""
        body = PACKED_LINE_BYTES if self.packed else RESULT_BYTES
        return self.tasks * body + self.writes * GET_OVERHEAD_BYTES


@dataclass(frozen=True)
class LineItem:
    """One line of the bill."""

    what: str
    quantity: float
    """In the price's unit (requests, GB-s, GiB...)."""
    price: Price

    @property
    def cost(self) -> float:
        """US dollars."""
        return self.price.cost(self.quantity)


@dataclass(frozen=True)
class Estimate:
    """A job's cost, line by line."""

    cloud: str
    workload: Workload
    items: tuple[LineItem, ...]
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> float:
        """The sum of every line, US dollars."""
        return sum(item.cost for item in self.items)

    @property
    def per_million(self) -> float:
        """The total for one million such tasks."""
        return self.total * 1_000_000 / self.workload.tasks


def chunks(payload_bytes: float, chunk: int = SQS_CHUNK_BYTES) -> int:
    """Billable units of a request or message: one per started 64 KB, at least one."""
    return max(1, math.ceil(payload_bytes / chunk))


def _batches(total: int, size: int) -> list[tuple[int, int]]:
    """``[(count, messages in each)]``: full batches of ``size`` and the rest."""
    full, rest = divmod(total, size)
    return [(count, n) for count, n in ((full, size), (1, rest)) if count and n]


def _data(key: str, what: str, nbytes: float) -> LineItem:
    price = PRICES[key]
    return LineItem(what, nbytes / price.unit_bytes, price)


def _item(key: str, what: str, quantity: float) -> LineItem:
    return LineItem(what, quantity, PRICES[key])


def _writes_what(w: Workload) -> str:
    return "1 per batch, packed" if w.packed else "1 per task"


def _fetch_items(cloud: str, w: Workload, list_key: str, get_key: str) -> list[LineItem]:
    page = LIST_PAGE[cloud]
    return [
        _item(list_key, f"fetch: listings ({page:,} names each)", math.ceil(w.writes / page)),
        _item(get_key, "fetch: object reads", w.writes),
    ]


def _log_bytes(cloud: str, w: Workload) -> float:
    sizes = LOG_SIZES[cloud]
    return w.tasks * sizes.per_task + w.invocations * sizes.per_invocation


def aws_items(w: Workload) -> list[LineItem]:
    """SQS → Lambda → S3."""
    send = SUBMIT_BATCH["aws"]
    sends = sum(count * chunks(n * w.task_bytes) for count, n in _batches(w.tasks, send))
    per_receive = min(w.batch_size, SQS_RECEIVE_MAX)
    receives = sum(count * chunks(n * w.task_bytes) for count, n in _batches(w.tasks, per_receive))
    deletes = math.ceil(w.tasks / per_receive)
    threads = WRITE_THREADS["aws"]
    return [
        _item("aws.sqs.request", f"SQS SendMessageBatch (submit, {send} a request)", sends),
        _item("aws.sqs.request", f"SQS ReceiveMessage ({per_receive} a request)", receives),
        _item("aws.sqs.request", f"SQS DeleteMessageBatch ({per_receive} a request)", deletes),
        _item(
            "aws.lambda.request", f"Lambda invocations (batches of {w.batch_size})", w.invocations
        ),
        _item(
            "aws.lambda.gb_second",
            f"Lambda duration ({w.memory_mb:g} MB)",
            w.busy_seconds(threads) * w.memory_mb / 1024,
        ),
        _item("aws.s3.put", f"S3 PUT ({_writes_what(w)})", w.writes),
        *_fetch_items("aws", w, "aws.s3.list", "aws.s3.get"),
        _data("aws.egress", "fetch: data transfer out", w.fetch_bytes()),
        _data("aws.logs.ingest", "CloudWatch Logs ingestion", _log_bytes("aws", w)),
    ]


def _instance_seconds(w: Workload, cloud: str) -> float:
    return max(w.busy_seconds(WRITE_THREADS[cloud]) / w.concurrency, w.cpu_seconds())


def gcp_items(w: Workload) -> list[LineItem]:
    """Pub/Sub push → Cloud Run function → GCS."""
    message = w.task_bytes + PUBSUB_MESSAGE_EXTRA_BYTES
    publish = SUBMIT_BATCH["gcp"]

    def billed(batches: Iterable[tuple[int, int]]) -> float:
        return sum(count * max(PUBSUB_MINIMUM_BYTES, n * message) for count, n in batches)

    instance = _instance_seconds(w, "gcp")
    return [
        _data(
            "gcp.pubsub.throughput",
            f"Pub/Sub publish (submit, {publish:,} a request)",
            billed(_batches(w.tasks, publish)),
        ),
        _data(
            "gcp.pubsub.throughput",
            f"Pub/Sub delivery ({w.batch_size} a request)",
            billed(_batches(w.tasks, w.batch_size)),
        ),
        _item("gcp.run.request", "Cloud Run requests", w.invocations),
        _item(
            "gcp.run.vcpu_second",
            f"Cloud Run CPU ({w.vcpu:g} vCPU, {w.concurrency} at once)",
            instance * w.vcpu,
        ),
        _item(
            "gcp.run.gib_second",
            f"Cloud Run memory ({w.memory_mb:g} MiB)",
            instance * w.memory_mb / 1024,
        ),
        _item("gcp.gcs.class_a", f"GCS writes, Class A ({_writes_what(w)})", w.writes),
        *_fetch_items("gcp", w, "gcp.gcs.class_a", "gcp.gcs.class_b"),
        _data("gcp.egress", "fetch: internet egress", w.fetch_bytes()),
        _data("gcp.logging.ingest", "Cloud Logging ingestion", _log_bytes("gcp", w)),
    ]


def azure_items(w: Workload) -> list[LineItem]:
    """Service Bus → Flex Consumption function → Blob Storage."""
    send = SUBMIT_BATCH["azure"]
    message = w.task_bytes + SERVICE_BUS_MESSAGE_EXTRA_BYTES
    sends = sum(count * chunks(n * message) for count, n in _batches(w.tasks, send))
    receives = sum(count * chunks(n * message) for count, n in _batches(w.tasks, w.batch_size))
    key = "azure.servicebus.operation"
    return [
        _item(key, f"Service Bus sends (submit, batches of {send})", sends),
        _item(key, f"Service Bus receives (batches of {w.batch_size})", receives),
        _item(key, "Service Bus completes (1 per message)", w.tasks),
        _item("azure.functions.execution", "Flex Consumption executions", w.invocations),
        _item(
            "azure.functions.gb_second",
            f"Flex Consumption execution time ({w.memory_mb:g} MB, {w.concurrency} at once)",
            _instance_seconds(w, "azure") * w.memory_mb / 1024,
        ),
        _item("azure.blob.write", f"Blob writes ({_writes_what(w)})", w.writes),
        *_fetch_items("azure", w, "azure.blob.list", "azure.blob.read"),
        _data("azure.egress", "fetch: internet egress", w.fetch_bytes()),
        _data("azure.monitor.ingest", "Application Insights ingestion", _log_bytes("azure", w)),
    ]


# ---------------------------------------------------------------------------------------
# Each cloud's settings, defaults and notes


def lambda_vcpu(memory_mb: float) -> float:
    """Lambda's vCPU share for a memory size (at most 6)."""
    return min(memory_mb / LAMBDA_MB_PER_VCPU, 6.0)


def cloud_run_vcpu(memory_mb: float, concurrency: int) -> float:
    """Cloud Run functions' default CPU for a memory size; at least 1 to serve more than one
    request at once (Cloud Run's rule)."""
    vcpu = next((cpu for limit, cpu in CLOUD_RUN_VCPU_BY_MEMORY if memory_mb <= limit), 2.0)
    return max(vcpu, 1.0) if concurrency > 1 else vcpu


def flex_vcpu(memory_mb: float) -> float:
    """Flex Consumption's vCPU for an instance size (assumed in proportion)."""
    return memory_mb / FLEX_MB_PER_VCPU


@dataclass(frozen=True)
class CloudModel:
    """How one cloud's job is billed, and what its stack calls the settings."""

    name: str
    items: Callable[[Workload], list[LineItem]]
    settings: tuple[Setting, ...]
    defaults: Mapping[str, float]
    vcpu: Callable[[float, int], float]
    """vCPU of an instance for (memory MB, concurrency)."""
    vcpu_from: str
    shape: Callable[[str, int, int], tuple[int, int, int]]
    """(messages per invocation, tasks per pack, invocations an instance runs at once) for
    (layout, batch size setting, concurrency setting)."""
    notes: tuple[str, ...]


def _settings(*extra: Setting, batch: Setting, memory: str, mb: int | str) -> tuple[Setting, ...]:
    return (
        Setting(
            "layout",
            "results layout: per_task or packed (default: the stack's results_layout, else"
            " per_task)",
            output="results_layout",
        ),
        batch,
        Setting(
            "memory_mb",
            f"memory per instance in MB (default: the stack's {memory}, else {mb})",
            output=memory,
        ),
        *extra,
        Setting(
            "task_ms", f"CPU ms per task at one vCPU, apart from its write (default {TASK_MS:g})"
        ),
        Setting("write_ms", f"wall ms of one object write (default {WRITE_MS:g}, assumed)"),
    )


_CONCURRENCY_HELP = "invocations one instance serves at once"
GCP_MEMORY_MB = 256 * 10**6 / 2**20
"""The gcp stack's default function_memory, 256M: M is 10^6 bytes there (244 MiB)."""
AZURE_BATCH = 1000
"""The Service Bus extension's default maxMessageBatchSize (a batch trigger's most messages)."""
MODELS: Mapping[str, CloudModel] = {
    "aws": CloudModel(
        "aws",
        aws_items,
        _settings(
            batch=Setting(
                "batch_size",
                "messages per invocation (default: the stack's batch_size, else 10)",
                output="batch_size",
            ),
            memory="lambda_memory_size",
            mb=256,
        ),
        {"batch_size": 10, "memory_mb": 256, "concurrency": 1},
        lambda memory, _: lambda_vcpu(memory),
        "memory / 1,769 MB",
        lambda _, batch, __: (batch, batch, 1),
        (
            "the event source mapping's pollers also make empty receives while the queue is"
            " empty (not counted)",
        ),
    ),
    "gcp": CloudModel(
        "gcp",
        gcp_items,
        _settings(
            Setting(
                "concurrency",
                _CONCURRENCY_HELP + " (default: the stack's request_concurrency, else 80)",
                output="request_concurrency",
            ),
            Setting(
                "cpu",
                "vCPU per instance (default: the stack's function_cpu, else Cloud Run's default"
                " for the memory)",
                output="function_cpu",
            ),
            batch=Setting(
                "batch_size",
                "packed: most tasks per pack, the function's PACK_MAX_BATCH (default: the"
                " request concurrency; a pack gathers the requests one instance serves at once)",
            ),
            memory="function_memory",
            mb="256M",
        ),
        {"batch_size": 1, "memory_mb": GCP_MEMORY_MB, "concurrency": 80},
        cloud_run_vcpu,
        "Cloud Run's default",
        lambda _, batch, concurrency: (1, min(batch, concurrency), concurrency),
        (
            "a push subscription delivers 1 message per request; packed, the requests one"
            " instance serves at once share a pack (assumed full: instances kept busy)",
        ),
    ),
    "azure": CloudModel(
        "azure",
        azure_items,
        _settings(
            Setting(
                "concurrency",
                "per_task: messages one instance handles at once (default 16: host.json's"
                " maxConcurrentCalls); packed: an instance runs one batch at a time",
            ),
            batch=Setting(
                "batch_size",
                "packed: messages per execution (default: the stack's max_message_batch_size,"
                f" else {AZURE_BATCH}); per_task executions take 1",
                output="max_message_batch_size",
            ),
            memory="instance_memory_in_mb",
            mb=2048,
        ),
        {"batch_size": AZURE_BATCH, "memory_mb": 2048, "concurrency": 16},
        lambda memory, _: flex_vcpu(memory),
        "memory / 2,048 MB, assumed",
        lambda layout, batch, calls: (batch, batch, 1) if layout == PACKED else (1, 1, calls),
        (
            "plus the Service Bus namespace's base charge (Standard: about $0.0135 an hour,"
            " whatever the job), which includes the first 13M operations a month",
        ),
    ),
}
"""Every cloud ``adder estimate`` knows, by name."""


def estimate(cloud: str, workload: Workload) -> Estimate:
    """The bill of ``workload`` on ``cloud``."""
    model = MODELS[cloud]
    notes = list(model.notes)
    if workload.packed and workload.tasks / workload.writes < 1.5:
        notes.append("a pack holds about 1 task here: packing saves nothing")
    return Estimate(cloud, workload, tuple(model.items(workload)), tuple(notes))


# ---------------------------------------------------------------------------------------
# Reading the settings


def _number(
    target: Target, name: str, default: float, *, whole: bool, minimum: float
) -> tuple[float, str]:
    text = target.get(name)
    if text is None:
        return default, "default"
    source = target.sources.get(name, "")
    flag = "--" + name.replace("_", "-")
    try:
        value = (
            _memory_mb(text)
            if name == "memory_mb"
            else _cpu(text)
            if name == "cpu"
            else float(text)
        )
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or (whole and value != int(value)):
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{flag} {text!r} (from {source}): must be {kind} of {minimum:g} or more")
    return (int(value) if whole else value), source


def _memory_mb(text: str) -> float:
    """``256`` (MB as Lambda and Flex mean it: MiB), ``256Mi``, ``2Gi``, or ``256M`` and ``1G``
    (powers of 10, as Cloud Run means them) in MiB."""
    text = text.strip()
    for suffix, factor in (("Gi", 1024), ("G", 10**9 / 2**20), ("Mi", 1), ("M", 10**6 / 2**20)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


def _cpu(text: str) -> float:
    """``1``, ``0.583`` or ``1000m`` (millicores) in vCPU."""
    text = text.strip()
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def workload_from(
    cloud: str, target: Target, tasks: int, task_bytes: float
) -> tuple[Workload, Workload, dict[str, dict[str, object]]]:
    """The workload the settings describe, the same in the other layout, and where each
    setting came from."""
    model = MODELS[cloud]
    names = {s.name for s in model.settings}
    sources: dict[str, dict[str, object]] = {}
    values: dict[str, float] = {}
    for name, default, whole, minimum in (
        ("batch_size", model.defaults["batch_size"], True, 1),
        ("memory_mb", model.defaults["memory_mb"], False, 1),
        ("concurrency", model.defaults["concurrency"], True, 1),
        ("task_ms", TASK_MS, False, 0),
        ("write_ms", WRITE_MS, False, 0),
    ):
        values[name] = default
        if name in names:
            values[name], source = _number(target, name, default, whole=whole, minimum=minimum)
            sources[name] = {"value": values[name], "from": source}
    layout = target.get("layout") or PER_TASK
    if layout not in LAYOUTS:
        raise ConfigError(
            f"--layout {layout!r} (from {target.sources.get('layout', '')}): use per_task or packed"
        )
    sources["layout"] = {"value": layout, "from": target.sources.get("layout", "default")}
    concurrency = int(values["concurrency"])
    if cloud == "gcp" and sources["batch_size"]["from"] == "default":
        # PACK_MAX_BATCH defaults to the server's request threads: a pack as large as the
        # requests an instance serves at once
        values["batch_size"] = concurrency
        sources["batch_size"] = {"value": concurrency, "from": "the concurrency"}
    if "cpu" in names and target.get("cpu") is not None:
        vcpu, source = _number(target, "cpu", 1.0, whole=False, minimum=0.001)
    else:
        vcpu, source = model.vcpu(values["memory_mb"], concurrency), model.vcpu_from
    sources["vcpu"] = {"value": vcpu, "from": source}

    def workload(layout: str) -> Workload:
        batch, pack, at_once = model.shape(layout, int(values["batch_size"]), concurrency)
        return Workload(
            tasks=tasks,
            layout=layout,
            batch_size=batch,
            pack_size=pack,
            memory_mb=values["memory_mb"],
            vcpu=vcpu,
            concurrency=at_once,
            task_bytes=task_bytes,
            task_ms=values["task_ms"],
            write_ms=values["write_ms"],
        )

    other = PACKED if layout == PER_TASK else PER_TASK
    return workload(layout), workload(other), sources


def count_tasks_file(path: str) -> tuple[int, float]:
    """How many tasks ``path`` holds and their mean size in bytes."""
    from core.task_source import iter_task_chunks

    count = 0
    size = 0
    for chunk in iter_task_chunks(path, 4096):
        for _, raw in chunk:
            count += 1
            size += _raw_size(raw)
    if count == 0:
        raise ConfigError(f"tasks file {path} holds no tasks")
    return count, size / count


def _raw_size(raw: object) -> int:
    if isinstance(raw, bytes | bytearray | memoryview):
        return len(raw)
    if isinstance(raw, str):
        return len(raw.encode("utf-8", "surrogatepass"))
    size = getattr(raw, "size", None)  # an OversizedMessage
    if isinstance(size, int):
        return size
    return len(json.dumps(raw, default=str).encode())


def _tasks(args: argparse.Namespace, cloud: str) -> tuple[int, float, str]:
    given = [name for name in ("tasks", "tasks_file", "job") if getattr(args, name, None)]
    if len(given) != 1:
        what = "needs the number of tasks" if not given else "takes the tasks one way"
        raise ConfigError(
            f"adder estimate {cloud} {what}: give --tasks N, --tasks-file FILE or --job NAME"
        )
    if args.tasks:
        text = str(args.tasks).replace(",", "").replace("_", "")
        try:
            number = float(text)  # 1000000, 1e6, 1_000_000 and 1,000,000 alike
        except ValueError:
            number = 0.0
        tasks = int(number) if math.isfinite(number) and number.is_integer() else 0
        if tasks < 1:
            raise ConfigError(f"--tasks {args.tasks!r}: must be a whole number of 1 or more")
        return tasks, DEFAULT_TASK_BYTES, "--tasks"
    if args.tasks_file:
        count, mean = count_tasks_file(args.tasks_file)
        return count, mean, f"tasks file {args.tasks_file}"
    from core.ops.manifest import Manifest, jobs_dir

    manifest = Manifest.load(jobs_dir(args.jobs_dir), args.job)
    if manifest.cloud != cloud:
        raise ConfigError(f"job {args.job!r} was submitted to {manifest.cloud}, not {cloud}")
    read = manifest.header.get("read")
    tasks = read if isinstance(read, int) and read > 0 else len(manifest.sent_names())
    if tasks < 1:
        raise ConfigError(f"job {args.job!r} sent no tasks yet")
    return tasks, DEFAULT_TASK_BYTES, f"job {args.job}"


# ---------------------------------------------------------------------------------------
# The command


def add_estimate_arguments(parser: argparse.ArgumentParser, cloud: str) -> None:
    """``adder estimate CLOUD``'s options."""
    parser.add_argument("--tasks", metavar="N", help="how many tasks")
    parser.add_argument("--tasks-file", metavar="FILE", help="count the tasks of this file")
    parser.add_argument("--job", metavar="NAME", help="the tasks a submitted job sent")
    parser.add_argument(
        "--jobs-dir",
        metavar="DIR",
        help="where job manifests are kept (default: $ADDER_JOBS_DIR, else .adder/jobs)",
    )
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")
    add_target_arguments(parser, MODELS[cloud].settings)


ESTIMATE_EPILOG = """\
Prices: list prices of {date} ({region}), from core/ops/prices.py, before free tiers.
Settings come from, first found: the flags; --stack DIR (terraform output -json; default
infra/{cloud} when it has state here); the defaults shown in the flags' help.
Exit codes: 0 estimated, 2 configuration or usage error (one line on stderr)."""


def run_estimate(args: argparse.Namespace) -> int:
    """``adder estimate CLOUD``."""
    cloud = args.cloud
    tasks, task_bytes, origin = _tasks(args, cloud)
    target = resolve_target(cloud, MODELS[cloud].settings, args)
    workload, other_workload, sources = workload_from(cloud, target, tasks, task_bytes)
    result = estimate(cloud, workload)
    other = estimate(cloud, other_workload)
    if args.json:
        print(json.dumps(as_document(result, other, sources, origin), indent=2))
    else:
        for line in table_lines(result, other, sources, origin):
            print(line)
    return 0


def as_document(
    result: Estimate, other: Estimate, sources: Mapping[str, Mapping[str, object]], origin: str
) -> dict[str, Any]:
    """The estimate for ``--json``."""
    w = result.workload
    return {
        "cloud": result.cloud,
        "region": REGIONS[result.cloud],
        "prices_date": PRICES_DATE,
        "free_tiers_subtracted": False,
        "tasks": w.tasks,
        "tasks_from": origin,
        "workload": asdict(w),
        "invocations": w.invocations,
        "objects_written": w.writes,
        "settings": {name: dict(setting) for name, setting in sources.items()},
        "items": [
            {
                "item": item.what,
                "quantity": item.quantity,
                "unit": item.price.unit,
                "unit_price_usd": item.price.usd,
                "per": item.price.per,
                "cost_usd": item.cost,
                "price": item.price.what,
                "source": item.price.source,
            }
            for item in result.items
        ],
        "total_usd": result.total,
        "per_million_tasks_usd": result.per_million,
        "other_layout": {
            "layout": other.workload.layout,
            "total_usd": other.total,
            "per_million_tasks_usd": other.per_million,
        },
        "notes": list(result.notes),
    }


def _money(usd: float) -> str:
    if usd >= 100:
        return f"${usd:,.2f}"
    return f"${usd:,.4f}" if usd < 1 else f"${usd:,.3f}"


def _quantity(value: float) -> str:
    if value == int(value) or value >= 1000:
        return f"{round(value):,}"
    if value >= 1:
        return f"{value:,.2f}"
    decimals = 2 - math.floor(math.log10(value)) if value > 0 else 0
    return f"{value:.{decimals}f}"  # three significant digits


SETTING_LABELS = {
    "batch_size": "batch size",
    "memory_mb": "memory MB",
    "concurrency": "concurrency",
    "vcpu": "vCPU",
    "task_ms": "task ms",
    "write_ms": "write ms",
}


def _setting_text(value: object) -> str:
    return (
        f"{value:,.4g}"
        if isinstance(value, float)
        else f"{value:,}"
        if isinstance(value, int)
        else str(value)
    )


def table_lines(
    result: Estimate, other: Estimate, sources: Mapping[str, Mapping[str, object]], origin: str
) -> list[str]:
    """The estimate as a table, a total, the other layout's total and the assumptions."""
    w = result.workload
    rows = [
        (i.what, f"{_quantity(i.quantity)} {i.price.unit}", i.price.label, _money(i.cost))
        for i in result.items
    ]
    header = ("line item", "quantity", "unit price", "cost")
    widths = [max(len(r[col]) for r in [header, *rows]) for col in range(4)]

    def row(cells: Sequence[str]) -> str:
        return (
            f"{cells[0]:<{widths[0]}}  {cells[1]:>{widths[1]}}  {cells[2]:<{widths[2]}}"
            f"  {cells[3]:>{widths[3]}}"
        ).rstrip()

    rule = "-" * (sum(widths) + 6)
    settings = ", ".join(
        f"{SETTING_LABELS[name]} {_setting_text(setting['value'])} ({setting['from']})"
        for name, setting in sources.items()
        if name in SETTING_LABELS
    )
    compared = ""
    if 0 < other.total < result.total:
        compared = f"{result.total / other.total:.1f}x less"
    elif other.total > result.total > 0:
        compared = f"{other.total / result.total:.1f}x more"
    lines = [
        f"adder estimate {result.cloud}: {w.tasks:,} tasks ({origin}), {w.layout} layout"
        f" ({sources['layout']['from']})",
        f"settings: {settings}",
        f"{w.invocations:,} invocations of up to {w.batch_size:,}"
        f" message{'s' if w.batch_size > 1 else ''};"
        f" {w.writes:,} objects written",
        f"list prices of {PRICES_DATE}, {REGIONS[result.cloud]}; free tiers not subtracted",
        "",
        row(header),
        rule,
        *(row(r) for r in rows),
        rule,
        row(("total", "", "", _money(result.total))),
        row(("per 1M tasks", "", "", _money(result.per_million))),
        "",
        f"the {other.workload.layout} layout: {_money(other.total)}"
        f" ({_money(other.per_million)} per 1M tasks){': ' + compared if compared else ''}",
        *textwrap.wrap(
            f"assumed: {w.task_ms:g} ms of CPU per task and {w.write_cpu_ms:g} ms per object"
            f" write at one vCPU ({w.vcpu:.3g} vCPU here), {w.write_ms:g} ms of waiting per"
            f" write, {w.invocation_ms:g} ms per invocation; {w.task_bytes:.0f}-byte tasks;"
            f" logs: {LOG_SIZES[result.cloud].what}",
            width=100,
            subsequent_indent="  ",
        ),
        "not counted: storage (GB-month), watch's listings, retries and redeliveries",
        *(f"note: {note}" for note in result.notes),
    ]
    return lines


def register_estimate_command(
    group: argparse._SubParsersAction[Any], cloud: str, title: str, text: str
) -> None:
    """``adder estimate CLOUD`` for a cloud with a price model."""
    parser = group.add_parser(
        cloud,
        help=f"{text} ({title})",
        description=f"{text[0].upper()}{text[1:]} ({title}).",
        epilog=ESTIMATE_EPILOG.format(date=PRICES_DATE, region=REGIONS[cloud], cloud=cloud),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_estimate_arguments(parser, cloud)
    parser.set_defaults(handler=run_estimate, cloud=cloud)
