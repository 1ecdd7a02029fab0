"""The one price table of ``adder estimate``: list prices, their sources and their date.

Prices are the on-demand list prices of the regions the stacks default to (AWS us-east-1,
Google Cloud Tier 1 us-central1, Azure East US) as published on :data:`PRICES_DATE`, in US
dollars, before any free tier, volume tier, savings plan or committed-use discount. A price
whose ``note`` says "not confirmed" could not be checked against the provider's page when the
table was written: it is the well-known list price, to be checked before relying on it.

Change a price here and nowhere else; ``tests/unit/test_estimate.py`` recomputes the README's
figures from this table.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

PRICES_DATE = "2026-12-01"
"""When the prices below were read."""

REGIONS: Mapping[str, str] = MappingProxyType(
    {"aws": "us-east-1", "gcp": "us-central1 (Tier 1)", "azure": "East US"}
)
"""The region each cloud's prices are for."""

GIB = 2**30
"""A binary gigabyte: what AWS ("GB") and Google ("GiB") bill data by."""
GB = 10**9
"""A decimal gigabyte: what Azure Monitor bills log data by (and Azure bandwidth here)."""


@dataclass(frozen=True)
class Price:
    """One list price: ``usd`` for every ``per`` units of ``unit``."""

    what: str
    usd: float
    per: int
    unit: str
    source: str
    note: str = ""
    unit_bytes: int = 0
    """For a price per amount of data: the bytes in one unit (:data:`GIB` or :data:`GB`)."""

    def cost(self, quantity: float) -> float:
        """The cost in US dollars of ``quantity`` units."""
        return quantity * self.usd / self.per

    @property
    def label(self) -> str:
        """``$0.40 / 1M requests``."""
        per = {1: "", 1_000: "1,000 ", 10_000: "10,000 ", 1_000_000: "1M "}.get(
            self.per, f"{self.per:,} "
        )
        return f"{dollars(self.usd)} / {per}{self.unit}"


def dollars(usd: float) -> str:
    """``$0.40``, ``$0.0000133334``: every significant digit, at least two decimals."""
    digits = f"{usd:.10f}".rstrip("0")
    whole, _, cents = digits.partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


_AWS_SQS = "https://aws.amazon.com/sqs/pricing/"
_AWS_LAMBDA = "https://aws.amazon.com/lambda/pricing/"
_AWS_S3 = "https://aws.amazon.com/s3/pricing/"
_GCP_PUBSUB = "https://cloud.google.com/pubsub/pricing"
_GCP_RUN = "https://cloud.google.com/run/pricing"
_GCP_GCS = "https://cloud.google.com/storage/pricing"
_AZ_BUS = "https://azure.microsoft.com/pricing/details/service-bus/"
_AZ_FUNCTIONS = "https://azure.microsoft.com/pricing/details/functions/"
_AZ_BLOB = "https://azure.microsoft.com/pricing/details/storage/blobs/"

