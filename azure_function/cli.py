"""``adder package|submit|status azure``. Azure SDKs are imported only when a command runs."""

from __future__ import annotations

import argparse
import os
from typing import Any

from core.cli_args import add_progress_arguments, lazy_handler, whole_number

NAMESPACE_SETTING = "SERVICEBUS_CONNECTION__fullyQualifiedNamespace"
"""The function's own app setting; a convenient default for the commands too."""

SUBMIT_EPILOG = """\
examples:
  adder submit azure --queue tasks tasks.jsonl \\
      --namespace "$(terraform -chdir=infra/azure output -raw servicebus_namespace)"
  generate_tasks | adder submit azure --namespace sb-adder-1a2b3c --queue tasks -

Sending needs "Azure Service Bus Data Sender" on the queue (DefaultAzureCredential: az login,
environment variables or a managed identity), or a connection string with Send rights."""

STATUS_EPILOG = """\
The message counts need Manage rights ("Azure Service Bus Data Owner" on the queue, or a
connection string with Manage); the result counts need "Storage Blob Data Reader" on the
container. Options default to the function's app settings when they are set in the environment."""


def register(groups: dict[str, argparse._SubParsersAction[Any]]) -> None:
    """Add the Azure subcommands to ``adder``."""
    _register_submit(groups["submit"])
    _register_status(groups["status"])


def _register_submit(group: argparse._SubParsersAction[Any]) -> None:
    parser = group.add_parser(
        "azure",
        help="send tasks to the Service Bus queue",
        description="Send each task as one Service Bus message, in batches, and count them.",
        epilog=SUBMIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_queue_arguments(parser)
    parser.add_argument("tasks", metavar="TASKS", help="JSON Lines, a JSON array, or - for stdin")
    parser.add_argument(
        "--attempts",
        type=whole_number(1),
        default=3,
        metavar="N",
        help="sends of a batch that fails transiently, after the SDK's own retries (default 3)",
    )
    add_progress_arguments(parser)
    parser.set_defaults(handler=lazy_handler("azure_function.submit", "run_submit"))


def _register_status(group: argparse._SubParsersAction[Any]) -> None:
    parser = group.add_parser(
        "azure",
        help="show queue, dead-letter and result counts",
        description="Show the queue's active and dead-lettered messages and count the results.",
        epilog=STATUS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_queue_arguments(parser, required=False)
    parser.add_argument(
        "--account-url",
        default=os.environ.get("RESULTS_BLOB_ACCOUNT_URL"),
        help="results storage account URL, https://<account>.blob.core.windows.net/ "
        "(default: $RESULTS_BLOB_ACCOUNT_URL)",
    )
    parser.add_argument(
        "--blob-connection-string",
        default=os.environ.get("RESULTS_BLOB_CONNECTION_STRING"),
        help="storage connection string instead, e.g. for Azurite "
        "(default: $RESULTS_BLOB_CONNECTION_STRING)",
    )
    parser.add_argument(
        "--container",
        default=os.environ.get("RESULTS_CONTAINER"),
        help="results container (default: $RESULTS_CONTAINER)",
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get("RESULTS_PREFIX", ""),
        help="results prefix (default: $RESULTS_PREFIX, else none)",
    )
    parser.set_defaults(handler=lazy_handler("azure_function.status", "run_status"))


def _add_queue_arguments(parser: argparse.ArgumentParser, *, required: bool = True) -> None:
    queue = os.environ.get("TASK_QUEUE_NAME")
    parser.add_argument(
        "--namespace",
        default=os.environ.get(NAMESPACE_SETTING),
        metavar="NS",
        help="Service Bus namespace: a name (sb-adder-1a2b3c) or a host name "
        "(default: $SERVICEBUS_CONNECTION__fullyQualifiedNamespace)",
    )
    parser.add_argument(
        "--queue",
        default=queue,
        required=required and not queue,
        metavar="Q",
        help="queue name (default: $TASK_QUEUE_NAME)",
    )
    parser.add_argument(
        "--connection-string",
        default=os.environ.get("SERVICEBUS_CONNECTION_STRING"),
        metavar="CS",
        help="use a connection string instead of Entra ID, e.g. for local use "
        "(default: $SERVICEBUS_CONNECTION_STRING)",
    )
