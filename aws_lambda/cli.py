"""``adder package|submit|status|redrive aws``. boto3 is imported only when a command runs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from core.packaging import PackageSpec, register_package_command

if TYPE_CHECKING:
    import argparse

PACKAGE = PackageSpec(
    provider="aws",
    default_output="dist/aws_lambda.zip",
    packages={"core": (), "aws_lambda": ("cli.py", "submit.py", "status.py")},
    root_files={},
)


def register(groups: dict[str, argparse._SubParsersAction[Any]]) -> None:
    """Add the AWS subcommands to ``adder``."""
    register_package_command(groups, PACKAGE)