PRICES: Mapping[str, Price] = MappingProxyType(
    {
        # AWS, us-east-1
        "aws.sqs.request": Price(
            "SQS request (standard queue)",
            0.40,
            1_000_000,
            "requests",
            _AWS_SQS,
            "first 1M requests a month free; each 64 KB chunk of a request's payload is billed"
            " as one request",
        ),
        "aws.lambda.request": Price(
            "Lambda request", 0.20, 1_000_000, "requests", _AWS_LAMBDA, "first 1M a month free"
        ),
        "aws.lambda.gb_second": Price(
            "Lambda duration (arm64)",
            0.0000133334,
            1,
            "GB-s",
            _AWS_LAMBDA,
            "the stack's function is arm64 (x86_64: $0.0000166667); first 7.5 billion GB-s a"
            " month; 400,000 GB-s a month free; billed per 1 ms",
        ),
        "aws.s3.put": Price(
            "S3 PUT (Standard)", 0.005, 1_000, "requests", _AWS_S3, "PUT, COPY, POST, LIST"
        ),
        "aws.s3.list": Price(
            "S3 LIST (Standard)", 0.005, 1_000, "requests", _AWS_S3, "same price as PUT"
        ),
        "aws.s3.get": Price("S3 GET (Standard)", 0.0004, 1_000, "requests", _AWS_S3),
        "aws.egress": Price(
            "data transfer out to the internet",
            0.09,
            1,
            "GB",
            "https://aws.amazon.com/ec2/pricing/on-demand/#Data_Transfer",
            "first 10 TB a month; the first 100 GB a month free; not confirmed here (well-known"
            " list price)",
            GIB,
        ),
        "aws.logs.ingest": Price(
            "CloudWatch Logs ingestion",
            0.50,
            1,
            "GB",
            "https://aws.amazon.com/cloudwatch/pricing/",
            "Standard log class (Lambda's logs are vended logs, tiered from $0.50/GB); 5 GB a"
            " month free; each event counts 26 bytes more than its text",
            GIB,
        ),
        # Google Cloud, Tier 1 (us-central1)
        "gcp.pubsub.throughput": Price(
            "Pub/Sub throughput",
            40.0,
            1,
            "TiB",
            _GCP_PUBSUB,
            "publish and delivery each billed; at least 1,000 bytes per publish, push or pull"
            " request; a message counts its data, attributes, 20 bytes of timestamp and its"
            " message_id; first 10 GiB a month free",
            2**40,
        ),
        "gcp.run.request": Price(
            "Cloud Run request",
            0.40,
            1_000_000,
            "requests",
            _GCP_RUN,
            "first 2M a month free; Cloud Run functions (2nd gen) are billed as Cloud Run",
        ),
        "gcp.run.vcpu_second": Price(
            "Cloud Run vCPU (request-based billing)",
            0.000024,
            1,
            "vCPU-s",
            _GCP_RUN,
            "instance time while serving at least one request, rounded up to 100 ms; first"
            " 180,000 vCPU-s a month free",
        ),
        "gcp.run.gib_second": Price(
            "Cloud Run memory (request-based billing)",
            0.0000025,
            1,
            "GiB-s",
            _GCP_RUN,
            "first 360,000 GiB-s a month free",
        ),
        "gcp.gcs.class_a": Price(
            "GCS Class A operation (Standard, regional)",
            0.005,
            1_000,
            "operations",
            _GCP_GCS,
            "object writes and listings",
        ),
        "gcp.gcs.class_b": Price(
            "GCS Class B operation (Standard, regional)",
            0.0004,
            1_000,
            "operations",
            _GCP_GCS,
            "object reads",
        ),
        "gcp.egress": Price(
            "internet egress (Premium Tier)",
            0.12,
            1,
            "GiB",
            "https://cloud.google.com/vpc/network-pricing",
            "from North America, first TiB a month; not confirmed here (well-known list price)",
            GIB,
        ),
        "gcp.logging.ingest": Price(
            "Cloud Logging ingestion",
            0.50,
            1,
            "GiB",
            "https://cloud.google.com/stackdriver/pricing",
            "first 50 GiB per project a month free",
            GIB,
        ),
        # Azure, East US
        "azure.servicebus.operation": Price(
            "Service Bus operation (Standard)",
            0.80,
            1_000_000,
            "operations",
            _AZ_BUS,
            "13M-100M operations a month; the first 13M a month come with the namespace's base"
            " charge (about $0.0135 an hour, $10 a month), which no task changes; each 64 KB"
            " of a message is one operation; not confirmed here (well-known list price)",
        ),
        "azure.functions.execution": Price(
            "Flex Consumption execution (on demand)",
            0.40,
            1_000_000,
            "executions",
            _AZ_FUNCTIONS,
            "first 250,000 a month free",
        ),
        "azure.functions.gb_second": Price(
            "Flex Consumption execution time (on demand)",
            0.000026,
            1,
            "GB-s",
            _AZ_FUNCTIONS,
            "instance memory while at least one execution runs; at least 1,000 ms per active"
            " period, then rounded up to 100 ms; first 100,000 GB-s a month free",
        ),
        "azure.blob.write": Price(
            "Blob write operation (Hot, LRS)",
            0.065,
            10_000,
            "operations",
            _AZ_BLOB,
            "not confirmed here (the issue's figure, the well-known list price)",
        ),
        "azure.blob.list": Price(
            "Blob list operation (Hot, LRS)",
            0.065,
            10_000,
            "operations",
            _AZ_BLOB,
            "'List and Create Container'; not confirmed here (well-known list price)",
        ),
        "azure.blob.read": Price(
            "Blob read operation (Hot, LRS)",
            0.005,
            10_000,
            "operations",
            _AZ_BLOB,
            "not confirmed here (well-known list price)",
        ),
        "azure.egress": Price(
            "internet egress (Microsoft network)",
            0.087,
            1,
            "GB",
            "https://azure.microsoft.com/pricing/details/bandwidth/",
            "from North America, first 10 TB a month; the first 100 GB a month free; not"
            " confirmed here (well-known list price)",
            GB,
        ),
        "azure.monitor.ingest": Price(
            "Application Insights / Log Analytics ingestion",
            2.30,
            1,
            "GB",
            "https://azure.microsoft.com/pricing/details/monitor/",
            "Analytics logs, pay-as-you-go; GB = 10^9 bytes of the stored columns; first 5 GB a"
            " month free; not confirmed here (well-known list price)",
            GB,
        ),
    }
)
"""Every price, by key (``<cloud>.<service>.<meter>``)."""
