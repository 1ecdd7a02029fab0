"""``adder package|submit|status|redrive aws``. boto3 is imported only when a command runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.cli_args import add_progress_arguments, progress_bar, whole_number
from core.clouds import CLOUDS
from core.errors import ProviderUnavailableError

if TYPE_CHECKING:
    import argparse

    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient

INSTALL_HINT = f"the AWS commands need boto3: {CLOUDS['aws'].install_hint}"


def _clients(args: argparse.Namespace) -> tuple[SQSClient, S3Client]:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise ProviderUnavailableError(INSTALL_HINT) from exc
    session = boto3.session.Session(region_name=args.region)
    config = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
    endpoint = args.endpoint_url
    return (
        session.client("sqs", config=config, endpoint_url=endpoint),
        session.client("s3", config=config, endpoint_url=endpoint),
    )


def _add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--region", help="AWS region (default: your AWS config / AWS_REGION)")
    parser.add_argument(
        "--endpoint-url", help="a different endpoint, e.g. a local moto server (default: AWS)"
    )


def _submit(args: argparse.Namespace) -> int:
    from aws_lambda.submit import submit

    sqs, _ = _clients(args)
    bar = progress_bar(args, args.tasks)
    summary = submit(sqs, args.queue_url, args.tasks, concurrency=args.concurrency, progress=bar)
    print(summary.line(args.queue_url))
    return summary.exit_code


def _status(args: argparse.Namespace) -> int:
    from aws_lambda.status import count_records, queue_depth

    sqs, s3 = _clients(args)
    depth = queue_depth(sqs, args.queue_url)
    print(
        f"task queue:   {depth.visible} waiting, {depth.in_flight} in flight, "
        f"{depth.delayed} delayed"
    )
    if args.dlq_url:
        dead = queue_depth(sqs, args.dlq_url)
        print(f"dead letters: {dead.visible + dead.in_flight} (redrive: adder redrive aws ...)")
    if args.bucket:
        results, errors = count_records(s3, args.bucket, args.prefix)
        print(f"results:      {results} .out, {errors} .err in s3://{args.bucket}/{args.prefix}")
    return 0


def _redrive(args: argparse.Namespace) -> int:
    from aws_lambda.redrive import redrive

    sqs, _ = _clients(args)
    moved = redrive(sqs, args.dlq_url, args.queue_url)
    print(f"moved {moved} messages from {args.dlq_url} to {args.queue_url}")
    return 0


def register(groups: dict[str, argparse._SubParsersAction[Any]]) -> None:
    """Add the AWS subcommands to ``adder``."""

    submit = groups["submit"].add_parser(
        "aws",
        help="send tasks to the SQS task queue",
        description="Send tasks (JSON Lines, a JSON array, or - for stdin) to the SQS queue "
        "with SendMessageBatch, several calls at once; entries SQS reports as failed are sent "
        "again. Exit 0 only if every task was sent.",
    )
    submit.add_argument("--queue-url", required=True, help="the stack's queue_url output")
    submit.add_argument(
        "--concurrency", type=whole_number(1), default=8, help="batches in flight (default 8)"
    )
    add_progress_arguments(submit)
    _add_connection_arguments(submit)
    submit.add_argument("tasks", metavar="TASKS", help="tasks file, or - for stdin")
    submit.set_defaults(handler=_submit)

    status = groups["status"].add_parser(
        "aws",
        help="queue depth, dead letters and result counts",
        description="Show the task queue's depth, the dead-letter queue's depth and how many "
        "results and error records the bucket holds.",
    )
    status.add_argument("--queue-url", required=True, help="the stack's queue_url output")
    status.add_argument("--dlq-url", help="the stack's dead_letter_queue_url output")
    status.add_argument("--bucket", help="the stack's results_bucket output")
    status.add_argument("--prefix", default="", help="the stack's results_prefix output")
    _add_connection_arguments(status)
    status.set_defaults(handler=_status)

    redrive = groups["redrive"].add_parser(
        "aws",
        help="move dead-lettered tasks back onto the task queue",
        description="After fixing what made tasks fail, move every message of the dead-letter "
        "queue back onto the task queue.",
    )
    redrive.add_argument("--dlq-url", required=True, help="the stack's dead_letter_queue_url")
    redrive.add_argument("--queue-url", required=True, help="the stack's queue_url output")
    _add_connection_arguments(redrive)
    redrive.set_defaults(handler=_redrive)
