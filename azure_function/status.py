"""``adder status azure``: queue and dead-letter counts, and how many results exist.

Message counts come from ``ServiceBusAdministrationClient.get_queue_runtime_properties``, which
needs Manage rights on the namespace ("Azure Service Bus Data Owner" with Entra ID, or a SAS
rule with Manage); without them the counts are reported as unavailable. Results are counted by
listing the blob names under the prefix (``.out`` and ``.err``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from azure_function.submit import INSTALL_HINT, fully_qualified_namespace
from core.errors import ConfigError, ProviderUnavailableError
from core.ports import ERROR_SUFFIX, RESULT_SUFFIX

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable

    from azure.core.credentials import TokenCredential
    from azure.servicebus.management import ServiceBusAdministrationClient
    from azure.storage.blob import ContainerClient


@dataclass(frozen=True)
class QueueCounts:
    """Messages waiting, scheduled for later, and dead-lettered."""

    active: int
    scheduled: int
    dead_letter: int

    def line(self, queue: str, namespace: str) -> str:
        """One line for the terminal."""
        return (
            f"queue {queue} on {namespace}: {self.active:,} active, {self.scheduled:,} scheduled, "
            f"{self.dead_letter:,} dead-lettered"
        )


@dataclass(frozen=True)
class ResultCounts:
    """Result blobs (``.out``) and error records (``.err``) under the prefix."""

    results: int
    errors: int

    def line(self, container: str, prefix: str) -> str:
        """One line for the terminal."""
        where = f"{container}/{prefix}/" if prefix else f"{container}/"
        return (
            f"results in {where}: {self.results:,} {RESULT_SUFFIX}, {self.errors:,} {ERROR_SUFFIX}"
        )


def queue_counts(admin: ServiceBusAdministrationClient, queue: str) -> QueueCounts:
    """The queue's runtime message counts."""
    props = admin.get_queue_runtime_properties(queue)
    return QueueCounts(
        active=props.active_message_count or 0,
        scheduled=props.scheduled_message_count or 0,
        dead_letter=props.dead_letter_message_count or 0,
    )


def count_records(names: Iterable[str], prefix: str) -> ResultCounts:
    """Count ``{prefix}/{id}.out`` and ``.err`` names (task ids never contain ``/``)."""
    start = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    results = errors = 0
    for name in names:
        if not name.startswith(start) or "/" in name[len(start) :]:
            continue
        if name.endswith(RESULT_SUFFIX):
            results += 1
        elif name.endswith(ERROR_SUFFIX):
            errors += 1
    return ResultCounts(results, errors)


def result_counts(container: ContainerClient, prefix: str) -> ResultCounts:
    """List the container under ``prefix`` and count results and error records."""
    start = f"{prefix.strip('/')}/" if prefix.strip("/") else None
    return count_records(container.list_blob_names(name_starts_with=start), prefix)


def run_status(args: argparse.Namespace) -> int:
    """``adder status azure``: print what is known; exit 1 if a part could not be read."""
    queue_wanted = bool(args.queue and (args.namespace or args.connection_string))
    results_wanted = bool(args.container and (args.account_url or args.blob_connection_string))
    if not (queue_wanted or results_wanted):
        raise ConfigError(
            "nothing to show: give --queue with --namespace (or --connection-string), and/or "
            "--container with --account-url (or --blob-connection-string)"
        )
    try:
        from azure.core.exceptions import AzureError
    except ImportError as exc:
        raise ProviderUnavailableError(INSTALL_HINT) from exc
    credential: list[TokenCredential] = []
    code = 0
    if queue_wanted:
        try:
            with _admin_client(args, credential) as admin:
                counts = queue_counts(admin, args.queue)
            print(counts.line(args.queue, _namespace_label(args)))
        except AzureError as exc:
            print(f"queue {args.queue}: counts unavailable: {_first_line(exc)}", file=sys.stderr)
            code = 1
    if results_wanted:
        try:
            with _container_client(args, credential) as container:
                results = result_counts(container, args.prefix)
            print(results.line(args.container, args.prefix.strip("/")))
        except AzureError as exc:
            print(f"results: unavailable: {_first_line(exc)}", file=sys.stderr)
            code = 1
    return code


def _credential(cache: list[TokenCredential]) -> TokenCredential:
    if not cache:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise ProviderUnavailableError(INSTALL_HINT) from exc
        cache.append(DefaultAzureCredential())
    return cache[0]


def _admin_client(
    args: argparse.Namespace, credential: list[TokenCredential]
) -> ServiceBusAdministrationClient:
    try:
        from azure.servicebus.management import ServiceBusAdministrationClient
    except ImportError as exc:
        raise ProviderUnavailableError(INSTALL_HINT) from exc
    if args.connection_string:
        return ServiceBusAdministrationClient.from_connection_string(args.connection_string)
    return ServiceBusAdministrationClient(
        fully_qualified_namespace(args.namespace), _credential(credential)
    )


def _container_client(
    args: argparse.Namespace, credential: list[TokenCredential]
) -> ContainerClient:
    try:
        from azure.storage.blob import ContainerClient
    except ImportError as exc:
        raise ProviderUnavailableError(INSTALL_HINT) from exc

    if args.blob_connection_string:
        return ContainerClient.from_connection_string(args.blob_connection_string, args.container)
    return ContainerClient(args.account_url, args.container, credential=_credential(credential))


def _namespace_label(args: argparse.Namespace) -> str:
    if args.namespace:
        return fully_qualified_namespace(args.namespace)
    for part in str(args.connection_string).split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "endpoint":
            return value.removeprefix("sb://").rstrip("/")
    return "the namespace"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
