"""``adder package|submit|status gcp``. Google SDKs are imported only when a command runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.cli_args import add_progress_arguments, lazy_handler, whole_number

if TYPE_CHECKING:
    import argparse


DEFAULT_ATTEMPTS = 3


def register(groups: dict[str, argparse._SubParsersAction[Any]]) -> None:
    """Add the Google Cloud subcommands to ``adder``."""
    _register_submit(groups["submit"])
    _register_status(groups["status"])


def _register_submit(group: argparse._SubParsersAction[Any]) -> None:
    parser = group.add_parser(
        "gcp",
        help="publish tasks to a Pub/Sub topic",
        description=(
            "Publish each task of TASKS (JSON Lines, a JSON array, or - for stdin) as one "
            "Pub/Sub message, exactly as written. Uses the publisher's batching (up to 1000 "
            "messages per request), waits for every publish, re-publishes the failed ones and "
            "prints the count. Exit 0 only if every message was published. Credentials: "
            "application-default (gcloud auth application-default login); "
            "PUBSUB_EMULATOR_HOST is honoured."
        ),
    )
    parser.add_argument(
        "--topic",
        required=True,
        help="the task topic, projects/PROJECT/topics/TOPIC (terraform output topic_id)",
    )
    parser.add_argument("tasks", metavar="TASKS", help="tasks file, or - for stdin")
    parser.add_argument(
        "--attempts",
        type=whole_number(1),
        default=DEFAULT_ATTEMPTS,
        help=f"publish rounds per message before giving up (default {DEFAULT_ATTEMPTS})",
    )
    add_progress_arguments(parser)

    parser.set_defaults(handler=lazy_handler("gcp_function.submit", "submit_from_args"))


def _register_status(group: argparse._SubParsersAction[Any]) -> None:
    parser = group.add_parser(
        "gcp",
        help="count results in the bucket and dead-lettered messages",
        description=(
            "Count the {id}.out and {id}.err objects under the prefix and, with "
            "--dead-letter-subscription, the dead-letter backlog as last sampled by Cloud "
            "Monitoring (needs roles/monitoring.viewer; reported as unknown otherwise)."
        ),
    )
    parser.add_argument(
        "--bucket", required=True, help="results bucket (terraform output results_bucket)"
    )
    parser.add_argument(
        "--prefix", default="", help="results prefix (terraform output results_prefix)"
    )
    parser.add_argument(
        "--dead-letter-subscription",
        metavar="projects/P/subscriptions/S",
        help="the dead-letter subscription (terraform output dead_letter_subscription)",
    )

    parser.set_defaults(handler=lazy_handler("gcp_function.status", "status_from_args"))
